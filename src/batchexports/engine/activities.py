"""Activities: all the I/O of runs and backfills (database, events store, destinations).

Synchronous (Django's ORM, DuckDB and the sinks are), so the worker runs them in a thread pool.
A destination's NonRetryableError fails the activity at once; anything else is retried by
Temporal with backoff, the run showing FailedRetryable meanwhile.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from django.conf import settings
from django.db import connection
from django.utils import timezone
from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from batchexports.core.errors import NonRetryableError
from batchexports.core.intervals import split_offset
from batchexports.core.run import Cancelled, CancelToken, ExportRun, Progress
from batchexports.engine import bookkeeping, retry_window
from batchexports.engine.inputs import (
    BackfillInput,
    BackfillPlan,
    ExportOutcome,
    FinishBackfillInput,
    FinishRunInput,
    RunInput,
    StartedRun,
)
from batchexports.events.store import get_store
from batchexports.exports.backfills import calendar_for
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportRun
from batchexports.pipeline.export import export, model_query

logger = logging.getLogger(__name__)

NON_RETRYABLE = "NonRetryableError"
T = TypeVar("T")
# How often export_run heartbeats from its own thread, whatever the pipeline is doing; a fifth of
# the run workflow's heartbeat timeout (10 s), so a slow query or a stall of a few seconds never
# looks like a dead worker, while a worker that died is noticed and its export retried within it.
HEARTBEAT_EVERY = 2.0


def _own_connection(function: Callable[..., T]) -> Callable[..., T]:
    """Activities run in pool threads: start from a live connection and close it when done, so that no
    idle connection per worker thread outlives the activity (PostgreSQL counts them)."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> T:
        bookkeeping.fresh_connection()
        try:
            return function(*args, **kwargs)
        finally:
            connection.close()

    return wrapper


def _parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


@activity.defn
@_own_connection
def start_run(data: RunInput) -> StartedRun | None:
    batch_export = BatchExport.objects.filter(id=data.batch_export_id, deleted=False).first()
    if batch_export is None:
        logger.info("batch export %s is gone: nothing to run", data.batch_export_id)
        return None
    if data.data_interval_end is not None:
        end = _parse(data.data_interval_end)
        start = _parse(data.data_interval_start) if data.data_interval_start else None
        if start is None:
            start, end = bookkeeping.interval_ending_at(batch_export, end)
    else:
        fired_for = _parse(data.scheduled_at) if data.scheduled_at else timezone.now()
        start, end = bookkeeping.interval_ending_at(batch_export, fired_for)
    info = activity.info()
    # Always set here: these activities run only inside workflows (the SDK types them optional for standalone ones).
    workflow_id = info.workflow_id or ""
    run = bookkeeping.start_run(batch_export, start, end, data.backfill_id, workflow_id, info.workflow_run_id)
    timeout = bookkeeping.run_timeout(batch_export.interval)
    return StartedRun(
        str(run.id), start.isoformat(), end.isoformat(), int(timeout.total_seconds()),
        retry_window_seconds=settings.BATCHEXPORTS_RETRY_WINDOW_SECONDS,
    )  # fmt: skip


def _export_run(run: BatchExportRun) -> ExportRun:
    batch_export = run.batch_export
    destination = batch_export.destination
    return ExportRun(
        batch_export_id=str(batch_export.id),
        team_id=batch_export.team_id,
        model=batch_export.model,
        destination_type=destination.type,
        destination_config=destination.full_config(),
        data_interval_start=run.data_interval_start,
        data_interval_end=run.data_interval_end,
        run_id=str(run.id),
        hogql_query=batch_export.hogql_query or None,
        filters=tuple(batch_export.filters or ()),
    )


class _Heartbeater:
    """Heartbeats the records written so far every HEARTBEAT_EVERY seconds from a thread of its
    own (in the activity's context), and passes a cancellation on to the pipeline's token."""

    def __init__(self, token: CancelToken, every: float = HEARTBEAT_EVERY) -> None:
        self.records = 0
        self._token = token
        self._every = every
        self._stop = threading.Event()
        context = contextvars.copy_context()
        self._thread = threading.Thread(target=context.run, args=(self._loop,), name="heartbeat", daemon=True)

    def beat(self) -> None:
        activity.heartbeat(self.records)
        if activity.is_cancelled():
            self._token.cancel()

    def _loop(self) -> None:
        while not self._stop.wait(self._every):
            try:
                self.beat()
            except Exception as error:  # the worker is shutting down: the activity ends anyway
                logger.debug("heartbeat failed: %s: %s", type(error).__name__, error)

    def __enter__(self) -> _Heartbeater:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        with contextlib.suppress(RuntimeError):
            self._thread.join(timeout=15)


@activity.defn
@_own_connection
def export_run(run_id: str) -> ExportOutcome:
    run = BatchExportRun.objects.select_related("batch_export__destination").get(id=run_id)
    attempt = activity.info().attempt
    bookkeeping.mark_running(run, attempt)
    token = CancelToken()
    heartbeater = _Heartbeater(token)

    def on_progress(progress: Progress) -> None:
        heartbeater.records = progress.records_completed
        heartbeater.beat()

    try:
        with heartbeater:
            result = export(_export_run(run), get_store(), progress=on_progress, cancel=token)
    except (Cancelled, CancelledError):
        # Temporal recognises a cancelled activity only by its own CancelledError (its thread
        # raiser may also throw one into this thread): anything else would end the run Failed, and
        # a backfill waiting on that run would not see its cancellation and go on.
        raise CancelledError("the run was cancelled") from None
    except NonRetryableError as error:
        raise ApplicationError(str(error), type=NON_RETRYABLE, non_retryable=True) from None
    except Exception as error:
        message = str(error) if getattr(error, "retryable", False) else f"{type(error).__name__}: {error}"
        info = activity.info()
        # The workflow's schedule-to-close timeout is at least one attempt long; the window is the setting.
        window = (
            dt.timedelta(seconds=settings.BATCHEXPORTS_RETRY_WINDOW_SECONDS) if info.schedule_to_close_timeout else None
        )
        upcoming = retry_window.after_failure(attempt, timezone.now(), info.scheduled_time, window)
        if upcoming.at is None:
            # No attempt follows: say so rather than "retrying", and fail the run with the reason.
            span = f"the retry window of {retry_window.describe(window)}" if window else f"{attempt} attempts"
            message = f"{message} (gave up after {attempt} attempts: {span} is over)"
            raise ApplicationError(message, type=NON_RETRYABLE, non_retryable=True) from None
        bookkeeping.mark_retrying(run, message, attempt, upcoming.at, upcoming.window_ends)
        raise ApplicationError(message, type=type(error).__name__) from None
    bookkeeping.record_progress(run_id, result.records_completed, result.bytes_exported)
    return ExportOutcome(
        result.records_completed, result.bytes_exported, result.records_total_count, list(result.files)
    )


@activity.defn
@_own_connection
def finish_run(data: FinishRunInput) -> None:
    if data.run_id is None:
        # Cancelled while start_run ran: the row it may have written for this workflow run is still Starting.
        info = activity.info()
        BatchExportRun.objects.filter(
            workflow_id=info.workflow_id,
            workflow_run_id=info.workflow_run_id,
            status__in=BatchExportRun.ACTIVE_STATUSES,
        ).update(status=data.status, finished_at=timezone.now(), last_updated_at=timezone.now())
        return
    run = BatchExportRun.objects.select_related("batch_export").get(id=data.run_id)
    outcome = data.outcome
    bookkeeping.finish_run(
        run,
        data.status,
        data.error,
        records=outcome.records_completed if outcome else None,
        bytes_exported=outcome.bytes_exported if outcome else None,
        total=outcome.records_total_count if outcome else None,
        files=outcome.files if outcome else None,
    )
    if data.status == BatchExportRun.Status.FAILED and run.batch_export.paused:
        from batchexports.engine.temporal_engine import pause_schedule_now

        pause_schedule_now(str(run.batch_export_id))


def _estimate_records(batch_export: BatchExport, start: dt.datetime, end: dt.datetime) -> int | None:
    """The source's count of the rows of [start, end): the backfill's `total_records_count` until it ends."""
    destination = batch_export.destination
    whole_range = ExportRun(
        batch_export_id=str(batch_export.id),
        team_id=batch_export.team_id,
        model=batch_export.model,
        destination_type=destination.type,
        destination_config=destination.full_config(),
        data_interval_start=start,
        data_interval_end=end,
        hogql_query=batch_export.hogql_query or None,
        filters=tuple(batch_export.filters or ()),
    )
    try:
        return get_store().count(model_query(whole_range))
    except Exception as error:  # only an estimate: the backfill goes on without one
        logger.warning("backfill estimate of %s failed: %s: %s", batch_export.id, type(error).__name__, error)
        return None


@activity.defn
@_own_connection
def start_backfill(data: BackfillInput) -> BackfillPlan | None:
    """Fix the backfill's range (clamped to the earliest data), estimate its records, mark it Running."""
    backfill = BatchExportBackfill.objects.select_related("batch_export__destination").get(id=data.backfill_id)
    if backfill.status not in BatchExportBackfill.ACTIVE_STATUSES:
        return None
    batch_export = backfill.batch_export
    calendar = calendar_for(batch_export)
    end = backfill.end_at or calendar.floor(timezone.now())
    start = backfill.start_at
    earliest = get_store().earliest(batch_export.model, batch_export.team_id)
    if earliest is None or earliest >= end:
        start = None
    elif start is None or start < earliest:
        start = max(calendar.floor(earliest), calendar.floor(start) if start else calendar.floor(earliest))
    total = calendar.count(start, end) if start is not None else 0
    backfill.status = BatchExportBackfill.Status.RUNNING
    backfill.total_runs = total
    fields = ["status", "total_runs", "last_updated_at"]
    if data.done == 0:  # a continue-as-new keeps what the first start found
        backfill.adjusted_start_at = start if start is not None and start != backfill.start_at else None
        backfill.total_records_count = _estimate_records(batch_export, start, end) if start is not None else 0
        fields += ["adjusted_start_at", "total_records_count"]
    backfill.save(update_fields=fields)
    if data.done == 0:
        span = f"{start.isoformat()} to {end.isoformat()}" if start else "nothing (no data before the end)"
        moved = ""
        if backfill.adjusted_start_at:
            moved = f" (moved to the earliest data from {_iso_or_open(backfill.start_at)})"
        bookkeeping.log(batch_export, "INFO", f"Backfill started: {total} interval(s) from {span}{moved}")
    offset_day, offset_hour = split_offset(batch_export.interval_offset)
    return BackfillPlan(
        batch_export_id=str(batch_export.id),
        interval=batch_export.interval,
        timezone=batch_export.timezone or "UTC",
        offset_day=offset_day or 0,
        offset_hour=offset_hour or 0,
        start=start.isoformat() if start else None,
        end=end.isoformat(),
        total=total,
    )


def _iso_or_open(moment: dt.datetime | None) -> str:
    return moment.isoformat() if moment else "an open start"


@activity.defn
@_own_connection
def finish_backfill(data: FinishBackfillInput) -> None:
    bookkeeping.finish_backfill(data.backfill_id, data.status)


ACTIVITIES = [start_run, export_run, finish_run, start_backfill, finish_backfill]
