"""Authenticates API requests by personal API key: `Authorization: Bearer phx_…`."""

from __future__ import annotations

from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from batchexports.accounts import keys
from batchexports.accounts.models import PersonalAPIKey, User

# Writing last_used_at on every request would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class PersonalAPIKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, PersonalAPIKey] | None:
        header = authentication.get_authorization_header(request).decode(errors="replace")
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            return None
        value = value.strip()
        if not value:
            raise exceptions.AuthenticationFailed("Authorization header has no API key after 'Bearer'.")
        try:
            key = PersonalAPIKey.objects.select_related("user").get(secure_value=keys.hash_key(value))
        except PersonalAPIKey.DoesNotExist:
            raise exceptions.AuthenticationFailed(
                "Personal API key found in request Authorization header is invalid."
            ) from None
        if not key.user.is_active:
            raise exceptions.AuthenticationFailed("The user of this personal API key is inactive.")
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            PersonalAPIKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) when credentials are missing.
        return self.keyword
