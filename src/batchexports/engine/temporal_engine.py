"""The Temporal implementation of the engine seam the API calls (`exports/engine_port.py`).

The database write has already happened when the API calls the engine; if Temporal cannot be
reached, the call is logged and the reconcile step (at worker start) repairs schedules and
starts pending backfills, so the API never fails because the scheduler was briefly away. It
reads the API's rows through the structural protocols below and never imports Django.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, Protocol

from temporalio.client import WorkflowExecutionStatus
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from batchexports.engine import client as temporal
from batchexports.engine import schedules
from batchexports.engine.backfill_workflow import BackfillWorkflow, backfill_workflow_id
from batchexports.engine.config import TASK_QUEUE
from batchexports.engine.inputs import BackfillInput
from batchexports.engine.run_book import ExportRow, schedule_source

logger = logging.getLogger(__name__)


class HasId(Protocol):
    id: Any


class RunRow(Protocol):
    id: Any
    workflow_id: str | None


def _run(what: str, coroutine: Coroutine[Any, Any, Any]) -> bool:
    try:
        temporal.call(coroutine)
        return True
    except Exception as error:  # the database is the source of truth; reconcile repairs Temporal
        coroutine.close()
        logger.warning("engine: could not %s (%s: %s); the next reconcile will", what, type(error).__name__, error)
        return False


async def _with_client(action: Any, *args: Any) -> Any:
    return await action(await temporal.shared_client(), *args)


async def start_backfill_workflow(client: Any, backfill_id: str) -> None:
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            BackfillWorkflow.run,
            BackfillInput(backfill_id),
            id=backfill_workflow_id(backfill_id),
            task_queue=TASK_QUEUE,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )


async def _cancel(client: Any, workflow_id: str) -> None:
    handle = client.get_workflow_handle(workflow_id)
    description = await handle.describe()
    if description.status == WorkflowExecutionStatus.RUNNING:
        await handle.cancel()


def pause_schedule_now(batch_export_id: str) -> None:
    _run(f"pause schedule {batch_export_id}", _with_client(schedules.pause, batch_export_id))


class TemporalEngine:
    def sync_batch_export(self, batch_export: ExportRow, created: bool) -> None:
        source = schedule_source(batch_export)
        _run(f"sync schedule {source.id}", _with_client(schedules.upsert, source))

    def pause(self, batch_export: HasId) -> None:
        pause_schedule_now(str(batch_export.id))

    def unpause(self, batch_export: HasId, backfill_from: datetime | None) -> None:
        # The backfill of the missed intervals is the API's (exports/services.py): a row, then start_backfill.
        _run(f"unpause schedule {batch_export.id}", _with_client(schedules.unpause, str(batch_export.id)))

    def delete(self, batch_export: HasId) -> None:
        _run(f"delete schedule {batch_export.id}", _with_client(schedules.delete, str(batch_export.id)))

    def start_backfill(self, backfill: HasId) -> None:
        _run(f"start backfill {backfill.id}", _with_client(start_backfill_workflow, str(backfill.id)))

    def cancel_backfill(self, backfill: HasId) -> None:
        _run(f"cancel backfill {backfill.id}", _with_client(_cancel, backfill_workflow_id(str(backfill.id))))

    def cancel_run(self, run: RunRow) -> None:
        if run.workflow_id:
            _run(f"cancel run {run.id}", _with_client(_cancel, run.workflow_id))

    def health(self) -> dict[str, object]:
        try:
            address = temporal.address()
            temporal.call(_with_client(lambda client: client.service_client.check_health()), timeout=5)
            return {"ok": True, "address": address}
        except Exception as error:
            return {"ok": False, "error": f"{type(error).__name__}: {error}"}
