"""Make Temporal match the metadata database: the database is the source of truth.

Run at worker start (and on demand): every live export has its schedule with the right spec
and paused state; schedules of deleted exports are removed; backfills the database says are
Starting or Running have their workflow (a crash between the two writes heals itself).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from temporalio.client import Client

from batchexports.engine import schedules
from batchexports.engine.run_book import RunBook
from batchexports.engine.temporal_engine import start_backfill_workflow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcileReport:
    schedules_upserted: int
    schedules_deleted: int
    backfills_started: int


def _state(run_book: RunBook) -> tuple[list[schedules.ScheduleSource], set[str], list[str]]:
    with run_book.session():
        state = run_book.engine_state()
    return state.live, state.deleted_ids, state.active_backfill_ids


async def reconcile(client: Client, run_book: RunBook) -> ReconcileReport:
    live, deleted, pending = await asyncio.to_thread(_state, run_book)
    for source in live:
        await schedules.upsert(client, source)
    existing = await schedules.existing_ids(client)
    # Only schedules we own: those of exports deleted here (the namespace may be shared).
    stale = existing & deleted
    for schedule_id in stale:
        await schedules.delete(client, schedule_id)
    for backfill_id in pending:
        await start_backfill_workflow(client, backfill_id)
    report = ReconcileReport(len(live), len(stale), len(pending))
    logger.info("reconcile: %s", report)
    return report
