"""The events store interface: what capture and import write, and what runs read.

A run reads one model for one data interval as a stream of Arrow record batches of bounded
size; `get_store()` returns the configured implementation (DuckDB by default, one file in
the data directory).
"""

from __future__ import annotations

import datetime as dt
import os
import threading
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

    def close(self) -> None: ...


_lock = threading.Lock()
_store: EventsStore | None = None


def get_store() -> EventsStore:
    """The process's store, opened on first use."""
    global _store
    with _lock:
        if _store is None:
            _store = open_store()
        return _store


def open_store() -> EventsStore:
    kind = os.environ.get("BATCHEXPORTS_EVENTS_STORE", "duckdb")
    if kind == "duckdb":
        from batchexports.events.duckdb_store import DuckDBEventsStore, default_path

        return DuckDBEventsStore(os.environ.get("BATCHEXPORTS_DUCKDB_PATH") or default_path())
    if kind == "clickhouse":
        from batchexports.events.clickhouse_store import ClickHouseEventsStore, HTTPConnection

        url = os.environ.get("CLICKHOUSE_URL")
        if not url:
            raise StoreUnavailable(
                "BATCHEXPORTS_EVENTS_STORE=clickhouse needs CLICKHOUSE_URL (http://user:pass@host:8123/db)"
            )
        return ClickHouseEventsStore(HTTPConnection(url))
    raise StoreUnavailable(f"Unknown BATCHEXPORTS_EVENTS_STORE '{kind}'; expected 'duckdb' or 'clickhouse'")


def reset_store() -> None:
    """Close the process's store (tests, and the CLI before writing straight to the file)."""
    global _store
    with _lock:
        if _store is not None:
            _store.close()
        _store = None
