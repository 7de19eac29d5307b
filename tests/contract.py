"""Checks applied to every API response of the test suite.

1. No secret that a test sent appears in any response body (secrets are write-only).
2. Wherever PostHog's own OpenAPI description knows the route and the values used, the
   response validates against it, so PostHog clients can rely on our shapes.
"""

from __future__ import annotations

import json
import threading
from functools import cache
from pathlib import Path
from typing import Any

from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse

SPEC_PATH = (
    Path(__file__).resolve().parents[1].parent / "shared" / "api-reference" / "posthog-openapi-batch-exports.json"
)

# Values the PostHog schema predates: responses containing them cannot be checked against it.
# PostHog's AwsS3 and S3Compatible types are newer than this copy of its schema (see its source).
UNKNOWN_TO_POSTHOG_SCHEMA = ('"AzureBlob"', '"File"', '"every 15 minutes"', '"AwsS3"', '"S3Compatible"')

_lock = threading.Lock()
_secrets: set[str] = set()
validated_routes: set[tuple[str, str]] = set()


def register_secret(value: str) -> str:
    """Remember `value` as a secret that must never come back in a response."""
    with _lock:
        _secrets.add(value)
    return value


def assert_no_secret_in(body: bytes) -> None:
    text = body.decode("utf-8", errors="replace")
    with _lock:
        leaked = [secret for secret in _secrets if secret in text]
    assert not leaked, f"secret value(s) {leaked!r} leaked in a response: {text[:500]}"


def _spec_path() -> Path:
    for candidate in (
        SPEC_PATH,
        Path(__file__).resolve().parents[1] / ".." / "shared" / "api-reference" / "posthog-openapi-batch-exports.json",
    ):
        if candidate.exists():
            return candidate
    raise FileNotFoundError("PostHog's OpenAPI description (../shared/api-reference/) is missing")


@cache
def raw_spec() -> dict[str, Any]:
    spec = json.loads(_spec_path().read_text())
    # PostHog's schema types backfill `progress` as a string (drf-spectacular's fallback for a
    # method field), while PostHog's API returns an object; we return the object.
    _retype_progress(spec)
    return spec


@cache
def posthog_openapi() -> OpenAPI:
    return OpenAPI.from_dict(raw_spec())


def _retype_progress(node: Any) -> None:
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict) and "progress" in props and "batch_export" in props:
            props["progress"] = {"type": "object", "nullable": True, "readOnly": True}
        for value in node.values():
            _retype_progress(value)
    elif isinstance(node, list):
        for value in node:
            _retype_progress(value)


def _spec_knows(method: str, path: str) -> str | None:
    """The spec's path template matching `path`, if any."""
    spec_paths = raw_spec()["paths"]
    parts = path.strip("/").split("/")
    for template in spec_paths:
        tparts = template.strip("/").split("/")
        if len(tparts) != len(parts):
            continue
        matches = all(t.startswith("{") or t == p for t, p in zip(tparts, parts, strict=True))
        if matches and method.lower() in spec_paths[template]:
            return template
    return None


def validate_against_posthog_schema(
    method: str, path: str, query: dict[str, Any], status: int, body: bytes, content_type: str
) -> None:
    if status >= 300 or status == 204 or not content_type.startswith("application/json"):
        return
    if method.upper() == "POST" and path.endswith("/backfills/") and status == 201:
        # PostHog's schema documents the backfill object here (drf-spectacular's guess from the viewset's
        # serializer), while PostHog's view answers `{"backfill_id"}`, as api-reference/README.md says and we do.
        assert set(json.loads(body)) == {"backfill_id"}, body
        return
    template = _spec_knows(method, path)
    if template is None:
        return
    text = body.decode()
    if any(marker in text for marker in UNKNOWN_TO_POSTHOG_SCHEMA):
        return
    operation = posthog_openapi().spec / "paths" / template / method.lower()
    responses = operation / "responses"
    if str(status) not in responses or "content" not in (responses / str(status)):
        return  # the spec says nothing about this response's body
    # The API answers with or without the trailing slash; PostHog's description writes it.
    request = MockRequest("http://testserver", method.lower(), path.rstrip("/") + "/", args=query)
    response = MockResponse(body, status_code=status, content_type="application/json")
    posthog_openapi().validate_response(request, response)
    with _lock:
        validated_routes.add((method.upper(), template))
