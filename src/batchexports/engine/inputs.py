"""Inputs and results of workflows and activities: plain dataclasses, never secrets (they are
stored in Temporal's history)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RunInput:
    batch_export_id: str
    # Set by backfills and retries; a scheduled run takes its interval end from the schedule.
    data_interval_start: str | None = None
    data_interval_end: str | None = None
    backfill_id: str | None = None
    # The nominal time a schedule fired for (jitter excluded), filled in by the workflow.
    scheduled_at: str | None = None


@dataclass
class StartedRun:
    run_id: str
    data_interval_start: str
    data_interval_end: str
    timeout_seconds: int
    # How long a failing export keeps being retried (0: a run started before the window existed).
    retry_window_seconds: int = 0


@dataclass
class ExportOutcome:
    records_completed: int
    bytes_exported: int
    records_total_count: int | None
    files: list[str]
    # The receipt of what was read (`core/receipts.py`); None in histories older than receipts,
    # and when the rows lack their identity columns.
    receipt_rows: int | None = None
    receipt_checksum: str | None = None


@dataclass
class FinishRunInput:
    run_id: str | None  # None: the run of `interval` (cancelled before its start was acknowledged)
    status: str
    error: str | None = None
    outcome: ExportOutcome | None = None
    interval: RunInput | None = None


@dataclass
class BackfillInput:
    backfill_id: str
    done: int = 0  # intervals finished before a continue-as-new


@dataclass
class BackfillPlan:
    batch_export_id: str
    interval: str
    timezone: str
    offset_day: int
    offset_hour: int
    start: str | None  # None: nothing to export (no data before the end)
    end: str
    total: int


@dataclass
class FinishBackfillInput:
    backfill_id: str
    status: str


@dataclass
class FinishRunResult:
    # The run made its export pause (repeated failures): the workflow then pauses the schedule.
    pause_schedule: bool = False
