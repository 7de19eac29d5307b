"""Temporal schedules derived from batch export rows: one schedule per export, id = the export's id.

Hourly and sub-hourly exports use interval specs (aligned to the epoch, as the data intervals
are); daily and weekly exports use calendar specs in the export's timezone at `offset_hour`
(and `offset_day` for weeks, 0 = Sunday). Jitter spreads the start of many exports without
moving their data intervals: a run reads the nominal scheduled time, not the actual one.
"""

from __future__ import annotations

import datetime as dt

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from batchexports.core.intervals import FIXED_INTERVALS, split_offset
from batchexports.engine.config import TASK_QUEUE
from batchexports.engine.inputs import RunInput
from batchexports.engine.run_book import ScheduleSource

JITTER = {
    "every 5 minutes": dt.timedelta(seconds=30),
    "every 15 minutes": dt.timedelta(minutes=1),
    "hour": dt.timedelta(minutes=2),
    "day": dt.timedelta(minutes=10),
    "week": dt.timedelta(minutes=30),
}


def schedule_spec(source: ScheduleSource) -> ScheduleSpec:
    if source.interval in FIXED_INTERVALS:
        return ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=FIXED_INTERVALS[source.interval])],
            start_at=source.start_at,
            end_at=source.end_at,
            jitter=JITTER[source.interval],
        )
    offset_day, offset_hour = split_offset(source.interval_offset)
    calendar = ScheduleCalendarSpec(
        second=[ScheduleRange(0)],
        minute=[ScheduleRange(0)],
        hour=[ScheduleRange(offset_hour or 0)],
        day_of_week=[ScheduleRange(offset_day or 0)] if source.interval == "week" else [ScheduleRange(0, 6)],
    )
    return ScheduleSpec(
        calendars=[calendar],
        time_zone_name=source.timezone,
        start_at=source.start_at,
        end_at=source.end_at,
        jitter=JITTER[source.interval],
    )


def build_schedule(source: ScheduleSource) -> Schedule:
    from batchexports.engine.run_workflow import RunWorkflow

    return Schedule(
        action=ScheduleActionStartWorkflow(
            RunWorkflow.run, RunInput(batch_export_id=source.id), id=source.id, task_queue=TASK_QUEUE
        ),
        spec=schedule_spec(source),
        # Runs of one export never overlap; missed ones (the worker was down) run when it is back.
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.BUFFER_ALL, catchup_window=dt.timedelta(days=7)),
        state=ScheduleState(paused=source.paused, note=f"batch export {source.name!r}"),
    )


def _not_found(error: RPCError) -> bool:
    return error.status == RPCStatusCode.NOT_FOUND


async def upsert(client: Client, source: ScheduleSource) -> None:
    schedule = build_schedule(source)
    try:
        await client.create_schedule(source.id, schedule)
        return
    except ScheduleAlreadyRunningError:
        pass

    def replace(_: ScheduleUpdateInput) -> ScheduleUpdate:
        return ScheduleUpdate(schedule=schedule)

    await client.get_schedule_handle(source.id).update(replace)


async def pause(client: Client, schedule_id: str, note: str = "paused") -> None:
    await client.get_schedule_handle(schedule_id).pause(note=note)


async def unpause(client: Client, schedule_id: str) -> None:
    await client.get_schedule_handle(schedule_id).unpause(note="unpaused")


async def delete(client: Client, schedule_id: str) -> None:
    try:
        await client.get_schedule_handle(schedule_id).delete()
    except RPCError as error:
        if not _not_found(error):
            raise


async def trigger(client: Client, schedule_id: str) -> None:
    """Start a run now, as if its time had come (tests and operators)."""
    await client.get_schedule_handle(schedule_id).trigger()


async def existing_ids(client: Client) -> set[str]:
    return {listed.id async for listed in await client.list_schedules()}
