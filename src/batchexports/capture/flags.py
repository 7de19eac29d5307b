"""`/flags/` and `/decide/`: the feature-flag calls SDKs make at start-up, answered as PostHog answers them.

This service has no feature flags, so every project evaluates to none, with the start-up
settings of `remote_config.flags_config` (everything off). The answer's shape follows the
path and `v`, as PostHog's flags service chooses it:

- `/flags/`: `v>=2` gives `{"flags": {}, ...}`; no `v` or `v=1` gives the legacy
  `{"featureFlags": {}, "featureFlagPayloads": {}, ...}`. With neither `v` nor `config`, it is
  `v=2` with the config. The config is flattened in only with `config=true`.
- `/decide/` (always with the config): `v=1` or none `{"featureFlags": []}`, `v=2`
  `{"featureFlags": {}}`, `v=3` the legacy flags shape, `v>=4` the `v=2` flags shape.

POST bodies are decoded like capture bodies (posthog-js sends `data=<base64>` with
`compression=base64`). A GET carries no distinct id and gets PostHog's minimal answer (the
flags shape of its `v`, on either path); unlike
PostHog, a GET that names a token is checked, so a mistyped token shows at once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from batchexports.capture.payloads import BadPayload, PayloadTooLarge, decode_body
from batchexports.capture.remote_config import flags_config, minimal_config
from batchexports.capture.sdk_http import (
    INVALID_TOKEN_DETAIL,
    MISSING_TOKEN_DETAIL,
    error,
    project_for_token,
    with_cors,
)

MAX_BODY_BYTES = 1024 * 1024  # a flags request is a distinct id and some properties
ALLOWED = "GET, POST, OPTIONS, HEAD"


def _version(query: Mapping[str, str]) -> int | None:
    value = query.get("v", "").strip()
    if not value:
        return None
    try:
        return int(value.split(".")[0])
    except ValueError:
        return 1  # PostHog reads an unparsable version as 1


def _is_true(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _shape(path: str, version: int | None) -> str:
    """One of `flags_v2`, `flags_v1`, `decide_v1`, `decide_v2`."""
    if path == "decide":
        if version in (None, 1):
            return "decide_v1"
        if version == 2:
            return "decide_v2"
        if version == 3:
            return "flags_v1"
        return "flags_v2" if version is not None and version >= 4 else "decide_v1"
    return "flags_v2" if version is not None and version >= 2 else "flags_v1"


def _body(shape: str, config: dict[str, Any]) -> dict[str, Any]:
    evaluation = {"requestId": str(uuid.uuid4()), "evaluatedAt": int(time.time() * 1000)}
    if shape == "flags_v2":
        flags: dict[str, Any] = {"errorsWhileComputingFlags": False, "flags": {}}
    elif shape == "flags_v1":
        flags = {"errorsWhileComputingFlags": False, "featureFlags": {}, "featureFlagPayloads": {}}
    elif shape == "decide_v2":
        flags = {"featureFlags": {}}
    else:
        flags = {"featureFlags": []}
    return {**flags, **evaluation, **config}


def _token_of(data: Mapping[str, Any], query: Mapping[str, str]) -> str | None:
    token = data.get("api_key") or data.get("token") or data.get("$token")
    properties = data.get("properties")
    if not token and isinstance(properties, Mapping):
        token = properties.get("token")
    token = token or query.get("token") or query.get("api_key")
    return str(token) if token else None


def _answer(request: HttpRequest, path: str) -> HttpResponse:
    query = {key: request.GET.get(key, "") for key in request.GET}
    if request.method == "OPTIONS":
        return HttpResponse(status=204, headers={"Allow": ALLOWED})
    if request.method == "HEAD":
        return HttpResponse(status=200, content_type="application/json")
    if request.method == "GET":
        token = query.get("token") or query.get("api_key")
        if token and project_for_token(token) is None:
            return error(401, "authentication_error", "invalid_api_key", INVALID_TOKEN_DETAIL)
        shape = "flags_v2" if (_version(query) or 1) >= 2 else "flags_v1"  # on either path, as PostHog
        return JsonResponse(_body(shape, minimal_config()))
    if request.method != "POST":
        return error(405, "invalid_request", "method_not_allowed", f"Method {request.method} is not allowed.")

    try:
        data = decode_body(
            request.body,
            content_type=request.content_type or "",
            content_encoding=request.headers.get("Content-Encoding", ""),
            query=query,
            max_bytes=MAX_BODY_BYTES,
        )
    except PayloadTooLarge as problem:
        return error(413, "invalid_request", "payload_too_large", f"The request is too large: {problem}.")
    except BadPayload as problem:
        return error(400, "validation_error", "malformed_data", f"Malformed request data: {problem}.")
    if not isinstance(data, Mapping):
        return error(400, "validation_error", "malformed_data", "Malformed request data: the body must be an object.")

    token = _token_of(data, query)
    if not token:
        return error(401, "authentication_error", "no_api_key", MISSING_TOKEN_DETAIL)
    project = project_for_token(token)
    if project is None:
        return error(401, "authentication_error", "invalid_api_key", INVALID_TOKEN_DETAIL)
    if not _is_true(str(data.get("disable_flags", ""))):
        distinct_id = data.get("distinct_id")
        if distinct_id is None:
            detail = "The distinct_id field is missing from the request. Please include a valid identifier."
            return error(400, "validation_error", "missing_distinct_id", detail, attr="distinct_id")
        if str(distinct_id).strip() == "":
            detail = "The distinct_id field cannot be empty. Please provide a valid identifier."
            return error(400, "validation_error", "empty_distinct_id", detail, attr="distinct_id")

    version = _version(query)
    with_config = path == "decide" or _is_true(query.get("config"))
    if path == "flags" and version is None and "config" not in query:
        version, with_config = 2, True
    return JsonResponse(_body(_shape(path, version), flags_config(project) if with_config else {}))


@csrf_exempt
def flags(request: HttpRequest) -> HttpResponse:
    return with_cors(request, _answer(request, "flags"))


@csrf_exempt
def decide(request: HttpRequest) -> HttpResponse:
    return with_cors(request, _answer(request, "decide"))
