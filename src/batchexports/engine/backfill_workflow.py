"""BackfillWorkflow: the runs of every data interval in a range, one at a time, oldest first.

The range is fixed by start_backfill (clamped to the earliest data); intervals are computed
here, deterministically, in the export's timezone. Each interval is a child RunWorkflow, which
records a run row of its own beside any earlier run of that interval; an interval that has not
ended yet is waited for. A worker restart resumes after the last finished child (Temporal
replays the history), and long backfills continue as new every few hundred intervals to keep
their history small.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import CancelledError

with workflow.unsafe.imports_passed_through():
    from batchexports.core.intervals import IntervalCalendar
    from batchexports.engine.activities import Activities
    from batchexports.engine.config import TASK_QUEUE
    from batchexports.engine.inputs import BackfillInput, FinishBackfillInput, RunInput
    from batchexports.engine.run_workflow import RunWorkflow, cancel_requested

CONTINUE_AS_NEW_EVERY = 250
# After an interval that ends in the future is over, a moment for the writes committing at its end.
SETTLE = timedelta(seconds=5)


def backfill_workflow_id(backfill_id: str) -> str:
    return f"backfill-{backfill_id}"


@workflow.defn(name="batch-export-backfill")
class BackfillWorkflow:
    @workflow.run
    async def run(self, data: BackfillInput) -> str:
        plan = await workflow.execute_activity_method(
            Activities.start_backfill,
            data,
            # It asks the events store for the earliest row of the model: longer than a row write.
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=20
            ),
        )
        if plan is None:
            return "Skipped"
        try:
            if plan.start is not None:
                calendar = IntervalCalendar(plan.interval, plan.timezone, plan.offset_day, plan.offset_hour)
                intervals = calendar.intervals(datetime.fromisoformat(plan.start), datetime.fromisoformat(plan.end))
                for index, interval in enumerate(intervals):
                    if index < data.done:
                        continue
                    if cancel_requested():
                        # Cancelled while the previous run finished anyway (its activity or child
                        # completed as the request came): the SDK then returns its result and the
                        # request would be lost; stop here instead of starting the next interval.
                        raise asyncio.CancelledError()
                    if index - data.done >= CONTINUE_AS_NEW_EVERY:
                        workflow.continue_as_new(BackfillInput(data.backfill_id, index))
                    if interval.end > workflow.now():
                        # end_at may be up to one interval ahead (as PostHog accepts it): that interval
                        # is exported once it is over, as its scheduled run would be, never half-done.
                        await workflow.sleep(interval.end - workflow.now() + SETTLE)
                    run = RunInput(
                        plan.batch_export_id, interval.start.isoformat(), interval.end.isoformat(), data.backfill_id
                    )
                    await workflow.execute_child_workflow(
                        RunWorkflow.run,
                        run,
                        id=f"{data.backfill_id}-{interval.end.isoformat()}",
                        task_queue=TASK_QUEUE,
                        # A run still starting when the backfill ends cancelled is cancelled too (it then
                        # marks its row Cancelled), not terminated with its row left Starting.
                        parent_close_policy=workflow.ParentClosePolicy.REQUEST_CANCEL,
                    )
        except (asyncio.CancelledError, CancelledError):
            await asyncio.shield(
                asyncio.ensure_future(
                    workflow.execute_activity_method(
                        Activities.finish_backfill,
                        FinishBackfillInput(data.backfill_id, "Cancelled"),
                        start_to_close_timeout=timedelta(seconds=15),
                        retry_policy=RetryPolicy(
                            initial_interval=timedelta(seconds=1),
                            maximum_interval=timedelta(seconds=10),
                            maximum_attempts=20,
                        ),
                    )
                )
            )
            raise
        await workflow.execute_activity_method(
            Activities.finish_backfill,
            FinishBackfillInput(data.backfill_id, "Completed"),
            start_to_close_timeout=timedelta(seconds=15),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1), maximum_interval=timedelta(seconds=10), maximum_attempts=20
            ),
        )
        return "Completed"
