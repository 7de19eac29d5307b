"""The worker: runs RunWorkflow and BackfillWorkflow and their activities on the task queue.

Activities are synchronous (ORM, DuckDB, destination clients) and run in a thread pool; the
number of concurrent exports is bounded by BATCHEXPORTS_MAX_CONCURRENT_ACTIVITIES.
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

from batchexports.engine.activities import ACTIVITIES
from batchexports.engine.backfill_workflow import BackfillWorkflow
from batchexports.engine.config import TASK_QUEUE
from batchexports.engine.reconcile import reconcile
from batchexports.engine.run_workflow import RunWorkflow

logger = logging.getLogger(__name__)


def workflow_runner() -> SandboxedWorkflowRunner:
    """The sandbox still checks workflow code for non-deterministic calls, but imports nothing
    itself: while it imports, other threads of the process (the API's capture, activities) could
    meet its copies of modules, and DuckDB then fails to recognise a pyarrow table (seen as
    "std::bad_cast" when a worker started beside an import)."""
    return SandboxedWorkflowRunner(restrictions=SandboxRestrictions.default.with_passthrough_all_modules())


def max_concurrent_activities() -> int:
    return int(os.environ.get("BATCHEXPORTS_MAX_CONCURRENT_ACTIVITIES", "4"))


def build_worker(client: Client, executor: ThreadPoolExecutor) -> Worker:
    return Worker(
        client,
        task_queue=TASK_QUEUE,
        workflows=[RunWorkflow, BackfillWorkflow],
        activities=ACTIVITIES,
        activity_executor=executor,
        workflow_runner=workflow_runner(),
        max_concurrent_activities=executor._max_workers,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )


async def run_worker(client: Client, stop: asyncio.Event, ready: threading.Event | None = None) -> None:
    """Reconcile, then work until `stop` is set; `ready` is set once the worker polls."""
    await reconcile(client)
    with ThreadPoolExecutor(max_workers=max_concurrent_activities(), thread_name_prefix="activity") as executor:
        worker = build_worker(client, executor)
        async with worker:
            logger.info("worker polling task queue %r", TASK_QUEUE)
            if ready is not None:
                ready.set()
            await stop.wait()
