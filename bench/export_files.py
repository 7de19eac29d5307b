"""Export throughput into files, against DuckDB's own `COPY (SELECT …) TO` of the same rows.

For N events in one hour of a DuckDB store: Parquet+zstd and JSONLines+gzip into a local folder
through `export()`, each next to DuckDB's COPY of the same model query into the same format;
optionally Parquet into an S3 bucket of a moto server on loopback. Each case runs in a fresh
process and reports rows/s, MB/s of output and peak RSS.

    .venv/bin/python bench/export_files.py [--rows 1000000 10000000] [--s3]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PeakRSS
from stream_memory import START, fill

from batchexports.events.store import ModelQuery

HOUR = dt.timedelta(hours=1)
CASES = {
    "parquet-zstd": ("Parquet", "zstd", "(FORMAT parquet, COMPRESSION zstd)"),
    "jsonl-gzip": ("JSONLines", "gzip", "(FORMAT json, COMPRESSION gzip)"),
}


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def run_case(store_path: str, case: str, target: str, out_dir: str, s3: dict | None) -> dict:
    from batchexports.core.run import ExportRun
    from batchexports.events import model_queries
    from batchexports.events.duckdb_store import DuckDBEventsStore
    from batchexports.pipeline.export import export

    file_format, codec, copy_options = CASES[case]
    store = DuckDBEventsStore(store_path)  # the service's default buffer pool (BATCHEXPORTS_DUCKDB_MEMORY_LIMIT)
    out = Path(out_dir)
    began = time.perf_counter()
    with PeakRSS() as memory:
        if target == "duckdb-copy":
            sql = model_queries.model_sql(ModelQuery("events", 1, START, START + HOUR))
            cursor = store._cursor()
            target_file = out / f"copy.{file_format.lower()}"
            cursor.execute(f"COPY ({sql}) TO '{target_file}' {copy_options}")
            rows = -1
        else:
            os.environ["BATCHEXPORTS_EXPORT_DIR"] = str(out)
            if target == "s3":
                config = {**s3, "file_format": file_format, "compression": codec, "prefix": "bench"}
                destination = "S3"
            else:
                config = {"path": "bench", "file_format": file_format, "compression": codec}
                destination = "File"
            run = ExportRun("bench", 1, "events", destination, config, START, START + HOUR)
            rows = export(run, store, count_total=False).records_completed
    elapsed = time.perf_counter() - began
    size = folder_size(out) if target != "s3" else _s3_size(s3)
    return {"case": case, "target": target, "rows": rows, "seconds": elapsed, "bytes": size, "peak_mb": memory.peak_mb}


def _s3_size(s3: dict) -> int:
    import boto3

    credentials = {"aws_access_key_id": s3["aws_access_key_id"], "aws_secret_access_key": s3["aws_secret_access_key"]}
    client = boto3.client("s3", endpoint_url=s3["endpoint_url"], region_name=s3["region"], **credentials)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=s3["bucket_name"])
    return sum(obj["Size"] for page in pages for obj in page.get("Contents", []))


def child(args: list[str]) -> None:
    store_path, case, target, out_dir, s3_json = args
    print(json.dumps(run_case(store_path, case, target, out_dir, json.loads(s3_json) or None)))


def measure(store_path: Path, case: str, target: str, tmp: Path, s3: dict | None) -> dict:
    out = tmp / f"out-{case}-{target}"
    out.mkdir()
    argv = [sys.executable, __file__, "--child", str(store_path), case, target, str(out), json.dumps(s3 or {})]
    result = json.loads(subprocess.run(argv, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    subprocess.run(["rm", "-rf", str(out)], check=True)
    return result


def report(rows: int, result: dict, baseline: dict | None) -> None:
    rate = rows / result["seconds"]
    ratio = f"  {baseline['seconds'] / result['seconds']:.2f}x COPY" if baseline else "  [baseline]"
    print(f"  {result['target']:<12} {rate:>11,.0f} rows/s  {result['bytes'] / 1e6 / result['seconds']:>7.1f} MB/s  "
          f"{result['bytes'] / 1e6:>8.1f} MB  peak RSS {result['peak_mb']:>5.0f} MB{ratio}")  # fmt: skip


def start_moto() -> tuple[object, dict]:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    s3 = {"bucket_name": "bench", "region": "us-east-1", "endpoint_url": f"http://{host}:{port}",
          "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # fmt: skip
    boto3.client("s3", endpoint_url=s3["endpoint_url"], region_name="us-east-1", aws_access_key_id="testing",
                 aws_secret_access_key="testing").create_bucket(Bucket="bench")  # fmt: skip
    return server, s3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--s3", action="store_true", help="also export Parquet to a moto S3 server")
    parser.add_argument("--child", nargs=5)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    server, s3 = start_moto() if args.s3 else (None, None)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-export-") as tmp_name:
            tmp = Path(tmp_name)
            for rows in args.rows:
                store_path = tmp / f"events-{rows}.duckdb"
                fill(store_path, rows)
                print(f"{rows:,} events, one hour, model 'events'")
                for case in CASES:
                    print(f" {case}")
                    baseline = measure(store_path, case, "duckdb-copy", tmp, None)
                    report(rows, baseline, None)
                    report(rows, measure(store_path, case, "local", tmp, None), baseline)
                    if s3 and case == "parquet-zstd":
                        report(rows, measure(store_path, case, "s3", tmp, s3), baseline)
                store_path.unlink()
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()
