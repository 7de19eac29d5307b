"""Batch export intervals: their lengths and the data intervals they cut time into.

Hourly and sub-hourly intervals are fixed lengths aligned to the Unix epoch (UTC). Daily
and weekly intervals are calendar intervals in the export's timezone, starting at
`offset_hour` (and, for weeks, on `offset_day`, 0 = Sunday), so that a day across a
daylight-saving change is 23 or 25 hours long, as a person in that timezone expects.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

FIXED_INTERVALS: dict[str, timedelta] = {
    "every 5 minutes": timedelta(minutes=5),
    "every 15 minutes": timedelta(minutes=15),
    "hour": timedelta(hours=1),
}
CALENDAR_INTERVALS = ("day", "week")
INTERVALS = ("hour", "day", "week", "every 5 minutes", "every 15 minutes")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class DataInterval:
    start: datetime
    end: datetime


def nominal_length(interval: str) -> timedelta:
    """The usual length of an interval (a day is 24 h here even across DST changes)."""
    if interval in FIXED_INTERVALS:
        return FIXED_INTERVALS[interval]
    if interval == "day":
        return timedelta(days=1)
    if interval == "week":
        return timedelta(weeks=1)
    raise ValueError(f"Unknown interval '{interval}'")


def split_offset(interval_offset: int | None) -> tuple[int | None, int | None]:
    """Stored offset in seconds -> (offset_day, offset_hour)."""
    if interval_offset is None:
        return None, None
    return interval_offset // 86400, (interval_offset % 86400) // 3600


class IntervalCalendar:
    """The boundaries of one export's data intervals."""

    def __init__(self, interval: str, timezone: str = "UTC", offset_day: int = 0, offset_hour: int = 0):
        if interval not in INTERVALS:
            raise ValueError(f"Unknown interval '{interval}'")
        self.interval = interval
        self.tz = ZoneInfo(timezone or "UTC")
        self.offset_day = offset_day or 0
        self.offset_hour = offset_hour or 0

    def _local_boundary(self, day: date) -> datetime:
        return datetime.combine(day, time(self.offset_hour), tzinfo=self.tz).astimezone(UTC)

    def floor(self, moment: datetime) -> datetime:
        """The latest boundary at or before `moment`."""
        moment = moment.astimezone(UTC)
        if self.interval in FIXED_INTERVALS:
            step = FIXED_INTERVALS[self.interval]
            return EPOCH + ((moment - EPOCH) // step) * step
        local_day = moment.astimezone(self.tz).date()
        if self.interval == "week":
            # Python's weekday(): Monday=0; ours: Sunday=0.
            since_week_start = (local_day.weekday() + 1 - self.offset_day) % 7
            local_day -= timedelta(days=since_week_start)
        boundary = self._local_boundary(local_day)
        if boundary > moment:
            boundary = self._local_boundary(local_day - timedelta(days=7 if self.interval == "week" else 1))
        return boundary

    def next_boundary(self, boundary: datetime) -> datetime:
        if self.interval in FIXED_INTERVALS:
            return boundary + FIXED_INTERVALS[self.interval]
        local_day = boundary.astimezone(self.tz).date()
        return self._local_boundary(local_day + timedelta(days=7 if self.interval == "week" else 1))

    def is_boundary(self, moment: datetime) -> bool:
        return self.floor(moment) == moment.astimezone(UTC)

    def intervals(self, start: datetime, end: datetime) -> Iterator[DataInterval]:
        """The complete data intervals from the one containing `start` up to `end`."""
        current = self.floor(start)
        while True:
            following = self.next_boundary(current)
            if following > end.astimezone(UTC):
                return
            yield DataInterval(current, following)
            current = following

    def count(self, start: datetime, end: datetime) -> int:
        return sum(1 for _ in self.intervals(start, end))


MIN_RUN_TIMEOUT = timedelta(minutes=30)
MAX_RUN_TIMEOUT = timedelta(hours=24)


def run_timeout(interval: str) -> timedelta:
    """How long one attempt of a run may take: twice the interval, within [30 min, 24 h] (a day's
    export may legitimately take hours). Also the age past which a run's leftovers are nobody's."""
    return min(max(2 * nominal_length(interval), MIN_RUN_TIMEOUT), MAX_RUN_TIMEOUT)
