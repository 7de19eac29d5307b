"""Dates in query parameters: ISO 8601, or PostHog's relative form.

Units as PostHog reads them: `M` minutes, `h` hours, `d` days, `w` weeks, `m` months,
`q` quarters, `y` years (`-7d`, `-24h`, `-30M`, `-3m`). Calendar units keep the day of the
month where it exists (31 March minus one month is 29 or 28 February).
"""

from __future__ import annotations

import calendar
import datetime as dt
import re

from django.utils import timezone

_RELATIVE = re.compile(r"^-(\d+)([MhdwmqyH])$")
_FIXED = {"M": "minutes", "h": "hours", "H": "hours", "d": "days", "w": "weeks"}
_MONTHS = {"m": 1, "q": 3, "y": 12}


def months_before(moment: dt.datetime, months: int) -> dt.datetime:
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def parse_relative_or_absolute(value: str, now: dt.datetime | None = None, tz: dt.tzinfo = dt.UTC) -> dt.datetime:
    """`value` as an aware datetime; a date or datetime without an offset is read in `tz` (the
    project's timezone, as PostHog reads it)."""
    now = now or timezone.now()
    text = value.strip()
    match = _RELATIVE.match(text)
    if match:
        amount, unit = int(match.group(1)), match.group(2)
        if unit in _MONTHS:
            return months_before(now, amount * _MONTHS[unit])
        return now - dt.timedelta(**{_FIXED[unit]: amount})
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"'{value}' is neither an ISO 8601 date/datetime nor a relative date such as '-7d'.") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    return parsed
