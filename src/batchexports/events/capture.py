"""PostHog-compatible capture endpoints: `/batch/`, `/capture/`, `/e/`, `/i/v0/e/`, `/track/`, `/engage/`.

Plain Django views (no DRF: this is the ingestion hot path). A request is stored whole or
not at all: any invalid event rejects the request with a 400 that says which and why.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from batchexports.accounts.models import Project
from batchexports.events.normalize import InvalidEvent, normalize_event
from batchexports.events.payloads import BadPayload, PayloadTooLarge, decode_body, engage_to_events, interpret
from batchexports.events.store import StoreUnavailable, get_store

logger = logging.getLogger(__name__)

MAX_BODY_BYTES = int(os.environ.get("BATCHEXPORTS_CAPTURE_MAX_BODY_BYTES", str(20 * 1024 * 1024)))


def _error(status: int, error_type: str, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"type": error_type, "code": code, "detail": detail, "attr": None}, status=status)


def _with_cors(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    # Browsers send events from the sites they track: any origin may post, as to PostHog.
    origin = request.headers.get("Origin")
    response["Access-Control-Allow-Origin"] = origin or "*"
    if origin:
        response["Access-Control-Allow-Credentials"] = "true"
        response["Vary"] = "Origin"
    response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response["Access-Control-Allow-Headers"] = "Content-Type, Content-Encoding, X-Requested-With"
    return response


def _handle(request: HttpRequest, convert: Callable[[list], list] | None) -> HttpResponse:
    if request.method == "OPTIONS":
        return HttpResponse(status=200)
    if request.method not in ("GET", "POST"):
        return _error(405, "invalid_request", "method_not_allowed", f"Method {request.method} is not allowed.")
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        return _error(413, "invalid_request", "payload_too_large", f"The body is larger than {MAX_BODY_BYTES} bytes.")
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
    except PayloadTooLarge as error:
        return _error(413, "invalid_request", "payload_too_large", f"The request is too large: {error}.")
    except BadPayload as error:
        return _error(400, "validation_error", "invalid_payload", f"Malformed request: {error}.")
    if not payload.token:
        return _error(401, "authentication_error", "missing_api_key", "No project API key ('api_key' or 'token').")
    project = Project.objects.filter(api_token=payload.token).only("id").first()
    if project is None:
        return _error(401, "authentication_error", "invalid_api_key", "Project API key invalid.")
    now = dt.datetime.now(dt.UTC)
    try:
        events = [
            normalize_event(raw, now=now, sent_at=payload.sent_at, historical=payload.historical_migration, position=i)
            for i, raw in enumerate(payload.events)
        ]
    except InvalidEvent as error:
        return _error(400, "validation_error", "invalid_event", f"Invalid event: {error}.")
    try:
        get_store().capture(project.id, events, historical=payload.historical_migration)
    except StoreUnavailable as error:
        logger.error("capture: events store unavailable: %s", error)
        return _error(503, "server_error", "store_unavailable", "The events store is unavailable; retry later.")
    return JsonResponse({"status": 1})


def _engage_shape(decoded: object) -> object:
    """/engage/ bodies are updates, not events: wrap them so `interpret` finds them and their token."""
    updates = decoded if isinstance(decoded, list) else [decoded]
    token = next((u.get("$token") or u.get("token") for u in updates if isinstance(u, dict)), None)
    return {"api_key": token, "batch": updates}


@csrf_exempt
def capture(request: HttpRequest) -> HttpResponse:
    return _with_cors(request, _handle(request, convert=None))


@csrf_exempt
def engage(request: HttpRequest) -> HttpResponse:
    return _with_cors(request, _handle(request, convert=engage_to_events))
