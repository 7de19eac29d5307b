"""API scopes of personal API keys, as PostHog names them."""

from __future__ import annotations

from collections.abc import Iterable

ALL = "*"
KNOWN_SCOPES = frozenset({"batch_export:read", "batch_export:write", "plugin:read", "plugin:write"})


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
