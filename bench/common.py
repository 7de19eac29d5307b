"""Helpers shared by the benchmarks: synthetic events and peak-memory measurement."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid

import pyarrow as pa

from batchexports.events.duckdb_store import EVENTS_SCHEMA


def synthetic_events(rows: int, start: dt.datetime, span: dt.timedelta, persons: int = 5000, seed: int = 0) -> pa.Table:
    """Pageview-like events with realistic property sizes (about 300 bytes of JSON each)."""
    step = span / max(rows, 1)
    props = [
        json.dumps(
            {
                "$current_url": f"https://shop.example/products/{i % 200}",
                "$pathname": f"/products/{i % 200}",
                "$browser": ["Chrome", "Firefox", "Safari"][i % 3],
                "$session_id": f"session-{(i // 20) % (rows // 20 + 1)}",
                "$lib": "web",
                "utm_source": ["google", "newsletter", None][i % 3],
                "price": i % 500,
            }
        )
        for i in range(rows)
    ]
    return pa.table(
        {
            "uuid": [str(uuid.UUID(int=(seed << 64) + i, version=4)) for i in range(rows)],
            "event": ["$pageview" if i % 4 else "$autocapture" for i in range(rows)],
            "properties": props,
            "timestamp": pa.array([start + step * i for i in range(rows)], pa.timestamp("us", tz="UTC")),
            "distinct_id": [f"person-{i % persons}" for i in range(rows)],
            "elements_chain": [None] * rows,
        },
        schema=EVENTS_SCHEMA,
    )


class PeakRSS:
    """Samples this process's resident set size every few milliseconds and keeps the maximum.

    `ru_maxrss` cannot be used: Linux carries it across exec, so a child would report its parent's peak.
    """

    def __init__(self, interval: float = 0.005):
        import psutil

        self._process = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.peak = self._process.memory_info().rss
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._process.memory_info().rss)

    @property
    def peak_mb(self) -> float:
        return self.peak / 1e6
