"""A destination outage healing by itself: rows lost and duplicated after PostgreSQL goes away.

Real processes throughout: two PostgreSQL clusters of the benchmark's own (`pg_cluster.py`),
`batchexports up` on a data dir of its own (API, embedded Temporal, worker, DuckDB store), and
two batch exports of the same events on the smallest interval ("every 5 minutes") with the
default retry window, one to each cluster. Their schedules fire on their own at the real 5-minute
boundaries (nothing is triggered); events are captured at a steady rate through `/batch/` with
known uuids (live events: their interval is the one they arrive in).

- outage:   its cluster is stopped (`pg_ctl stop`, fast mode) a few seconds before the export's
            next scheduled run, for OUTAGE seconds, then started again on the same port; the run
            retries under the real policy (10 s doubling to 5 min) and the runs buffered behind it
            follow.
- baseline: the other export, same events, same intervals, same machine; its cluster stays up.

Capture goes on for a while after the restart and stops just before a 5-minute boundary; then the
script waits (bounded) until every interval that had events is Completed in both exports and
compares each destination table with the uuids captured. The heal time runs from the restart to
the Completed of the last interval that had ended by the restart. Failed attempts are counted in
the export's logs (`Attempt N failed, retrying at …`) and in the statuses `/runs/` showed.

    .venv/bin/python bench/outage_heal.py [--outage-seconds 600] [--rate 20] [--after-seconds 30]

Measured on 2026-12-03 (2 shared cores, PostgreSQL 15, Python 3.11), `--outage-seconds 600`, 16.6 min
in all. The run of 12:05-12:10 failed 6 attempts (the policy puts them at +0, 10, 30, 70, 150 and 310 s)
and completed at 12:20:14, 14 s after the restart, with the 7th (due at +610 s); the run of 12:10-12:15,
buffered behind it, followed at once. The heal time's 28 s is that of 12:15-12:20, whose scheduled run
(due at 12:20 plus its jitter) came after the restart; the header line is wrapped here:

    outage heal, started 2026-12-03 12:08 UTC, 20 events/s through /batch/, interval 'every 5 minutes',
    default retry window; load average now 0.02
                                                           outage   baseline
    destination down (s)                                      600          -
    5-minute intervals with events                              4          4
      of which Completed                                        4          4
      due by the restart, not exported at the stop              3          0
    runs (rows in /runs/)                                       4          4
      seen FailedRetryable in /runs/                            1          0
      Failed                                                    0          0
    failed attempts (logs: 'failed, retrying')                  6          0
    heal: restart -> all due intervals Completed (s)           28          -
    max lag: interval end -> Completed (s)                    614         22
    rows expected (captured, acknowledged)                  19140      19140
    rows exported (destination table)                       19140      19140
    rows lost (expected uuid missing)                           0          0
    rows duplicated (uuid count > 1)                            0          0
    rows not captured by us (unexpected uuid)                   0          0
    per interval: Completed at (seconds after the interval's end), records
      12:05-12:10  outage  +614 s  1180   baseline   +22 s  1180
      12:10-12:15  outage  +314 s  6000   baseline    +5 s  6000
      12:15-12:20  outage   +29 s  6000   baseline   +14 s  6000
      12:20-12:25  outage   +19 s  5960   baseline   +17 s  5960
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pg_cluster import PostgresCluster

BIN = Path(sys.executable).with_name("batchexports")
INTERVAL = dt.timedelta(minutes=5)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def floor_interval(moment: dt.datetime) -> dt.datetime:
    return EPOCH + ((moment - EPOCH) // INTERVAL) * INTERVAL


def sleep_until(moment: dt.datetime) -> None:
    left = (moment - now()).total_seconds()
    if left > 0:
        time.sleep(left)


def say(message: str) -> None:
    print(f"[{now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Service:
    """`batchexports up` on one data dir (after tests/test_end_to_end.py's Service)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.log_path = data_dir.parent / "up.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.project_id = 0
        self.personal_api_key = ""
        self.project_api_key = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> None:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("BATCHEXPORTS_", "TEMPORAL_"))
            and key not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")
        }
        env["BATCHEXPORTS_DATA_DIR"] = str(self.data_dir)  # the retry window stays the default
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [str(BIN), "up", "--port", str(self.port)], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"`up` exited with {self.process.returncode}:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                health = httpx.get(f"{self.url}/_health", timeout=2)
                if health.status_code == 200 and health.json()["dependencies"]["engine"].get("ok") is True:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"`up` not healthy within {timeout:.0f} s:\n{self.log()}")
            time.sleep(0.3)
        lines = self.log().splitlines()

        def field(label: str) -> str:
            return next(line.split()[len(label.split())] for line in lines if line.startswith(label))

        self.project_id = int(field("project id:"))
        self.personal_api_key = field("personal API key:")
        self.project_api_key = field("project API key:")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 45) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def stop_orphaned_temporal(self) -> None:
        """The Temporal server `up` leaves running when it had to be killed (it has a session of its own)."""
        try:
            pid = int(json.loads((self.data_dir / "temporal" / "server.json").read_text())["pid"])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError, KeyError):
            return
        if str(self.data_dir).encode() not in cmdline:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def request(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.personal_api_key}"}
        response = httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)
        if response.status_code != expect:
            raise RuntimeError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json() if response.content else None

    @property
    def exports_path(self) -> str:
        return f"/api/projects/{self.project_id}/batch_exports"

    def create_postgres_export(self, name: str, port: int) -> str:
        destination = {
            "type": "Postgres",
            "config": {"user": "postgres", "password": "", "host": "127.0.0.1", "port": port, "database": "postgres"},
        }
        body = {"name": name, "interval": "every 5 minutes", "destination": destination}
        return str(self.request("POST", f"{self.exports_path}/", expect=201, json=body)["id"])

    def runs(self, export_id: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        url: str | None = f"{self.exports_path}/{export_id}/runs/"
        while url:
            page = self.request("GET", url.removeprefix(self.url))
            found.extend(page["results"])
            url = page.get("next")
        return found

    def logs(self, export_id: str, search: str) -> list[dict[str, Any]]:
        params = {"search": search, "limit": 1000}
        return self.request("GET", f"{self.exports_path}/{export_id}/logs/", params=params)["results"]

    def next_fires(self, export_id: str) -> list[dt.datetime]:
        """When the export's schedule fires next (jitter included), read from the embedded Temporal."""
        from temporalio.client import Client

        address = json.loads((self.data_dir / "temporal" / "server.json").read_text())["address"]

        async def describe() -> list[dt.datetime]:
            client = await Client.connect(address)
            description = await client.get_schedule_handle(export_id).describe()
            return list(description.info.next_action_times)

        return asyncio.run(describe())


class Capture(threading.Thread):
    """Posts `rate` events a second to /batch/, in two batches a second, each event with a known uuid."""

    def __init__(self, service: Service, rate: int) -> None:
        super().__init__(name="capture", daemon=True)
        self.service = service
        self.per_batch = max(1, rate // 2)
        self.accepted: list[str] = []
        self.refused: list[str] = []  # not acknowledged: neither expected nor counted as lost
        self.spans: list[tuple[dt.datetime, dt.datetime]] = []  # each accepted batch: sent, acknowledged
        self._halt = threading.Event()

    def run(self) -> None:
        body: dict[str, Any] = {"api_key": self.service.project_api_key}
        with httpx.Client(base_url=self.service.url, timeout=10) as client:
            next_at = time.monotonic()
            while not self._halt.is_set():
                uuids = [str(uuid.uuid4()) for _ in range(self.per_batch)]
                body["batch"] = [
                    {"event": "outage_bench", "distinct_id": f"user-{i % 50}", "uuid": u, "properties": {"n": i}}
                    for i, u in enumerate(uuids)
                ]
                sent = now()
                try:
                    ok = client.post("/batch/", json=body).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.accepted.extend(uuids)
                    self.spans.append((sent, now()))
                else:
                    self.refused.extend(uuids)
                next_at += 0.5
                self._halt.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


class RunsWatch(threading.Thread):
    """Polls /runs/ of each export every 2 s and keeps the statuses each run was seen in."""

    def __init__(self, service: Service, export_ids: list[str]) -> None:
        super().__init__(name="runs-watch", daemon=True)
        self.service = service
        self.export_ids = export_ids
        self.seen: dict[str, set[str]] = defaultdict(set)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(2):
            for export_id in self.export_ids:
                with contextlib.suppress(Exception):
                    for run in self.service.runs(export_id):
                        if run["status"] not in self.seen[run["id"]]:
                            if run["status"] == "FailedRetryable":
                                say(f"{run['data_interval_end']}: FailedRetryable: {run['latest_error'][:160]}")
                            self.seen[run["id"]].add(run["status"])

    def stop(self) -> None:
        self._halt.set()
        self.join(30)


def parse(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def completed_by_interval(runs: list[dict[str, Any]]) -> dict[dt.datetime, dict[str, Any]]:
    """The first Completed run of each interval, keyed by the interval's start."""
    done: dict[dt.datetime, dict[str, Any]] = {}
    for run in sorted(runs, key=lambda r: r["finished_at"] or ""):
        start = parse(run["data_interval_start"])
        if run["status"] == "Completed" and start is not None and start not in done:
            done[start] = run
    return done


def destination_counts(cluster: PostgresCluster) -> Counter[str]:
    try:
        with cluster.connect() as connection:
            rows = connection.execute("SELECT uuid, count(*) FROM public.events GROUP BY uuid").fetchall()
    except psycopg.errors.UndefinedTable:
        return Counter()
    return Counter({str(u): int(n) for u, n in rows})


def figures(
    name: str,
    service: Service,
    export_id: str,
    cluster: PostgresCluster,
    capture: Capture,
    watch: RunsWatch,
    intervals: list[dt.datetime],
    down: dt.datetime | None,
    up: dt.datetime | None,
) -> dict[str, Any]:
    runs = service.runs(export_id)
    done = completed_by_interval(runs)
    counts = destination_counts(cluster)
    expected = set(capture.accepted)
    retried = [r for r in runs if "FailedRetryable" in watch.seen.get(r["id"], set())]
    attempts = service.logs(export_id, "failed, retrying")
    # Intervals due by the restart and not yet exported when the destination went down.
    due = [s for s in intervals if up and s + INTERVAL <= up]
    affected = [s for s in due if s not in done or parse(done[s]["finished_at"]) > down]  # type: ignore[operator]
    heal = None
    if up and affected and all(s in done for s in affected):
        heal = max(parse(done[s]["finished_at"]) for s in affected) - up  # type: ignore[operator]
    lags = [parse(done[s]["finished_at"]) - (s + INTERVAL) for s in intervals if s in done]  # type: ignore[operator]
    return {
        "name": name,
        "by_interval": {s: (done[s]["finished_at"], done[s]["records_completed"]) for s in intervals if s in done},
        "outage": (up - down).total_seconds() if down and up else None,
        "intervals": len(intervals),
        "completed": sum(1 for s in intervals if s in done),
        "incomplete": [s for s in intervals if s not in done],
        "affected": len(affected),
        "runs": len(runs),
        "runs_retried": len(retried),
        "failed_attempts": len(attempts),
        "runs_failed": sum(1 for r in runs if r["status"] == "Failed"),
        "heal": heal.total_seconds() if heal is not None else None,
        "max_lag": max(lags).total_seconds() if lags else None,
        "expected": len(expected),
        "exported": sum(counts.values()),
        "lost": len(expected - counts.keys()),
        "duplicated": sum(1 for n in counts.values() if n > 1),
        "unexpected": len(counts.keys() - expected),
        "refused": len(capture.refused),
    }


def report(results: list[dict[str, Any]], started: dt.datetime, rate: int) -> None:
    def show(value: Any, unit: str = "") -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.0f}{unit}"
        return f"{value}{unit}"

    rows = [
        ("destination down (s)", "outage", ""),
        ("5-minute intervals with events", "intervals", ""),
        ("  of which Completed", "completed", ""),
        ("  due by the restart, not exported at the stop", "affected", ""),
        ("runs (rows in /runs/)", "runs", ""),
        ("  seen FailedRetryable in /runs/", "runs_retried", ""),
        ("  Failed", "runs_failed", ""),
        ("failed attempts (logs: 'failed, retrying')", "failed_attempts", ""),
        ("heal: restart -> all due intervals Completed (s)", "heal", ""),
        ("max lag: interval end -> Completed (s)", "max_lag", ""),
        ("rows expected (captured, acknowledged)", "expected", ""),
        ("rows exported (destination table)", "exported", ""),
        ("rows lost (expected uuid missing)", "lost", ""),
        ("rows duplicated (uuid count > 1)", "duplicated", ""),
        ("rows not captured by us (unexpected uuid)", "unexpected", ""),
    ]
    print(f"\noutage heal, started {started:%Y-%m-%d %H:%M} UTC, {rate} events/s through /batch/, "
          f"interval 'every 5 minutes', default retry window; load average now {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'':50} {results[0]['name']:>10} {results[1]['name']:>10}")
    for label, key, unit in rows:
        print(f"{label:50} {show(results[0][key], unit):>10} {show(results[1][key], unit):>10}")
    print("per interval: Completed at (seconds after the interval's end), records")
    for start in sorted(set(results[0]["by_interval"]) | set(results[1]["by_interval"])):
        cells = []
        for result in results:
            finished, records = result["by_interval"].get(start, (None, None))
            lag = f"+{(parse(finished) - start - INTERVAL).total_seconds():.0f} s" if finished else "-"
            cells.append(f"{result['name']} {lag:>7} {show(records):>5}")
        print(f"  {start:%H:%M}-{start + INTERVAL:%H:%M}  " + "   ".join(cells))
    for result in results:
        if result["incomplete"]:
            starts = ", ".join(f"{s:%H:%M}" for s in result["incomplete"])
            print(f"NOT HEALED ({result['name']}): intervals starting {starts} UTC have no Completed run")
        if result["lost"] or result["duplicated"]:
            print(f"NOT HEALED ({result['name']}): {result['lost']} lost, {result['duplicated']} duplicated")
        if result["refused"]:
            print(f"({result['name']}: {result['refused']} events not acknowledged by /batch/, so not expected)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outage-seconds", type=float, default=600)
    parser.add_argument("--rate", type=int, default=20, help="events captured per second")
    parser.add_argument("--after-seconds", type=float, default=30, help="capture at least this long after restart")
    parser.add_argument("--lead-seconds", type=float, default=3, help="stop the destination this long before a run")
    parser.add_argument("--heal-timeout", type=float, default=900, help="bound on the wait for Completed runs")
    args = parser.parse_args()

    started = now()
    root = Path(tempfile.mkdtemp(prefix="bench-outage-"))
    clusters: list[PostgresCluster] = []
    service: Service | None = None
    capture: Capture | None = None
    watch: RunsWatch | None = None
    try:
        outage_pg, baseline_pg = PostgresCluster("outage"), PostgresCluster("baseline")
        clusters += [outage_pg, baseline_pg]
        for cluster in clusters:
            cluster.start()
        (root / "data").mkdir()
        service = Service(root / "data")
        service.start()
        say(f"service at {service.url}; PostgreSQL on {outage_pg.port} (outage), {baseline_pg.port} (baseline)")
        outage_id = service.create_postgres_export("outage", outage_pg.port)
        baseline_id = service.create_postgres_export("baseline", baseline_pg.port)

        capture = Capture(service, args.rate)
        capture.start()
        watch = RunsWatch(service, [outage_id, baseline_id])
        watch.start()
        # The outage starts just before a scheduled run of its export, at least 20 s of capture in
        # (A fire runs the interval that ends at the boundary before it: that one must have events.)
        fire = next(f for f in service.next_fires(outage_id) if floor_interval(f) - now() > dt.timedelta(seconds=20))
        say(f"outage export's next run at {fire:%H:%M:%S}; stopping its PostgreSQL {args.lead_seconds:.0f} s before")
        sleep_until(fire - dt.timedelta(seconds=args.lead_seconds))
        outage_pg.stop()
        down = now()
        say(f"destination down for {args.outage_seconds:.0f} s")
        sleep_until(down + dt.timedelta(seconds=args.outage_seconds))
        outage_pg.start()
        up = now()
        say("destination back up")
        # Stop capturing just before a boundary, so that every event is in an interval that has ended.
        last_end = floor_interval(up + dt.timedelta(seconds=args.after_seconds)) + INTERVAL
        sleep_until(last_end - dt.timedelta(seconds=2))
        capture.stop()
        say(f"capture stopped: {len(capture.accepted)} events; waiting for every interval up to {last_end:%H:%M}")
        first = floor_interval(capture.spans[0][0])
        count = (floor_interval(capture.spans[-1][1]) - first) // INTERVAL + 1
        intervals = [first + INTERVAL * i for i in range(count)]

        deadline = time.monotonic() + (last_end - now()).total_seconds() + args.heal_timeout
        while time.monotonic() < deadline:
            done = [completed_by_interval(service.runs(e)) for e in (outage_id, baseline_id)]
            if all(s in d for d in done for s in intervals):
                break
            time.sleep(2)
        watch.stop()
        results = [
            figures("outage", service, outage_id, outage_pg, capture, watch, intervals, down, up),
            figures("baseline", service, baseline_id, baseline_pg, capture, watch, intervals, None, None),
        ]
        report(results, started, args.rate)
        say(f"total {(now() - started).total_seconds() / 60:.1f} min")
    finally:
        # Each step on its own: one that fails must not leave the next process running.
        steps = [t.stop for t in (capture, watch) if t is not None]
        if service is not None:
            steps += [service.stop, service.stop_orphaned_temporal]
        for step in [*steps, *(c.destroy for c in clusters)]:
            try:
                step()
            except Exception as error:
                say(f"cleanup: {step.__qualname__} failed: {type(error).__name__}: {error}")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
