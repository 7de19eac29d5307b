"""Specification of interval arithmetic (src/batchexports/exports/intervals.py): pure functions, no database.

Fixed intervals (5 and 15 minutes, hour) are aligned to the Unix epoch in UTC; day and week
intervals are calendar intervals in the export's timezone, so a day across a daylight-saving
change lasts 23 or 25 hours.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from batchexports.core.intervals import (
    INTERVALS,
    DataInterval,
    IntervalCalendar,
    nominal_length,
    split_offset,
)

BERLIN = ZoneInfo("Europe/Berlin")


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def spans(intervals: list[DataInterval]) -> list[tuple[datetime, datetime]]:
    return [(i.start, i.end) for i in intervals]


# Fixed intervals


@pytest.mark.parametrize(
    ("interval", "moment", "floor"),
    [
        ("every 5 minutes", utc(2024, 5, 1, 12, 7, 30), utc(2024, 5, 1, 12, 5)),
        ("every 5 minutes", utc(2024, 5, 1, 12, 5), utc(2024, 5, 1, 12, 5)),
        ("every 5 minutes", utc(2024, 5, 1, 12, 4, 59, 999999), utc(2024, 5, 1, 12, 0)),
        ("every 15 minutes", utc(2024, 5, 1, 12, 29, 59), utc(2024, 5, 1, 12, 15)),
        ("every 15 minutes", utc(2024, 5, 1, 12, 45), utc(2024, 5, 1, 12, 45)),
        ("every 15 minutes", utc(2024, 5, 1, 0, 14), utc(2024, 5, 1, 0, 0)),
        ("hour", utc(2024, 5, 1, 12, 59, 59, 999999), utc(2024, 5, 1, 12)),
        ("hour", utc(2024, 5, 1, 13), utc(2024, 5, 1, 13)),
        ("hour", utc(2024, 1, 1, 0, 0, 1), utc(2024, 1, 1, 0)),
    ],
)
def test_fixed_interval_floor(interval: str, moment: datetime, floor: datetime) -> None:
    assert IntervalCalendar(interval).floor(moment) == floor


def test_floor_of_a_moment_given_in_another_offset_is_the_same_instant() -> None:
    calendar = IntervalCalendar("hour")
    moment = datetime(2024, 5, 1, 14, 20, tzinfo=ZoneInfo("Europe/Berlin"))  # 12:20 UTC
    assert calendar.floor(moment) == utc(2024, 5, 1, 12)
    assert calendar.floor(moment).utcoffset() == timedelta(0)


def test_fixed_intervals_are_aligned_to_utc_even_in_a_half_hour_timezone() -> None:
    """Hourly intervals start on the UTC hour (the Unix epoch grid), whatever the timezone."""
    calendar = IntervalCalendar("hour", "Asia/Kolkata")  # UTC+05:30
    assert calendar.floor(utc(2024, 5, 1, 12, 40)) == utc(2024, 5, 1, 12)
    assert calendar.is_boundary(utc(2024, 5, 1, 12))
    assert not calendar.is_boundary(datetime(2024, 5, 1, 18, 0, tzinfo=ZoneInfo("Asia/Kolkata")))  # 12:30 UTC


@pytest.mark.parametrize(
    ("interval", "per_day"),
    [("every 5 minutes", 288), ("every 15 minutes", 96), ("hour", 24)],
)
def test_fixed_interval_counts_over_a_day(interval: str, per_day: int) -> None:
    calendar = IntervalCalendar(interval)
    start, end = utc(2024, 3, 31), utc(2024, 4, 1)
    found = list(calendar.intervals(start, end))
    assert calendar.count(start, end) == per_day == len(found)
    step = nominal_length(interval)
    assert found[0] == DataInterval(start, start + step)
    assert found[-1] == DataInterval(end - step, end)
    assert all(i.end - i.start == step for i in found)
    assert all(a.end == b.start for a, b in pairwise(found))


def test_fixed_intervals_ignore_daylight_saving_changes() -> None:
    """The March 2024 change in Berlin does not make an hour of a Berlin hourly export 0 or 2 hours."""
    calendar = IntervalCalendar("hour", "Europe/Berlin")
    found = list(calendar.intervals(utc(2024, 3, 31, 0), utc(2024, 3, 31, 3)))
    assert spans(found) == [
        (utc(2024, 3, 31, 0), utc(2024, 3, 31, 1)),
        (utc(2024, 3, 31, 1), utc(2024, 3, 31, 2)),
        (utc(2024, 3, 31, 2), utc(2024, 3, 31, 3)),
    ]


@pytest.mark.parametrize(
    ("interval", "start", "end", "count"),
    [
        ("every 5 minutes", utc(2024, 1, 1, 10), utc(2024, 1, 1, 11), 12),
        ("every 5 minutes", utc(2024, 1, 1, 10, 2), utc(2024, 1, 1, 10, 14), 2),  # [10:00,10:05) [10:05,10:10)
        ("every 15 minutes", utc(2024, 1, 1, 10), utc(2024, 1, 1, 11), 4),
        ("every 15 minutes", utc(2024, 1, 1, 10), utc(2024, 1, 1, 10, 14, 59), 0),
        ("hour", utc(2024, 1, 1), utc(2024, 1, 8), 168),
        ("hour", utc(2024, 1, 1, 5), utc(2024, 1, 1, 5), 0),
    ],
)
def test_fixed_interval_count(interval: str, start: datetime, end: datetime, count: int) -> None:
    assert IntervalCalendar(interval).count(start, end) == count


# Day intervals


def test_day_intervals_in_berlin_across_the_march_change_are_23_hours() -> None:
    calendar = IntervalCalendar("day", "Europe/Berlin")
    found = list(calendar.intervals(utc(2024, 3, 29, 23), utc(2024, 4, 1, 22)))
    assert spans(found) == [
        (utc(2024, 3, 29, 23), utc(2024, 3, 30, 23)),  # Mar 30, CET
        (utc(2024, 3, 30, 23), utc(2024, 3, 31, 22)),  # Mar 31: clocks go forward
        (utc(2024, 3, 31, 22), utc(2024, 4, 1, 22)),  # Apr 1, CEST
    ]
    assert [i.end - i.start for i in found] == [timedelta(hours=24), timedelta(hours=23), timedelta(hours=24)]
    # Every boundary is local midnight.
    assert {i.start.astimezone(BERLIN).time().isoformat() for i in found} == {"00:00:00"}


def test_day_intervals_in_berlin_across_the_october_change_are_25_hours() -> None:
    calendar = IntervalCalendar("day", "Europe/Berlin")
    found = list(calendar.intervals(utc(2024, 10, 26, 22), utc(2024, 10, 28, 23)))
    assert spans(found) == [
        (utc(2024, 10, 26, 22), utc(2024, 10, 27, 23)),  # Oct 27: clocks go back
        (utc(2024, 10, 27, 23), utc(2024, 10, 28, 23)),
    ]
    assert [i.end - i.start for i in found] == [timedelta(hours=25), timedelta(hours=24)]


def test_day_intervals_start_at_offset_hour_in_the_timezone() -> None:
    calendar = IntervalCalendar("day", "Europe/Berlin", offset_hour=3)
    # 2024-01-01 02:30 in Berlin is before that day's 03:00 boundary: the interval began the day before.
    assert calendar.floor(datetime(2024, 1, 1, 2, 30, tzinfo=BERLIN)) == utc(2023, 12, 31, 2)
    assert calendar.floor(datetime(2024, 1, 1, 3, 0, tzinfo=BERLIN)) == utc(2024, 1, 1, 2)
    assert calendar.floor(utc(2024, 7, 1, 12)) == utc(2024, 7, 1, 1)  # 03:00 CEST
    assert calendar.next_boundary(utc(2024, 1, 1, 2)) == utc(2024, 1, 2, 2)


def test_day_intervals_in_utc_and_a_year_of_them() -> None:
    calendar = IntervalCalendar("day")
    assert calendar.floor(utc(2024, 2, 29, 23, 59, 59)) == utc(2024, 2, 29)
    assert calendar.count(utc(2024, 1, 1), utc(2025, 1, 1)) == 366
    assert IntervalCalendar("day", "Europe/Berlin").count(utc(2023, 12, 31, 23), utc(2024, 12, 31, 23)) == 366


# Week intervals


@pytest.mark.parametrize(
    ("offset_day", "offset_hour", "moment", "floor"),
    [
        # 2024-01-03 is a Wednesday; 2023-12-31 a Sunday.
        (0, 0, utc(2024, 1, 3, 12), utc(2023, 12, 31)),
        (0, 0, utc(2023, 12, 31), utc(2023, 12, 31)),
        (0, 0, utc(2023, 12, 30, 23, 59), utc(2023, 12, 24)),
        (1, 9, utc(2024, 1, 1, 8, 59), utc(2023, 12, 25, 9)),  # Monday 08:59: last Monday's 09:00
        (1, 9, utc(2024, 1, 1, 9), utc(2024, 1, 1, 9)),
        (1, 9, utc(2024, 1, 7, 23), utc(2024, 1, 1, 9)),  # Sunday night: still the week from Monday
        (6, 0, utc(2024, 1, 5, 12), utc(2023, 12, 30)),  # Friday: the week began last Saturday
        (6, 0, utc(2024, 1, 6), utc(2024, 1, 6)),
    ],
)
def test_week_intervals_start_on_offset_day_at_offset_hour(
    offset_day: int, offset_hour: int, moment: datetime, floor: datetime
) -> None:
    calendar = IntervalCalendar("week", "UTC", offset_day, offset_hour)
    assert calendar.floor(moment) == floor
    assert calendar.next_boundary(floor) == floor + timedelta(weeks=1)


def test_week_intervals_in_a_timezone_across_daylight_saving() -> None:
    calendar = IntervalCalendar("week", "Europe/Berlin", offset_day=0, offset_hour=6)
    found = list(calendar.intervals(utc(2024, 3, 24, 5), utc(2024, 4, 7, 4)))
    assert spans(found) == [
        (utc(2024, 3, 24, 5), utc(2024, 3, 31, 4)),  # Sunday 06:00 CET -> Sunday 06:00 CEST
        (utc(2024, 3, 31, 4), utc(2024, 4, 7, 4)),
    ]
    assert [i.end - i.start for i in found] == [timedelta(hours=167), timedelta(hours=168)]
    assert all(i.start.astimezone(BERLIN).weekday() == 6 for i in found)  # Sunday


# intervals(start, end)


def test_intervals_yield_complete_intervals_only_from_the_one_containing_start() -> None:
    calendar = IntervalCalendar("hour")
    found = list(calendar.intervals(utc(2024, 1, 1, 10, 30), utc(2024, 1, 1, 13, 15)))
    assert spans(found) == [
        (utc(2024, 1, 1, 10), utc(2024, 1, 1, 11)),
        (utc(2024, 1, 1, 11), utc(2024, 1, 1, 12)),
        (utc(2024, 1, 1, 12), utc(2024, 1, 1, 13)),
    ]


def test_intervals_include_one_ending_exactly_at_end() -> None:
    calendar = IntervalCalendar("day")
    found = list(calendar.intervals(utc(2024, 1, 1), utc(2024, 1, 3)))
    assert spans(found) == [(utc(2024, 1, 1), utc(2024, 1, 2)), (utc(2024, 1, 2), utc(2024, 1, 3))]
    assert list(calendar.intervals(utc(2024, 1, 1), utc(2024, 1, 1, 23, 59))) == []


def test_intervals_results_are_in_utc() -> None:
    calendar = IntervalCalendar("day", "America/New_York")
    (only,) = calendar.intervals(
        datetime(2024, 6, 1, tzinfo=ZoneInfo("America/New_York")),
        datetime(2024, 6, 2, tzinfo=ZoneInfo("America/New_York")),
    )
    assert only == DataInterval(utc(2024, 6, 1, 4), utc(2024, 6, 2, 4))
    assert only.start.utcoffset() == only.end.utcoffset() == timedelta(0)


# is_boundary


@pytest.mark.parametrize(
    ("calendar", "moment", "expected"),
    [
        (IntervalCalendar("every 5 minutes"), utc(2024, 1, 1, 10, 55), True),
        (IntervalCalendar("every 5 minutes"), utc(2024, 1, 1, 10, 56), False),
        (IntervalCalendar("every 15 minutes"), utc(2024, 1, 1, 10, 45), True),
        (IntervalCalendar("every 15 minutes"), utc(2024, 1, 1, 10, 50), False),
        (IntervalCalendar("hour"), utc(2024, 1, 1, 10), True),
        (IntervalCalendar("hour"), utc(2024, 1, 1, 10, 0, 0, 1), False),
        (IntervalCalendar("day"), utc(2024, 1, 1), True),
        (IntervalCalendar("day"), utc(2024, 1, 1, 5), False),
        (IntervalCalendar("day", "Europe/Berlin", offset_hour=3), utc(2024, 1, 1, 2), True),
        (IntervalCalendar("day", "Europe/Berlin", offset_hour=3), datetime(2024, 1, 1, 3, tzinfo=BERLIN), True),
        (IntervalCalendar("day", "Europe/Berlin", offset_hour=3), utc(2024, 1, 1, 3), False),
        (IntervalCalendar("day", "Europe/Berlin", offset_hour=3), utc(2024, 7, 1, 1), True),  # CEST
        (IntervalCalendar("week", "UTC", 0, 0), utc(2023, 12, 31), True),  # Sunday
        (IntervalCalendar("week", "UTC", 0, 0), utc(2024, 1, 1), False),  # Monday
        (IntervalCalendar("week", "UTC", 1, 0), utc(2024, 1, 1), True),
    ],
)
def test_is_boundary(calendar: IntervalCalendar, moment: datetime, expected: bool) -> None:
    assert calendar.is_boundary(moment) is expected


# split_offset, nominal_length, unknown intervals


@pytest.mark.parametrize(
    ("stored", "expected"),
    [
        (None, (None, None)),
        (0, (0, 0)),
        (7200, (0, 2)),
        (23 * 3600, (0, 23)),
        (86400, (1, 0)),
        (3 * 86400 + 5 * 3600, (3, 5)),
        (6 * 86400 + 23 * 3600, (6, 23)),
    ],
)
def test_split_offset(stored: int | None, expected: tuple[int | None, int | None]) -> None:
    assert split_offset(stored) == expected


def test_nominal_lengths() -> None:
    assert {i: nominal_length(i) for i in INTERVALS} == {
        "hour": timedelta(hours=1),
        "day": timedelta(days=1),
        "week": timedelta(weeks=1),
        "every 5 minutes": timedelta(minutes=5),
        "every 15 minutes": timedelta(minutes=15),
    }


def test_unknown_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="month"):
        IntervalCalendar("month")
    with pytest.raises(ValueError, match="month"):
        nominal_length("month")
