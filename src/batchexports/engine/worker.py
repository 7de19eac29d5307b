"""The worker: runs RunWorkflow and BackfillWorkflow and their activities on the task queue.

Activities are synchronous (ORM, DuckDB, destination clients) and run in a thread pool; the
number of concurrent exports is bounded by BATCHEXPORTS_MAX_CONCURRENT_ACTIVITIES. When asked to
stop, the worker stops polling, gives running activities the shutdown grace period to finish and
then cancels them (Temporal reports those attempts failed, so they are retried at the next start).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from temporalio.client import Client
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from batchexports.engine.activities import Activities
from batchexports.engine.backfill_workflow import BackfillWorkflow
from batchexports.engine.config import TASK_QUEUE, shutdown_grace
from batchexports.engine.reconcile import reconcile
from batchexports.engine.run_workflow import RunWorkflow
from batchexports.engine.takeover import take_over

logger = logging.getLogger(__name__)

# How long the server holds a workflow task for this worker's sticky queue before it offers it to
# any worker: after a crash, the dead worker's workflows move on within this (default 10 s).
STICKY_SCHEDULE_TO_START = timedelta(seconds=3)


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox still checks workflow code for non-deterministic calls, but imports nothing
    itself: while it imports, other threads of the process (the API's capture, activities) could
    meet its copies of modules, and DuckDB then fails to recognise a pyarrow table (seen as
    "std::bad_cast" when a worker started beside an import)."""
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_all_modules())


def max_concurrent_activities() -> int:
    return int(os.environ.get("BATCHEXPORTS_MAX_CONCURRENT_ACTIVITIES", "4"))


def build_worker(
    client: Client,
    activities: Activities,
    executor: ThreadPoolExecutor,
    slots: int,
    identity: str | None = None,
    grace: float | None = None,
) -> Worker:
    """A worker running at most `slots` activities at once, in `executor` (which has that many threads)."""
    return Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[RunWorkflow, BackfillWorkflow],
        activities=activities.all(),
        activity_executor=executor,
        workflow_runner=workflow_runner(),
        max_concurrent_activities=slots,
        graceful_shutdown_timeout=timedelta(seconds=shutdown_grace() if grace is None else grace),
        sticky_queue_schedule_to_start_timeout=STICKY_SCHEDULE_TO_START,
        identity=identity,
    )


async def run_worker(
    client: Client,
    activities: Activities,
    stop: asyncio.Event,
    ready: threading.Event | None = None,
    identity: str | None = None,
    dead_identity: str | None = None,
) -> None:
    """Reconcile, take over what `dead_identity` (a worker known to be dead) left started, then work
    until `stop` is set; `ready` is set once the worker polls."""
    await reconcile(client, activities.run_book)
    if dead_identity:
        await take_over(client, TASK_QUEUE, dead_identity)
    slots = max_concurrent_activities()
    with ThreadPoolExecutor(max_workers=slots, thread_name_prefix="activity") as executor:
        worker = build_worker(client, activities, executor, slots, identity)
        async with worker:
            logger.info("worker polling task queue %r", TASK_QUEUE)
            if ready is not None:
                ready.set()
            await stop.wait()
