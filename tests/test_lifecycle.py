"""How `batchexports up` starts and stops as people run it: one instance per data dir, a port in
use refused before anything starts, SIGTERM to the main process (Docker) or to the whole process
group (systemd) as a graceful stop, and a SIGKILL that costs seconds.

Real processes throughout (`batchexports up`, its Temporal dev server, signals). The slow
destination is a real HTTP server in the test process, speaking PostHog's `/batch/` format, that
takes its time to answer each request; it records every event it receives, so the test can tell
what each attempt sent.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from batchexports.datadir import DataDirBusy, DataDirLock
from tests.service_process import BIN, HOUR, Service, floor_hour, free_port, now_utc, process_alive, wait_until
from tests.test_end_to_end import make_events, spread


def test_a_second_holder_is_refused_with_the_pid_and_url_and_a_dead_ones_lock_is_free(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from batchexports.datadir import DataDirLock; "
            "DataDirLock().acquire('up', url='http://127.0.0.1:9/', worker_identity='w-1'); "
            "print('locked', flush=True); time.sleep(60)",
        ],
        env={**os.environ, "BATCHEXPORTS_DATA_DIR": str(tmp_path)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirBusy) as busy:
            DataDirLock(tmp_path).acquire("import")
        assert busy.value.holder["pid"] == holder.pid
        assert f"pid {holder.pid}" in str(busy.value) and "http://127.0.0.1:9/" in str(busy.value)
    finally:
        holder.kill()
        holder.wait(10)
    lock = DataDirLock(tmp_path).acquire("up", worker_identity="w-2")
    try:
        assert lock.previous["pid"] == holder.pid and lock.previous["worker_identity"] == "w-1"
    finally:
        lock.release()


def test_a_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        service = Service(tmp_path)
        started = time.monotonic()
        done = subprocess.run(
            [str(BIN), "up", "--port", str(port)], env=service.env(), capture_output=True, text=True, timeout=30
        )
    assert done.returncode != 0
    assert time.monotonic() - started < 5
    assert f"port {port}" in done.stderr and "--port" in done.stderr, done.stderr
    assert "API key" not in done.stdout + done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["batchexports.lock"]  # no bootstrap, no Temporal


# -- the slow destination ------------------------------------------------------------------------


class SlowReceiver:
    """A `/batch/` endpoint that waits `delay` seconds before answering each request."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.received: list[tuple[float, str]] = []  # (monotonic time, uuid)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                arrived = time.monotonic()
                time.sleep(receiver.delay)
                receiver.received.extend((arrived, event["uuid"]) for event in json.loads(body)["batch"])
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"status": 1}')

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/batch/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def uuids_since(self, moment: float) -> list[str]:
        return [uuid for arrived, uuid in self.received if arrived >= moment]


@pytest.fixture
def receiver() -> Iterator[SlowReceiver]:
    running = SlowReceiver(delay=1.5)
    yield running
    running.server.shutdown()


class GroupService(Service):
    """`up` in a session of its own (as systemd starts it), with extra environment variables."""

    def __init__(self, data_dir: Path, **extra: str) -> None:
        super().__init__(data_dir)
        self.extra = extra

    def env(self) -> dict[str, str]:
        return {**super().env(), **self.extra}

    def start(self, timeout: float = 90) -> None:
        real_popen = subprocess.Popen
        subprocess.Popen = lambda *a, **k: real_popen(*a, start_new_session=True, **k)  # type: ignore[misc]
        try:
            super().start(timeout)
        finally:
            subprocess.Popen = real_popen  # type: ignore[misc]


@pytest.fixture
def group_service(tmp_path: Path) -> Iterator[GroupService]:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    service = GroupService(data_dir, BATCHEXPORTS_SHUTDOWN_GRACE_SECONDS="2")
    yield service
    if service.process and service.process.poll() is None:
        service.kill()
    service.stop_orphaned_temporal()


def start_slow_run(service: Service, receiver: SlowReceiver, events: int = 20_000) -> tuple[str, str, list[str]]:
    """An HTTP export of one past hour of `events` (5000 a request, each answered after the delay)."""
    hour = floor_hour(now_utc()) - 2 * HOUR
    rng = random.Random(12)
    captured = make_events(spread(hour, events, rng), rng)
    for start in range(0, events, 5000):
        service.capture(captured[start : start + 5000])
    export_id = service.create_export("slow", {"type": "HTTP", "config": {"url": receiver.url, "token": "phc_x"}})
    backfill_id = service.backfill(export_id, hour, hour + HOUR)
    wait_until(lambda: receiver.received, 60, "the first request at the slow destination", interval=0.1)
    return export_id, backfill_id, [event["uuid"] for event in captured]


def temporal_pid(service: Service) -> int:
    info = service.temporal_server()
    assert info
    return int(info["pid"])


# -- the slow tests ------------------------------------------------------------------------------


@pytest.mark.slow
def test_one_instance_per_data_dir_and_sigterm_to_the_main_process_drains(
    tmp_path: Path, receiver: SlowReceiver
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    first = Service(data_dir)
    first.start()
    server_pid = temporal_pid(first)
    began = time.monotonic()
    second = subprocess.run(
        [str(BIN), "up", "--port", str(free_port())], env=first.env(), capture_output=True, text=True, timeout=30
    )
    assert second.returncode != 0 and time.monotonic() - began < 5
    assert f"pid {first.process.pid}" in second.stderr and first.url in second.stderr, second.stderr
    assert process_alive(server_pid) and temporal_pid(first) == server_pid  # untouched

    # The first instance still exports: a run in flight, then SIGTERM to the main process only.
    export_id, backfill_id, uuids = start_slow_run(first, receiver, events=15_000)
    asked = time.monotonic()
    assert first.stop(signal.SIGTERM, timeout=30) == 0
    took = time.monotonic() - asked
    print(f"\nSIGTERM to the main process: exited 0 in {took:.1f} s (the run in flight finished)")
    assert took < 30
    assert not process_alive(server_pid), "the Temporal server outlived the stop"
    assert sorted(receiver.uuids_since(0)) == sorted(uuids), "the run in flight did not finish within the grace"

    first.start()
    first.wait_backfill(export_id, backfill_id, "Completed", timeout=60)
    (run,) = first.runs(export_id, backfill_id)
    assert run["status"] == "Completed" and run["records_completed"] == len(uuids)
    assert sorted(receiver.uuids_since(0)) == sorted(uuids), "rows were sent again after the restart"
    assert first.stop(signal.SIGINT) == 0


@pytest.mark.slow
def test_sigterm_to_the_process_group_cancels_after_the_grace_and_sigkill_resumes_in_seconds(
    group_service: GroupService, receiver: SlowReceiver
) -> None:
    service = group_service
    service.start()
    server_pid = temporal_pid(service)
    export_id, backfill_id, uuids = start_slow_run(service, receiver)  # 4 requests of 1.5 s: over the 2 s grace

    asked = time.monotonic()
    os.killpg(service.process.pid, signal.SIGTERM)
    assert service.process.wait(30) == 0
    took = time.monotonic() - asked
    print(f"\nSIGTERM to the process group (grace 2 s): exited 0 in {took:.1f} s, the run in flight cancelled")
    assert took < 15
    assert not process_alive(server_pid), "the Temporal server outlived the stop"
    sent_before = len(receiver.received)
    assert 0 < sent_before < len(uuids), "the run was not in flight at the stop"

    restarted = time.monotonic()
    service.start()
    service.wait_backfill(export_id, backfill_id, "Completed", timeout=90)
    (run,) = service.runs(export_id, backfill_id)
    assert run["status"] == "Completed" and run["records_completed"] == len(uuids)
    resumed = receiver.uuids_since(restarted)
    assert sorted(resumed) == sorted(uuids), "the resumed attempt lost or duplicated rows"

    # SIGKILL of the whole group in the middle of a second run; the Temporal server (a session of its
    # own) survives and keeps the state; the restart takes the dead worker's attempt over at once.
    receiver.received.clear()
    hour = floor_hour(now_utc()) - 3 * HOUR
    rng = random.Random(13)
    second = make_events(spread(hour, 20_000, rng), rng)
    for start in range(0, len(second), 5000):
        service.capture(second[start : start + 5000])
    backfill_2 = service.backfill(export_id, hour, hour + HOUR)
    wait_until(lambda: receiver.received, 60, "the second run at the slow destination", interval=0.1)
    os.killpg(service.process.pid, signal.SIGKILL)
    service.process.wait(10)
    restarted = time.monotonic()
    service.start()
    wait_until(lambda: receiver.uuids_since(restarted), 30, "the killed run to resume", interval=0.1)
    resumed_in = min(arrived for arrived, _ in receiver.received if arrived >= restarted) - restarted
    service.wait_backfill(export_id, backfill_2, "Completed", timeout=90)
    completed_in = time.monotonic() - restarted
    print(
        f"after SIGKILL: the run resumed {resumed_in:.1f} s after the restart began, "
        f"Completed after {completed_in:.1f} s"
    )
    assert resumed_in < 15
    assert sorted(receiver.uuids_since(restarted)) == sorted(e["uuid"] for e in second)
    runs = [r for r in service.runs(export_id) if str(r.get("backfill")) == backfill_2]
    assert [r["status"] for r in runs] == ["Completed"] and runs[0]["records_completed"] == len(second)
    assert service.stop(signal.SIGTERM) == 0
