"""PostHog-compatible capture endpoints: `/batch/`, `/capture/`, `/e/`, `/i/v0/e/`, `/track/`, `/engage/`.

Plain Django views (no DRF: this is the ingestion hot path). A request is stored whole or
not at all: any invalid event rejects the request with a 400 that says which and why. As in
PostHog's capture, the query's `_` (epoch milliseconds, posthog-js's send time) stands in for
a missing `sent_at`, and `beacon=1` (`navigator.sendBeacon`, whose answer nobody reads) is
answered 204 No Content.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from batchexports.capture.payloads import BadPayload, PayloadTooLarge, decode_body, engage_to_events, interpret
from batchexports.capture.sdk_http import INVALID_TOKEN_DETAIL, error, project_for_token, with_cors
from batchexports.events.normalize import InvalidEvent, normalize_event
from batchexports.events.store import StoreUnavailable
from batchexports.events.stores import get_store

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = int(os.environ.get("BATCHEXPORTS_CAPTURE_MAX_BODY_BYTES", str(20 * 1024 * 1024)))


# posthog-js sends its clock as `_=<epoch ms>`; smaller numbers are seconds from older SDKs (ignored, as PostHog does).
_EARLIEST_SENT_AT_MS = 1_577_836_800_000  # 2020-01-01


def _query_sent_at(query: dict[str, str]) -> int | None:
    value = query.get("_", "")
    return int(value) if value.isdigit() and int(value) >= _EARLIEST_SENT_AT_MS else None


def _handle(request: HttpRequest, convert: Callable[[list], list] | None) -> HttpResponse:
    if request.method == "OPTIONS":
        return HttpResponse(status=200)
    if request.method not in ("GET", "POST"):
        return error(405, "invalid_request", "method_not_allowed", f"Method {request.method} is not allowed.")
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        return error(413, "invalid_request", "payload_too_large", f"The body is larger than {MAX_BODY_BYTES} bytes.")
    query = {key: request.GET.get(key, "") for key in request.GET}
    is_multipart = (request.content_type or "").startswith("multipart/form-data")
    try:
        form = {key: request.POST.get(key, "") for key in request.POST} if is_multipart else None
        decoded = decode_body(
            b"" if is_multipart else request.body,
            form=form,
            content_type=request.content_type or "",
            content_encoding=request.headers.get("Content-Encoding", ""),
            query=query,
            max_bytes=MAX_BODY_BYTES,
        )
        payload = interpret(decoded if convert is None else _engage_shape(decoded), query)
        if convert is not None:
            payload = type(payload)(payload.token, convert(payload.events), payload.historical_migration, None)
    except PayloadTooLarge as problem:
        return error(413, "invalid_request", "payload_too_large", f"The request is too large: {problem}.")
    except BadPayload as problem:
        return error(400, "validation_error", "invalid_payload", f"Malformed request: {problem}.")
    if not payload.token:
        return error(401, "authentication_error", "missing_api_key", "No project API key ('api_key' or 'token').")
    project = project_for_token(payload.token)
    if project is None:
        return error(401, "authentication_error", "invalid_api_key", INVALID_TOKEN_DETAIL)
    now = dt.datetime.now(dt.UTC)
    sent_at = payload.sent_at or _query_sent_at(query)
    try:
        events = [
            normalize_event(raw, now=now, sent_at=sent_at, historical=payload.historical_migration, position=i)
            for i, raw in enumerate(payload.events)
        ]
    except InvalidEvent as problem:
        return error(400, "validation_error", "invalid_event", f"Invalid event: {problem}.")
    try:
        get_store().capture(project.id, events, historical=payload.historical_migration)
    except StoreUnavailable as problem:
        logger.error("capture: events store unavailable: %s", problem)
        return error(503, "server_error", "store_unavailable", "The events store is unavailable; retry later.")
    if query.get("beacon") == "1":
        return HttpResponse(status=204)
    return JsonResponse({"status": 1})


def _engage_shape(decoded: object) -> object:
    """/engage/ bodies are updates, not events: wrap them so `interpret` finds them and their token."""
    updates = decoded if isinstance(decoded, list) else [decoded]
    token = next((u.get("$token") or u.get("token") for u in updates if isinstance(u, dict)), None)
    return {"api_key": token, "batch": updates}


@csrf_exempt
def capture(request: HttpRequest) -> HttpResponse:
    return with_cors(request, _handle(request, convert=None))


@csrf_exempt
def engage(request: HttpRequest) -> HttpResponse:
    return with_cors(request, _handle(request, convert=engage_to_events))
