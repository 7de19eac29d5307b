"""Specification of a batch export's runs: `…/batch_exports/:id/runs/` under the three prefixes.

Runs are written by the engine, so the tests create them directly in the database and check
what the API shows and does with them: cursor pagination, ordering, PostHog's default window
(the last 7 days), date and status filters, retrieve, retry (a backfill of exactly the run's
interval, answered 201), cancel, and a run's logs.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from django.utils import timezone

from batchexports.accounts.models import Project
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportLogEntry, BatchExportRun
from batchexports.exports.recording_engine import EngineCall, RecordingEngine
from tests.conftest import export_payload, prefix_for, walk

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def create_export(api: Any, prefix: str, **overrides: Any) -> BatchExport:
    response = api.post(prefix, export_payload(**overrides), format="json")
    assert response.status_code == 201, response.json()
    return BatchExport.objects.get(id=response.json()["id"])


def make_run(batch_export: BatchExport, start: dt.datetime, status: str = "Completed", **fields: Any) -> BatchExportRun:
    return BatchExportRun.objects.create(
        batch_export=batch_export,
        status=status,
        data_interval_start=start,
        data_interval_end=start + dt.timedelta(hours=1),
        **fields,
    )


def set_created_at(runs: list[BatchExportRun], created: list[dt.datetime]) -> None:
    for run, moment in zip(runs, created, strict=True):
        run.created_at = moment
    BatchExportRun.objects.bulk_update(runs, ["created_at"])


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def export(api: Any, prefix: str, engine: RecordingEngine) -> BatchExport:
    batch_export = create_export(api, prefix)
    engine.clear()
    return batch_export


@pytest.fixture
def runs_url(prefix: str, export: BatchExport) -> str:
    return f"{prefix}{export.id}/runs/"


# Listing


@pytest.fixture
def many_runs(export: BatchExport) -> list[BatchExportRun]:
    """230 runs of the last days; created_at ascending with the index, data interval in a different order."""
    count = 230
    now = timezone.now()
    base = now.replace(minute=0, second=0, microsecond=0) - dt.timedelta(days=3)
    step = dt.timedelta(minutes=15)
    runs = BatchExportRun.objects.bulk_create(
        [
            BatchExportRun(
                batch_export=export,
                status="Completed",
                # A permutation of the intervals, unrelated to the creation order.
                data_interval_start=base + step * ((i * 7) % count),
                data_interval_end=base + step * ((i * 7) % count + 1),
            )
            for i in range(count)
        ]
    )
    set_created_at(runs, [now - dt.timedelta(minutes=count - i) for i in range(count)])
    return runs


def test_runs_are_cursor_paginated_100_a_page_newest_first(
    api: Any, runs_url: str, many_runs: list[BatchExportRun]
) -> None:
    pages = walk(api, runs_url)
    assert [len(page) for page in pages] == [100, 100, 30]
    ids = [run["id"] for page in pages for run in page]
    expected = [str(run.id) for run in sorted(many_runs, key=lambda r: r.created_at, reverse=True)]
    assert ids == expected
    assert len(set(ids)) == 230
    first = api.get(runs_url).json()
    assert first["previous"] is None
    assert "cursor=" in first["next"]


def test_runs_previous_link_leads_back(api: Any, runs_url: str, many_runs: list[BatchExportRun]) -> None:
    first = api.get(runs_url).json()
    second = api.get(first["next"]).json()
    back = api.get(second["previous"]).json()
    assert [r["id"] for r in back["results"]] == [r["id"] for r in first["results"]]


@pytest.mark.parametrize("ordering", ["data_interval_start", "-data_interval_start"])
def test_runs_ordering_by_data_interval_start_across_pages(
    api: Any, runs_url: str, many_runs: list[BatchExportRun], ordering: str
) -> None:
    pages = walk(api, runs_url, {"ordering": ordering})
    assert [len(page) for page in pages] == [100, 100, 30]
    starts = [run["data_interval_start"] for page in pages for run in page]
    expected = sorted((r.data_interval_start for r in many_runs), reverse=ordering.startswith("-"))
    assert starts == [iso(moment) for moment in expected]
    assert len({run["id"] for page in pages for run in page}) == 230


def test_runs_ordering_by_created_at_ascending(api: Any, runs_url: str, export: BatchExport) -> None:
    runs = [make_run(export, T0 + dt.timedelta(hours=h)) for h in (5, 1, 3)]
    now = timezone.now()
    set_created_at(runs, [now - dt.timedelta(minutes=m) for m in (9, 2, 4)])
    ascending = api.get(runs_url, {"ordering": "created_at"}).json()["results"]
    assert [r["id"] for r in ascending] == [str(runs[0].id), str(runs[2].id), str(runs[1].id)]
    default = api.get(runs_url).json()["results"]
    assert [r["id"] for r in default] == [str(runs[1].id), str(runs[2].id), str(runs[0].id)]


def test_runs_list_shows_only_this_exports_runs(api: Any, prefix: str, runs_url: str, export: BatchExport) -> None:
    mine = make_run(export, T0)
    other = create_export(api, prefix, name="Other")
    make_run(other, T0)
    assert [r["id"] for r in api.get(runs_url).json()["results"]] == [str(mine.id)]


def test_run_representation(api: Any, runs_url: str, export: BatchExport) -> None:
    backfill = BatchExportBackfill.objects.create(team_id=export.team_id, batch_export=export, status="Running")
    run = make_run(
        export,
        T0,
        status="Failed",
        latest_error="Access Denied",
        records_completed=10,
        records_total_count=12,
        bytes_exported=2048,
        backfill=backfill,
    )
    listed = api.get(runs_url).json()["results"]
    detail = api.get(f"{runs_url}{run.id}/").json()
    assert listed == [detail]
    assert {k: v for k, v in detail.items() if k not in ("created_at", "last_updated_at")} == {
        "id": str(run.id),
        "status": "Failed",
        "records_completed": 10,
        "records_failed": None,
        "records_total_count": 12,
        "bytes_exported": 2048,
        "latest_error": "Access Denied",
        "data_interval_start": "2024-01-01T00:00:00Z",
        "data_interval_end": "2024-01-01T01:00:00Z",
        "cursor": None,
        "finished_at": None,
        "batch_export": str(export.id),
        "backfill": str(backfill.id),
        "receipt": None,  # ours, beyond PostHog's fields: a failed run has none (test_receipts.py)
    }


# after / before


@pytest.fixture
def dated_runs(export: BatchExport) -> dict[str, BatchExportRun]:
    now = timezone.now()
    created = {
        "1h ago": now - dt.timedelta(hours=1),
        "25h ago": now - dt.timedelta(hours=25),
        "3d ago": now - dt.timedelta(days=3),
        "5d ago": now - dt.timedelta(days=5),
        "2024-06-01": dt.datetime(2024, 6, 1, 12, tzinfo=dt.UTC),
        "2024-01-01": dt.datetime(2024, 1, 1, 12, tzinfo=dt.UTC),
    }
    runs = {name: make_run(export, T0 + dt.timedelta(hours=i)) for i, name in enumerate(created)}
    set_created_at(list(runs.values()), list(created.values()))
    return runs


def listed_names(api: Any, url: str, params: dict[str, str], runs: dict[str, BatchExportRun]) -> list[str]:
    response = api.get(url, params)
    assert response.status_code == 200, response.json()
    by_id = {str(run.id): name for name, run in runs.items()}
    return [by_id[r["id"]] for r in response.json()["results"]]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, ["1h ago", "25h ago", "3d ago", "5d ago"]),  # PostHog's default window: the last 7 days
        ({"after": "", "before": ""}, ["1h ago", "25h ago", "3d ago", "5d ago"]),
        ({"after": "-2d"}, ["1h ago", "25h ago"]),
        ({"after": "-4d"}, ["1h ago", "25h ago", "3d ago"]),
        ({"before": "-2d"}, ["3d ago", "5d ago"]),
        ({"after": "2020-01-01", "before": "-2d"}, ["3d ago", "5d ago", "2024-06-01", "2024-01-01"]),
        ({"after": "-4d", "before": "-2d"}, ["3d ago"]),
        ({"after": "2024-03-01T00:00:00Z", "before": "2024-07-01T00:00:00Z"}, ["2024-06-01"]),
        ({"after": "2024-03-01T02:00:00+02:00", "before": "2024-07-01T00:00:00+00:00"}, ["2024-06-01"]),
        ({"after": "2024-03-01", "before": "2024-07-01"}, ["2024-06-01"]),
        ({"after": "2023-01-01", "before": "2024-03-01T00:00:00Z"}, ["2024-01-01"]),
        ({"after": "2024-01-01T12:00:01Z", "before": "-4d"}, ["5d ago", "2024-06-01"]),
    ],
)
def test_runs_after_and_before_filter_on_created_at(
    api: Any, runs_url: str, dated_runs: dict[str, BatchExportRun], params: dict[str, str], expected: list[str]
) -> None:
    assert listed_names(api, runs_url, params, dated_runs) == expected


@pytest.mark.parametrize("name", ["after", "before"])
@pytest.mark.parametrize("value", ["yesterday", "2024-13-45", "-2x"])
def test_runs_bad_date_filter_is_a_400_naming_it(api: Any, runs_url: str, name: str, value: str) -> None:
    response = api.get(runs_url, {name: value})
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "validation_error"
    assert body["attr"] == name
    assert value in body["detail"]


def test_runs_dates_without_an_offset_are_read_in_the_projects_timezone(
    api: Any, runs_url: str, export: BatchExport, project: Project
) -> None:
    project.timezone = "America/New_York"  # UTC-5 in January
    project.save(update_fields=["timezone"])
    runs = [make_run(export, T0 + dt.timedelta(hours=h)) for h in range(3)]
    set_created_at(runs, [dt.datetime(2024, 1, 10, hour, 30, tzinfo=dt.UTC) for hour in (4, 6, 12)])
    by_name = {"04:30Z": runs[0], "06:30Z": runs[1], "12:30Z": runs[2]}
    # 2024-01-10 00:00 in New York is 05:00Z, 02:00 there is 07:00Z.
    params = {"after": "2024-01-10", "before": "2024-01-10T02:00:00"}
    assert listed_names(api, runs_url, params, by_name) == ["06:30Z"]


# status


@pytest.fixture
def runs_by_status(export: BatchExport) -> dict[str, BatchExportRun]:
    statuses = ["Completed", "Failed", "FailedRetryable", "Running", "Cancelled"]
    return {status: make_run(export, T0 + dt.timedelta(hours=i), status=status) for i, status in enumerate(statuses)}


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=Failed", {"Failed"}),
        ("status=Failed&status=Completed", {"Failed", "Completed"}),
        ("status=Running&status=Cancelled&status=FailedRetryable", {"Running", "Cancelled", "FailedRetryable"}),
        ("status=TimedOut", set()),
        ("", {"Completed", "Failed", "FailedRetryable", "Running", "Cancelled"}),
    ],
)
def test_runs_status_filter_is_repeatable(
    api: Any, runs_url: str, runs_by_status: dict[str, BatchExportRun], query: str, expected: set[str]
) -> None:
    response = api.get(f"{runs_url}?{query}")
    assert response.status_code == 200, response.json()
    assert {run["status"] for run in response.json()["results"]} == expected
    assert len(response.json()["results"]) == len(expected)


def test_runs_status_filter_combines_with_ordering_and_windows(api: Any, runs_url: str, export: BatchExport) -> None:
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    recent_failed = make_run(export, now - dt.timedelta(hours=3), status="Failed")
    make_run(export, now - dt.timedelta(hours=2), status="Completed")
    make_run(export, now - dt.timedelta(days=9), status="Failed")  # its interval is outside the window
    query = f"{runs_url}?status=Failed&ordering=-data_interval_start"
    assert [r["id"] for r in api.get(query).json()["results"]] == [str(recent_failed.id)]


@pytest.mark.parametrize("value", ["failed", "Done", ""])
def test_runs_unknown_status_is_a_400_naming_it(api: Any, runs_url: str, value: str) -> None:
    response = api.get(f"{runs_url}?status=Completed&status={value}")
    assert response.status_code == 400
    body = response.json()
    assert (body["type"], body["attr"]) == ("validation_error", "status")
    assert f"'{value}'" in body["detail"] and "FailedRetryable" in body["detail"]


# start / end with ordering by data interval


@pytest.fixture
def interval_runs(export: BatchExport) -> dict[str, BatchExportRun]:
    """Runs named by the age of their data interval, all created just now (inside any created_at window)."""
    hour = timezone.now().replace(minute=0, second=0, microsecond=0)
    ages = {"1h": 1, "30h": 30, "4d": 96, "6d": 144, "8d": 192, "30d": 720}
    return {name: make_run(export, hour - dt.timedelta(hours=hours)) for name, hours in ages.items()}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"ordering": "data_interval_start"}, ["6d", "4d", "30h", "1h"]),  # the intervals of the last 7 days
        ({"ordering": "-data_interval_start"}, ["1h", "30h", "4d", "6d"]),
        ({"ordering": "-data_interval_start", "start": "-10d"}, ["1h", "30h", "4d", "6d", "8d"]),
        ({"ordering": "-data_interval_start", "start": "-60d", "end": "-2d"}, ["4d", "6d", "8d", "30d"]),
        ({"ordering": "data_interval_start", "start": "-5d", "end": "-1d"}, ["4d", "30h"]),
        # created_at bounds are ignored when ordering by the data interval, as in PostHog ...
        ({"ordering": "-data_interval_start", "after": "-1d", "before": "-1h"}, ["1h", "30h", "4d", "6d"]),
        # ... and the interval bounds when ordering by creation.
        ({"start": "-2d", "end": "-1d"}, ["1h", "30h", "4d", "6d", "8d", "30d"]),
    ],
)
def test_runs_start_and_end_bound_the_data_interval_when_ordering_by_it(
    api: Any, runs_url: str, interval_runs: dict[str, BatchExportRun], params: dict[str, str], expected: list[str]
) -> None:
    names = listed_names(api, runs_url, params, interval_runs)
    if "ordering" in params:
        assert names == expected
    else:
        assert sorted(names) == sorted(expected)


@pytest.mark.parametrize("name", ["start", "end"])
def test_runs_bad_interval_bound_is_a_400_naming_it(api: Any, runs_url: str, name: str) -> None:
    response = api.get(runs_url, {name: "someday", "ordering": "data_interval_start"})
    assert response.status_code == 400
    assert (response.json()["attr"], "someday" in response.json()["detail"]) == (name, True)


def test_a_run_older_than_the_window_is_still_reachable_by_id(api: Any, runs_url: str, export: BatchExport) -> None:
    run = make_run(export, T0)
    set_created_at([run], [T0])
    assert api.get(runs_url).json()["results"] == []
    assert api.get(f"{runs_url}{run.id}/").json()["id"] == str(run.id)
    assert api.get(runs_url, {"after": "2023-12-31"}).json()["results"][0]["id"] == str(run.id)


# Retrieve


def test_run_retrieve_unknown_malformed_or_of_another_export_is_404(
    api: Any, prefix: str, runs_url: str, export: BatchExport
) -> None:
    make_run(export, T0)
    other = create_export(api, prefix, name="Other")
    foreign = make_run(other, T0)
    for run_id in (uuid.uuid4(), "not-a-uuid", "123", foreign.id):
        response = api.get(f"{runs_url}{run_id}/")
        assert response.status_code == 404, run_id
        assert response.json()["type"] == "invalid_request"
    # The foreign run is reachable under its own export.
    assert api.get(f"{prefix}{other.id}/runs/{foreign.id}/").json()["id"] == str(foreign.id)


def test_runs_of_an_unknown_or_deleted_export_are_404(api: Any, prefix: str, export: BatchExport) -> None:
    run = make_run(export, T0)
    assert api.get(f"{prefix}{uuid.uuid4()}/runs/").status_code == 404
    assert api.get(f"{prefix}{uuid.uuid4()}/runs/{run.id}/").status_code == 404
    assert api.delete(f"{prefix}{export.id}/").status_code == 204
    assert api.get(f"{prefix}{export.id}/runs/").status_code == 404
    assert api.get(f"{prefix}{export.id}/runs/{run.id}/").status_code == 404


def test_runs_of_an_export_in_a_sibling_project_are_404(
    api: Any, project: Project, sibling_project: Project, engine: RecordingEngine
) -> None:
    sibling_prefix = prefix_for("projects", sibling_project)
    export = create_export(api, sibling_prefix)
    run = make_run(export, T0)
    assert api.get(f"{sibling_prefix}{export.id}/runs/{run.id}/").status_code == 200
    own_prefix = prefix_for("projects", project)
    assert api.get(f"{own_prefix}{export.id}/runs/").status_code == 404
    assert api.get(f"{own_prefix}{export.id}/runs/{run.id}/").status_code == 404
    # The organization prefix sees every project of the organization.
    org_prefix = prefix_for("organizations", project)
    assert api.get(f"{org_prefix}{export.id}/runs/{run.id}/").json()["id"] == str(run.id)


# Retry


def test_retry_creates_a_backfill_of_exactly_the_runs_interval(
    api: Any, runs_url: str, export: BatchExport, engine: RecordingEngine
) -> None:
    start = dt.datetime(2024, 2, 3, 10, tzinfo=dt.UTC)
    run = make_run(export, start, status="Failed", latest_error="boom")
    response = api.post(f"{runs_url}{run.id}/retry/")
    assert response.status_code == 201, response.json()
    assert set(response.json()) == {"backfill_id"}
    backfill = BatchExportBackfill.objects.get(id=response.json()["backfill_id"])
    assert backfill.batch_export_id == export.id
    assert backfill.team_id == export.team_id
    assert (backfill.start_at, backfill.end_at) == (start, start + dt.timedelta(hours=1))
    assert backfill.total_runs == 1
    assert backfill.status == "Starting"
    assert engine.calls == [
        EngineCall(
            "start_backfill",
            str(backfill.id),
            {"batch_export_id": str(export.id), "start_at": start, "end_at": start + dt.timedelta(hours=1)},
        )
    ]
    # The run itself is left as it was.
    run.refresh_from_db()
    assert run.status == "Failed"


def test_retry_of_a_daily_run(api: Any, prefix: str, engine: RecordingEngine) -> None:
    export = create_export(api, prefix, interval="day", timezone="Europe/Berlin")
    start = dt.datetime(2024, 3, 30, 23, tzinfo=dt.UTC)  # 2024-03-31 in Berlin: 23 hours long
    end = dt.datetime(2024, 3, 31, 22, tzinfo=dt.UTC)
    run = BatchExportRun.objects.create(
        batch_export=export, status="Failed", data_interval_start=start, data_interval_end=end
    )
    response = api.post(f"{prefix}{export.id}/runs/{run.id}/retry/")
    assert response.status_code == 201, response.json()
    backfill = BatchExportBackfill.objects.get(id=response.json()["backfill_id"])
    assert (backfill.start_at, backfill.end_at, backfill.total_runs) == (start, end, 1)


def test_retry_of_an_unknown_run_is_404(api: Any, runs_url: str, engine: RecordingEngine) -> None:
    assert api.post(f"{runs_url}{uuid.uuid4()}/retry/").status_code == 404
    assert engine.calls == []
    assert not BatchExportBackfill.objects.exists()


# Cancel


@pytest.mark.parametrize("status", ["Running", "Starting"])
def test_cancel_an_active_run(
    api: Any, runs_url: str, export: BatchExport, engine: RecordingEngine, status: str
) -> None:
    run = make_run(export, T0, status=status)
    other = make_run(export, T0 + dt.timedelta(hours=1), status="Running")
    before = timezone.now()
    response = api.post(f"{runs_url}{run.id}/cancel/")
    assert response.status_code == 200, response.json()
    assert response.json() == {"cancelled": True}
    run.refresh_from_db()
    assert run.status == "Cancelled"
    assert run.finished_at is not None
    assert before <= run.finished_at <= timezone.now()
    assert engine.calls == [EngineCall("cancel_run", str(run.id))]
    other.refresh_from_db()
    assert other.status == "Running"
    assert api.get(f"{runs_url}{run.id}/").json()["status"] == "Cancelled"


@pytest.mark.parametrize("status", ["Completed", "Failed", "Cancelled"])
def test_cancel_a_finished_run_is_a_400_naming_its_status(
    api: Any, runs_url: str, export: BatchExport, engine: RecordingEngine, status: str
) -> None:
    finished_at = T0 + dt.timedelta(hours=2)
    run = make_run(export, T0, status=status, finished_at=finished_at)
    response = api.post(f"{runs_url}{run.id}/cancel/")
    assert response.status_code == 400
    assert response.json()["type"] == "validation_error"
    assert status in response.json()["detail"]
    run.refresh_from_db()
    assert (run.status, run.finished_at) == (status, finished_at)
    assert engine.calls == []


def test_cancel_and_retry_need_write_scope(
    client: Any, make_key: Any, runs_url: str, export: BatchExport, engine: RecordingEngine
) -> None:
    run = make_run(export, T0, status="Running")
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key(['batch_export:read'])}")
    assert client.get(f"{runs_url}{run.id}/").status_code == 200
    for action in ("cancel", "retry"):
        response = client.post(f"{runs_url}{run.id}/{action}/")
        assert response.status_code == 403, action
        assert "batch_export:write" in response.json()["detail"]
    run.refresh_from_db()
    assert run.status == "Running"
    assert engine.calls == []
    assert not BatchExportBackfill.objects.exists()


# A run's logs


def test_run_logs_show_only_that_runs_entries(api: Any, prefix: str, runs_url: str, export: BatchExport) -> None:
    run, other_run = make_run(export, T0), make_run(export, T0 + dt.timedelta(hours=1))
    other_export = create_export(api, prefix, name="Other")

    def log(
        batch_export: BatchExport, run_id: uuid.UUID | None, minute: int, message: str, level: str = "INFO"
    ) -> None:
        BatchExportLogEntry.objects.create(
            team_id=batch_export.team_id,
            batch_export=batch_export,
            run_id=run_id,
            timestamp=T0 + dt.timedelta(minutes=minute),
            level=level,
            message=message,
        )

    log(export, run.id, 1, "started")
    log(export, other_run.id, 2, "other run")
    log(export, None, 3, "export-level entry")
    log(export, run.id, 4, "failed to write", "ERROR")
    log(other_export, run.id, 5, "another export's entry")

    response = api.get(f"{runs_url}{run.id}/logs/")
    assert response.status_code == 200
    assert response.json() == {
        "results": [
            {
                "team_id": export.team_id,
                "log_source": "batch_exports",
                "log_source_id": str(export.id),
                "instance_id": str(run.id),
                "timestamp": "2024-01-01T00:04:00Z",
                "level": "ERROR",
                "message": "failed to write",
            },
            {
                "team_id": export.team_id,
                "log_source": "batch_exports",
                "log_source_id": str(export.id),
                "instance_id": str(run.id),
                "timestamp": "2024-01-01T00:01:00Z",
                "level": "INFO",
                "message": "started",
            },
        ]
    }
    errors = api.get(f"{runs_url}{run.id}/logs/", {"level": "error"}).json()["results"]
    assert [e["message"] for e in errors] == ["failed to write"]
    assert api.get(f"{runs_url}{uuid.uuid4()}/logs/").status_code == 404
