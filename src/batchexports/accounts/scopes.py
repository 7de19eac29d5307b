"""API scopes of personal API keys, as PostHog names them.

Which scope each route needs (PostHog's own mapping):
- the batch exports routes: `batch_export:read` / `batch_export:write`; app metrics: `plugin:read`;
- `/api/projects/…`, `/api/environments/…` and `/api/organizations/:id/projects/…`: `project:read`;
- `/api/organizations/` and `/api/organizations/:id/`: `organization:read`;
- `/api/users/…` (`@me` included): `user:read`.
`*` grants every scope, and a `:write` scope implies the `:read` scope of the same object.
The account routes only read, so their `:write` scopes are accepted on keys but grant nothing more.
"""

from __future__ import annotations

from collections.abc import Iterable

ALL = "*"
SCOPE_OBJECTS = ("batch_export", "plugin", "project", "organization", "user")
KNOWN_SCOPES = frozenset(f"{obj}:{action}" for obj in SCOPE_OBJECTS for action in ("read", "write"))


def is_valid_scope(scope: str) -> bool:
    return scope == ALL or scope in KNOWN_SCOPES


def grants(key_scopes: Iterable[str], required: str) -> bool:
    """Whether a key with `key_scopes` may do something that needs `required`.

    `*` grants everything; a `:write` scope implies the `:read` scope of the same object.
    """
    scopes = set(key_scopes)
    if ALL in scopes or required in scopes:
        return True
    obj, _, action = required.partition(":")
    return action == "read" and f"{obj}:write" in scopes
