"""Dates in query parameters: ISO 8601, or PostHog's relative form (`-7d`, `-24h`, `-30m`, `-2w`)."""

from __future__ import annotations

import datetime as dt
import re

from django.utils import timezone

_RELATIVE = re.compile(r"^-(\d+)([mhdwy])$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_relative_or_absolute(value: str, now: dt.datetime | None = None) -> dt.datetime:
    now = now or timezone.now()
    text = value.strip()
    match = _RELATIVE.match(text)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        if unit == "y":
            return now - dt.timedelta(days=365 * amount)
        return now - dt.timedelta(**{_UNITS[unit]: amount})
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{value}' is neither an ISO 8601 date/datetime nor a relative date such as '-7d'.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed
