"""What the engine needs from the metadata database, as a protocol over plain data.

The engine never imports Django: its activities call a `RunBook`, and the composition root
(`service.py`, `cli.py`) hands them the Django implementation (`exports/run_book.py`). Every
method is one short transaction, called from an activity thread inside `session()`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from batchexports.core.run import ExportRun
from batchexports.engine.inputs import FinishRunInput


class ExportRow(Protocol):
    """What the engine reads of a batch export's row."""

    id: Any
    interval: str
    timezone: str
    interval_offset: int | None
    start_at: dt.datetime | None
    end_at: dt.datetime | None
    paused: bool
    name: str


@dataclass(frozen=True)
class ScheduleSource:
    """The fields of a batch export that shape its schedule."""

    id: str
    interval: str
    timezone: str
    interval_offset: int | None
    start_at: dt.datetime | None
    end_at: dt.datetime | None
    paused: bool
    name: str


def schedule_source(row: ExportRow) -> ScheduleSource:
    return ScheduleSource(
        id=str(row.id),
        interval=row.interval,
        timezone=row.timezone or "UTC",
        interval_offset=row.interval_offset,
        start_at=row.start_at,
        end_at=row.end_at,
        paused=row.paused,
        name=row.name,
    )


@dataclass(frozen=True)
class RunStart:
    """One execution of an interval: which export, which interval (or when its schedule fired)."""

    batch_export_id: str
    data_interval_start: dt.datetime | None
    data_interval_end: dt.datetime | None
    fired_for: dt.datetime  # the schedule's nominal time; used when no interval end is given
    backfill_id: str | None
    workflow_id: str
    workflow_run_id: str | None


@dataclass(frozen=True)
class RunRow:
    """The run row `start_run` wrote (or found, when retried after its commit)."""

    run_id: str
    data_interval_start: dt.datetime
    data_interval_end: dt.datetime
    timeout: dt.timedelta


@dataclass(frozen=True)
class BackfillStart:
    """What `start_backfill` fixed: the range (None start: nothing to export) and its intervals."""

    batch_export_id: str
    interval: str
    timezone: str
    offset_day: int
    offset_hour: int
    start: dt.datetime | None
    end: dt.datetime
    total: int


@dataclass(frozen=True)
class EngineState:
    """What reconcile makes Temporal follow."""

    live: list[ScheduleSource]
    deleted_ids: set[str]
    active_backfill_ids: list[str]


# Given the rows of [start, end) of an export (as a run over that range), their count or None.
Estimator = Callable[[ExportRun], int | None]
# Given (model, team id), the earliest event or row time, or None without data.
Earliest = Callable[[str, int], dt.datetime | None]


class RunBook(Protocol):
    def session(self) -> AbstractContextManager[None]:
        """One activity's use of the database: a live connection, closed when the activity ends."""

    def start_run(self, start: RunStart) -> RunRow | None:
        """A run row (Starting) for this execution; None when the export is gone."""

    def load_run(self, run_id: str) -> ExportRun:
        """What the pipeline needs to export the run (destination secrets included)."""

    def mark_running(self, run_id: str, attempt: int) -> None: ...

    def mark_retrying(
        self, run_id: str, error: str, attempt: int, next_at: dt.datetime, window_ends: dt.datetime | None
    ) -> None: ...

    def record_progress(self, run_id: str, records: int, bytes_exported: int) -> None: ...

    def finish_run(self, data: FinishRunInput, workflow_id: str, workflow_run_id: str | None) -> bool:
        """End the run; True when the export is now paused (after repeated failures) and its
        schedule must be paused too."""

    def start_backfill(
        self, backfill_id: str, first: bool, earliest: Earliest, estimate: Estimator
    ) -> BackfillStart | None:
        """Fix the backfill's range and mark it Running; None when it is no longer active. With
        `first` (not a continue-as-new), also record the adjusted start and the estimate."""

    def finish_backfill(self, backfill_id: str, status: str) -> None: ...

    def engine_state(self) -> EngineState: ...
