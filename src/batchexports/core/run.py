"""What one export run needs to know, as plain data: no Django models, no Temporal.

The engine builds an `ExportRun` from the metadata database; the pipeline and the sinks only
ever see this.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from batchexports.core.receipts import Receipt


@dataclass(frozen=True)
class ExportRun:
    batch_export_id: str
    team_id: int
    model: str
    destination_type: str
    destination_config: Mapping[str, Any]  # secrets included: never log it
    data_interval_start: dt.datetime | None
    data_interval_end: dt.datetime
    run_id: str | None = None
    hogql_query: str | None = None  # a custom schema of the events model
    filters: tuple[Mapping[str, Any], ...] = ()  # property filters, as the API stores them

    @property
    def table(self) -> str:
        """The `{table}` of key templates: the model's name."""
        return self.model


@dataclass(frozen=True)
class LiveExport:
    """An export that is not deleted, as the start-up sweep of its destination needs it."""

    batch_export_id: str
    interval: str
    destination_type: str
    destination_config: Mapping[str, Any]  # secrets included: never log it


@dataclass
class Progress:
    """Running totals a progress callback receives (the engine heartbeats them)."""

    records_completed: int = 0
    bytes_exported: int = 0
    files: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExportResult:
    records_completed: int
    bytes_exported: int
    files: tuple[str, ...]
    records_total_count: int | None = None
    receipt: Receipt | None = None  # what was read from the source (`receipts.py`)


class Cancelled(Exception):
    """The run was cancelled between two batches; what was written is not committed."""


class CancelToken:
    """Cooperative cancellation: checked between batches."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def raise_if_cancelled(self) -> None:
        if self._event.is_set():
            raise Cancelled("the run was cancelled")


ProgressCallback = Callable[[Progress], None]
