"""Authenticates API requests by personal API key, found where PostHog looks for one.

Only the first candidate is tried, in PostHog's order: the `Authorization: Bearer phx_…` header,
then a `personal_api_key` field of the request body (JSON or form), then a `personal_api_key`
query parameter. A key that is found but unknown (or whose user is inactive) is a 401 naming
where it was found, never echoing it.
"""

from __future__ import annotations

import re
from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from batchexports.accounts import keys
from batchexports.accounts.models import PersonalAPIKey, User

# Writing last_used_at on every request would turn each read into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)
KEY_FIELD = "personal_api_key"
_BEARER = re.compile(r"^Bearer\s+(\S.*)$", re.IGNORECASE)


def find_key(request: Request) -> tuple[str, str] | None:
    """The key this request carries and where it was found, or None."""
    header = authentication.get_authorization_header(request).decode(errors="replace")
    if header:
        match = _BEARER.match(header)
        if match:
            return match.group(1).strip(), "Authorization header"
        if header.strip().lower() == "bearer":
            raise exceptions.AuthenticationFailed("Authorization header has no API key after 'Bearer'.")
    data = request.data
    if isinstance(data, dict) and KEY_FIELD in data:
        return _as_text(data.get(KEY_FIELD), "body"), "body"
    if KEY_FIELD in request.query_params:
        return _as_text(request.query_params.get(KEY_FIELD), "query string"), "query string"
    return None


def _as_text(value: object, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise exceptions.AuthenticationFailed(f"Personal API key found in request {source} is invalid.")
    return value.strip()


class PersonalAPIKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[User, PersonalAPIKey] | None:
        found = find_key(request)
        if found is None:
            return None
        value, source = found
        key = (
            PersonalAPIKey.objects.select_related("user")
            .filter(secure_value=keys.hash_key(value), user__is_active=True)
            .first()
        )
        if key is None:
            raise exceptions.AuthenticationFailed(f"Personal API key found in request {source} is invalid.")
        now = timezone.now()
        if key.last_used_at is None or now - key.last_used_at > LAST_USED_RESOLUTION:
            PersonalAPIKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) when credentials are missing.
        return self.keyword
