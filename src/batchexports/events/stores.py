"""The process's events store: which one the settings name, opened on first use, closed on reset.

Apart from `store.py` (the interface), which the stores themselves import: the factory imports
the stores, so keeping it there made the interface and its implementations import each other.
"""

from __future__ import annotations

import os
import threading

from batchexports.events.store import EventsStore, StoreUnavailable

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
