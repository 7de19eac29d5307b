"""Taking over what a dead worker left started, so that a crash costs seconds, not timeouts.

After a SIGKILL (or a power cut) the Temporal server still believes the dead worker runs its
activity attempts: it would notice only when their heartbeat or start-to-close timeout expires,
and it would keep sending the workflows' next tasks to that worker's sticky queue until their
sticky timeout. A process that has just taken the data directory's lock knows for certain that
the previous holder is dead (the OS released its lock) and which worker identity it had. Before
its own worker polls, it fails each attempt still started under that identity, asking for the
retry at once (`next_retry_delay`), and resets the workflows' stickiness: the runs resume as soon
as the new worker polls. An attempt of any other worker is left alone (it may be alive).
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.api.workflowservice.v1 import ResetStickyTaskQueueRequest
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

logger = logging.getLogger(__name__)

# Positive on purpose: the SDK leaves a zero delay out, and the retry policy's backoff applies.
RETRY_NOW = timedelta(milliseconds=200)
RPC_TIMEOUT = timedelta(seconds=5)
TAKEOVER_TIMEOUT = 20.0
WORKER_LOST = "WorkerLost"


async def take_over(client: Client, task_queue: str, dead_identity: str) -> int:
    """Fail the started attempts of `dead_identity` on `task_queue` for an immediate retry; the
    number failed. Bounded in time; a failure here only means the timeouts do the job instead."""
    try:
        return await asyncio.wait_for(_take_over(client, task_queue, dead_identity), TAKEOVER_TIMEOUT)
    except (TimeoutError, RPCError) as error:
        logger.warning("could not take over the work of %s (%s); it retries after its timeouts", dead_identity, error)
        return 0


async def _take_over(client: Client, task_queue: str, dead_identity: str) -> int:
    failed = 0
    query = f'ExecutionStatus="Running" AND TaskQueue="{task_queue}"'
    async for execution in client.list_workflows(query, rpc_timeout=RPC_TIMEOUT):
        try:
            failed += await _take_over_workflow(client, execution.id, execution.run_id, dead_identity)
        except RPCError as error:  # it finished meanwhile, or the server refused: leave it to its timeouts
            logger.info("left workflow %s to its timeouts: %s", execution.id, error)
    if failed:
        logger.info("took over %d activity attempt(s) of the stopped worker %s", failed, dead_identity)
    return failed


async def _take_over_workflow(client: Client, workflow_id: str, run_id: str | None, dead_identity: str) -> int:
    # Its next workflow task goes to the task queue every worker polls, not to the dead one's.
    await client.workflow_service.reset_sticky_task_queue(
        ResetStickyTaskQueueRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id, run_id=run_id or "")
        ),
        timeout=RPC_TIMEOUT,
    )
    description = await client.get_workflow_handle(workflow_id, run_id=run_id).describe(rpc_timeout=RPC_TIMEOUT)
    failed = 0
    for pending in description.raw_description.pending_activities:
        if pending.state != PendingActivityState.PENDING_ACTIVITY_STATE_STARTED:
            continue
        if pending.last_worker_identity != dead_identity:
            continue
        error = ApplicationError(
            f"The worker running attempt {pending.attempt} ({dead_identity}) stopped without finishing it; "
            "retrying at once.",
            type=WORKER_LOST,
            next_retry_delay=RETRY_NOW,
        )
        handle = client.get_async_activity_handle(
            workflow_id=workflow_id, run_id=run_id, activity_id=pending.activity_id
        )
        await handle.fail(error, rpc_timeout=RPC_TIMEOUT)
        failed += 1
    return failed
