"""The events store interface: what capture and import write, and what runs read.

A run reads one model for one data interval as a stream of Arrow record batches of bounded
size; `get_store()` returns the configured implementation (DuckDB by default, one file in
the data directory).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import pyarrow as pa

from batchexports.events.normalize import CapturedEvent

if TYPE_CHECKING:
    from batchexports.events.filters import PropertyFilter
    from batchexports.events.hogql import HogQLQuery

MODELS = ("events", "persons", "sessions")
DEFAULT_BATCH_ROWS = 10_000


@dataclass(frozen=True)
class ModelQuery:
    """The rows one run exports: a model of one project over `[start, end)` of `_inserted_at`."""

    model: str
    team_id: int
    start: dt.datetime | None
    end: dt.datetime
    include_events: tuple[str, ...] = ()
    exclude_events: tuple[str, ...] = ()
    batch_rows: int = DEFAULT_BATCH_ROWS
    hogql: HogQLQuery | None = None  # a custom schema (events model only)
    filters: tuple[PropertyFilter, ...] = ()

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"Unknown model '{self.model}'; expected one of {', '.join(MODELS)}")


class StoreUnavailable(Exception):
    """The store cannot be opened (for example another process holds the DuckDB file)."""


class EventsStore(Protocol):
    def capture(self, team_id: int, events: Sequence[CapturedEvent], historical: bool = False) -> int:
        """Store captured events (and the person changes they imply) atomically; return the count."""

    def import_table(self, team_id: int, table: pa.Table) -> int:
        """Store past events from a table (columns as PostHog's events); `_inserted_at` = `timestamp`."""

    def read(self, query: ModelQuery) -> pa.RecordBatchReader:
        """The rows of `query`, streamed in record batches of at most `query.batch_rows` rows."""

    def count(self, query: ModelQuery) -> int: ...

    def earliest(self, model: str, team_id: int) -> dt.datetime | None:
        """The `_inserted_at` of the earliest row of `model`, to clamp backfills."""

    def watermark(self) -> dt.datetime:
        """The time before which every write has committed: a run reads `[start, end)` once it passes `end`."""

    def close(self) -> None: ...
