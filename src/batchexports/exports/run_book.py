"""The run book on Django: what runs and backfills write to the metadata database (run rows,
statuses, user-facing logs) and read from it, for the engine's activities.

`DjangoRunBook` implements the engine's `RunBook` protocol over the functions below; the
composition root hands it to the worker. Called from activity threads, never by workflows.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Iterator
from typing import Any

from django.db import close_old_connections, connection, transaction
from django.db.models import Sum
from django.utils import timezone

from batchexports.core.intervals import run_timeout, split_offset
from batchexports.core.run import ExportRun, LiveExport
from batchexports.engine.inputs import ExportOutcome, FinishRunInput
from batchexports.engine.run_book import (
    BackfillStart,
    Earliest,
    EngineState,
    Estimator,
    RunRow,
    RunStart,
    schedule_source,
)
from batchexports.exports.backfills import calendar_for
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportLogEntry, BatchExportRun

logger = logging.getLogger(__name__)

FAILURES_BEFORE_PAUSE = 10


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
    receipt: tuple[int, str] | None = None,
) -> None:
    run.status = status
    run.latest_error = error
    run.finished_at = timezone.now()
    if records is not None:
        run.records_completed = records
        run.bytes_exported = bytes_exported
    if total is not None:
        run.records_total_count = total
    if receipt is not None:
        run.receipt_rows, run.receipt_checksum = receipt
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


def export_run_of(
    batch_export: BatchExport, start: dt.datetime | None, end: dt.datetime, run_id: str | None
) -> ExportRun:
    """What the pipeline needs to export [start, end) of `batch_export` (destination secrets included)."""
    destination = batch_export.destination
    return ExportRun(
        batch_export_id=str(batch_export.id),
        team_id=batch_export.team_id,
        model=batch_export.model,
        destination_type=destination.type,
        destination_config=destination.full_config(),
        data_interval_start=start,
        data_interval_end=end,
        run_id=run_id,
        hogql_query=batch_export.hogql_query or None,
        filters=tuple(batch_export.filters or ()),
    )


def _iso_or_open(moment: dt.datetime | None) -> str:
    return moment.isoformat() if moment else "an open start"


class DjangoRunBook:
    """The engine's `RunBook` over Django's ORM (SQLite or PostgreSQL)."""

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        # Activities run in pool threads: start from a live connection and close it when done, so
        # that no idle connection per worker thread outlives the activity (PostgreSQL counts them).
        fresh_connection()
        try:
            yield
        finally:
            connection.close()

    def start_run(self, start: RunStart) -> RunRow | None:
        batch_export = BatchExport.objects.filter(id=start.batch_export_id, deleted=False).first()
        if batch_export is None:
            return None
        if start.data_interval_end is not None:
            begin, end = start.data_interval_start, start.data_interval_end
            if begin is None:
                begin, end = interval_ending_at(batch_export, end)
        else:
            begin, end = interval_ending_at(batch_export, start.fired_for)
        run = start_run(batch_export, begin, end, start.backfill_id, start.workflow_id, start.workflow_run_id)
        return RunRow(str(run.id), begin, end, run_timeout(batch_export.interval))

    def load_run(self, run_id: str) -> ExportRun:
        run = BatchExportRun.objects.select_related("batch_export__destination").get(id=run_id)
        return export_run_of(run.batch_export, run.data_interval_start, run.data_interval_end, str(run.id))

    def mark_running(self, run_id: str, attempt: int) -> None:
        mark_running(BatchExportRun.objects.select_related("batch_export").get(id=run_id), attempt)

    def mark_retrying(
        self, run_id: str, error: str, attempt: int, next_at: dt.datetime, window_ends: dt.datetime | None
    ) -> None:
        run = BatchExportRun.objects.select_related("batch_export").get(id=run_id)
        mark_retrying(run, error, attempt, next_at, window_ends)

    def record_progress(self, run_id: str, records: int, bytes_exported: int) -> None:
        record_progress(run_id, records, bytes_exported)

    def finish_run(self, data: FinishRunInput, workflow_id: str, workflow_run_id: str | None) -> bool:
        if data.run_id is None:
            # Cancelled while start_run ran: the row it may have written for this workflow run is still Starting.
            BatchExportRun.objects.filter(
                workflow_id=workflow_id, workflow_run_id=workflow_run_id, status__in=BatchExportRun.ACTIVE_STATUSES
            ).update(status=data.status, finished_at=timezone.now(), last_updated_at=timezone.now())
            return False
        run = BatchExportRun.objects.select_related("batch_export").get(id=data.run_id)
        outcome = data.outcome
        finish_run(
            run,
            data.status,
            data.error,
            records=outcome.records_completed if outcome else None,
            bytes_exported=outcome.bytes_exported if outcome else None,
            total=outcome.records_total_count if outcome else None,
            files=outcome.files if outcome else None,
            receipt=_receipt_of(outcome),
        )
        if data.status != BatchExportRun.Status.FAILED:
            return False
        return BatchExport.objects.filter(id=run.batch_export_id, paused=True).exists()

    def start_backfill(
        self, backfill_id: str, first: bool, earliest: Earliest, estimate: Estimator
    ) -> BackfillStart | None:
        backfill = BatchExportBackfill.objects.select_related("batch_export__destination").get(id=backfill_id)
        if backfill.status not in BatchExportBackfill.ACTIVE_STATUSES:
            return None
        batch_export = backfill.batch_export
        calendar = calendar_for(batch_export)
        end = backfill.end_at or calendar.floor(timezone.now())
        start = backfill.start_at
        first_data = earliest(batch_export.model, batch_export.team_id)
        if first_data is None or first_data >= end:
            start = None
        elif start is None or start < first_data:
            start = max(calendar.floor(first_data), calendar.floor(start) if start else calendar.floor(first_data))
        total = calendar.count(start, end) if start is not None else 0
        backfill.status = BatchExportBackfill.Status.RUNNING
        backfill.total_runs = total
        fields = ["status", "total_runs", "last_updated_at"]
        if first:  # a continue-as-new keeps what the first start found
            backfill.adjusted_start_at = start if start is not None and start != backfill.start_at else None
            backfill.total_records_count = (
                estimate(export_run_of(batch_export, start, end, None)) if start is not None else 0
            )
            fields += ["adjusted_start_at", "total_records_count"]
        backfill.save(update_fields=fields)
        if first:
            span = f"{start.isoformat()} to {end.isoformat()}" if start else "nothing (no data before the end)"
            moved = ""
            if backfill.adjusted_start_at:
                moved = f" (moved to the earliest data from {_iso_or_open(backfill.start_at)})"
            log(batch_export, "INFO", f"Backfill started: {total} interval(s) from {span}{moved}")
        offset_day, offset_hour = split_offset(batch_export.interval_offset)
        return BackfillStart(
            batch_export_id=str(batch_export.id),
            interval=batch_export.interval,
            timezone=batch_export.timezone or "UTC",
            offset_day=offset_day or 0,
            offset_hour=offset_hour or 0,
            start=start,
            end=end,
            total=total,
        )

    def finish_backfill(self, backfill_id: str, status: str) -> None:
        finish_backfill(backfill_id, status)

    def engine_state(self) -> EngineState:
        active = BatchExportBackfill.objects.filter(status__in=BatchExportBackfill.ACTIVE_STATUSES)
        return EngineState(
            live=[schedule_source(be) for be in BatchExport.objects.filter(deleted=False)],
            deleted_ids={str(i) for i in BatchExport.objects.filter(deleted=True).values_list("id", flat=True)},
            active_backfill_ids=[str(i) for i in active.values_list("id", flat=True)],
        )


def live_exports() -> list[LiveExport]:
    """Every export that is not deleted, with its destination's full config, for the start-up sweep.
    Called from the sweep's own thread: its connection is closed before it returns."""
    try:
        return [
            LiveExport(str(be.id), be.interval, be.destination.type, be.destination.full_config())
            for be in BatchExport.objects.filter(deleted=False).select_related("destination")
        ]
    finally:
        connection.close()


def _receipt_of(outcome: ExportOutcome | None) -> tuple[int, str] | None:
    if outcome is None or outcome.receipt_rows is None or outcome.receipt_checksum is None:
        return None
    return outcome.receipt_rows, outcome.receipt_checksum
