"""Does a filtered or HogQL export keep its throughput? The same 1M events of one hour exported to
Parquet+zstd in a local folder: all events (the baseline), with two property filters, and with a
HogQL custom schema. Each case runs in a fresh process.

    .venv/bin/python bench/filtered_export.py [--rows 1000000]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PeakRSS
from stream_memory import START, fill

HOUR = dt.timedelta(hours=1)
CASES = {
    "all events": {},
    "2 filters": {
        "filters": (
            {"key": "$browser", "operator": "exact", "value": "Firefox", "type": "event"},
            {"key": "price", "operator": "gt", "value": 100, "type": "event"},
        )
    },
    "hogql schema": {
        "hogql_query": "SELECT uuid, event, timestamp, properties.$current_url AS url, "
        "toInt(properties.price) AS price, lower(properties.$browser) AS browser FROM events"
    },
}


def child(store_path: str, case: str, out_dir: str) -> None:
    import os

    from batchexports.core.run import ExportRun
    from batchexports.events.duckdb_store import DuckDBEventsStore
    from batchexports.pipeline.export import export

    os.environ["BATCHEXPORTS_EXPORT_DIR"] = out_dir
    store = DuckDBEventsStore(store_path, memory_limit="256MB")
    config = {"path": "bench", "file_format": "Parquet", "compression": "zstd"}
    run = ExportRun("bench", 1, "events", "File", config, START, START + HOUR, **CASES[case])
    began = time.perf_counter()
    with PeakRSS() as memory:
        result = export(run, store, count_total=False)
    elapsed = time.perf_counter() - began
    print(json.dumps({"rows": result.records_completed, "seconds": elapsed, "peak_mb": memory.peak_mb}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="bench-filtered-") as tmp:
        store_path = Path(tmp) / "events.duckdb"
        fill(store_path, args.rows)
        print(f"{args.rows:,} events in one hour, Parquet+zstd to a local folder")
        baseline = None
        for case in CASES:
            out = Path(tmp) / case.replace(" ", "-")
            argv = [sys.executable, __file__, "--child", str(store_path), case, str(out)]
            output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
            result = json.loads(output.splitlines()[-1])
            scanned = args.rows / result["seconds"]
            baseline = baseline or scanned
            print(f"  {case:<13} {result['rows']:>9,} rows out  {scanned:>11,.0f} events scanned/s  "
                  f"{scanned / baseline:>5.2f}x  peak RSS {result['peak_mb']:.0f} MB")  # fmt: skip


if __name__ == "__main__":
    main()
