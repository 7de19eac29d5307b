"""The one scope check used by every API view."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request

from batchexports.accounts import scopes
from batchexports.accounts.models import PersonalAPIKey


def required_scope(request: Request, view: Any) -> str | None:
    """The scope a request needs: a view's per-action override, else read or write of its object."""
    action = getattr(view, "action", None)
    overrides: dict[str, str] = getattr(view, "required_scopes", {})
    if action in overrides:
        return overrides[action]
    scope_object = getattr(view, "scope_object", None)
    if scope_object is None:
        return None
    return f"{scope_object}:{'read' if request.method in permissions.SAFE_METHODS else 'write'}"


class APIScopePermission(permissions.BasePermission):
    """A personal API key may only do what its scopes cover; session users act fully as themselves."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if not isinstance(request.auth, PersonalAPIKey):
            return True
        needed = required_scope(request, view)
        if needed is None:
            return True
        if not scopes.grants(request.auth.scopes, needed):
            raise PermissionDenied(f"API key missing required scope '{needed}'.", code="permission_denied")
        return True
