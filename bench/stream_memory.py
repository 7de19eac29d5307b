"""Peak memory of streaming one interval of a model as Arrow record batches.

Fills a store with N synthetic events in one hour, then, in a fresh process for each case,
streams that hour (`events` model, batches of 10,000 rows) and reports the peak RSS, so that
0.5M and 5M rows can be compared: the figure must not grow with the interval.

    .venv/bin/python bench/stream_memory.py [--rows 5000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PeakRSS

from batchexports.events import duckdb_schema

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
MEMORY_LIMIT = "256MB"  # DuckDB's buffer pool; it spills to the data directory beyond this


def fill(path: Path, rows: int) -> None:
    """Synthetic rows straight in SQL: this benchmark is about reading, not ingestion."""
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    duckdb_schema.migrate(con)
    con.execute(
        """
        INSERT INTO events
        SELECT uuid(), CASE WHEN i % 4 = 0 THEN '$autocapture' ELSE '$pageview' END,
               json_object('$current_url', 'https://shop.example/products/' || (i % 200),
                           '$pathname', '/products/' || (i % 200), '$browser', 'Firefox',
                           '$session_id', 'session-' || (i // 20), 'price', i % 500),
               ?::TIMESTAMPTZ + to_microseconds((i * 3600000000 // ?)::BIGINT), 1, 'person-' || (i % 5000),
               NULL, now(), uuid(), '{"plan": "pro"}'::JSON, 'session-' || (i // 20),
               ?::TIMESTAMPTZ + to_microseconds((i * 3600000000 // ?)::BIGINT)
        FROM range(?) AS t(i)
        """,
        [START, rows, START, rows, rows],
    )
    con.close()


def child(path: str, model: str) -> None:
    from batchexports.events.duckdb_store import DuckDBEventsStore
    from batchexports.events.store import ModelQuery

    store = DuckDBEventsStore(path, memory_limit=MEMORY_LIMIT)
    with PeakRSS() as idle:
        pass
    began = time.perf_counter()
    rows = biggest = 0
    with PeakRSS() as reading:
        for batch in store.read(ModelQuery(model, 1, START, START + dt.timedelta(hours=1), batch_rows=10_000)):
            rows += batch.num_rows
            biggest = max(biggest, batch.num_rows)
    elapsed = time.perf_counter() - began
    print(f"{model:<8} {rows:>10,} rows  {rows / elapsed:>10,.0f} rows/s  largest batch {biggest:,}  "
          f"peak RSS {reading.peak_mb:.0f} MB (store open, before reading: {idle.peak_mb:.0f} MB)")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--child", nargs=2, metavar=("PATH", "MODEL"))
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        print(f"DuckDB memory_limit {MEMORY_LIMIT}, batches of 10,000 rows")
        for rows in (args.rows // 10, args.rows // 2, args.rows):
            path = Path(tmp) / f"events-{rows}.duckdb"
            began = time.perf_counter()
            fill(path, rows)
            print(f"filled {rows:,} rows in {time.perf_counter() - began:.1f} s")
            for model in ("events", "sessions"):
                subprocess.run([sys.executable, __file__, "--child", str(path), model], check=True)


if __name__ == "__main__":
    main()
