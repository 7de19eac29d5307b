"""Specification of backfills: `…/batch_exports/:id/backfills/` under the three prefixes, and the
deprecated `…/batch_exports/:id/backfill/`.

Creating one checks its range against the export's interval (datetimes with an offset for
fixed intervals, dates or boundary datetimes for days and weeks), records it with the number of
intervals it covers and hands it to the engine; its progress is counted from its runs, null
where PostHog's is null. `end_at` may be one interval ahead, as PostHog accepts it; a project may
have BATCHEXPORTS_MAX_CONCURRENT_BACKFILLS active backfills, one more is PostHog's 429.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from typing import Any

import pytest
from django.utils import timezone

from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportRun
from batchexports.exports.recording_engine import EngineCall, RecordingEngine
from tests.conftest import export_payload, walk

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def create_export(api: Any, prefix: str, **overrides: Any) -> BatchExport:
    response = api.post(prefix, export_payload(**overrides), format="json")
    assert response.status_code == 201, response.json()
    return BatchExport.objects.get(id=response.json()["id"])


def iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if moment else None


@pytest.fixture
def export(api: Any, prefix: str, engine: RecordingEngine) -> BatchExport:
    batch_export = create_export(api, prefix)
    engine.clear()
    return batch_export


@pytest.fixture
def backfills_url(prefix: str, export: BatchExport) -> str:
    return f"{prefix}{export.id}/backfills/"


def post_backfill(api: Any, url: str, start_at: Any, end_at: Any) -> Any:
    return api.post(url, {"start_at": start_at, "end_at": end_at}, format="json")


def created(response: Any) -> BatchExportBackfill:
    assert response.status_code == 201, response.json()
    assert set(response.json()) == {"backfill_id"}
    return BatchExportBackfill.objects.get(id=response.json()["backfill_id"])


def assert_400(response: Any, attr: str, *fragments: str) -> None:
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["type"] == "validation_error"
    assert body["attr"] == attr
    for fragment in fragments:
        assert fragment in body["detail"], body["detail"]


# Create


def test_create_backfill(api: Any, backfills_url: str, export: BatchExport, engine: RecordingEngine) -> None:
    backfill = created(post_backfill(api, backfills_url, "2024-01-01T00:00:00Z", "2024-01-01T05:00:00Z"))
    assert backfill.batch_export_id == export.id
    assert backfill.team_id == export.team_id
    assert backfill.start_at == T0
    assert backfill.end_at == T0 + dt.timedelta(hours=5)
    assert backfill.status == "Starting"
    assert backfill.total_runs == 5
    assert backfill.finished_at is None
    assert engine.calls == [
        EngineCall(
            "start_backfill",
            str(backfill.id),
            {"batch_export_id": str(export.id), "start_at": T0, "end_at": T0 + dt.timedelta(hours=5)},
        )
    ]
    detail = api.get(f"{backfills_url}{backfill.id}/")
    assert detail.status_code == 200
    body = detail.json()
    assert {k: body[k] for k in ("id", "start_at", "end_at", "status", "finished_at", "team", "batch_export")} == {
        "id": str(backfill.id),
        "start_at": "2024-01-01T00:00:00Z",
        "end_at": "2024-01-01T05:00:00Z",
        "status": "Starting",
        "finished_at": None,
        "team": export.team_id,
        "batch_export": str(export.id),
    }
    assert body["progress"] == {"total_runs": 5, "finished_runs": 0, "progress": 0.0}
    # Set by the engine when it starts the backfill (see the engine tests).
    assert (body["total_records_count"], body["adjusted_start_at"]) == (None, None)


def test_backfill_shows_its_record_count_and_adjusted_start(api: Any, backfills_url: str, export: BatchExport) -> None:
    backfill = created(post_backfill(api, backfills_url, "2023-12-01T00:00:00Z", "2024-01-01T05:00:00Z"))
    BatchExportBackfill.objects.filter(id=backfill.id).update(
        status="Running", total_records_count=12345, adjusted_start_at=T0, total_runs=5
    )
    body = api.get(f"{backfills_url}{backfill.id}/").json()
    assert (body["total_records_count"], body["adjusted_start_at"]) == (12345, "2024-01-01T00:00:00Z")
    assert body["start_at"] == "2023-12-01T00:00:00Z"
    assert api.get(backfills_url).json()["results"] == [body]


def test_create_backfill_with_an_offset_stores_utc(api: Any, backfills_url: str) -> None:
    backfill = created(post_backfill(api, backfills_url, "2024-01-01T02:00:00+02:00", "2024-01-01T03:00:00+01:00"))
    assert (backfill.start_at, backfill.end_at, backfill.total_runs) == (T0, T0 + dt.timedelta(hours=2), 2)


def test_deprecated_backfill_route_creates_the_same_backfill(
    api: Any, prefix: str, export: BatchExport, engine: RecordingEngine
) -> None:
    response = api.post(
        f"{prefix}{export.id}/backfill/",
        {"start_at": "2024-01-01T00:00:00Z", "end_at": "2024-01-01T03:00:00Z"},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert set(response.json()) == {"backfill_id"}
    backfill = BatchExportBackfill.objects.get(id=response.json()["backfill_id"])
    assert (backfill.batch_export_id, backfill.start_at, backfill.end_at) == (
        export.id,
        T0,
        T0 + dt.timedelta(hours=3),
    )
    assert (backfill.status, backfill.total_runs) == ("Starting", 3)
    assert [(c.name, c.target_id) for c in engine.calls] == [("start_backfill", str(backfill.id))]
    # It is listed with the others.
    listed = api.get(f"{prefix}{export.id}/backfills/").json()["results"]
    assert [b["id"] for b in listed] == [str(backfill.id)]


def test_deprecated_backfill_route_applies_the_same_rules(
    api: Any, prefix: str, export: BatchExport, engine: RecordingEngine
) -> None:
    response = api.post(
        f"{prefix}{export.id}/backfill/", {"start_at": "2024-01-01", "end_at": "2024-01-02"}, format="json"
    )
    assert_400(response, "start_at")
    assert engine.calls == []


def test_create_backfill_needs_write_scope(
    client: Any, make_key: Any, backfills_url: str, engine: RecordingEngine
) -> None:
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key(['batch_export:read'])}")
    assert client.get(backfills_url).status_code == 200
    response = post_backfill(client, backfills_url, "2024-01-01T00:00:00Z", "2024-01-01T05:00:00Z")
    assert response.status_code == 403
    assert "batch_export:write" in response.json()["detail"]
    assert not BatchExportBackfill.objects.exists()
    assert engine.calls == []


def test_create_backfill_for_an_unknown_export_is_404(api: Any, prefix: str, engine: RecordingEngine) -> None:
    response = post_backfill(api, f"{prefix}{uuid.uuid4()}/backfills/", "2024-01-01T00:00:00Z", "2024-01-01T05:00:00Z")
    assert response.status_code == 404
    assert engine.calls == []


# Date rules


def test_hourly_export_refuses_a_naive_datetime(api: Any, backfills_url: str, engine: RecordingEngine) -> None:
    response = post_backfill(api, backfills_url, "2024-01-01T00:00:00", "2024-01-01T05:00:00Z")
    assert_400(response, "start_at", "2024-01-01T00:00:00", "timezone")
    response = post_backfill(api, backfills_url, "2024-01-01T00:00:00Z", "2024-01-01T05:00:00")
    assert_400(response, "end_at", "timezone")
    assert not BatchExportBackfill.objects.exists()
    assert engine.calls == []


def test_hourly_export_refuses_a_date(api: Any, backfills_url: str) -> None:
    response = post_backfill(api, backfills_url, "2024-01-01", "2024-01-02T00:00:00Z")
    assert_400(response, "start_at", "datetime", "hour")
    response = post_backfill(api, backfills_url, "2024-01-01T00:00:00Z", "2024-01-02")
    assert_400(response, "end_at", "datetime")


@pytest.mark.parametrize("value", ["yesterday", "2024-13-01T00:00:00Z", 20240101, ["2024-01-01"]])
def test_unparseable_bounds_are_refused(api: Any, backfills_url: str, value: Any) -> None:
    assert_400(post_backfill(api, backfills_url, value, "2024-01-02T00:00:00Z"), "start_at", "start_at")


def test_daily_export_accepts_dates(api: Any, prefix: str, engine: RecordingEngine) -> None:
    export = create_export(api, prefix, interval="day")
    engine.clear()
    backfill = created(post_backfill(api, f"{prefix}{export.id}/backfills/", "2024-01-01", "2024-01-05"))
    assert (backfill.start_at, backfill.end_at) == (T0, T0 + dt.timedelta(days=4))
    assert backfill.total_runs == 4
    assert [(c.name, c.details["start_at"], c.details["end_at"]) for c in engine.calls] == [
        ("start_backfill", T0, T0 + dt.timedelta(days=4))
    ]


def test_daily_export_accepts_a_datetime_on_the_boundary(api: Any, prefix: str) -> None:
    export = create_export(api, prefix, interval="day")
    backfill = created(
        post_backfill(api, f"{prefix}{export.id}/backfills/", "2024-01-01T00:00:00Z", "2024-01-03T00:00:00+00:00")
    )
    assert (backfill.start_at, backfill.end_at, backfill.total_runs) == (T0, T0 + dt.timedelta(days=2), 2)


def test_daily_export_refuses_a_datetime_off_the_boundary(api: Any, prefix: str, engine: RecordingEngine) -> None:
    export = create_export(api, prefix, interval="day")
    engine.clear()
    url = f"{prefix}{export.id}/backfills/"
    assert_400(post_backfill(api, url, "2024-01-01T05:00:00Z", "2024-01-05"), "start_at", "boundary", "00:00")
    assert_400(post_backfill(api, url, "2024-01-01", "2024-01-05T05:00:00Z"), "end_at", "boundary")
    assert not BatchExportBackfill.objects.exists()
    assert engine.calls == []


def test_daily_export_with_offset_hour_in_a_timezone(api: Any, prefix: str) -> None:
    export = create_export(api, prefix, interval="day", timezone="Europe/Berlin", offset_hour=3)
    url = f"{prefix}{export.id}/backfills/"
    # A date means the boundary that starts that day: 2024-01-01T03:00+01:00.
    backfill = created(post_backfill(api, url, "2024-01-01", "2024-01-03"))
    start = dt.datetime(2024, 1, 1, 3, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    assert backfill.start_at == start
    assert backfill.end_at == start + dt.timedelta(days=2)
    assert backfill.total_runs == 2
    body = api.get(f"{url}{backfill.id}/").json()
    assert (body["start_at"], body["end_at"]) == ("2024-01-01T02:00:00Z", "2024-01-03T02:00:00Z")
    # The same boundary given as a datetime is accepted; midnight is not a boundary of this export.
    same = created(post_backfill(api, url, "2024-01-01T03:00:00+01:00", "2024-01-03T02:00:00Z"))
    assert (same.start_at, same.end_at) == (backfill.start_at, backfill.end_at)
    assert_400(post_backfill(api, url, "2024-01-01T00:00:00+01:00", "2024-01-03"), "start_at", "03:00")


def test_daily_export_dates_across_daylight_saving(api: Any, prefix: str) -> None:
    export = create_export(api, prefix, interval="day", timezone="Europe/Berlin")
    backfill = created(post_backfill(api, f"{prefix}{export.id}/backfills/", "2024-03-30", "2024-04-01"))
    assert backfill.start_at == dt.datetime(2024, 3, 29, 23, tzinfo=dt.UTC)  # midnight CET
    assert backfill.end_at == dt.datetime(2024, 3, 31, 22, tzinfo=dt.UTC)  # midnight CEST
    assert backfill.total_runs == 2


def test_weekly_export_dates_must_fall_on_its_offset_day(api: Any, prefix: str) -> None:
    """2024-01-07 is a Sunday; a weekly export with offset_day 0 starts its weeks on Sundays."""
    export = create_export(api, prefix, interval="week", offset_day=0, offset_hour=0)
    url = f"{prefix}{export.id}/backfills/"
    backfill = created(post_backfill(api, url, "2024-01-07", "2024-01-21"))
    assert (backfill.start_at, backfill.total_runs) == (dt.datetime(2024, 1, 7, tzinfo=dt.UTC), 2)
    # A Wednesday is not the start of one of its weeks.
    assert_400(post_backfill(api, url, "2024-01-10", "2024-01-21"), "start_at", "Wednesday", "Sunday")
    assert_400(post_backfill(api, url, "2024-01-07", "2024-01-24"), "end_at", "Sunday")
    assert_400(post_backfill(api, url, "2024-01-08T00:00:00Z", "2024-01-21"), "start_at", "Sunday")


@pytest.mark.parametrize(
    ("start_at", "end_at"),
    [("2024-01-02T00:00:00Z", "2024-01-01T00:00:00Z"), ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z")],
)
def test_start_must_be_before_end(
    api: Any, backfills_url: str, engine: RecordingEngine, start_at: str, end_at: str
) -> None:
    assert_400(post_backfill(api, backfills_url, start_at, end_at), "start_at", "before")
    assert not BatchExportBackfill.objects.exists()
    assert engine.calls == []


def test_end_more_than_one_interval_ahead_is_refused(api: Any, backfills_url: str, engine: RecordingEngine) -> None:
    future = timezone.now().replace(minute=0, second=0, microsecond=0) + dt.timedelta(hours=2)
    assert_400(
        post_backfill(api, backfills_url, "2024-01-01T00:00:00Z", iso(future)), "end_at", "too far into the future"
    )
    assert not BatchExportBackfill.objects.exists()
    assert engine.calls == []


def test_end_up_to_one_interval_ahead_is_accepted(api: Any, backfills_url: str, engine: RecordingEngine) -> None:
    """As PostHog accepts it: the interval in progress may be included (the engine waits for its end)."""
    this_hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    backfill = created(post_backfill(api, backfills_url, iso(this_hour - dt.timedelta(hours=2)), iso(this_hour + HOUR)))
    assert (backfill.end_at, backfill.total_runs) == (this_hour + HOUR, 3)
    assert [call.name for call in engine.calls] == ["start_backfill"]


def test_daily_export_end_may_be_tomorrow_not_the_day_after(api: Any, prefix: str, engine: RecordingEngine) -> None:
    export = create_export(api, prefix, interval="day")
    url = f"{prefix}{export.id}/backfills/"
    today = timezone.now().astimezone(dt.UTC).date()
    tomorrow, after = today + dt.timedelta(days=1), today + dt.timedelta(days=2)
    backfill = created(post_backfill(api, url, str(today - dt.timedelta(days=1)), str(tomorrow)))
    assert backfill.total_runs == 2
    assert_400(post_backfill(api, url, str(today), str(after)), "end_at", "too far into the future", "'day'")


def test_start_at_null_is_allowed(api: Any, backfills_url: str, export: BatchExport, engine: RecordingEngine) -> None:
    backfill = created(post_backfill(api, backfills_url, None, "2024-01-02T00:00:00Z"))
    assert (backfill.start_at, backfill.end_at) == (None, T0 + dt.timedelta(days=1))
    assert backfill.total_runs is None
    assert engine.calls == [
        EngineCall(
            "start_backfill",
            str(backfill.id),
            {"batch_export_id": str(export.id), "start_at": None, "end_at": T0 + dt.timedelta(days=1)},
        )
    ]
    body = api.get(f"{backfills_url}{backfill.id}/").json()
    assert (body["start_at"], body["end_at"], body["progress"]) == (None, "2024-01-02T00:00:00Z", None)


# Listing


@pytest.fixture
def many_backfills(export: BatchExport) -> list[BatchExportBackfill]:
    """60 backfills; created_at ascending with the index, start_at in another order."""
    count = 60
    rows = BatchExportBackfill.objects.bulk_create(
        [
            BatchExportBackfill(
                team_id=export.team_id,
                batch_export=export,
                start_at=T0 + dt.timedelta(days=(i * 7) % count),
                end_at=T0 + dt.timedelta(days=(i * 7) % count + 1),
                status="Completed",
                total_runs=24,
            )
            for i in range(count)
        ]
    )
    for i, row in enumerate(rows):
        row.created_at = T0 + dt.timedelta(minutes=i)
    BatchExportBackfill.objects.bulk_update(rows, ["created_at"])
    return rows


def test_backfills_are_cursor_paginated_50_a_page_newest_first(
    api: Any, backfills_url: str, many_backfills: list[BatchExportBackfill]
) -> None:
    pages = walk(api, backfills_url)
    assert [len(page) for page in pages] == [50, 10]
    ids = [b["id"] for page in pages for b in page]
    assert ids == [str(b.id) for b in sorted(many_backfills, key=lambda b: b.created_at, reverse=True)]
    assert len(set(ids)) == 60
    assert walk(api, backfills_url, {"ordering": "-created_at"}) == pages
    first = pages[0][0]
    assert first["progress"] == {"total_runs": 24, "finished_runs": 24, "progress": 1.0}
    assert first["status"] == "Completed"


@pytest.mark.parametrize("ordering", ["start_at", "-start_at", "created_at"])
def test_backfills_ordering(
    api: Any, backfills_url: str, many_backfills: list[BatchExportBackfill], ordering: str
) -> None:
    pages = walk(api, backfills_url, {"ordering": ordering})
    assert [len(page) for page in pages] == [50, 10]
    field = ordering.lstrip("-")
    expected = sorted(many_backfills, key=lambda b: getattr(b, field), reverse=ordering.startswith("-"))
    assert [b["id"] for page in pages for b in page] == [str(b.id) for b in expected]


def test_backfills_list_shows_only_this_exports_backfills(
    api: Any, prefix: str, backfills_url: str, export: BatchExport
) -> None:
    other = create_export(api, prefix, name="Other")
    mine = created(post_backfill(api, backfills_url, "2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"))
    created(post_backfill(api, f"{prefix}{other.id}/backfills/", "2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"))
    assert [b["id"] for b in api.get(backfills_url).json()["results"]] == [str(mine.id)]


# Retrieve and progress


@pytest.fixture
def four_hour_backfill(api: Any, backfills_url: str) -> BatchExportBackfill:
    backfill = created(post_backfill(api, backfills_url, "2024-01-01T00:00:00Z", "2024-01-01T04:00:00Z"))
    assert backfill.total_runs == 4
    return backfill


def add_run(backfill: BatchExportBackfill, hour: int, status: str) -> BatchExportRun:
    return BatchExportRun.objects.create(
        batch_export=backfill.batch_export,
        backfill=backfill,
        status=status,
        data_interval_start=T0 + dt.timedelta(hours=hour),
        data_interval_end=T0 + dt.timedelta(hours=hour + 1),
    )


def test_progress_counts_finished_runs(api: Any, backfills_url: str, four_hour_backfill: BatchExportBackfill) -> None:
    url = f"{backfills_url}{four_hour_backfill.id}/"
    assert api.get(url).json()["progress"] == {"total_runs": 4, "finished_runs": 0, "progress": 0.0}
    add_run(four_hour_backfill, 0, "Completed")
    add_run(four_hour_backfill, 1, "Failed")
    add_run(four_hour_backfill, 2, "Running")
    assert api.get(url).json()["progress"] == {"total_runs": 4, "finished_runs": 2, "progress": 0.5}
    # A run of the same export outside the backfill does not count.
    BatchExportRun.objects.create(
        batch_export=four_hour_backfill.batch_export,
        status="Completed",
        data_interval_start=T0 + dt.timedelta(hours=3),
        data_interval_end=T0 + dt.timedelta(hours=4),
    )
    assert api.get(url).json()["progress"]["finished_runs"] == 2
    # A retried interval (Failed, then Completed) is one finished interval, not two.
    add_run(four_hour_backfill, 1, "Completed")
    assert api.get(url).json()["progress"] == {"total_runs": 4, "finished_runs": 2, "progress": 0.5}
    add_run(four_hour_backfill, 3, "Completed")
    assert api.get(url).json()["progress"] == {"total_runs": 4, "finished_runs": 3, "progress": 0.75}


@pytest.mark.parametrize("status", ["Failed", "Cancelled", "Terminated", "TimedOut"])
def test_progress_is_null_for_a_backfill_that_ended_otherwise_than_completed(
    api: Any, backfills_url: str, four_hour_backfill: BatchExportBackfill, status: str
) -> None:
    add_run(four_hour_backfill, 0, "Completed")
    BatchExportBackfill.objects.filter(id=four_hour_backfill.id).update(status=status)
    assert api.get(f"{backfills_url}{four_hour_backfill.id}/").json()["progress"] is None


def test_progress_of_a_backfill_from_the_beginning_of_time_waits_for_its_adjusted_start(
    api: Any, backfills_url: str
) -> None:
    backfill = created(post_backfill(api, backfills_url, None, "2024-01-01T04:00:00Z"))
    url = f"{backfills_url}{backfill.id}/"
    # Running with a number of runs but no start yet: PostHog cannot count progress, nor can we.
    BatchExportBackfill.objects.filter(id=backfill.id).update(status="Running", total_runs=4)
    assert api.get(url).json()["progress"] is None
    BatchExportBackfill.objects.filter(id=backfill.id).update(adjusted_start_at=T0)
    add_run(backfill, 0, "Completed")
    assert api.get(url).json()["progress"] == {"total_runs": 4, "finished_runs": 1, "progress": 0.25}


def test_progress_is_null_while_there_is_nothing_to_export(
    api: Any, backfills_url: str, four_hour_backfill: BatchExportBackfill
) -> None:
    BatchExportBackfill.objects.filter(id=four_hour_backfill.id).update(status="Running", total_runs=0)
    assert api.get(f"{backfills_url}{four_hour_backfill.id}/").json()["progress"] is None


def test_progress_counts_completed_and_failed_runs_only(
    api: Any, backfills_url: str, four_hour_backfill: BatchExportBackfill
) -> None:
    """As PostHog counts them: a cancelled, terminated or timed-out run may be retried by hand."""
    for hour, status in enumerate(["Cancelled", "Terminated", "TimedOut", "FailedRetryable"]):
        add_run(four_hour_backfill, hour, status)
    url = f"{backfills_url}{four_hour_backfill.id}/"
    assert api.get(url).json()["progress"] == {"total_runs": 4, "finished_runs": 0, "progress": 0.0}
    add_run(four_hour_backfill, 0, "Completed")
    assert api.get(url).json()["progress"] == {"total_runs": 4, "finished_runs": 1, "progress": 0.25}


def test_progress_never_exceeds_one(api: Any, backfills_url: str, four_hour_backfill: BatchExportBackfill) -> None:
    BatchExportBackfill.objects.filter(id=four_hour_backfill.id).update(total_runs=2)
    for hour in range(3):
        add_run(four_hour_backfill, hour, "Completed")
    progress = api.get(f"{backfills_url}{four_hour_backfill.id}/").json()["progress"]
    assert progress == {"total_runs": 3, "finished_runs": 3, "progress": 1.0}


def test_completed_backfill_progress_is_one(
    api: Any, backfills_url: str, four_hour_backfill: BatchExportBackfill
) -> None:
    add_run(four_hour_backfill, 0, "Completed")
    BatchExportBackfill.objects.filter(id=four_hour_backfill.id).update(status="Completed")
    body = api.get(f"{backfills_url}{four_hour_backfill.id}/").json()
    assert body["status"] == "Completed"
    assert body["progress"] == {"total_runs": 4, "finished_runs": 4, "progress": 1.0}


def test_retrieve_unknown_malformed_or_other_exports_backfill_is_404(
    api: Any, prefix: str, backfills_url: str, four_hour_backfill: BatchExportBackfill
) -> None:
    other = create_export(api, prefix, name="Other")
    other_url = f"{prefix}{other.id}/backfills/"
    foreign = created(post_backfill(api, other_url, "2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"))
    for backfill_id in (uuid.uuid4(), "not-a-uuid", foreign.id):
        assert api.get(f"{backfills_url}{backfill_id}/").status_code == 404, backfill_id
        assert api.post(f"{backfills_url}{backfill_id}/cancel/").status_code == 404, backfill_id
    assert api.get(f"{other_url}{foreign.id}/").json()["id"] == str(foreign.id)
    foreign.refresh_from_db()
    assert foreign.status == "Starting"


# Cancel


def test_cancel_backfill_cancels_its_active_runs(
    api: Any, backfills_url: str, four_hour_backfill: BatchExportBackfill, engine: RecordingEngine
) -> None:
    backfill = four_hour_backfill
    BatchExportBackfill.objects.filter(id=backfill.id).update(status="Running")
    completed = add_run(backfill, 0, "Completed")
    failed = add_run(backfill, 1, "Failed")
    running = add_run(backfill, 2, "Running")
    starting = add_run(backfill, 3, "Starting")
    unrelated = BatchExportRun.objects.create(
        batch_export=backfill.batch_export,
        status="Running",
        data_interval_start=T0 + dt.timedelta(hours=5),
        data_interval_end=T0 + dt.timedelta(hours=6),
    )
    engine.clear()
    before = timezone.now()

    response = api.post(f"{backfills_url}{backfill.id}/cancel/")
    assert response.status_code == 200, response.json()
    assert response.json() == {"cancelled": True}

    backfill.refresh_from_db()
    assert backfill.status == "Cancelled"
    assert backfill.finished_at is not None and before <= backfill.finished_at <= timezone.now()
    statuses = {run.id: run.status for run in BatchExportRun.objects.all()}
    assert statuses == {
        completed.id: "Completed",
        failed.id: "Failed",
        running.id: "Cancelled",
        starting.id: "Cancelled",
        unrelated.id: "Running",
    }
    for run in (running, starting):
        run.refresh_from_db()
        assert run.finished_at is not None
    completed.refresh_from_db()
    assert completed.finished_at is None
    assert engine.calls == [EngineCall("cancel_backfill", str(backfill.id))]
    assert api.get(f"{backfills_url}{backfill.id}/").json()["status"] == "Cancelled"


@pytest.mark.parametrize("status", ["Completed", "Cancelled", "Failed"])
def test_cancel_a_finished_backfill_is_a_400(
    api: Any, backfills_url: str, four_hour_backfill: BatchExportBackfill, engine: RecordingEngine, status: str
) -> None:
    BatchExportBackfill.objects.filter(id=four_hour_backfill.id).update(status=status)
    engine.clear()
    response = api.post(f"{backfills_url}{four_hour_backfill.id}/cancel/")
    assert response.status_code == 400
    assert response.json()["type"] == "validation_error"
    assert status in response.json()["detail"]
    four_hour_backfill.refresh_from_db()
    assert (four_hour_backfill.status, four_hour_backfill.finished_at) == (status, None)
    assert engine.calls == []


def test_cancel_backfill_needs_write_scope(
    client: Any, make_key: Any, backfills_url: str, four_hour_backfill: BatchExportBackfill, engine: RecordingEngine
) -> None:
    engine.clear()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key(['batch_export:read'])}")
    assert client.get(f"{backfills_url}{four_hour_backfill.id}/").status_code == 200
    assert client.post(f"{backfills_url}{four_hour_backfill.id}/cancel/").status_code == 403
    four_hour_backfill.refresh_from_db()
    assert four_hour_backfill.status == "Starting"
    assert engine.calls == []


# Concurrency limit


@pytest.fixture
def limit_of_two(settings: Any) -> None:
    settings.BATCHEXPORTS_MAX_CONCURRENT_BACKFILLS = 2


def assert_too_many(response: Any) -> None:
    assert response.status_code == 429, response.json()
    body = response.json()
    assert (body["type"], body["code"], body["attr"]) == ("throttled_error", "too_many_concurrent_backfills", None)
    assert "2 batch export backfill(s) running (at most 2 at once)" in body["detail"]
    assert "cancel" in body["detail"]


def test_one_backfill_over_the_projects_limit_is_a_429(
    api: Any, prefix: str, backfills_url: str, export: BatchExport, engine: RecordingEngine, limit_of_two: None
) -> None:
    other_export = create_export(api, prefix, name="Other")  # the limit is per project, not per export
    first = created(post_backfill(api, backfills_url, "2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"))
    created(post_backfill(api, f"{prefix}{other_export.id}/backfills/", "2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"))
    engine.clear()
    assert_too_many(post_backfill(api, backfills_url, "2024-01-02T00:00:00Z", "2024-01-02T01:00:00Z"))
    deprecated = api.post(
        f"{prefix}{export.id}/backfill/", {"start_at": "2024-01-02T00:00:00Z", "end_at": "2024-01-02T01:00:00Z"}
    )
    assert_too_many(deprecated)
    assert BatchExportBackfill.objects.count() == 2
    assert engine.calls == []
    # A finished backfill frees its place.
    BatchExportBackfill.objects.filter(id=first.id).update(status="Completed")
    created(post_backfill(api, backfills_url, "2024-01-02T00:00:00Z", "2024-01-02T01:00:00Z"))


def test_the_limit_counts_starting_and_running_backfills_of_the_project_only(
    api: Any, backfills_url: str, export: BatchExport, limit_of_two: None, sibling_project: Any
) -> None:
    for status in ("Completed", "Failed", "Cancelled"):
        BatchExportBackfill.objects.create(team_id=export.team_id, batch_export=export, status=status)
    sibling = create_export(api, f"/api/projects/{sibling_project.id}/batch_exports/", name="Sibling")
    for _ in range(3):
        BatchExportBackfill.objects.create(team_id=sibling_project.id, batch_export=sibling, status="Running")
    BatchExportBackfill.objects.create(team_id=export.team_id, batch_export=export, status="Running")
    created(post_backfill(api, backfills_url, "2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"))
    assert_too_many(post_backfill(api, backfills_url, "2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"))


def test_a_retry_is_not_held_back_by_the_limit(
    api: Any, prefix: str, export: BatchExport, engine: RecordingEngine, limit_of_two: None
) -> None:
    """As in PostHog, the limit applies to the backfill routes, not to a run's retry."""
    for _ in range(2):
        BatchExportBackfill.objects.create(team_id=export.team_id, batch_export=export, status="Running")
    run = BatchExportRun.objects.create(
        batch_export=export, status="Failed", data_interval_start=T0, data_interval_end=T0 + HOUR
    )
    response = api.post(f"{prefix}{export.id}/runs/{run.id}/retry/")
    assert response.status_code == 201, response.json()


@pytest.mark.parametrize(("value", "expected"), [(None, "10"), ("3", "3"), ("0", "error"), ("many", "error")])
def test_the_limit_is_read_from_the_environment(value: str | None, expected: str, tmp_path: Any) -> None:
    env = {k: v for k, v in os.environ.items() if k != "BATCHEXPORTS_MAX_CONCURRENT_BACKFILLS"}
    env.update(BATCHEXPORTS_DATA_DIR=str(tmp_path), BATCHEXPORTS_SECRET_KEY="x")
    if value is not None:
        env["BATCHEXPORTS_MAX_CONCURRENT_BACKFILLS"] = value
    code = "from batchexports import settings; print(settings.BATCHEXPORTS_MAX_CONCURRENT_BACKFILLS)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    if expected == "error":
        assert result.returncode != 0
        assert f"BATCHEXPORTS_MAX_CONCURRENT_BACKFILLS must be a whole number of at least 1, not '{value}'" in (
            result.stderr
        )
    else:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == expected
