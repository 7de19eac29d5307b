"""Activities: all the I/O of runs and backfills (metadata database, events store, destinations).

They are methods of `Activities`, built in the composition root with a `RunBook` (the metadata
database, Django's in `exports/run_book.py`) and the events store: the engine itself never
imports Django. Synchronous (the ORM, DuckDB and the sinks are), so the worker runs them in a
thread pool. A destination's NonRetryableError fails the activity at once; anything else is
retried by Temporal with backoff, the run showing FailedRetryable meanwhile. Activity names are
those of the functions they once were, so histories in flight still replay.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import logging
import threading
from collections.abc import Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError, CancelledError

from batchexports.core.errors import NonRetryableError
from batchexports.core.run import Cancelled, CancelToken, ExportRun, Progress
from batchexports.engine import retry_window
from batchexports.engine.inputs import (
    BackfillInput,
    BackfillPlan,
    ExportOutcome,
    FinishBackfillInput,
    FinishRunInput,
    FinishRunResult,
    RunInput,
    StartedRun,
)
from batchexports.engine.run_book import RunBook, RunStart
from batchexports.events.store import EventsStore
from batchexports.pipeline.export import export, model_query

logger = logging.getLogger(__name__)

NON_RETRYABLE = "NonRetryableError"
# How often export_run heartbeats from its own thread, whatever the pipeline is doing; a fifth of
# the run workflow's heartbeat timeout (10 s), so a slow query or a stall of a few seconds never
# looks like a dead worker, while a worker that died is noticed and its export retried within it.
HEARTBEAT_EVERY = 2.0


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


def _parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Activities:
    """The activities of the run and backfill workflows, over one run book and one events store."""

    def __init__(
        self, run_book: RunBook, store: Callable[[], EventsStore], retry_window_seconds: Callable[[], int]
    ) -> None:
        # Callables, read at each use: the store is opened lazily and the window is a live setting.
        self.run_book = run_book
        self.store = store
        self.retry_window_seconds = retry_window_seconds

    def all(self) -> list[Callable[..., object]]:
        return [
            self.start_run, self.export_run, self.finish_run, self.pause_schedule,
            self.start_backfill, self.finish_backfill,
        ]  # fmt: skip

    @activity.defn(name="start_run")
    def start_run(self, data: RunInput) -> StartedRun | None:
        info = activity.info()
        request = RunStart(
            batch_export_id=data.batch_export_id,
            data_interval_start=_parse(data.data_interval_start) if data.data_interval_start else None,
            data_interval_end=_parse(data.data_interval_end) if data.data_interval_end else None,
            fired_for=_parse(data.scheduled_at) if data.scheduled_at else _now(),
            backfill_id=data.backfill_id,
            # Always set: these activities run only inside workflows (the SDK types it optional).
            workflow_id=info.workflow_id or "",
            workflow_run_id=info.workflow_run_id,
        )
        with self.run_book.session():
            row = self.run_book.start_run(request)
        if row is None:
            logger.info("batch export %s is gone: nothing to run", data.batch_export_id)
            return None
        return StartedRun(
            row.run_id, row.data_interval_start.isoformat(), row.data_interval_end.isoformat(),
            int(row.timeout.total_seconds()), retry_window_seconds=self.retry_window_seconds(),
        )  # fmt: skip

    @activity.defn(name="export_run")
    def export_run(self, run_id: str) -> ExportOutcome:
        with self.run_book.session():
            return self._export(run_id)

    def _export(self, run_id: str) -> ExportOutcome:
        run = self.run_book.load_run(run_id)
        attempt = activity.info().attempt
        self.run_book.mark_running(run_id, attempt)
        token = CancelToken()
        heartbeater = _Heartbeater(token)

        def on_progress(progress: Progress) -> None:
            heartbeater.records = progress.records_completed
            heartbeater.beat()

        try:
            with heartbeater:
                result = export(run, self.store(), progress=on_progress, cancel=token)
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
            window = dt.timedelta(seconds=self.retry_window_seconds()) if info.schedule_to_close_timeout else None
            upcoming = retry_window.after_failure(attempt, _now(), info.scheduled_time, window)
            if upcoming.at is None:
                # No attempt follows: say so rather than "retrying", and fail the run with the reason.
                span = f"the retry window of {retry_window.describe(window)}" if window else f"{attempt} attempts"
                message = f"{message} (gave up after {attempt} attempts: {span} is over)"
                raise ApplicationError(message, type=NON_RETRYABLE, non_retryable=True) from None
            self.run_book.mark_retrying(run_id, message, attempt, upcoming.at, upcoming.window_ends)
            raise ApplicationError(message, type=type(error).__name__) from None
        self.run_book.record_progress(run_id, result.records_completed, result.bytes_exported)
        receipt = result.receipt
        return ExportOutcome(
            result.records_completed,
            result.bytes_exported,
            result.records_total_count,
            list(result.files),
            receipt_rows=receipt.rows if receipt else None,
            receipt_checksum=receipt.checksum_hex if receipt else None,
        )

    @activity.defn(name="finish_run")
    def finish_run(self, data: FinishRunInput) -> FinishRunResult:
        info = activity.info()
        with self.run_book.session():
            paused = self.run_book.finish_run(data, info.workflow_id or "", info.workflow_run_id)
        return FinishRunResult(pause_schedule=paused)

    @activity.defn(name="pause_schedule")
    async def pause_schedule(self, batch_export_id: str) -> None:
        """The run workflow's step after a run that made its export pause (repeated failures)."""
        # The worker's own client; schedules.py is not imported here (it names RunWorkflow, which names this).
        handle = activity.client().get_schedule_handle(batch_export_id)
        await handle.pause(note="paused after repeated failures")

    def _estimate(self, whole_range: ExportRun) -> int | None:
        """The source's count of the rows of a backfill's range: its `total_records_count` until it ends."""
        try:
            return self.store().count(model_query(whole_range))
        except Exception as error:  # only an estimate: the backfill goes on without one
            logger.warning(
                "backfill estimate of %s failed: %s: %s", whole_range.batch_export_id, type(error).__name__, error
            )
            return None

    @activity.defn(name="start_backfill")
    def start_backfill(self, data: BackfillInput) -> BackfillPlan | None:
        """Fix the backfill's range (clamped to the earliest data), estimate its records, mark it Running."""
        with self.run_book.session():
            started = self.run_book.start_backfill(
                data.backfill_id, data.done == 0, lambda model, team: self.store().earliest(model, team), self._estimate
            )
        if started is None:
            return None
        return BackfillPlan(
            batch_export_id=started.batch_export_id,
            interval=started.interval,
            timezone=started.timezone,
            offset_day=started.offset_day,
            offset_hour=started.offset_hour,
            start=started.start.isoformat() if started.start else None,
            end=started.end.isoformat(),
            total=started.total,
        )

    @activity.defn(name="finish_backfill")
    def finish_backfill(self, data: FinishBackfillInput) -> None:
        with self.run_book.session():
            self.run_book.finish_backfill(data.backfill_id, data.status)
