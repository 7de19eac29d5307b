"""`batchexports up` in a process of its own, driven from outside, for the tests that need the live service.

What it is: the `Service` class (start, stop, kill the real `up` on a data dir of its own, speak to its
HTTP API with httpx), the small helpers its users share (free ports, bounded polling, hour arithmetic)
and the readers of what the File destination wrote under `<data dir>/exports/`.

The one shortcut into the service's internals is named where it is: a temporalio Client on the
embedded Temporal server (its address is in `<data dir>/temporal/server.json`) to trigger a schedule or
read its paused state. No Django, no database, no events store in the test process.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

BIN = Path(sys.executable).with_name("batchexports")
HOUR = dt.timedelta(hours=1)
POLL = 0.3

T = TypeVar("T")
BIN = Path(sys.executable).with_name("batchexports")
HOUR = dt.timedelta(hours=1)
POLL = 0.3


# -- small helpers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def floor_hour(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = POLL) -> T:
    """Poll `check` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}")
        time.sleep(interval)


def avoid_hour_boundary(margin: float = 45) -> None:
    """Tests that export "the previous hour" must not straddle the top of the hour: when it is less
    than `margin` seconds away, wait until it has passed (bounded by `margin`)."""
    left = (floor_hour(now_utc()) + HOUR - now_utc()).total_seconds()
    if left < margin:
        time.sleep(left + 1)


def process_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


# -- the service ---------------------------------------------------------------------------------


class Service:
    """`batchexports up` on one data dir and one port, started and stopped like a user would."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.project_id: int | None = None
        self.personal_api_key: str | None = None
        self.project_api_key: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.data_dir.parent / f"up-{self.starts}.log"

    def env(self) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("BATCHEXPORTS_", "TEMPORAL_"))
            and key not in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL")
        }
        env["BATCHEXPORTS_DATA_DIR"] = str(self.data_dir)
        return env

    def command(self, *args: str, timeout: float = 120) -> str:
        """Run `batchexports ARGS` on this data dir (the service must be stopped for `import`)."""
        done = subprocess.run(
            [str(BIN), *args], env=self.env(), capture_output=True, text=True, timeout=timeout, check=False
        )
        assert done.returncode == 0, f"batchexports {' '.join(args)} failed: {done.stdout}\n{done.stderr}"
        return done.stdout

    def start(self, timeout: float = 90) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        with open(self.log_path, "wb") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [str(BIN), "up", "--port", str(self.port)], env=self.env(), stdout=log, stderr=subprocess.STDOUT
            )

        def healthy() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"`up` exited with {self.process.returncode}:\n{self.log()}")
            try:
                response = httpx.get(f"{self.url}/_health", timeout=2)
            except httpx.TransportError:
                return False
            return response.status_code == 200 and response.json()["dependencies"]["engine"].get("ok") is True

        wait_until(healthy, timeout, "the service to answer /_health with a healthy engine")
        if self.personal_api_key is None:
            self._read_bootstrap()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _read_bootstrap(self) -> None:
        lines = self.log().splitlines()

        def field(label: str) -> str:
            found = [line.split()[len(label.split())] for line in lines if line.startswith(label)]
            assert found, f"`up` did not print {label!r}:\n{self.log()}"
            return found[0]

        self.project_id = int(field("project id:"))
        self.personal_api_key = field("personal API key:")
        self.project_api_key = field("project API key:")
        assert self.personal_api_key.startswith("phx_")
        assert self.project_api_key.startswith("phc_")

    def stop(self, sig: int = signal.SIGINT, timeout: float = 45) -> int | None:
        """Signal `up` and wait for it to exit; SIGKILL it when it does not in time."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
            raise AssertionError(f"`up` did not stop within {timeout:.0f} s of signal {sig}") from None

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(10)

    def temporal_server(self) -> dict[str, Any] | None:
        try:
            return json.loads((self.data_dir / "temporal" / "server.json").read_text())
        except (OSError, ValueError):
            return None

    def stop_orphaned_temporal(self) -> None:
        """The Temporal server a SIGKILLed `up` left running (it has a session of its own)."""
        info = self.temporal_server()
        if not info:
            return
        pid = int(info["pid"])
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if str(self.data_dir).encode() not in cmdline:  # not ours: leave it alone
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if process_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # -- talking to it -----------------------------------------------------------------------

    def http(self) -> httpx.Client:
        # No keep-alive: the process behind the port changes when a test restarts the service.
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.personal_api_key}"},
            timeout=30,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

    def request(self, method: str, path: str, expect: int = 200, **kwargs: Any) -> Any:
        with self.http() as client:
            response = client.request(method, path, **kwargs)
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text}"
        return response.json() if response.content else None

    @property
    def exports_path(self) -> str:
        return f"/api/projects/{self.project_id}/batch_exports"

    def capture(self, events: list[dict[str, Any]]) -> None:
        body = {"api_key": self.project_api_key, "historical_migration": True, "batch": events}
        assert self.request("POST", "/batch/", json=body) == {"status": 1}

    def create_export(self, name: str, destination: dict[str, Any], interval: str = "hour") -> str:
        body = {"name": name, "interval": interval, "destination": destination}
        return str(self.request("POST", f"{self.exports_path}/", expect=201, json=body)["id"])

    def backfill(self, export_id: str, start: dt.datetime, end: dt.datetime) -> str:
        body = {"start_at": iso(start), "end_at": iso(end)}
        return str(
            self.request("POST", f"{self.exports_path}/{export_id}/backfills/", expect=201, json=body)["backfill_id"]
        )

    def backfill_state(self, export_id: str, backfill_id: str) -> dict[str, Any]:
        return self.request("GET", f"{self.exports_path}/{export_id}/backfills/{backfill_id}/")

    def wait_backfill(self, export_id: str, backfill_id: str, status: str, timeout: float) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            state = self.backfill_state(export_id, backfill_id)
            assert state["status"] not in {"Failed"} - {status}, state
            return state if state["status"] == status else None

        return wait_until(reached, timeout, f"backfill {backfill_id} to be {status}")

    def runs(self, export_id: str, backfill_id: str | None = None) -> list[dict[str, Any]]:
        """Every run of the export (following the cursor), or those of one backfill."""
        found: list[dict[str, Any]] = []
        url: str | None = f"{self.exports_path}/{export_id}/runs/"
        with self.http() as client:
            while url:
                response = client.get(url)
                assert response.status_code == 200, response.text
                page = response.json()
                found.extend(page["results"])
                url = page.get("next")
        if backfill_id is not None:
            found = [run for run in found if str(run.get("backfill")) == backfill_id]
        return found

    # -- the test-only shortcut into Temporal ------------------------------------------------

    def temporal(self, action: Callable[[Any], Any]) -> Any:
        """Run `action(client)` with a temporalio Client on the embedded server (a test-only shortcut)."""
        from temporalio.client import Client

        info = self.temporal_server()
        assert info, "no embedded Temporal server recorded in server.json"

        async def main() -> Any:
            client = await Client.connect(info["address"])
            return await action(client)

        return asyncio.run(main())

    def trigger_schedule(self, export_id: str) -> None:
        """Test-only shortcut: start the run the export's schedule would start at the top of the hour."""
        self.temporal(lambda client: client.get_schedule_handle(export_id).trigger())

    def schedule_paused(self, export_id: str) -> bool:
        """Test-only shortcut: read the paused state of the export's schedule from Temporal."""

        async def describe(client: Any) -> bool:
            description = await client.get_schedule_handle(export_id).describe()
            return bool(description.schedule.state.paused)

        return self.temporal(describe)


@contextlib.contextmanager
def running_service(data_dir: Path) -> Iterator[Service]:
    """A started service on `data_dir`, stopped at the end (and its Temporal server, if orphaned)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    service = Service(data_dir)
    try:
        service.start()
        yield service
    finally:
        with contextlib.suppress(Exception):
            service.stop()
        service.stop_orphaned_temporal()


# -- what the File destination wrote -------------------------------------------------------------


def exported_files(folder: Path, suffix: str = ".jsonl") -> list[Path]:
    """The published files (a writer's temporary file is hidden: `.name.<hex>.tmp`)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob(f"*{suffix}") if not p.name.startswith("."))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def interval_name(start: dt.datetime, end: dt.datetime) -> str:
    return f"{start.astimezone(dt.UTC).isoformat()}-{end.astimezone(dt.UTC).isoformat()}"  # PostHog's names


# -- exporting what was just captured ------------------------------------------------------------

FIVE_MINUTES = dt.timedelta(minutes=5)


def floor_five(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=moment.minute - moment.minute % 5, second=0, microsecond=0)


def export_live_events(service: Service, name: str, since: dt.datetime, until: dt.datetime) -> list[dict[str, Any]]:
    """The rows a File export writes for events captured live between `since` and `until`.

    Live capture stores an event with `_inserted_at` = now, so the export is an "every 5 minutes"
    one, backfilled through the REST API from the interval of `since` to the end of the interval of
    `until`: the backfill waits for that interval to end (at most 5 minutes), as its scheduled run
    would, then writes one JSON Lines file per interval under `<data dir>/exports/<name>/`.
    """
    export_id = service.create_export(
        name, {"type": "File", "config": {"path": name, "file_format": "JSONLines"}}, "every 5 minutes"
    )
    backfill_id = service.backfill(export_id, floor_five(since), floor_five(until) + FIVE_MINUTES)
    service.wait_backfill(export_id, backfill_id, "Completed", timeout=FIVE_MINUTES.total_seconds() + 90)
    return [row for path in exported_files(service.data_dir / "exports" / name) for row in read_jsonl(path)]


def properties_of(row: dict[str, Any]) -> dict[str, Any]:
    value = row["properties"]
    return json.loads(value) if isinstance(value, str) else value
