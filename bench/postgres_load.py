"""Loading 1M events into PostgreSQL: the PostgreSQL sink against a plain `COPY … FROM STDIN`.

Fills a DuckDB events store with N synthetic events in one hour (as `stream_memory.py` does),
creates a throwaway database on the server, and loads that hour twice per round, into tables
with the same columns and types (the model's 13 columns, `jsonb` for JSON):

- plain: one thread reads the batches, renders each to PostgreSQL's text COPY format with Arrow
  kernels (as fast as text rendering goes in Python) and sends it with psycopg's
  `COPY … FROM STDIN`; reading, rendering and sending take turns.
- sink:  `PostgresSink.export` as a run calls it: binary COPY from loader threads into a stage
  table, reading and sending overlapped, then the idempotent merge (delete by uuid + insert).

A CHECKPOINT precedes every load so that none pays for the previous one's dirty pages, the order
of the two loads alternates between rounds, and each line shows the machine's load average (on a
shared machine, other processes' work shows up in the figures). Then the sink exports the same
interval again, into its own table, and the row count must not change.

    .venv/bin/python bench/postgres_load.py [--rows 1000000] [--rounds 3] [--dsn "host=127.0.0.1 user=postgres"]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PeakRSS
from stream_memory import START, fill

from batchexports.core.run import ExportRun
from batchexports.destinations.postgres.sink import PostgresSink
from batchexports.events.duckdb_store import DuckDBEventsStore
from batchexports.pipeline.export import model_query

TABLE_COLUMNS = """
    uuid TEXT, team_id BIGINT, "timestamp" TIMESTAMPTZ, _inserted_at TIMESTAMPTZ, created_at TIMESTAMPTZ,
    event TEXT, properties JSONB, distinct_id TEXT, elements_chain TEXT, person_id TEXT,
    person_properties JSONB, set JSONB, set_once JSONB
"""
_SPECIAL = "[\\\\\t\n\r]"


def text_column(column: pa.Array) -> pa.Array:
    """One column in COPY's text format: escaped, UTC timestamps, NULL as \\N."""
    if pa.types.is_timestamp(column.type):
        naive = column.cast(pa.timestamp(column.type.unit)).cast(pa.string())
        rendered = pc.binary_join_element_wise(naive, "+00", "")
    elif pa.types.is_string(column.type):
        rendered = column
        if pc.any(pc.match_substring_regex(column, _SPECIAL)).as_py():
            for raw, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
                rendered = pc.replace_substring(rendered, raw, escaped)
    else:
        rendered = column.cast(pa.string())
    return rendered.fill_null("\\N")


def text_rows(batch: pa.RecordBatch) -> memoryview:
    rows = pc.binary_join_element_wise(*(text_column(c) for c in batch.columns), "\t")
    rows = pc.binary_join_element_wise(rows, "", "\n")
    offsets = np.frombuffer(rows.buffers()[1], np.int32, len(rows) + 1, rows.offset * 4)
    return memoryview(rows.buffers()[2])[offsets[0] : offsets[-1]]


def plain_copy(dsn: str, store: DuckDBEventsStore, run: ExportRun, table: str) -> tuple[int, int, int]:
    rows = sent = arrow = 0
    with psycopg.connect(dsn) as connection:
        with connection.cursor().copy(f"COPY {table} FROM STDIN") as copy:
            for batch in store.read(model_query(run)):
                data = text_rows(batch)
                copy.write(data)
                rows, sent, arrow = rows + batch.num_rows, sent + data.nbytes, arrow + batch.nbytes
        connection.commit()
    return rows, sent, arrow


def write_row_copy(dsn: str, store: DuckDBEventsStore, run: ExportRun, table: str) -> tuple[int, int, int]:
    """The most literal plain COPY: psycopg's `write_row`, one Python tuple per row (text format)."""
    rows = arrow = 0
    with psycopg.connect(dsn) as connection:
        with connection.cursor().copy(f"COPY {table} FROM STDIN") as copy:
            for batch in store.read(model_query(run)):
                for row in zip(*(column.to_pylist() for column in batch.columns), strict=True):
                    copy.write_row(row)
                rows, arrow = rows + batch.num_rows, arrow + batch.nbytes
        connection.commit()
    return rows, 0, arrow


def sink_export(config: dict, store: DuckDBEventsStore, run: ExportRun) -> tuple[int, int, int]:
    reader = store.read(model_query(run))
    arrow = 0

    def batches():
        nonlocal arrow
        for batch in reader:
            arrow += batch.nbytes
            yield batch

    result = PostgresSink(config).export(run, batches(), reader.schema, None, None)
    return result.records, result.bytes_exported, arrow


def timed(label: str, admin: psycopg.Connection, load) -> float:
    admin.execute("CHECKPOINT")
    began = time.perf_counter()
    with PeakRSS() as rss:
        rows, sent, arrow = load()
    elapsed = time.perf_counter() - began
    print(
        f"  {label:<9} {rows:>9,} rows in {elapsed:6.2f} s  {rows / elapsed:>9,.0f} rows/s  "
        f"{arrow / 1e6 / elapsed:6.1f} MB/s of Arrow data  ({sent / 1e6 / elapsed:5.1f} MB/s on the wire)  "
        f"peak RSS {rss.peak_mb:.0f} MB  (load average {os.getloadavg()[0]:.1f})"
    )
    return elapsed


def count(admin: psycopg.Connection, table: str) -> int:
    return admin.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dsn", default="host=127.0.0.1 port=5432 user=postgres")
    parser.add_argument("--write-row", action="store_true", help="also time psycopg's row-by-row write_row COPY")
    args = parser.parse_args()
    database = f"be_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn + " dbname=postgres", autocommit=True) as server:
        server.execute(f'CREATE DATABASE "{database}"')
    dsn = f"{args.dsn} dbname={database}"
    options = psycopg.conninfo.conninfo_to_dict(dsn)
    config = {
        "host": options.get("host", "127.0.0.1"),
        "port": int(options.get("port", 5432)),
        "user": options.get("user", "postgres"),
        "password": options.get("password", ""),
        "database": database,
        "schema": "public",
    }
    try:
        with tempfile.TemporaryDirectory(prefix="bench-pg-") as tmp, psycopg.connect(dsn, autocommit=True) as admin:
            path = Path(tmp) / "events.duckdb"
            began = time.perf_counter()
            fill(path, args.rows)
            print(f"filled {args.rows:,} events in {time.perf_counter() - began:.1f} s; {args.rounds} round(s):")
            store = DuckDBEventsStore(path)
            run = ExportRun("bench", 1, "events", "Postgres", config, START, START + dt.timedelta(hours=1))
            ratios = []
            for round_ in range(args.rounds):
                for table in ("plain_events", "sink_events"):
                    admin.execute(f"DROP TABLE IF EXISTS {table}")
                    admin.execute(f"CREATE TABLE {table} ({TABLE_COLUMNS})")
                print(f"round {round_ + 1}")
                loads = {
                    "plain": lambda: plain_copy(dsn, store, run, "plain_events"),
                    "sink": lambda: sink_export({**config, "table_name": "sink_events"}, store, run),
                }
                order = ("plain", "sink") if round_ % 2 == 0 else ("sink", "plain")
                elapsed = {name: timed(name, admin, loads[name]) for name in order}
                plain, sink = elapsed["plain"], elapsed["sink"]
                assert count(admin, "plain_events") == count(admin, "sink_events") == args.rows
                ratios.append(plain / sink)
                print(f"  sink / plain throughput: {plain / sink:.2f}x")
            print(f"median sink / plain throughput over {args.rounds} round(s): {statistics.median(ratios):.2f}x")
            if args.write_row:
                admin.execute("DROP TABLE IF EXISTS plain_events")
                admin.execute(f"CREATE TABLE plain_events ({TABLE_COLUMNS})")
                timed("write_row", admin, lambda: write_row_copy(dsn, store, run, "plain_events"))

            print("the sink into the table it creates (PostHog's events columns), then the same interval again:")
            own = {**config, "table_name": "events"}
            timed("sink", admin, lambda: sink_export(own, store, run))
            before = count(admin, "events")
            timed("re-run", admin, lambda: sink_export(own, store, run))
            after = count(admin, "events")
            distinct = admin.execute("SELECT count(DISTINCT uuid) FROM events").fetchone()[0]
            verdict = "unchanged" if before == after == distinct else "CHANGED"
            print(f"  rows before the re-run {before:,}, after {after:,}, distinct uuids {distinct:,}: {verdict}")
    finally:
        with psycopg.connect(args.dsn + " dbname=postgres", autocommit=True) as server:
            server.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


if __name__ == "__main__":
    main()
