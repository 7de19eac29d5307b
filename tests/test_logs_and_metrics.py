"""Specification of a batch export's log entries (`…/batch_exports/:id/logs/`) and its app metrics
(`/api/{projects,environments}/:id/app_metrics/:batch_export_id/…`).

Log entries and runs are written by the engine, so the tests create them directly in the database.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from django.utils import timezone

from batchexports.accounts.models import Project
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportLogEntry, BatchExportRun
from batchexports.exports.recording_engine import RecordingEngine
from tests.conftest import export_payload, prefix_for

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def create_export(api: Any, prefix: str, **overrides: Any) -> BatchExport:
    response = api.post(prefix, export_payload(**overrides), format="json")
    assert response.status_code == 201, response.json()
    return BatchExport.objects.get(id=response.json()["id"])


def iso(moment: dt.datetime | None) -> str | None:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z") if moment else None


# Log entries


@pytest.fixture
def export(api: Any, prefix: str, engine: RecordingEngine) -> BatchExport:
    return create_export(api, prefix)


@pytest.fixture
def logs_url(prefix: str, export: BatchExport) -> str:
    return f"{prefix}{export.id}/logs/"


@pytest.fixture
def runs(export: BatchExport) -> tuple[BatchExportRun, BatchExportRun]:
    def run(hour: int) -> BatchExportRun:
        return BatchExportRun.objects.create(
            batch_export=export,
            status="Completed",
            data_interval_start=T0 + dt.timedelta(hours=hour),
            data_interval_end=T0 + dt.timedelta(hours=hour + 1),
        )

    return run(0), run(1)


# (minute after T0, level, message, which run: 0, 1 or None)
ENTRIES = [
    (1, "INFO", "Run started", 0),
    (2, "DEBUG", "Connecting to bucket analytics", 0),
    (3, "WARNING", "Retrying upload after a Timeout", 0),
    (4, "ERROR", "Upload failed: connection TIMEOUT", 0),
    (5, "INFO", "Run started", 1),
    (6, "LOG", "Wrote 10 records", 1),
    (7, "WARNING", "Slow destination", 1),
    (8, "INFO", "Batch export paused", None),
]


@pytest.fixture
def entries(export: BatchExport, runs: tuple[BatchExportRun, BatchExportRun]) -> list[BatchExportLogEntry]:
    return BatchExportLogEntry.objects.bulk_create(
        [
            BatchExportLogEntry(
                team_id=export.team_id,
                batch_export=export,
                run_id=runs[which].id if which is not None else None,
                timestamp=T0 + dt.timedelta(minutes=minute),
                level=level,
                message=message,
            )
            for minute, level, message, which in ENTRIES
        ]
    )


def minutes(response: Any) -> list[int]:
    """The entries of a logs response, as the minutes after T0 of their timestamps."""
    assert response.status_code == 200, response.json()
    return [
        int((dt.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")) - T0).total_seconds() // 60)
        for e in response.json()["results"]
    ]


def test_logs_newest_first_with_posthogs_shape(
    api: Any,
    logs_url: str,
    export: BatchExport,
    runs: tuple[BatchExportRun, BatchExportRun],
    entries: list[BatchExportLogEntry],
) -> None:
    response = api.get(logs_url)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"results"}
    run_of = {0: str(runs[0].id), 1: str(runs[1].id), None: None}
    assert body["results"] == [
        {
            "team_id": export.team_id,
            "log_source": "batch_exports",
            "log_source_id": str(export.id),
            "instance_id": run_of[which],
            "timestamp": f"2024-01-01T00:0{minute}:00Z",
            "level": level,
            "message": message,
        }
        for minute, level, message, which in reversed(ENTRIES)
    ]


def test_logs_limit(api: Any, logs_url: str, entries: list[BatchExportLogEntry]) -> None:
    assert minutes(api.get(logs_url, {"limit": 3})) == [8, 7, 6]
    assert minutes(api.get(logs_url, {"limit": 1})) == [8]
    for bad in ("0", "-1", "many"):
        response = api.get(logs_url, {"limit": bad})
        assert response.status_code == 400, bad
        assert response.json()["attr"] == "limit"


def test_logs_after_and_before_are_exclusive(api: Any, logs_url: str, entries: list[BatchExportLogEntry]) -> None:
    assert minutes(api.get(logs_url, {"after": "2024-01-01T00:05:00Z"})) == [8, 7, 6]
    assert minutes(api.get(logs_url, {"before": "2024-01-01T00:03:00Z"})) == [2, 1]
    assert minutes(api.get(logs_url, {"after": "2024-01-01T00:02:00Z", "before": "2024-01-01T00:06:00Z"})) == [5, 4, 3]
    assert minutes(api.get(logs_url, {"after": "2024-01-01T01:04:30+01:00"})) == [8, 7, 6, 5]
    response = api.get(logs_url, {"after": "not a date"})
    assert response.status_code == 400
    assert response.json()["attr"] == "after"


@pytest.mark.parametrize(
    ("level", "expected"),
    [
        ("ERROR", [4]),
        ("error", [4]),
        ("info,warning", [8, 7, 5, 3, 1]),
        ("INFO, Warning", [8, 7, 5, 3, 1]),
        ("WARN", [7, 3]),
        ("warn,error", [7, 4, 3]),
        ("DEBUG,LOG", [6, 2]),
    ],
)
def test_logs_level_filter(
    api: Any, logs_url: str, entries: list[BatchExportLogEntry], level: str, expected: list[int]
) -> None:
    assert minutes(api.get(logs_url, {"level": level})) == expected


@pytest.mark.parametrize("level", ["FATAL", "info,verbose"])
def test_logs_unknown_level_is_a_400(api: Any, logs_url: str, level: str) -> None:
    response = api.get(logs_url, {"level": level})
    assert response.status_code == 400
    body = response.json()
    assert (body["type"], body["attr"]) == ("validation_error", "level")
    assert level.split(",")[-1] in body["detail"]


def test_logs_search_is_a_case_insensitive_substring(
    api: Any, logs_url: str, entries: list[BatchExportLogEntry]
) -> None:
    assert minutes(api.get(logs_url, {"search": "timeout"})) == [4, 3]
    assert minutes(api.get(logs_url, {"search": "RUN STARTED"})) == [5, 1]
    assert minutes(api.get(logs_url, {"search": "bucket analytics"})) == [2]
    assert minutes(api.get(logs_url, {"search": "nothing like this"})) == []
    assert minutes(api.get(logs_url, {"search": "timeout", "level": "error"})) == [4]


def test_logs_instance_id_filter(
    api: Any, logs_url: str, runs: tuple[BatchExportRun, BatchExportRun], entries: list[BatchExportLogEntry]
) -> None:
    assert minutes(api.get(logs_url, {"instance_id": str(runs[0].id)})) == [4, 3, 2, 1]
    assert minutes(api.get(logs_url, {"instance_id": str(runs[1].id)})) == [7, 6, 5]
    assert minutes(api.get(logs_url, {"instance_id": str(uuid.uuid4())})) == []
    response = api.get(logs_url, {"instance_id": "not-a-uuid"})
    assert response.status_code == 400
    assert response.json()["attr"] == "instance_id"


def test_logs_of_another_export_never_appear(
    api: Any,
    prefix: str,
    logs_url: str,
    runs: tuple[BatchExportRun, BatchExportRun],
    entries: list[BatchExportLogEntry],
) -> None:
    other = create_export(api, prefix, name="Other")
    BatchExportLogEntry.objects.create(
        team_id=other.team_id,
        batch_export=other,
        run_id=runs[0].id,  # even one naming this export's run
        timestamp=T0 + dt.timedelta(minutes=9),
        level="ERROR",
        message="Other export failed with timeout",
    )
    for params in ({}, {"level": "error"}, {"search": "timeout"}, {"instance_id": str(runs[0].id)}):
        messages = [e["message"] for e in api.get(logs_url, params).json()["results"]]
        assert "Other export failed with timeout" not in messages, params
        assert messages, params
    other_logs = api.get(f"{prefix}{other.id}/logs/").json()["results"]
    assert [(e["message"], e["log_source_id"]) for e in other_logs] == [
        ("Other export failed with timeout", str(other.id))
    ]


def test_logs_of_an_unknown_export_are_404(api: Any, prefix: str) -> None:
    assert api.get(f"{prefix}{uuid.uuid4()}/logs/").status_code == 404


# App metrics


@pytest.fixture
def metrics_export(api: Any, project: Project, engine: RecordingEngine) -> BatchExport:
    return create_export(api, prefix_for("projects", project))


def metrics_url(project: Project, export_id: object, kind: str = "projects", suffix: str = "") -> str:
    return f"/api/{kind}/{project.id}/app_metrics/{export_id}/{suffix}"


def add_run(
    batch_export: BatchExport,
    end: dt.datetime,
    status: str,
    backfill: BatchExportBackfill | None = None,
    updated: dt.datetime | None = None,
    **fields: Any,
) -> BatchExportRun:
    """A run of the interval ending at `end`, last updated at `updated` (default: `end`)."""
    run = BatchExportRun.objects.create(
        batch_export=batch_export,
        status=status,
        data_interval_start=end - dt.timedelta(hours=1),
        data_interval_end=end,
        backfill=backfill,
        **fields,
    )
    BatchExportRun.objects.filter(id=run.id).update(last_updated_at=updated or end)  # auto_now skips update()
    return run


def expected_metrics(counted: list[tuple[dt.datetime, str]]) -> dict[str, Any]:
    """PostHog's metrics of runs last updated at the given moments, counted as `successes` or `failures`."""
    days = sorted({moment.astimezone(dt.UTC).date() for moment, _ in counted})
    count = lambda day, kind: sum(1 for m, k in counted if m.astimezone(dt.UTC).date() == day and k == kind)  # noqa: E731
    successes = [count(day, "successes") for day in days]
    failures = [count(day, "failures") for day in days]
    return {
        "dates": [day.isoformat() for day in days],
        "successes": successes,
        "successes_on_retry": [0] * len(days),
        "failures": failures,
        "totals": {"successes": sum(successes), "successes_on_retry": 0, "failures": sum(failures)},
    }


@pytest.fixture
def crafted_runs(metrics_export: BatchExport, api: Any, project: Project) -> dict[str, Any]:
    """Runs last updated over the last 8 days; returns PostHog's metrics for `date_from=-7d`."""
    now = timezone.now()
    backfill = BatchExportBackfill.objects.create(
        team_id=metrics_export.team_id, batch_export=metrics_export, status="Completed"
    )
    ago = lambda **delta: now - dt.timedelta(**delta)  # noqa: E731
    old_interval = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
    plan = [  # (last updated, status, from a backfill, interval end or None, counted as)
        (ago(days=7, minutes=-1), "Completed", False, None, "successes"),  # -7d is now minus 7 days, not midnight
        (ago(days=7, minutes=-2), "Failed", False, None, "failures"),
        (ago(days=7, minutes=1), "Failed", False, None, None),  # before the range
        (ago(days=5), "Completed", False, None, "successes"),
        (ago(days=5), "Completed", True, None, "successes"),  # a backfill's or retry's run is a success too
        (ago(days=5), "FailedRetryable", False, None, "failures"),  # failing and retrying counts as a failure
        (ago(days=3), "Running", False, None, None),
        (ago(days=3), "Starting", False, None, None),
        (ago(days=3), "Cancelled", False, None, None),
        (ago(days=3), "Terminated", False, None, None),
        # A retried interval: its failed execution and its successful retry both count, on the day they ran.
        (ago(hours=2), "Failed", False, old_interval, "failures"),
        (ago(minutes=5), "Completed", True, old_interval, "successes"),
        (ago(minutes=1), "Completed", False, None, "successes"),
    ]
    counted = []
    for updated, status, from_backfill, interval_end, counted_as in plan:
        add_run(metrics_export, interval_end or updated, status, backfill if from_backfill else None, updated=updated)
        if counted_as:
            counted.append((updated, counted_as))
    other = create_export(api, prefix_for("projects", project), name="Other")
    add_run(other, ago(minutes=3), "Completed")
    add_run(other, ago(minutes=4), "Failed")
    return expected_metrics(counted)


@pytest.mark.parametrize("kind", ["projects", "environments"])
def test_app_metrics_count_runs_per_day_as_posthog_does(
    api: Any, project: Project, metrics_export: BatchExport, crafted_runs: dict[str, Any], kind: str
) -> None:
    response = api.get(metrics_url(project, metrics_export.id, kind), {"date_from": "-7d"})
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body == {"metrics": crafted_runs, "errors": None}
    assert body["metrics"]["totals"] == {"successes": 5, "successes_on_retry": 0, "failures": 3}
    # Only days on which runs finished or failed are listed, oldest first (a day of Running,
    # Cancelled and Terminated runs is not).
    dates = [dt.date.fromisoformat(d) for d in body["metrics"]["dates"]]
    assert dates == sorted(set(dates))
    three_days_ago = (timezone.now() - dt.timedelta(days=3)).astimezone(dt.UTC).date()
    assert three_days_ago.isoformat() not in body["metrics"]["dates"]
    assert dates[-1] == timezone.now().astimezone(dt.UTC).date()


def test_app_metrics_default_range_is_30_days(api: Any, project: Project, metrics_export: BatchExport) -> None:
    now = timezone.now()
    add_run(metrics_export, now - dt.timedelta(days=20), "Completed")
    add_run(metrics_export, now - dt.timedelta(days=31), "Failed")
    metrics = api.get(metrics_url(project, metrics_export.id)).json()["metrics"]
    assert metrics == expected_metrics([(now - dt.timedelta(days=20), "successes")])


def test_app_metrics_absolute_range(api: Any, project: Project, metrics_export: BatchExport) -> None:
    add_run(metrics_export, dt.datetime(2024, 1, 2, 6, tzinfo=dt.UTC), "Completed")
    add_run(metrics_export, dt.datetime(2024, 1, 3, 0, tzinfo=dt.UTC), "Failed")
    add_run(metrics_export, dt.datetime(2024, 1, 9, 0, tzinfo=dt.UTC), "Failed")
    response = api.get(metrics_url(project, metrics_export.id), {"date_from": "2024-01-01", "date_to": "2024-01-03"})
    assert response.json()["metrics"] == {
        "dates": ["2024-01-02", "2024-01-03"],
        "successes": [1, 0],
        "successes_on_retry": [0, 0],
        "failures": [0, 1],
        "totals": {"successes": 1, "successes_on_retry": 0, "failures": 1},
    }


def test_app_metrics_dates_without_an_offset_are_in_the_projects_timezone(
    api: Any, project: Project, metrics_export: BatchExport
) -> None:
    project.timezone = "Asia/Tokyo"  # 2024-01-02 00:00 there is 2024-01-01 15:00 UTC
    project.save(update_fields=["timezone"])
    add_run(metrics_export, dt.datetime(2024, 1, 1, 14, tzinfo=dt.UTC), "Completed")
    add_run(metrics_export, dt.datetime(2024, 1, 1, 16, tzinfo=dt.UTC), "Failed")
    response = api.get(metrics_url(project, metrics_export.id), {"date_from": "2024-01-02", "date_to": "2024-01-03"})
    metrics = response.json()["metrics"]
    assert (metrics["dates"], metrics["successes"], metrics["failures"]) == (["2024-01-01"], [0], [1])


@pytest.mark.parametrize(
    ("params", "attr"),
    [({"date_from": "garbage"}, "date_from"), ({"date_from": "-7d", "date_to": "soon"}, "date_to")],
)
def test_app_metrics_bad_dates_are_a_400(
    api: Any, project: Project, metrics_export: BatchExport, params: dict[str, str], attr: str
) -> None:
    response = api.get(metrics_url(project, metrics_export.id), params)
    assert response.status_code == 400
    body = response.json()
    assert (body["type"], body["attr"]) == ("validation_error", attr)
    assert params[attr] in body["detail"]


def test_app_metrics_date_from_after_date_to_is_a_400(api: Any, project: Project, metrics_export: BatchExport) -> None:
    response = api.get(metrics_url(project, metrics_export.id), {"date_from": "-1d", "date_to": "-3d"})
    assert response.status_code == 400
    assert response.json()["attr"] == "date_from"


def test_app_metrics_error_details_list_failed_runs_latest_error(
    api: Any, project: Project, metrics_export: BatchExport
) -> None:
    now = timezone.now()
    older = add_run(
        metrics_export,
        now - dt.timedelta(days=2),
        "Failed",
        latest_error="NoSuchBucket: the bucket 'analytics' does not exist",
        finished_at=now - dt.timedelta(days=2),
    )
    newer = add_run(
        metrics_export,
        now - dt.timedelta(hours=3),
        "Failed",
        latest_error="AccessDenied: check the key's permissions",
        finished_at=now - dt.timedelta(hours=3),
    )
    BatchExportRun.objects.filter(id=older.id).update(created_at=now - dt.timedelta(days=2))
    add_run(metrics_export, now - dt.timedelta(hours=2), "Completed", latest_error=None)
    add_run(metrics_export, now - dt.timedelta(days=60), "Failed", latest_error="too old to show")
    response = api.get(metrics_url(project, metrics_export.id, suffix="error_details/"), {"date_from": "-7d"})
    assert response.status_code == 200, response.json()
    assert response.json() == {
        "result": [
            {
                "error_uuid": str(run.id),
                "error_type": "Failed",
                "error_details": {"error": {"message": run.latest_error}},
                "timestamp": iso(run.finished_at),
            }
            for run in (newer, older)
        ]
    }


@pytest.fixture
def historical(metrics_export: BatchExport) -> dict[str, BatchExportBackfill]:
    def backfill(status: str, minute: int, total: int | None = 4, finished: bool = False) -> BatchExportBackfill:
        row = BatchExportBackfill.objects.create(
            team_id=metrics_export.team_id,
            batch_export=metrics_export,
            start_at=T0,
            end_at=T0 + dt.timedelta(hours=4),
            status=status,
            total_runs=total,
        )
        created = T0 + dt.timedelta(days=30, minutes=minute)
        finished_at = created + dt.timedelta(seconds=90) if finished else None
        BatchExportBackfill.objects.filter(id=row.id).update(created_at=created, finished_at=finished_at)
        row.refresh_from_db()
        return row

    rows = {
        "completed": backfill("Completed", 1, finished=True),
        "running": backfill("Running", 2),
        "failed": backfill("Failed", 3, finished=True),
    }
    BatchExportRun.objects.create(
        batch_export=metrics_export,
        backfill=rows["running"],
        status="Completed",
        data_interval_start=T0,
        data_interval_end=T0 + dt.timedelta(hours=1),
    )
    return rows


def test_historical_exports_list_backfills(
    api: Any, project: Project, metrics_export: BatchExport, historical: dict[str, BatchExportBackfill]
) -> None:
    response = api.get(metrics_url(project, metrics_export.id, suffix="historical_exports/"))
    assert response.status_code == 200, response.json()
    results = response.json()["results"]
    assert [r["job_id"] for r in results] == [str(historical[name].id) for name in ("failed", "running", "completed")]
    by_name = {name: next(r for r in results if r["job_id"] == str(row.id)) for name, row in historical.items()}
    assert {name: (r["status"], r["progress"]) for name, r in by_name.items()} == {
        "completed": ("success", 1.0),
        "running": ("not_finished", 0.25),
        "failed": ("fail", None),  # a backfill that failed has no progress, as in PostHog
    }
    completed = by_name["completed"]
    assert completed["payload"] == {"start_at": "2024-01-01T00:00:00Z", "end_at": "2024-01-01T04:00:00Z"}
    assert completed["created_at"] == "2024-01-31T00:01:00Z"
    assert completed["finished_at"] == "2024-01-31T00:02:30Z"
    assert completed["duration"] == 90.0
    assert completed["failure_reason"] is None
    assert by_name["running"]["finished_at"] is None and by_name["running"]["duration"] is None
    assert by_name["failed"]["failure_reason"]


def test_historical_export_retrieve_one(
    api: Any, project: Project, metrics_export: BatchExport, historical: dict[str, BatchExportBackfill]
) -> None:
    listed = api.get(metrics_url(project, metrics_export.id, suffix="historical_exports/")).json()["results"]
    for row in listed:
        response = api.get(metrics_url(project, metrics_export.id, suffix=f"historical_exports/{row['job_id']}/"))
        assert response.status_code == 200
        assert response.json() == row
    for unknown in (uuid.uuid4(), "nope"):
        url = metrics_url(project, metrics_export.id, suffix=f"historical_exports/{unknown}/")
        assert api.get(url).status_code == 404


def test_historical_export_of_another_export_is_404(
    api: Any, project: Project, metrics_export: BatchExport, historical: dict[str, BatchExportBackfill]
) -> None:
    other = create_export(api, prefix_for("projects", project), name="Other")
    url = metrics_url(project, other.id, suffix=f"historical_exports/{historical['completed'].id}/")
    assert api.get(url).status_code == 404
    assert api.get(metrics_url(project, other.id, suffix="historical_exports/")).json() == {"results": []}


@pytest.mark.parametrize(
    "suffix", ["", "error_details/", "historical_exports/", f"historical_exports/{uuid.UUID(int=1)}/"]
)
def test_app_metrics_of_an_unknown_export_are_404(api: Any, project: Project, suffix: str) -> None:
    for export_id in (uuid.uuid4(), "not-a-uuid"):
        assert api.get(metrics_url(project, export_id, suffix=suffix)).status_code == 404


def test_app_metrics_of_a_deleted_or_sibling_projects_export_are_404(
    api: Any, project: Project, sibling_project: Project, metrics_export: BatchExport
) -> None:
    sibling = create_export(api, prefix_for("projects", sibling_project), name="Sibling")
    assert api.get(metrics_url(sibling_project, sibling.id)).status_code == 200
    assert api.get(metrics_url(project, sibling.id)).status_code == 404
    assert api.delete(f"{prefix_for('projects', project)}{metrics_export.id}/").status_code == 204
    assert api.get(metrics_url(project, metrics_export.id)).status_code == 404


def test_app_metrics_need_plugin_read(
    client: Any, make_key: Any, project: Project, metrics_export: BatchExport
) -> None:
    urls = [
        metrics_url(project, metrics_export.id),
        metrics_url(project, metrics_export.id, suffix="error_details/"),
        metrics_url(project, metrics_export.id, suffix="historical_exports/"),
    ]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key(['batch_export:read'])}")
    for url in urls:
        response = client.get(url)
        assert response.status_code == 403, url
        assert "plugin:read" in response.json()["detail"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key(['plugin:read'])}")
    for url in urls:
        assert client.get(url).status_code == 200, url


def test_app_metrics_of_another_organization_are_403(
    api: Any, other_organization: Any, make_key: Any, client: Any, metrics_export: BatchExport
) -> None:
    _, other_project, other_user = other_organization
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key(['*'], for_user=other_user)}")
    assert client.get(metrics_url(metrics_export.team, metrics_export.id)).status_code == 403
    assert client.get(metrics_url(other_project, metrics_export.id)).status_code == 404
