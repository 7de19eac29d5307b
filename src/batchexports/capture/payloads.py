"""Decoding the request bodies PostHog's SDKs send to the capture and flags endpoints.

The bytes decide, as in PostHog's capture, whatever the headers say: a body that starts with
gzip's magic bytes is gunzipped (posthog-js sends its gzip with `Content-Type: text/plain` and
no marker at all), a body that is all base64 is unwrapped. A compression hint (`compression=`
in the query or the form, or `Content-Encoding`) adds what the bytes cannot show: `lz64`
(lz-string, older posthog-js) and loose base64. A form body (`data=…`, also as a
`navigator.sendBeacon` blob or a GET `?data=`) carries the payload in its `data` field. The
result is one JSON value; anything else is a `BadPayload` saying why. Nothing here knows Django.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from batchexports.capture import lz64


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


GZIP_MAGIC = b"\x1f\x8b"
# Every spelling PostHog's SDKs use, to the one decoding it means.
COMPRESSIONS = {
    "gzip": "gzip",
    "gzip-js": "gzip",
    "lz64": "lz64",
    "lz-string": "lz64",
    "base64": "base64",
    "b64": "base64",
}
# What marks a body as a urlencoded form (the fields PostHog's capture looks for), in its first bytes.
_FORM_START = re.compile(rb"^(?:[A-Za-z0-9_.$%-]*=[^&{}\"]*&)*?(?:data|compression|ver|_|ip)=")
_STRICT_BASE64 = re.compile(rb"[A-Za-z0-9+/]+={0,2}")
_LOOSE_BASE64 = re.compile(rb"[A-Za-z0-9+/_\- ]+={0,2}")
_MAX_LAYERS = 3  # e.g. form data that is base64 of gzip


def _gunzip(body: bytes, limit: int) -> bytes:
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = decompressor.decompress(body, limit + 1)
    except zlib.error as error:
        raise BadPayload(f"the body starts like gzip but is not valid gzip ({error})") from None
    if len(data) > limit or decompressor.unconsumed_tail:
        raise PayloadTooLarge(f"the decompressed body is larger than {limit} bytes")
    if not decompressor.eof:
        raise BadPayload("the gzip body is truncated")
    return data


def _is_base64(data: bytes, loose: bool) -> bool:
    data = data.strip()
    if loose:
        return bool(data) and _LOOSE_BASE64.fullmatch(data) is not None
    return bool(data) and len(data) % 4 == 0 and _STRICT_BASE64.fullmatch(data) is not None


def _b64(data: bytes) -> bytes:
    raw = data.strip().replace(b" ", b"+")  # '+' arrives as a space when form-encoding is sloppy
    raw = raw.replace(b"-", b"+").replace(b"_", b"/")  # URL-safe alphabet, as in GET ?data=
    raw += b"=" * (-len(raw) % 4)
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise BadPayload("the body is not valid base64") from None


def _looks_like_form(body: bytes) -> bool:
    return _FORM_START.match(body[:512]) is not None


def _is_form(body: bytes, content_type: str) -> bool:
    """A urlencoded form: by its first field names, or declared so and shaped like one (`key=value`)."""
    if body.startswith(GZIP_MAGIC):
        return False
    declared = "x-www-form-urlencoded" in content_type.lower()
    return _looks_like_form(body) or (declared and re.match(rb"^[A-Za-z0-9_.$%-]+=", body) is not None)


def _form_fields(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadPayload("the form body is not UTF-8") from None
    return {key: values[0] for key, values in parse_qs(text, keep_blank_values=True).items()}


def _compression_hint(*candidates: str | None) -> tuple[str | None, str | None]:
    """(the first known hint, normalised; the first unknown one, for error messages)."""
    known = unknown = None
    for candidate in candidates:
        value = (candidate or "").strip().lower()
        if not value or value in ("none", "identity"):
            continue
        if value in COMPRESSIONS:
            known = known or COMPRESSIONS[value]
        else:
            unknown = unknown or value
    return known, unknown


def _unwrap(data: bytes, hint: str | None, limit: int, from_url: bool = False) -> tuple[bytes, list[str]]:
    """Peel gzip, lz64 and base64 layers off `data`; also the names of the layers peeled.

    A gzip hint without gzip bytes is no error by itself (a proxy may have unzipped the body):
    the JSON parser has the last word, and its error then says what the hint promised."""
    peeled: list[str] = []
    for _ in range(_MAX_LAYERS):
        if data.startswith(GZIP_MAGIC):
            data, hint = _gunzip(data, limit), None
            peeled.append("gzip")
        elif hint == "lz64":
            try:
                text = lz64.decompress(data.decode("ascii"), limit)
            except UnicodeDecodeError:
                raise BadPayload("compression is lz64 but the body is not lz-string's base64 text") from None
            except lz64.Lz64TooLarge as error:
                raise PayloadTooLarge(str(error)) from None
            except lz64.Lz64Error as error:
                raise BadPayload(f"compression is lz64 but the body is not lz-string data: {error}") from None
            data, hint = text.encode("utf-8"), None
            peeled.append("lz64")
        elif _is_base64(data, loose=from_url or hint in ("base64", "gzip")):
            try:
                decoded = _b64(data)
            except BadPayload:
                if hint == "base64":
                    raise
                break
            if hint is None and not (decoded.startswith(GZIP_MAGIC) or decoded.lstrip()[:1] in (b"{", b"[")):
                break  # base64-looking text that is not a wrapped payload: leave it to the JSON parser
            data, hint = decoded, (None if hint == "base64" else hint)
            peeled.append("base64")
        else:
            break
    if len(data) > limit:
        raise PayloadTooLarge(f"the decoded body is larger than {limit} bytes")
    return data, peeled


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
    form_hint, from_url = None, False
    if query.get("data"):
        from_url = True  # a GET's ?data= may use the URL-safe alphabet and drop the padding
        data = query["data"].encode("utf-8")
    elif form is not None or (body and _is_form(body, content_type)):
        fields = dict(form) if form is not None else _form_fields(body)
        if "data" not in fields:
            raise BadPayload("the form has no 'data' field")
        data, form_hint = fields["data"].encode("utf-8"), fields.get("compression")
    elif body:
        data = body
    else:
        raise BadPayload("the body is empty")
    hint, unknown = _compression_hint(query.get("compression"), form_hint, content_encoding)
    text, peeled = _unwrap(data, hint, max_bytes * 10, from_url)
    if not text.strip():
        raise BadPayload("the body is empty")
    if peeled:
        after = f"after {' and '.join(peeled)} decoding, "
    elif hint == "gzip":
        after = "compression is gzip but the body has no gzip header, and "
    elif hint == "base64":
        after = "compression is base64 but the body is not valid base64, and "
    elif unknown:
        after = f"compression '{unknown}' is not one PostHog's SDKs use (gzip, gzip-js, lz64, base64), and "
    else:
        after = "it is not gzip, lz64, base64 or form data, and "
    try:
        return json.loads(text)
    except UnicodeDecodeError:
        raise BadPayload(f"{after}the body is not UTF-8 JSON") from None
    except json.JSONDecodeError as error:
        raise BadPayload(f"{after}the body is not valid JSON ({error.msg} at position {error.pos})") from None


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
