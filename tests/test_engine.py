"""Specification of the engine on a real Temporal dev server: schedules follow the database, runs
and backfills export through the pipeline, failures and cancellations are recorded, and every
execution of an interval (schedule, backfill, retry) is a run row of its own while the destination
holds the interval's rows once."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from temporalio.client import WorkflowExecutionStatus

from batchexports.core.receipts import receipt_of
from batchexports.engine import client as temporal
from batchexports.engine import schedules
from batchexports.engine.reconcile import reconcile
from batchexports.engine.server import EmbeddedTemporalServer
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportLogEntry, BatchExportRun
from batchexports.exports.run_book import DjangoRunBook
from batchexports.service import BackgroundWorker
from tests.conftest import prefix_for
from tests.exports_fixtures import decode_rows, expected_rows, exported_rows, known_events

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HOUR = dt.timedelta(hours=1)


@pytest.fixture(scope="session")
def temporal_address(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedTemporalServer(tmp_path_factory.mktemp("temporal"))
    server.start()
    yield server.address
    server.stop()


@pytest.fixture
def engine_on_temporal(temporal_address: str, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_address)
    settings.BATCHEXPORTS_ENGINE = "batchexports.engine.temporal_engine.TemporalEngine"
    yield
    # Leave no schedule behind for the next test (their exports vanish with the test database).
    client = temporal.client()
    for schedule_id in temporal.call(schedules.existing_ids(client)):
        temporal.call(schedules.delete(client, schedule_id))


@pytest.fixture
def export_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "exports"
    monkeypatch.setenv("BATCHEXPORTS_EXPORT_DIR", str(folder))
    return folder


@pytest.fixture
def worker(engine_on_temporal: None, events_store: Any) -> Iterator[BackgroundWorker]:
    running = BackgroundWorker()
    running.start()
    yield running
    running.stop()


def wait_for(condition: Callable[[], Any], timeout: float = 60, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def describe(schedule_id: str) -> Any:
    client = temporal.client()
    return temporal.call(client.get_schedule_handle(schedule_id).describe())


def file_export(api: Any, project: Any, path: str = "acme", **fields: Any) -> dict[str, Any]:
    payload = {"name": "Local", "interval": "hour", "destination": {"type": "File", "config": {"path": path}}}
    payload.update(fields)
    response = api.post(prefix_for("projects", project), payload, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def rows_in(folder: Path) -> list[dict[str, Any]]:
    return [
        row for path in sorted(folder.rglob("*.jsonl")) for row in decode_rows(path.read_bytes(), "JSONLines", None)
    ]


def past_hours(hours: int) -> dt.datetime:
    return timezone.now().replace(minute=0, second=0, microsecond=0) - hours * HOUR


# Schedules


def test_schedule_specs_follow_the_interval_timezone_and_offsets():
    def source(interval: str, offset: int | None = None, tz: str = "UTC") -> schedules.ScheduleSource:
        return schedules.ScheduleSource("x", interval, tz, offset, None, None, False, "n")

    hourly = schedules.schedule_spec(source("hour"))
    assert [i.every for i in hourly.intervals] == [HOUR] and hourly.calendars == []
    assert schedules.schedule_spec(source("every 15 minutes")).intervals[0].every == dt.timedelta(minutes=15)
    daily = schedules.schedule_spec(source("day", 3 * 3600, "Europe/Berlin"))
    assert daily.time_zone_name == "Europe/Berlin"
    assert [r.start for r in daily.calendars[0].hour] == [3]
    weekly = schedules.schedule_spec(source("week", 86400 + 6 * 3600))
    assert [(r.start, r.end) for r in weekly.calendars[0].day_of_week] == [(1, 1)]
    assert [r.start for r in weekly.calendars[0].hour] == [6]
    assert daily.jitter and daily.jitter < dt.timedelta(hours=1)


def test_the_api_drives_the_schedule_of_an_export(api, project, engine_on_temporal):
    created = file_export(api, project, start_at="2030-01-01T00:00:00Z")
    export_id = created["id"]
    schedule = describe(export_id).schedule
    assert [i.every for i in schedule.spec.intervals] == [HOUR]
    assert schedule.spec.start_at == dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    assert schedule.state.paused is False

    base = prefix_for("projects", project)
    api.post(f"{base}{export_id}/pause/")
    assert describe(export_id).schedule.state.paused is True
    api.post(f"{base}{export_id}/unpause/", {}, format="json")
    assert describe(export_id).schedule.state.paused is False

    changed = api.patch(
        f"{base}{export_id}/", {"interval": "day", "timezone": "Asia/Tokyo", "offset_hour": 5}, format="json"
    )
    assert changed.status_code == 200, changed.json()
    spec = describe(export_id).schedule.spec
    assert spec.intervals == [] and spec.time_zone_name == "Asia/Tokyo"
    assert [r.start for r in spec.calendars[0].hour] == [5]

    assert api.delete(f"{base}{export_id}/").status_code == 204
    assert export_id not in temporal.call(schedules.existing_ids(temporal.client()))


# Runs


def test_a_triggered_schedule_exports_the_interval_that_just_ended(api, project, worker, events_store, export_dir):
    previous_hour = past_hours(1)
    source = known_events(300, start=previous_hour, span=HOUR)
    events_store.import_table(project.id, source)
    events_store.import_table(project.id, known_events(50, start=previous_hour - HOUR, seed=9))  # an hour earlier
    export_id = file_export(api, project)["id"]
    temporal.call(schedules.trigger(temporal.client(), export_id))
    run = wait_for(
        lambda: BatchExportRun.objects.filter(batch_export_id=export_id, status="Completed").first(), what="a run"
    )
    assert (run.data_interval_start, run.data_interval_end) == (previous_hour, previous_hour + HOUR)
    assert run.records_completed == run.records_total_count == 300
    assert run.bytes_exported > 0 and run.finished_at is not None
    receipt = receipt_of([source], "events")  # recorded through the workflow's history (test_receipts.py)
    assert receipt is not None and (run.receipt_rows, run.receipt_checksum) == (300, receipt.checksum_hex)
    assert exported_rows(rows_in(export_dir)) == expected_rows(source)
    messages = list(BatchExportLogEntry.objects.filter(run_id=run.id).values_list("message", flat=True))
    assert any("Run starting" in m for m in messages) and any("Run completed: 300 rows" in m for m in messages)


def test_a_backfill_exports_every_interval_exactly_once(api, project, worker, events_store, export_dir):
    start = past_hours(6)
    source = known_events(600, start=start, span=6 * HOUR)
    events_store.import_table(project.id, source)
    export_id = file_export(api, project)["id"]
    url = f"{prefix_for('projects', project)}{export_id}/backfills/"
    body = {"start_at": start.isoformat(), "end_at": (start + 6 * HOUR).isoformat()}
    backfill_id = api.post(url, body, format="json").json()["backfill_id"]
    wait_for(lambda: api.get(f"{url}{backfill_id}/").json()["status"] == "Completed", what="the backfill")
    progress = api.get(f"{url}{backfill_id}/").json()["progress"]
    assert progress == {"total_runs": 6, "finished_runs": 6, "progress": 1.0}
    runs = BatchExportRun.objects.filter(batch_export_id=export_id)
    assert sorted((r.data_interval_start, r.status) for r in runs) == [
        (start + i * HOUR, "Completed") for i in range(6)
    ]
    assert exported_rows(rows_in(export_dir)) == expected_rows(source)

    backfill = BatchExportBackfill.objects.get(id=backfill_id)
    # Estimated from the source when it started, then what its runs exported.
    assert backfill.total_records_count == 600 and backfill.adjusted_start_at is None

    # The same range again: six more runs, each its own, while the files are replaced, never duplicated.
    again = api.post(url, body, format="json").json()["backfill_id"]
    wait_for(lambda: api.get(f"{url}{again}/").json()["status"] == "Completed", what="the second backfill")
    runs = BatchExportRun.objects.filter(batch_export_id=export_id)
    assert runs.count() == 12
    assert sorted(str(r.backfill_id) for r in runs) == sorted([backfill_id] * 6 + [again] * 6)
    assert {r.data_interval_start for r in runs.filter(backfill_id=again)} == {start + i * HOUR for i in range(6)}
    assert exported_rows(rows_in(export_dir)) == expected_rows(source)


def test_a_backfill_without_a_start_begins_at_the_earliest_data(api, project, worker, events_store, export_dir):
    start = past_hours(3)
    events_store.import_table(project.id, known_events(30, start=start + dt.timedelta(minutes=10), span=2 * HOUR))
    export_id = file_export(api, project)["id"]
    url = f"{prefix_for('projects', project)}{export_id}/backfills/"
    backfill_id = api.post(url, {"end_at": (start + 3 * HOUR).isoformat()}, format="json").json()["backfill_id"]
    wait_for(lambda: api.get(f"{url}{backfill_id}/").json()["status"] == "Completed", what="the backfill")
    assert BatchExportBackfill.objects.get(id=backfill_id).total_runs == 3
    assert BatchExportRun.objects.filter(batch_export_id=export_id, status="Completed").count() == 3
    body = api.get(f"{url}{backfill_id}/").json()
    # The open start was moved to the earliest data, and PostHog's fields say so.
    assert (body["start_at"], body["adjusted_start_at"]) == (None, start.isoformat().replace("+00:00", "Z"))
    assert body["total_records_count"] == 30


def test_a_start_before_the_data_is_moved_to_it(api, project, worker, events_store, export_dir):
    start = past_hours(3)
    events_store.import_table(project.id, known_events(20, start=start + dt.timedelta(minutes=5), span=HOUR))
    export_id = file_export(api, project)["id"]
    url = f"{prefix_for('projects', project)}{export_id}/backfills/"
    body = {"start_at": (start - 5 * HOUR).isoformat(), "end_at": (start + 2 * HOUR).isoformat()}
    backfill_id = api.post(url, body, format="json").json()["backfill_id"]
    wait_for(lambda: api.get(f"{url}{backfill_id}/").json()["status"] == "Completed", what="the backfill")
    backfill = BatchExportBackfill.objects.get(id=backfill_id)
    assert (backfill.start_at, backfill.adjusted_start_at, backfill.total_runs) == (start - 5 * HOUR, start, 2)
    assert backfill.total_records_count == 20
    assert sorted(r.data_interval_start for r in BatchExportRun.objects.filter(backfill_id=backfill_id)) == [
        start,
        start + HOUR,
    ]


def test_a_backfill_ending_one_interval_ahead_waits_for_that_interval(api, project, worker, events_store, export_dir):
    """The interval in progress is not exported half-done: the backfill waits for its end."""
    this_hour = past_hours(0)
    events_store.import_table(project.id, known_events(12, start=this_hour - HOUR, span=HOUR))
    in_progress = known_events(3, start=this_hour, span=dt.timedelta(microseconds=3), seed=5)
    events_store.import_table(project.id, in_progress)  # events of the hour in progress
    export_id = file_export(api, project)["id"]
    url = f"{prefix_for('projects', project)}{export_id}/backfills/"
    body = {"start_at": (this_hour - HOUR).isoformat(), "end_at": (this_hour + HOUR).isoformat()}
    response = api.post(url, body, format="json")
    assert response.status_code == 201, response.json()
    backfill_id = response.json()["backfill_id"]
    wait_for(
        lambda: BatchExportRun.objects.filter(backfill_id=backfill_id, status="Completed").exists(),
        what="the past interval's run",
    )
    time.sleep(1.5)
    runs = [(r.data_interval_start, r.status, r.records_completed) for r in BatchExportRun.objects.all()]
    assert runs == [(this_hour - HOUR, "Completed", 12)]
    detail = api.get(f"{url}{backfill_id}/").json()
    assert detail["status"] == "Running"
    assert detail["progress"] == {"total_runs": 2, "finished_runs": 1, "progress": 0.5}
    assert detail["total_records_count"] == 15  # the source's estimate of the whole range
    assert api.post(f"{url}{backfill_id}/cancel/").json() == {"cancelled": True}
    handle = temporal.client().get_workflow_handle(f"backfill-{backfill_id}")
    wait_for(
        lambda: temporal.call(handle.describe()).status == WorkflowExecutionStatus.CANCELED,
        what="the waiting backfill to end cancelled",
    )
    assert BatchExportRun.objects.filter(backfill_id=backfill_id).count() == 1
    # Once it ended, what it exported.
    wait_for(lambda: BatchExportBackfill.objects.get(id=backfill_id).total_records_count == 12, what="the count")


def test_retrying_a_run_re_exports_its_interval(api, project, worker, events_store, export_dir):
    start = past_hours(2)
    events_store.import_table(project.id, known_events(40, start=start))
    export_id = file_export(api, project)["id"]
    run = BatchExportRun.objects.create(
        batch_export_id=export_id, status="Failed", data_interval_start=start, data_interval_end=start + HOUR
    )
    base = f"{prefix_for('projects', project)}{export_id}/runs/{run.id}/"
    response = api.post(f"{base}retry/")
    assert response.status_code == 201, response.json()
    backfill_id = response.json()["backfill_id"]
    wait_for(lambda: BatchExportBackfill.objects.get(id=backfill_id).status == "Completed", what="the retry")
    run.refresh_from_db()
    assert run.status == "Failed"  # the earlier attempt stays as it was
    retried = BatchExportRun.objects.get(backfill_id=backfill_id)
    assert (retried.data_interval_start, retried.status, retried.records_completed) == (start, "Completed", 40)
    assert len(rows_in(export_dir)) == 40


def test_retrying_a_completed_run_keeps_both_runs_and_the_rows_once(api, project, worker, events_store, export_dir):
    start = past_hours(2)
    source = known_events(50, start=start)
    events_store.import_table(project.id, source)
    export_id = file_export(api, project)["id"]
    runs_url = f"{prefix_for('projects', project)}{export_id}/runs/"
    backfills_url = f"{prefix_for('projects', project)}{export_id}/backfills/"
    body = {"start_at": start.isoformat(), "end_at": (start + HOUR).isoformat()}
    first_backfill = api.post(backfills_url, body, format="json").json()["backfill_id"]
    wait_for(lambda: BatchExportBackfill.objects.get(id=first_backfill).status == "Completed", what="the first run")
    (first,) = BatchExportRun.objects.filter(batch_export_id=export_id)
    time.sleep(1.1)  # the retry starts visibly later

    response = api.post(f"{runs_url}{first.id}/retry/")
    assert response.status_code == 201, response.json()
    retry_backfill = response.json()["backfill_id"]
    wait_for(lambda: BatchExportBackfill.objects.get(id=retry_backfill).status == "Completed", what="the retry")

    listed = api.get(runs_url).json()["results"]
    assert [r["status"] for r in listed] == ["Completed", "Completed"]
    second, earlier = listed  # newest first
    assert earlier["id"] == str(first.id) and second["id"] != earlier["id"]
    assert second["backfill"] == retry_backfill and earlier["backfill"] == first_backfill
    for run in listed:
        assert (run["data_interval_start"], run["records_completed"]) == (
            start.isoformat().replace("+00:00", "Z"),
            50,
        )
    # Each run's duration is its own: the retry started after the first had finished.
    parse = lambda value: dt.datetime.fromisoformat(value.replace("Z", "+00:00"))  # noqa: E731
    assert parse(earlier["created_at"]) < parse(earlier["finished_at"]) < parse(second["created_at"])
    assert parse(second["created_at"]) < parse(second["finished_at"])
    first.refresh_from_db()
    assert first.finished_at == parse(earlier["finished_at"])  # the retry did not touch the first run
    # Both executions have their own log lines.
    assert BatchExportLogEntry.objects.filter(run_id=first.id, message__contains="Run completed").count() == 1
    assert BatchExportLogEntry.objects.filter(run_id=second["id"], message__contains="Run completed").count() == 1
    # The destination holds the interval's rows once.
    assert exported_rows(rows_in(export_dir)) == expected_rows(source)
    # Both are in the interval-ordered list too, and in the app metrics of today.
    by_interval = api.get(runs_url, {"ordering": "-data_interval_start", "status": "Completed"}).json()["results"]
    assert {r["id"] for r in by_interval} == {r["id"] for r in listed}
    metrics = api.get(f"/api/projects/{project.id}/app_metrics/{export_id}/", {"date_from": "-1d"}).json()
    assert metrics["metrics"]["totals"] == {"successes": 2, "successes_on_retry": 0, "failures": 0}


def test_a_destination_error_fails_the_run_at_once_with_its_reason(api, project, worker, events_store, export_dir):
    start = past_hours(2)
    events_store.import_table(project.id, known_events(10, start=start))
    export_dir.mkdir(parents=True)
    (export_dir / "blocked").write_text("a file where the folder should be")
    export_id = file_export(api, project, path="blocked/inside")["id"]
    url = f"{prefix_for('projects', project)}{export_id}/backfills/"
    body = {"start_at": start.isoformat(), "end_at": (start + HOUR).isoformat()}
    backfill_id = api.post(url, body, format="json").json()["backfill_id"]
    # A backfill with a failed run is Failed, never plain Completed.
    wait_for(lambda: api.get(f"{url}{backfill_id}/").json()["status"] == "Failed", what="the backfill")
    (run,) = BatchExportRun.objects.filter(batch_export_id=export_id)
    assert run.status == "Failed"
    assert "move it or change the path" in run.latest_error
    assert not BatchExportLogEntry.objects.filter(run_id=run.id, message__contains="retrying").exists()
    assert BatchExportLogEntry.objects.filter(run_id=run.id, level="ERROR", message__contains="Run failed").exists()


def test_cancelling_a_backfill_stops_it(api, project, worker, events_store, export_dir):
    start = past_hours(2)
    events_store.import_table(project.id, known_events(24, start=start, span=2 * HOUR))
    export_id = file_export(api, project, interval="every 5 minutes")["id"]
    url = f"{prefix_for('projects', project)}{export_id}/backfills/"
    body = {"start_at": (start - 30 * 24 * HOUR).isoformat(), "end_at": (start + 2 * HOUR).isoformat()}
    BatchExportRun.objects.all().delete()
    backfill_id = api.post(url, body, format="json").json()["backfill_id"]
    wait_for(lambda: BatchExportRun.objects.filter(backfill_id=backfill_id).exists(), what="the first run")
    assert api.post(f"{url}{backfill_id}/cancel/").json() == {"cancelled": True}
    assert BatchExportBackfill.objects.get(id=backfill_id).status == "Cancelled"
    handle = temporal.client().get_workflow_handle(f"backfill-{backfill_id}")
    wait_for(
        lambda: temporal.call(handle.describe()).status == WorkflowExecutionStatus.CANCELED,
        what="the backfill workflow to end cancelled",
    )
    wait_for(
        lambda: not BatchExportRun.objects.filter(backfill_id=backfill_id, status__in=["Starting", "Running"]).exists(),
        what="the last run to be finished",
    )
    finished = BatchExportRun.objects.filter(backfill_id=backfill_id).count()
    time.sleep(2)
    assert BatchExportRun.objects.filter(backfill_id=backfill_id).count() == finished, "no run starts after cancel"
    assert finished < BatchExportBackfill.objects.get(id=backfill_id).total_runs


def test_reconcile_heals_schedules_and_starts_pending_backfills(api, project, engine_on_temporal, events_store):
    export_id = file_export(api, project)["id"]
    client = temporal.client()
    temporal.call(schedules.delete(client, export_id))  # Temporal lost it
    deleted = file_export(api, project, path="gone")["id"]
    BatchExport.objects.filter(id=deleted).update(deleted=True)  # deleted while Temporal was away
    pending = BatchExportBackfill.objects.create(
        team_id=project.id, batch_export_id=export_id, start_at=past_hours(2), end_at=past_hours(1), total_runs=1
    )
    report = temporal.call(reconcile(client, DjangoRunBook()))
    assert report.backfills_started == 1
    ids = temporal.call(schedules.existing_ids(client))
    assert export_id in ids and deleted not in ids
    handle = client.get_workflow_handle(f"backfill-{pending.id}")
    assert temporal.call(handle.describe()).id == f"backfill-{pending.id}"
    temporal.call(handle.terminate())


def test_the_embedded_server_starts_again_on_other_ports_when_its_port_was_taken(tmp_path, monkeypatch):
    """A port found free can be taken before the server binds it; the server then exits at once,
    and the service starts it again on fresh ports rather than failing `up`."""
    import socket

    from batchexports.engine import server as embedded

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])
    real_free_port = embedded.free_port
    monkeypatch.setattr(embedded, "free_port", lambda: next(ports, None) or real_free_port())
    server = EmbeddedTemporalServer(tmp_path / "temporal")
    try:
        address = server.start()
        assert address != f"127.0.0.1:{taken.getsockname()[1]}"
        assert embedded.answers(address)
    finally:
        server.stop()
        taken.close()
