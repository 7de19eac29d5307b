"""Decoding the request bodies PostHog's SDKs send to the capture endpoints.

Bodies come as JSON, gzip (`Content-Encoding: gzip` or `compression=gzip-js`), base64
(`compression=base64`, or a form field `data=` as posthog-js sends without compression), and
as a single event, a list of events, or `{"api_key", "batch": [...]}`. Nothing here knows Django.
"""

from __future__ import annotations

import base64
import binascii
import json
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs


class BadPayload(ValueError):
    """A body that cannot be read; the message says why."""


class PayloadTooLarge(ValueError):
    pass


@dataclass(frozen=True)
class CapturePayload:
    token: str | None
    events: list[Any]
    historical_migration: bool
    sent_at: Any


def _gunzip(body: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error:
        raise BadPayload("the body is not valid gzip") from None
    if len(data) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(f"the decompressed body is larger than {limit} bytes")
    return data


def _b64(text: bytes | str) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    raw = raw.strip().replace(b" ", b"+")  # '+' arrives as a space when form-encoding is sloppy
    raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw.replace(b"-", b"+").replace(b"_", b"/"), validate=True)
    except (binascii.Error, ValueError):
        raise BadPayload("the body is not valid base64") from None


def decode_body(
    body: bytes,
    *,
    content_type: str,
    content_encoding: str,
    query: Mapping[str, str],
    max_bytes: int,
    form: Mapping[str, str] | None = None,
) -> Any:
    """The JSON value a capture request carries; `form` holds already parsed multipart fields."""
    if len(body) > max_bytes:
        raise PayloadTooLarge(f"the body is larger than {max_bytes} bytes")
    compression = (query.get("compression") or "").lower()
    if form is None and "x-www-form-urlencoded" in content_type.lower():
        form = {key: values[0] for key, values in parse_qs(body.decode("latin-1"), keep_blank_values=True).items()}
    if form is not None:
        compression = (form.get("compression") or compression).lower()
        if "data" not in form:
            raise BadPayload("the form has no 'data' field")
        body = form["data"].encode("latin-1")
        if compression not in ("gzip", "gzip-js"):
            compression = "base64"
    elif not body and query.get("data"):
        body, compression = query["data"].encode(), compression or "base64"
    if "gzip" in content_encoding.lower() or compression in ("gzip", "gzip-js"):
        if compression in ("gzip", "gzip-js") and body[:2] != b"\x1f\x8b":
            body = _b64(body)  # posthog-js may base64 the gzip bytes inside a form
        body = _gunzip(body, max_bytes * 10)
    elif compression == "base64":
        body = _b64(body)
    elif compression == "lz64":
        raise BadPayload("compression 'lz64' is not supported; configure the SDK to use 'gzip-js' or none")
    elif compression not in ("", "none"):
        raise BadPayload(f"unknown compression '{compression}'")
    if not body.strip():
        raise BadPayload("the body is empty")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise BadPayload("the body is not UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise BadPayload(f"the body is not valid JSON ({error.msg} at position {error.pos})") from None


def _event_token(event: Any) -> str | None:
    if not isinstance(event, Mapping):
        return None
    properties = event.get("properties")
    token = event.get("api_key") or event.get("token") or event.get("$token")
    if token is None and isinstance(properties, Mapping):
        token = properties.get("token")
    return str(token) if token else None


def interpret(value: Any, query: Mapping[str, str]) -> CapturePayload:
    """Where the events and the project token are in a decoded body."""
    historical, sent_at = False, None
    if isinstance(value, list):
        events = value
        token = None
    elif isinstance(value, Mapping) and "batch" in value:
        events = value["batch"]
        if not isinstance(events, list):
            raise BadPayload("'batch' must be a list of events")
        token = value.get("api_key") or value.get("token")
        historical = bool(value.get("historical_migration"))
        sent_at = value.get("sent_at")
    elif isinstance(value, Mapping) and ("event" in value or "$distinct_id" in value):
        events = [value]
        token = None
        historical = bool(value.get("historical_migration"))
    else:
        raise BadPayload("the body has no event: send an event, a list of events or {'api_key', 'batch': [...]}")
    tokens = {t for t in (_event_token(e) for e in events) if t}
    token = token or (tokens.pop() if len(tokens) == 1 else None) or query.get("token") or query.get("api_key")
    if len(tokens) > 1:
        raise BadPayload("the events carry different project tokens; send one project's events per request")
    return CapturePayload(str(token) if token else None, list(events), historical, sent_at)


def engage_to_events(events: list[Any]) -> list[Any]:
    """`/engage/` updates (`{"$distinct_id", "$set": {...}}`) as the `$identify` events PostHog makes of them."""
    converted = []
    for update in events:
        if not isinstance(update, Mapping):
            raise BadPayload("each /engage/ update must be a JSON object")
        properties = {key: update[key] for key in ("$set", "$set_once", "$unset") if key in update}
        converted.append(
            {
                "event": "$identify",
                "distinct_id": update.get("$distinct_id") or update.get("distinct_id"),
                "properties": properties,
                "timestamp": update.get("$time") or update.get("timestamp"),
                "uuid": update.get("uuid"),
            }
        )
    return [{k: v for k, v in event.items() if v is not None} for event in converted]
