"""End to end: the service as a user runs it, driven only from outside.

What is real: `batchexports up` in its own process on a data dir of its own (migrations,
bootstrap, the embedded Temporal dev server, the worker, the DuckDB events store), the HTTP API
and the capture endpoint spoken to with httpx, `batchexports import`, signals (SIGINT, SIGKILL)
sent to that process, the files the File destination writes under `<data dir>/exports/`, and a
real S3 server over HTTP (moto's `ThreadedMotoServer`, in the test process, on loopback) read back
with boto3.

Shortcuts (test-only, named where used):
- triggering a schedule: instead of waiting for the top of the hour, the test connects a
  temporalio Client to the embedded server (its address is in `<data dir>/temporal/server.json`)
  and calls `ScheduleHandle.trigger()`, which starts the run the schedule would have started;
- the paused state of a schedule is read with the same client (`ScheduleHandle.describe()`).
Nothing else touches the service's internals: no Django, no database, no store in this process.

The `Service` driving `up` is shared with other suites (tests/service_process.py).
Every wait is bounded and polls; every process started is stopped (SIGINT, then SIGKILL after a
timeout), and a Temporal server orphaned by a SIGKILL of `up` is stopped at the end of the test.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import random
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import pyarrow.parquet as pq
import pytest

from tests.service_process import (
    HOUR,
    Service,
    avoid_hour_boundary,
    exported_files,
    floor_hour,
    interval_name,
    now_utc,
    parse,
    process_alive,
    read_jsonl,
    wait_until,
)

pytestmark = pytest.mark.slow


# -- the service (tests/service_process.py) ------------------------------------------------------


@pytest.fixture
def make_service(tmp_path: Path) -> Iterator[Callable[[], Service]]:
    started: list[Service] = []

    def make() -> Service:
        data_dir = tmp_path / f"data-{len(started)}"
        data_dir.mkdir()
        service = Service(data_dir)
        started.append(service)
        return service

    yield make
    for service in started:
        with contextlib.suppress(Exception):
            service.stop()
        service.stop_orphaned_temporal()


@pytest.fixture
def service(make_service: Callable[[], Service]) -> Service:
    running = make_service()
    running.start()
    return running


# -- events and what was exported ----------------------------------------------------------------


def make_events(times: list[dt.datetime], rng: random.Random, event: str = "e2e") -> list[dict[str, Any]]:
    return [
        {
            "event": f"{event}_{rng.choice(['view', 'click', 'signup'])}",
            "distinct_id": f"user-{rng.randrange(50)}",
            "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "timestamp": moment.isoformat().replace("+00:00", "Z"),
            "properties": {"n": index, "plan": rng.choice(["free", "pro"]), "nested": {"ok": True}},
        }
        for index, moment in enumerate(times)
    ]


def spread(start: dt.datetime, count: int, rng: random.Random, span: dt.timedelta = HOUR) -> list[dt.datetime]:
    """`count` random moments in [start, start + span), to the millisecond."""
    millis = int(span.total_seconds() * 1000)
    return [start + dt.timedelta(milliseconds=rng.randrange(millis)) for _ in range(count)]


def comparable(row: dict[str, Any]) -> tuple[str, str, str, str]:
    properties = row["properties"]
    if isinstance(properties, str):
        properties = json.loads(properties)
    return row["uuid"], row["event"], row["distinct_id"], json.dumps(properties, sort_keys=True)


def assert_each_once(rows: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    counts = Counter(row["uuid"] for row in rows)
    duplicated = {key: n for key, n in counts.items() if n > 1}
    assert not duplicated, f"{len(duplicated)} uuid(s) exported more than once, e.g. {list(duplicated.items())[:3]}"
    assert sorted(map(comparable, rows)) == sorted(map(comparable, expected))


# -- 1. capture -> schedule -> files -------------------------------------------------------------


def test_captured_events_reach_files_when_the_schedule_fires(service: Service) -> None:
    """Events captured through /batch/ (past data) come out, exactly the previous hour's, each once,
    in the file of that hour, when the export's schedule fires (triggered: test-only shortcut)."""
    avoid_hour_boundary()
    rng = random.Random(1)
    previous = floor_hour(now_utc()) - HOUR
    in_hour = make_events(spread(previous, 400, rng), rng)
    before = make_events(spread(previous - HOUR, 100, rng), rng)
    batch = in_hour + before
    rng.shuffle(batch)
    service.capture(batch)

    export_id = service.create_export(
        "scheduled", {"type": "File", "config": {"path": "scheduled", "file_format": "JSONLines"}}
    )
    service.trigger_schedule(export_id)

    def completed() -> list[dict[str, Any]]:
        runs = service.runs(export_id)
        assert all(run["status"] not in ("Failed", "Cancelled") for run in runs), runs
        return [run for run in runs if run["status"] == "Completed"]

    (run,) = wait_until(completed, 60, "the triggered run to complete")
    assert parse(run["data_interval_start"]) == previous
    assert parse(run["data_interval_end"]) == previous + HOUR
    assert run["records_completed"] == len(in_hour)

    files = exported_files(service.data_dir / "exports" / "scheduled")
    assert [f.name for f in files] == [f"{interval_name(previous, previous + HOUR)}.jsonl"]
    assert_each_once(read_jsonl(files[0]), in_hour)


# -- 2. a 24-interval backfill, to files and to S3 -----------------------------------------------


@pytest.fixture
def moto_endpoint() -> Iterator[str]:
    """A real S3 server over HTTP on loopback (moto), in the test process."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    yield f"http://localhost:{port}"
    server.stop()


def s3_client(endpoint: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(s3={"addressing_style": "path"}),
    )


def events_per_hour(hours: list[dt.datetime], rng: random.Random) -> dict[dt.datetime, list[dict[str, Any]]]:
    """A few events in every hour (at least one), a different number each."""
    return {hour: make_events(spread(hour, rng.randint(1, 8), rng), rng) for hour in hours}


def test_a_24_interval_backfill_exports_every_event_once_to_files_and_s3(service: Service, moto_endpoint: str) -> None:
    rng = random.Random(2)
    end = floor_hour(now_utc())
    start = end - 24 * HOUR
    hours = [start + i * HOUR for i in range(24)]
    by_hour = events_per_hour(hours, rng)
    captured = [event for events in by_hour.values() for event in events]
    service.capture(captured)

    s3 = s3_client(moto_endpoint)
    s3.create_bucket(Bucket="e2e-exports")
    s3_start, s3_end = hours[5], hours[8]  # three of those hours

    files_export = service.create_export(
        "backfilled", {"type": "File", "config": {"path": "backfilled", "file_format": "JSONLines"}}
    )
    s3_export = service.create_export(
        "to s3",
        {
            "type": "S3",
            "config": {
                "bucket_name": "e2e-exports",
                "region": "us-east-1",
                "endpoint_url": moto_endpoint,
                "aws_access_key_id": "testing",
                "aws_secret_access_key": "testing",
                "prefix": "events/{year}-{month}-{day}/",
                "file_format": "JSONLines",
            },
        },
    )
    files_backfill = service.backfill(files_export, start, end)
    s3_backfill = service.backfill(s3_export, s3_start, s3_end)

    done = service.wait_backfill(files_export, files_backfill, "Completed", timeout=150)
    assert done["progress"] == {"total_runs": 24, "finished_runs": 24, "progress": 1.0}
    runs = service.runs(files_export, files_backfill)
    assert len(runs) == 24
    assert {run["status"] for run in runs} == {"Completed"}
    assert sorted(parse(run["data_interval_start"]) for run in runs) == hours
    for run in runs:
        assert run["records_completed"] == len(by_hour[parse(run["data_interval_start"])]), run

    files = exported_files(service.data_dir / "exports" / "backfilled")
    assert sorted(f.name for f in files) == sorted(f"{interval_name(h, h + HOUR)}.jsonl" for h in hours)
    for path in files:  # each file holds its own hour's events
        hour = parse(path.name[:19] + "+00:00")
        assert sorted(map(comparable, read_jsonl(path))) == sorted(map(comparable, by_hour[hour]))
    assert_each_once([row for path in files for row in read_jsonl(path)], captured)

    service.wait_backfill(s3_export, s3_backfill, "Completed", timeout=60)
    s3_runs = service.runs(s3_export, s3_backfill)
    assert len(s3_runs) == 3
    assert {run["status"] for run in s3_runs} == {"Completed"}
    listed = s3.list_objects_v2(Bucket="e2e-exports", Prefix="events/")
    keys = sorted(item["Key"] for item in listed.get("Contents", []))
    assert len(keys) == 3, keys
    assert all(key.endswith(".jsonl") for key in keys), keys
    s3_rows = [
        json.loads(line)
        for key in keys
        for line in s3.get_object(Bucket="e2e-exports", Key=key)["Body"].read().decode().splitlines()
        if line.strip()
    ]
    expected = [event for hour in hours[5:8] for event in by_hour[hour]]
    assert_each_once(s3_rows, expected)


# -- 3. pause ------------------------------------------------------------------------------------


def test_pause_and_unpause_drive_the_schedule_and_a_paused_export_runs_nothing(service: Service) -> None:
    """The paused state of the schedule is read from Temporal (test-only shortcut)."""
    export_id = service.create_export(
        "pausable", {"type": "File", "config": {"path": "pausable", "file_format": "JSONLines"}}
    )
    assert service.schedule_paused(export_id) is False

    service.request("POST", f"{service.exports_path}/{export_id}/pause/")
    assert service.request("GET", f"{service.exports_path}/{export_id}/")["paused"] is True
    assert service.schedule_paused(export_id) is True
    before = service.runs(export_id)
    time.sleep(3)
    assert service.runs(export_id) == before, "a paused export ran"

    service.request("POST", f"{service.exports_path}/{export_id}/unpause/")
    assert service.request("GET", f"{service.exports_path}/{export_id}/")["paused"] is False
    assert service.schedule_paused(export_id) is False


# -- 4. cancel -----------------------------------------------------------------------------------


def test_cancelling_a_long_backfill_stops_its_runs(service: Service) -> None:
    rng = random.Random(4)
    five = dt.timedelta(minutes=5)
    now = now_utc()
    end = now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0)
    start = end - dt.timedelta(days=3)
    total = int((end - start) / five)  # 864
    # Events in a few intervals, the first one included (a backfill starts at the earliest data).
    chosen = [0, 1, 2, 3, 100, 500, total - 1]
    service.capture(make_events([start + i * five + dt.timedelta(seconds=10) for i in chosen], rng))

    export_id = service.create_export(
        "five minutes",
        {"type": "File", "config": {"path": "five", "file_format": "JSONLines"}},
        interval="every 5 minutes",
    )
    backfill_id = service.backfill(export_id, start, end)

    def first_completed() -> list[dict[str, Any]]:
        completed = [run for run in service.runs(export_id, backfill_id) if run["status"] == "Completed"]
        return completed if len(completed) >= 2 else []

    wait_until(first_completed, 60, "the first runs of the backfill to complete")
    service.request("POST", f"{service.exports_path}/{export_id}/backfills/{backfill_id}/cancel/")
    known = {run["id"] for run in service.runs(export_id, backfill_id)}
    cancelled = service.wait_backfill(export_id, backfill_id, "Cancelled", timeout=30)
    # As in PostHog, a backfill that ended other than Completed has no progress.
    assert cancelled["progress"] is None

    def settled() -> list[dict[str, Any]]:
        runs = service.runs(export_id, backfill_id)
        return runs if all(run["status"] in ("Completed", "Cancelled") for run in runs) else []

    wait_until(settled, 30, "every run of the cancelled backfill to be Completed or Cancelled")
    time.sleep(3)  # long enough for several more 5-minute intervals to have run, were it going on
    runs = service.runs(export_id, backfill_id)
    # At most the one run in flight at the cancel may show up after it, and only as Cancelled.
    late = [(run["data_interval_start"], run["status"]) for run in runs if run["id"] not in known]
    assert len(late) <= 1 and all(status == "Cancelled" for _, status in late), f"runs went on: {late}"
    assert {run["status"] for run in runs} <= {"Completed", "Cancelled"}, runs
    assert 2 <= len(runs) < total
    time.sleep(2)
    assert len(service.runs(export_id, backfill_id)) == len(runs), "the run count kept growing"
    assert service.backfill_state(export_id, backfill_id)["status"] == "Cancelled"


# -- 5. SIGKILL in the middle of a run -----------------------------------------------------------


BIG_ROWS = 1_000_000


def write_big_parquet(path: Path, hour: dt.datetime, rows: int) -> pa.Array:
    """`rows` events spread over one hour (vectorized: no Python per row); returns their uuids."""
    index = pa.array(range(rows), type=pa.int64())
    digits = pc.utf8_lpad(pc.cast(index, pa.string()), width=12, padding="0")
    uuids = pc.binary_join_element_wise("00000000-0000-4000-8000-", digits, "")
    step_us = 3_600_000_000 // rows
    base_us = int(hour.timestamp()) * 1_000_000
    timestamps = pc.cast(pc.add(pc.multiply(index, step_us), base_us), pa.timestamp("us", tz="UTC"))
    distinct = pc.binary_join_element_wise("user-", pc.cast(pc.bit_wise_and(index, 1023), pa.string()), "")
    properties = pc.binary_join_element_wise('{"i": ', pc.cast(index, pa.string()), "}", "")
    table = pa.table(
        {
            "uuid": uuids,
            "event": pa.repeat(pa.scalar("bulk"), rows),
            "distinct_id": distinct,
            "timestamp": timestamps,
            "properties": properties,
        }
    )
    pq.write_table(table, path)
    return uuids


def test_sigkill_in_the_middle_of_a_run_loses_and_duplicates_nothing(make_service: Callable[[], Service]) -> None:
    """`batchexports up` is SIGKILLed while a 1M-row run is writing; the next `up` adopts the
    Temporal server it left running, the export is retried and the interval exported once."""
    service = make_service()
    service.start()  # bootstrap: the project and keys
    service.stop()
    hour = floor_hour(now_utc()) - 3 * HOUR
    source = service.data_dir.parent / "past-events.parquet"
    uuids = write_big_parquet(source, hour, BIG_ROWS)
    imported = service.command("import", str(source), "--project", str(service.project_id), timeout=300)
    assert f"imported {BIG_ROWS} events" in imported

    service.start()
    export_id = service.create_export(
        "big", {"type": "File", "config": {"path": "big", "file_format": "JSONLines", "compression": "gzip"}}
    )
    backfill_id = service.backfill(export_id, hour, hour + HOUR)
    wait_until(
        lambda: [run for run in service.runs(export_id, backfill_id) if run["status"] == "Running"],
        60,
        "the run to be Running",
        interval=0.2,
    )
    time.sleep(1)  # let it write part of the file
    first_server = service.temporal_server()
    service.kill()
    assert first_server and process_alive(int(first_server["pid"])), "the Temporal server died with `up`"

    service.start()
    assert service.temporal_server() == first_server, "the second `up` did not adopt the Temporal server"
    service.wait_backfill(export_id, backfill_id, "Completed", timeout=150)
    (run,) = service.runs(export_id, backfill_id)
    assert run["status"] == "Completed"
    assert run["records_completed"] == BIG_ROWS

    files = exported_files(service.data_dir / "exports" / "big", suffix=".jsonl.gz")
    assert [f.name for f in files] == [f"{interval_name(hour, hour + HOUR)}.jsonl.gz"]
    only_uuid = pj.ParseOptions(explicit_schema=pa.schema([("uuid", pa.string())]), unexpected_field_behavior="ignore")
    exported = pa.concat_arrays(
        [
            chunk
            for path in files
            for chunk in pj.read_json(pa.input_stream(str(path), compression="gzip"), parse_options=only_uuid)
            .column("uuid")
            .chunks
        ]
    )
    assert len(exported) == BIG_ROWS
    assert pc.count_distinct(exported).as_py() == BIG_ROWS
    assert pc.all(pc.is_in(exported, value_set=uuids)).as_py()


# -- 6. a restart in the middle of a backfill ----------------------------------------------------


def test_a_backfill_survives_a_restart_of_the_service(service: Service) -> None:
    rng = random.Random(6)
    end = floor_hour(now_utc()) - HOUR
    start = end - 24 * HOUR
    hours = [start + i * HOUR for i in range(24)]
    by_hour = events_per_hour(hours, rng)
    captured = [event for events in by_hour.values() for event in events]
    service.capture(captured)
    export_id = service.create_export(
        "restarted", {"type": "File", "config": {"path": "restarted", "file_format": "JSONLines"}}
    )
    backfill_id = service.backfill(export_id, start, end)

    def a_few_finished() -> dict[str, Any] | None:
        state = service.backfill_state(export_id, backfill_id)
        return state if (state["progress"] or {}).get("finished_runs", 0) >= 3 else None

    state = wait_until(a_few_finished, 60, "a few runs of the backfill to finish", interval=0.2)
    assert state["status"] != "Completed", "the backfill finished before the restart: nothing was tested"
    assert service.stop(signal.SIGINT) == 0
    assert service.temporal_server() is None, "a clean stop leaves no Temporal server behind"

    service.start()
    done = service.wait_backfill(export_id, backfill_id, "Completed", timeout=150)
    assert done["progress"] == {"total_runs": 24, "finished_runs": 24, "progress": 1.0}
    runs = service.runs(export_id, backfill_id)
    assert len(runs) == 24
    assert {run["status"] for run in runs} == {"Completed"}
    assert sorted(parse(run["data_interval_start"]) for run in runs) == hours

    files = exported_files(service.data_dir / "exports" / "restarted")
    assert len(files) == 24
    assert_each_once([row for path in files for row in read_jsonl(path)], captured)
