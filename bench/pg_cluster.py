"""A PostgreSQL cluster of the benchmark's own, which it may stop and start again (an outage).

A small copy of `tests/own_postgres.py` (initdb + pg_ctl on a free port in a temporary folder)
that, unlike the test fixture, keeps its start options so that `start()` can follow `stop()` on
the same data and port. initdb refuses to run as root: as root, the cluster runs as `postgres`.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg


def _binaries() -> Path:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if not versions:
        raise SystemExit("PostgreSQL's initdb/pg_ctl are not installed")
    return Path(versions[-1]).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresCluster:
    def __init__(self, name: str) -> None:
        self.bin = _binaries()
        self.root = Path(tempfile.mkdtemp(prefix=f"be-bench-{name}-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.user_prefix: list[str] = []
        if os.geteuid() == 0:
            self.user_prefix = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.root, "postgres")
        self._run("initdb", ["-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"])

    def _run(self, binary: str, args: list[str], timeout: float = 120) -> None:
        command = [*self.user_prefix, str(self.bin / binary), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {done.stdout}{done.stderr}")

    @property
    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=40"
        log = str(self.root / "log")
        self._run("pg_ctl", ["-D", str(self.data), "-o", options, "-l", log, "-w", "start"], timeout=60)
        deadline = time.monotonic() + 20
        while True:
            try:
                self.connect().close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop`: "fast" (pg_ctl's default) disconnects every client and shuts down cleanly."""
        if self.postmaster_pid is not None:
            self._run("pg_ctl", ["-D", str(self.data), "-m", mode, "-w", "stop"], timeout=60)

    def connect(self, dbname: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, autocommit=True, connect_timeout=5
        )

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
