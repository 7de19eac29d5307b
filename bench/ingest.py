"""Ingestion throughput: `/batch/` on a running server and `import` of a Parquet file, each against a
raw DuckDB insert of the same Arrow table (the floor that person resolution and JSON parsing add to).

    .venv/bin/python bench/ingest.py [--http-events 50000] [--import-events 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import httpx
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import synthetic_events

from batchexports.events import duckdb_schema
from batchexports.events.duckdb_store import DuckDBEventsStore
from batchexports.events.importer import EventsFile

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def raw_duckdb_insert(table, path: Path) -> float:
    con = duckdb.connect(str(path))
    con.execute("SET TimeZone = 'UTC'")
    duckdb_schema.migrate(con)
    began = time.perf_counter()
    con.register("incoming", table)
    con.execute(
        """
        INSERT INTO events (uuid, event, properties, timestamp, team_id, distinct_id, elements_chain, created_at,
                            person_id, person_properties, session_id, _inserted_at)
        SELECT uuid::UUID, event, properties::JSON, timestamp, 1, distinct_id, elements_chain, now(),
               NULL, NULL, json_extract_string(properties, '$."$session_id"'), timestamp
        FROM incoming
        """
    )
    elapsed = time.perf_counter() - began
    con.close()
    return elapsed


def bench_import(rows: int, workdir: Path) -> None:
    table = synthetic_events(rows, START, dt.timedelta(days=2))
    parquet = workdir / "events.parquet"
    pq.write_table(table, parquet, compression="zstd")
    baseline = raw_duckdb_insert(table, workdir / "raw.duckdb")

    store = DuckDBEventsStore(workdir / "import.duckdb")
    source = EventsFile(parquet)
    began = time.perf_counter()
    imported = sum(store.import_table(1, batch) for batch in source.batches())
    elapsed = time.perf_counter() - began
    store.close()
    print(f"import     {imported:>9,} events  {imported / elapsed:>10,.0f} events/s  ({elapsed:.1f} s)")
    print(f"raw insert {rows:>9,} events  {rows / baseline:>10,.0f} events/s  ({baseline:.1f} s)  [baseline]")
    print(f"import / raw insert = {baseline / elapsed:.2f}x")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_http(events: int, batch_size: int, workdir: Path) -> None:
    env = {**os.environ, "BATCHEXPORTS_DATA_DIR": str(workdir / "service")}
    env.pop("DATABASE_URL", None)
    binary = Path(sys.executable).with_name("batchexports")
    boot = json.loads(subprocess.run([binary, "bootstrap", "--json"], env=env, capture_output=True, text=True,
                                     check=True).stdout)  # fmt: skip
    port = free_port()
    server = subprocess.Popen([binary, "api", "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                httpx.get(f"{url}/_health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)
        table = synthetic_events(events, START, dt.timedelta(hours=1))
        rows = table.to_pylist()
        bodies = [
            json.dumps({"api_key": boot["project_api_key"], "batch": [
                {"event": r["event"], "distinct_id": r["distinct_id"], "uuid": r["uuid"],
                 "properties": json.loads(r["properties"])} for r in rows[i : i + batch_size]
            ]}).encode()
            for i in range(0, len(rows), batch_size)
        ]  # fmt: skip
        with httpx.Client(timeout=60) as client:
            began = time.perf_counter()
            for body in bodies:
                response = client.post(f"{url}/batch/", content=body, headers={"Content-Type": "application/json"})
                response.raise_for_status()
            elapsed = time.perf_counter() - began
    finally:
        server.terminate()
        server.wait(timeout=30)
    baseline = raw_duckdb_insert(table, workdir / "raw-http.duckdb")
    megabytes = sum(map(len, bodies)) / 1e6
    print(f"/batch/    {events:>9,} events  {events / elapsed:>10,.0f} events/s  ({elapsed:.1f} s, "
          f"{megabytes / elapsed:.1f} MB/s of JSON, batches of {batch_size})")  # fmt: skip
    print(f"raw insert {events:>9,} events  {events / baseline:>10,.0f} events/s  ({baseline:.2f} s)  [baseline]")
    print(f"/batch/ / raw insert = {baseline / elapsed:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http-events", type=int, default=50_000)
    parser.add_argument("--http-batch", type=int, default=1000)
    parser.add_argument("--import-events", type=int, default=1_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        bench_http(args.http_events, args.http_batch, Path(tmp))
        bench_import(args.import_events, Path(tmp))


if __name__ == "__main__":
    main()
