"""Relative dates read as PostHog reads them."""

import datetime as dt

import pytest

from batchexports.exports.relative_dates import parse_relative_or_absolute

NOW = dt.datetime(2024, 3, 31, 12, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("-30M", NOW - dt.timedelta(minutes=30)),
        ("-24h", NOW - dt.timedelta(hours=24)),
        ("-7d", NOW - dt.timedelta(days=7)),
        ("-2w", NOW - dt.timedelta(weeks=2)),
        ("-1m", dt.datetime(2024, 2, 29, 12, 0, tzinfo=dt.UTC)),
        ("-1q", dt.datetime(2023, 12, 31, 12, 0, tzinfo=dt.UTC)),
        ("-1y", dt.datetime(2023, 3, 31, 12, 0, tzinfo=dt.UTC)),
        ("2024-01-02T03:04:05Z", dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)),
        ("2024-01-02", dt.datetime(2024, 1, 2, tzinfo=dt.UTC)),
    ],
)
def test_relative_and_absolute_dates(text, expected):
    assert parse_relative_or_absolute(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "-7x", "7d", ""])
def test_unreadable_dates_say_what_is_expected(text):
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_relative_or_absolute(text, now=NOW)
