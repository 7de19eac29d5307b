"""RunWorkflow: one run of one batch export for one data interval.

start_run (row Starting) -> export_run (Running; the pipeline, heartbeating; retried with
backoff on transient errors) -> finish_run (Completed, Failed with the reason, or Cancelled)
-> pause_schedule, when that run made its export pause after repeated failures.
A failed run ends the workflow normally, so that a backfill goes on with its next interval.
"""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError, CancelledError

with workflow.unsafe.imports_passed_through():
    from batchexports.engine import activities, retry_window
    from batchexports.engine.activities import Activities
    from batchexports.engine.inputs import FinishRunInput, RunInput

SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
# Timeouts and retries are written at each call below. Why they are short: an attempt whose
# worker died (SIGKILL, lost host) is retried only once Temporal times it out, unless the next
# start of the service takes it over at once (engine/takeover.py). Bookkeeping activities are a
# few database writes (start_to_close 15 s, retried after 1 s); export_run heartbeats every
# activities.HEARTBEAT_EVERY seconds from a thread of its own, so its heartbeat timeout can be
# 10 s however slow the pipeline's reads or the destination are.


def cancel_requested() -> bool:
    """Whether this workflow was asked to cancel, even if the SDK since swallowed the request (an
    awaited activity or child that completed anyway returns its result). Needs a temporalio with
    `workflow.cancellation_reason()`; with an older one this is always False."""
    reason = getattr(workflow, "cancellation_reason", None)
    return reason is not None and reason() is not None


def _reason(error: BaseException) -> str:
    """The message of the innermost application error: what the destination said."""
    while error.__cause__ is not None and not isinstance(error, ApplicationError):
        error = error.__cause__
    return str(error.message if isinstance(error, ApplicationError) else error)


@workflow.defn(name="batch-export-run")
class RunWorkflow:
    @workflow.run
    async def run(self, data: RunInput) -> str:
        self._batch_export_id = data.batch_export_id
        if data.data_interval_end is None and data.scheduled_at is None:
            fired_for = workflow.info().typed_search_attributes.get(SCHEDULED_START)
            if fired_for is not None:
                data = dataclasses.replace(data, scheduled_at=fired_for.isoformat())
        if cancel_requested():
            raise asyncio.CancelledError()  # cancelled before it began (its backfill was): no run row
        # Shielded: cancelled while start_run creates the run's row, the workflow waits for it (else
        # the row could be written after the finish below and stay Starting), then cancels that row.
        starting = asyncio.ensure_future(
            workflow.execute_activity_method(
                Activities.start_run,
                data,
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=20
                ),
            )
        )
        try:
            started = await asyncio.shield(starting)
        except (asyncio.CancelledError, CancelledError):
            started = await starting
            await self._finish(FinishRunInput(started.run_id if started else None, "Cancelled", interval=data))
            raise
        if started is None:
            return "Skipped"
        try:
            window = timedelta(seconds=started.retry_window_seconds)
            run_limit = timedelta(seconds=started.timeout_seconds)
            outcome = await workflow.execute_activity_method(
                Activities.export_run,
                started.run_id,
                start_to_close_timeout=run_limit,
                # Retried with capped backoff until the retry window is over (the activity then says
                # it gives up); a window shorter than one attempt still lets that attempt finish.
                schedule_to_close_timeout=max(window, run_limit) if started.retry_window_seconds else None,
                # A worker killed mid-run is noticed within this (heartbeats come every
                # activities.HEARTBEAT_EVERY s) and the export retried after the first interval.
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=retry_window.policy(window, [activities.NON_RETRYABLE]),
                cancellation_type=workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
        except (asyncio.CancelledError, CancelledError):
            await self._finish(FinishRunInput(started.run_id, "Cancelled"))
            raise
        except ActivityError as error:
            if isinstance(error.cause, CancelledError):
                await self._finish(FinishRunInput(started.run_id, "Cancelled"))
                raise
            await self._finish(FinishRunInput(started.run_id, "Failed", error=_reason(error)))
            return "Failed"
        await self._finish(FinishRunInput(started.run_id, "Completed", outcome=outcome))
        return "Completed"

    async def _finish(self, data: FinishRunInput) -> None:
        # Shielded: the run's row must be finished even while the workflow is being cancelled.
        finished = await asyncio.shield(
            asyncio.ensure_future(
                workflow.execute_activity_method(
                    Activities.finish_run,
                    data,
                    start_to_close_timeout=timedelta(seconds=15),
                    retry_policy=RetryPolicy(
                        initial_interval=timedelta(seconds=1),
                        maximum_interval=timedelta(seconds=10),
                        maximum_attempts=20,
                    ),
                )
            )
        )
        # Histories written before finish_run answered have None here: no pause step, as then.
        if finished is not None and finished.pause_schedule:
            await workflow.execute_activity_method(
                Activities.pause_schedule,
                self._batch_export_id,
                start_to_close_timeout=timedelta(seconds=15),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=10),
            )
