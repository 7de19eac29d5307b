"""What runs and backfills write to the metadata database: run rows, statuses, user-facing logs.

Called by the activities (in worker threads); never by workflows, which stay deterministic.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.db import close_old_connections, transaction
from django.db.models import Sum
from django.utils import timezone

from batchexports.core.intervals import nominal_length
from batchexports.exports.backfills import calendar_for
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportLogEntry, BatchExportRun

logger = logging.getLogger(__name__)

FAILURES_BEFORE_PAUSE = 10
MIN_RUN_TIMEOUT = dt.timedelta(minutes=30)
MAX_RUN_TIMEOUT = dt.timedelta(hours=24)


def log(batch_export: BatchExport | str, level: str, message: str, run_id: Any = None) -> None:
    export_id = batch_export.id if isinstance(batch_export, BatchExport) else batch_export
    team_id = (
        batch_export.team_id
        if isinstance(batch_export, BatchExport)
        else BatchExport.objects.values_list("team_id", flat=True).get(id=export_id)
    )
    BatchExportLogEntry.objects.create(
        team_id=team_id, batch_export_id=export_id, run_id=run_id, timestamp=timezone.now(), level=level,
        message=message,
    )  # fmt: skip


def fresh_connection() -> None:
    """Activities run in long-lived worker threads: drop connections the database has closed."""
    close_old_connections()


def run_timeout(interval: str) -> dt.timedelta:
    """Twice the interval, within [30 min, 24 h]: a day's export may legitimately take hours."""
    return min(max(2 * nominal_length(interval), MIN_RUN_TIMEOUT), MAX_RUN_TIMEOUT)


def interval_ending_at(batch_export: BatchExport, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    """The data interval a scheduled run ending at `end` covers (calendar-aware for days and weeks)."""
    calendar = calendar_for(batch_export)
    end = calendar.floor(end)
    return calendar.floor(end - dt.timedelta(microseconds=1)), end


def start_run(
    batch_export: BatchExport,
    start: dt.datetime,
    end: dt.datetime,
    backfill_id: str | None,
    workflow_id: str,
    workflow_run_id: str | None = None,
) -> BatchExportRun:
    """A new run row (Starting) for this execution of `(export, interval)`.

    Every execution gets its own row, as PostHog keeps them: a retry or a second backfill of an
    interval leaves the earlier attempts visible. The row is keyed by the Temporal workflow run
    that executes it, so start_run retried after its commit returns that row instead of a second.
    """
    with transaction.atomic():
        run = None
        if workflow_run_id is not None:
            run = (
                BatchExportRun.objects.select_for_update()
                .filter(batch_export=batch_export, workflow_id=workflow_id, workflow_run_id=workflow_run_id)
                .first()
            )
        if run is not None:
            return run
        run = BatchExportRun.objects.create(
            batch_export=batch_export,
            data_interval_start=start,
            data_interval_end=end,
            status=BatchExportRun.Status.STARTING,
            backfill_id=backfill_id,
            workflow_id=workflow_id,
            workflow_run_id=workflow_run_id,
        )
    log(batch_export, "INFO", f"Run starting for the interval {start.isoformat()} to {end.isoformat()}", run.id)
    return run


def mark_running(run: BatchExportRun, attempt: int) -> None:
    running = BatchExportRun.Status.RUNNING
    BatchExportRun.objects.filter(id=run.id).update(status=running, last_updated_at=timezone.now())
    if attempt > 1:
        log(run.batch_export, "INFO", f"Attempt {attempt} of the export", run.id)


def mark_retrying(
    run: BatchExportRun, error: str, attempt: int, next_at: dt.datetime, window_ends: dt.datetime | None
) -> None:
    """FailedRetryable, with when the next attempt starts and until when retries go on."""
    until = ""
    if window_ends is not None:
        until = f"; retries go on until {window_ends:%Y-%m-%d %H:%M:%S} UTC (BATCHEXPORTS_RETRY_WINDOW_SECONDS)"
    shown = f"{error} (attempt {attempt} failed; retrying at {next_at:%Y-%m-%d %H:%M:%S} UTC{until})"
    BatchExportRun.objects.filter(id=run.id).update(
        status=BatchExportRun.Status.FAILED_RETRYABLE, latest_error=shown, last_updated_at=timezone.now()
    )
    log(
        run.batch_export,
        "WARNING",
        f"Attempt {attempt} failed, retrying at {next_at:%H:%M:%S} UTC: {error}{until}",
        run.id,
    )


def record_progress(run_id: str, records: int, bytes_exported: int) -> None:
    BatchExportRun.objects.filter(id=run_id).update(
        records_completed=records, bytes_exported=bytes_exported, last_updated_at=timezone.now()
    )


def finish_run(
    run: BatchExportRun,
    status: str,
    error: str | None,
    records: int | None = None,
    bytes_exported: int | None = None,
    total: int | None = None,
    files: list[str] | None = None,
) -> None:
    run.status = status
    run.latest_error = error
    run.finished_at = timezone.now()
    if records is not None:
        run.records_completed = records
        run.bytes_exported = bytes_exported
    if total is not None:
        run.records_total_count = total
    run.save()
    export = run.batch_export
    if status == BatchExportRun.Status.COMPLETED:
        where = f" into {len(files)} file(s): {', '.join(files[:5])}{' …' if len(files) > 5 else ''}" if files else ""
        log(export, "INFO", f"Run completed: {records or 0} rows, {bytes_exported or 0} bytes{where}", run.id)
    elif status == BatchExportRun.Status.CANCELLED:
        log(export, "WARNING", "Run cancelled", run.id)
    else:
        log(export, "ERROR", f"Run failed: {error}", run.id)
        pause_after_repeated_failures(export)


def pause_after_repeated_failures(batch_export: BatchExport) -> bool:
    """Pause an export whose last FAILURES_BEFORE_PAUSE scheduled executions all failed; True when it did.

    Executions are counted in the order they started (each is a row of its own), so a scheduled
    run that succeeded after the failures resets the count whatever interval it exported.
    Backfills and retries are left out: a user re-running old intervals does not pause the schedule.
    """
    latest = list(
        BatchExportRun.objects.filter(batch_export=batch_export, backfill__isnull=True)
        .order_by("-created_at")
        .values_list("status", flat=True)[:FAILURES_BEFORE_PAUSE]
    )
    if len(latest) < FAILURES_BEFORE_PAUSE or any(s != BatchExportRun.Status.FAILED for s in latest):
        return False
    updated = BatchExport.objects.filter(id=batch_export.id, paused=False).update(
        paused=True, last_paused_at=timezone.now()
    )
    if updated:
        log(
            batch_export, "ERROR",
            f"Paused after {FAILURES_BEFORE_PAUSE} failed runs in a row: fix the destination, then unpause "
            "(with backfill to export what was missed).",
        )  # fmt: skip
    return bool(updated)


def exported_by_backfill(backfill_id: str) -> int:
    """The records the completed runs of a backfill exported: its actual count once it ends."""
    total = BatchExportRun.objects.filter(backfill__id=backfill_id, status=BatchExportRun.Status.COMPLETED).aggregate(
        total=Sum("records_completed")
    )["total"]
    return int(total or 0)


def finish_backfill(backfill_id: str, status: str) -> None:
    """End a backfill; one whose runs did not all complete ends Failed, never plain Completed."""
    now = timezone.now()
    failed = BatchExportRun.objects.filter(backfill__id=backfill_id, status=BatchExportRun.Status.FAILED).count()
    if status == BatchExportBackfill.Status.COMPLETED and failed:
        status = BatchExportBackfill.Status.FAILED
    BatchExportBackfill.objects.filter(id=backfill_id).exclude(
        status__in=[BatchExportBackfill.Status.COMPLETED, BatchExportBackfill.Status.CANCELLED]
    ).update(status=status, finished_at=now, last_updated_at=now)
    # The estimate made at the start gives way to what was exported (also when cancelled, which the
    # API marks at once: the runs that finished before it are still what the destination holds).
    BatchExportBackfill.objects.filter(id=backfill_id).update(total_records_count=exported_by_backfill(backfill_id))
    backfill = BatchExportBackfill.objects.get(id=backfill_id)
    if failed and status == BatchExportBackfill.Status.FAILED:
        runs = BatchExportRun.objects.filter(backfill__id=backfill_id).count()
        log(
            str(backfill.batch_export_id),
            "ERROR",
            f"Backfill failed: {failed} of {runs} runs failed (retry them from the runs list)",
        )
    else:
        log(str(backfill.batch_export_id), "INFO", f"Backfill {status.lower()}")
