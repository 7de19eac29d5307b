"""Turning what PostHog's SDKs send into events the store can hold.

Same rules as PostHog's capture: `distinct_id` at the top level or in properties, top-level
`$set`/`$set_once` folded into properties, `$elements` turned into an elements chain, the
event time corrected for the client's clock skew (`timestamp` vs `sent_at`, or `offset`),
and a UUID generated when the client sent none.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_DISTINCT_ID_LENGTH = 200
MAX_EVENT_NAME_LENGTH = 200


class InvalidEvent(ValueError):
    """An event that cannot be stored; the message says which event and why."""


@dataclass(slots=True)
class CapturedEvent:
    uuid: str
    event: str
    properties: dict[str, Any]
    timestamp: dt.datetime
    distinct_id: str
    elements_chain: str | None
    session_id: str | None


def parse_time(value: Any, what: str) -> dt.datetime:
    if isinstance(value, int | float) and not isinstance(value, bool):
        # Epoch milliseconds, as some SDKs send.
        return dt.datetime.fromtimestamp(value / 1000, tz=dt.UTC)
    if not isinstance(value, str) or not value:
        raise InvalidEvent(f"{what} must be an ISO 8601 datetime string")
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidEvent(f"{what} '{value[:40]}' is not an ISO 8601 datetime") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC)


def _event_time(raw: Mapping[str, Any], sent_at: Any, now: dt.datetime, trust_timestamp: bool) -> dt.datetime:
    timestamp = raw.get("timestamp")
    if timestamp is not None:
        moment = parse_time(timestamp, "timestamp")
        client_sent = raw.get("sent_at") or sent_at
        if client_sent and not trust_timestamp:
            # The client's clock may be off: keep the event's distance from when it was sent.
            return now + (moment - parse_time(client_sent, "sent_at"))
        return moment
    offset = raw.get("offset")
    if isinstance(offset, int | float) and not isinstance(offset, bool):
        return now - dt.timedelta(milliseconds=offset)
    return now


def _escape(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"')


def elements_chain_from(elements: list[Any]) -> str:
    """PostHog's elements chain: `tag.class1.class2:attr__x="1"nth-child="2"…` joined by `;`."""
    parts = []
    for element in elements:
        if not isinstance(element, Mapping):
            continue
        head = str(element.get("tag_name") or "")
        classes = element.get("attr__class") or element.get("classes") or []
        if isinstance(classes, str):
            classes = classes.split()
        if classes:
            head += "." + ".".join(sorted(str(c) for c in classes))
        attrs = []
        if element.get("$el_text") or element.get("text"):
            attrs.append(f'text="{_escape(element.get("$el_text") or element.get("text"))}"')
        for key in ("href", "attr_id"):
            if element.get(key):
                attrs.append(f'{key}="{_escape(element[key])}"')
        for key in ("nth_child", "nth_of_type"):
            if element.get(key) is not None:
                attrs.append(f'{key.replace("_", "-")}="{_escape(element[key])}"')
        for key, value in element.items():
            if key.startswith("attr__") and key != "attr__class":
                attrs.append(f'{key}="{_escape(value)}"')
        parts.append(head + (":" + "".join(attrs) if attrs else ""))
    return ";".join(parts)


def normalize_event(
    raw: Any, *, now: dt.datetime, sent_at: Any = None, historical: bool = False, position: int = 0
) -> CapturedEvent:
    """One capture payload event -> a `CapturedEvent`; `InvalidEvent` names what is wrong."""
    where = f"event {position}"
    if not isinstance(raw, Mapping):
        raise InvalidEvent(f"{where} is not a JSON object")
    name = raw.get("event")
    if not isinstance(name, str) or not name:
        raise InvalidEvent(f"{where} has no 'event' name")
    if len(name) > MAX_EVENT_NAME_LENGTH:
        raise InvalidEvent(f"{where}: the event name is longer than {MAX_EVENT_NAME_LENGTH} characters")
    properties = raw.get("properties") or {}
    if not isinstance(properties, Mapping):
        raise InvalidEvent(f"{where}: 'properties' must be a JSON object")
    properties = dict(properties)
    for key in ("$set", "$set_once", "$unset"):
        if key in raw and key not in properties:
            properties[key] = raw[key]
    distinct_id = raw.get("distinct_id", properties.get("distinct_id", raw.get("$distinct_id")))
    if distinct_id is None or isinstance(distinct_id, bool | dict | list) or str(distinct_id).strip() == "":
        raise InvalidEvent(f"{where} ('{name}') has no distinct_id")
    distinct_id = str(distinct_id)
    if len(distinct_id) > MAX_DISTINCT_ID_LENGTH:
        raise InvalidEvent(f"{where}: distinct_id is longer than {MAX_DISTINCT_ID_LENGTH} characters")
    event_uuid = raw.get("uuid") or properties.get("$uuid")
    if event_uuid is None:
        event_uuid = str(uuid.uuid7()) if hasattr(uuid, "uuid7") else str(uuid.uuid4())
    else:
        try:
            event_uuid = str(uuid.UUID(str(event_uuid)))
        except ValueError:
            raise InvalidEvent(f"{where}: uuid '{str(event_uuid)[:40]}' is not a UUID") from None
    elements_chain = properties.pop("$elements_chain", None)
    elements = properties.pop("$elements", None)
    if not elements_chain and isinstance(elements, list):
        elements_chain = elements_chain_from(elements)
    session_id = properties.get("$session_id")
    try:
        timestamp = _event_time(raw, sent_at, now, trust_timestamp=historical)
    except InvalidEvent as error:
        raise InvalidEvent(f"{where}: {error}") from None
    properties.pop("token", None)
    properties.pop("distinct_id", None)
    return CapturedEvent(
        uuid=event_uuid,
        event=name,
        properties=properties,
        timestamp=timestamp,
        distinct_id=distinct_id,
        elements_chain=str(elements_chain) if elements_chain else None,
        session_id=str(session_id) if session_id not in (None, "") else None,
    )
