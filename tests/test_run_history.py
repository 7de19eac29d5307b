"""Specification of the run book: every execution of an interval is a run row of its own.

These call the run book the engine's activities call (in the worker, against the metadata
database), without Temporal: recording a run is idempotent per Temporal workflow run, the
export pauses itself after ten failed scheduled executions in a row, and a backfill that ends
reports what its runs exported.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from batchexports.exports import run_book
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportLogEntry, BatchExportRun
from tests.conftest import export_payload, prefix_for

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


@pytest.fixture
def export(api: Any, project: Any, engine: Any) -> BatchExport:
    response = api.post(prefix_for("projects", project), export_payload(), format="json")
    assert response.status_code == 201, response.json()
    return BatchExport.objects.get(id=response.json()["id"])


def test_each_execution_of_an_interval_is_a_row_of_its_own(export: BatchExport) -> None:
    first = run_book.start_run(export, T0, T0 + HOUR, None, "sched-1", "run-a")
    run_book.finish_run(first, "Completed", None, records=7, bytes_exported=70)
    second = run_book.start_run(export, T0, T0 + HOUR, None, "retry-1", "run-b")
    assert second.id != first.id
    assert (second.status, second.records_completed, second.finished_at) == ("Starting", None, None)
    first.refresh_from_db()
    assert (first.status, first.records_completed) == ("Completed", 7)  # the earlier attempt is untouched
    assert first.finished_at is not None
    assert BatchExportRun.objects.filter(batch_export=export, data_interval_start=T0).count() == 2


def test_recording_a_run_is_idempotent_per_workflow_run(export: BatchExport) -> None:
    """An activity retried after its commit (its worker died before reporting) finds its row."""
    first = run_book.start_run(export, T0, T0 + HOUR, None, "sched-1", "run-a")
    again = run_book.start_run(export, T0, T0 + HOUR, None, "sched-1", "run-a")
    assert again.id == first.id
    assert BatchExportRun.objects.count() == 1
    assert BatchExportLogEntry.objects.filter(run_id=first.id, message__startswith="Run starting").count() == 1
    # The same workflow id run again by Temporal (a new workflow run) is a new execution.
    rerun = run_book.start_run(export, T0, T0 + HOUR, None, "sched-1", "run-b")
    assert rerun.id != first.id and BatchExportRun.objects.count() == 2


def start(export: BatchExport, hour: int, backfill_id: str | None, workflow_id: str) -> BatchExportRun:
    start_at = T0 + hour * HOUR
    return run_book.start_run(export, start_at, start_at + HOUR, backfill_id, workflow_id, "r")


def scheduled(export: BatchExport, hour: int, status: str, backfill: BatchExportBackfill | None = None) -> None:
    run = start(export, hour, backfill and str(backfill.id), f"w-{BatchExportRun.objects.count()}")
    run_book.finish_run(run, status, None if status == "Completed" else "AccessDenied")


def paused(export: BatchExport) -> bool:
    export.refresh_from_db()
    return export.paused


def test_ten_failed_scheduled_executions_in_a_row_pause_the_export(export: BatchExport) -> None:
    for hour in range(9):
        scheduled(export, hour, "Failed")
    assert not paused(export)
    scheduled(export, 9, "Failed")
    assert paused(export)
    assert export.last_paused_at is not None
    assert BatchExportLogEntry.objects.filter(batch_export=export, message__startswith="Paused after 10").exists()


def test_a_success_after_the_failures_resets_the_count_whatever_interval_it_ran(export: BatchExport) -> None:
    """Executions count in the order they ran: a scheduled run that succeeded last, even one of an
    older interval, means the destination works."""
    for hour in range(1, 10):
        scheduled(export, hour, "Failed")
    scheduled(export, 0, "Completed")  # the latest execution, of the oldest interval
    scheduled(export, 10, "Failed")
    assert not paused(export)


def test_failed_backfill_runs_do_not_pause_the_schedule(export: BatchExport) -> None:
    backfill = BatchExportBackfill.objects.create(team_id=export.team_id, batch_export=export, status="Running")
    for hour in range(12):
        scheduled(export, hour, "Failed", backfill=backfill)
    assert not paused(export)


def test_a_backfill_that_ends_reports_what_its_runs_exported(export: BatchExport) -> None:
    backfill = BatchExportBackfill.objects.create(
        team_id=export.team_id, batch_export=export, status="Running", total_records_count=1000
    )
    for hour, (status, records) in enumerate([("Completed", 10), ("Completed", 25), ("Failed", None)]):
        run = start(export, hour, str(backfill.id), f"b-{hour}")
        run_book.finish_run(run, status, None, records=records, bytes_exported=records and 1)
    other = run_book.start_run(export, T0, T0 + HOUR, None, "sched", "r")
    run_book.finish_run(other, "Completed", None, records=99, bytes_exported=1)
    run_book.finish_backfill(str(backfill.id), "Completed")
    backfill.refresh_from_db()
    # Its third run failed, so it ends Failed (never plain Completed), with what its runs did export.
    assert (backfill.status, backfill.total_records_count) == ("Failed", 35)
