"""Azurite, the Azure Blob Storage emulator (npm package `azurite`), as a process on loopback.

`make install` installs it into node_modules with `npm ci`. Without it the Azure tests are
skipped with a message saying so, except in CI (`CI` set), where its absence is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

BINARY = Path(__file__).resolve().parents[1] / "node_modules" / ".bin" / "azurite-blob"
ACCOUNT_NAME = "devstoreaccount1"
# Azurite's well-known development account key (public, documented by Microsoft).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def connection_string(port: int, account_key: str = ACCOUNT_KEY) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT_NAME};AccountKey={account_key};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT_NAME};"
    )


def require_binary() -> Path:
    """The azurite-blob binary; skips the calling test module (fails it in CI) when it is missing."""
    missing = None
    if not BINARY.exists():
        missing = f"Azurite is not installed ({BINARY} is missing): run `make install` to install it with npm."
    elif shutil.which("node") is None:
        missing = "Node.js is not installed, so Azurite cannot run: install Node.js, then run `make install`."
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing, allow_module_level=True)
    return BINARY


class Azurite:
    """One Azurite blob service on a free loopback port, its state under `location`."""

    def __init__(self, location: Path):
        self.location = location
        self.port = free_port()
        self.log = location / "azurite.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        return connection_string(self.port)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT_NAME}"

    def start(self) -> Azurite:
        binary = require_binary()
        self.location.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [
                    str(binary),
                    "--blobHost", "127.0.0.1",
                    "--blobPort", str(self.port),
                    "--location", str(self.location),
                    "--silent",
                    "--skipApiVersionCheck",
                    "--loose",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        try:
            self._wait_until_it_answers()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_it_answers(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Azurite exited with status {self.process.returncode} before answering: "
                    f"{self.log.read_text(errors='replace')[-2000:]}"
                )
            try:
                httpx.get(f"{self.endpoint}?comp=list", timeout=1)  # any HTTP answer means it is up
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError(f"Azurite did not answer on port {self.port} within {START_TIMEOUT:.0f} s")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        # Azurite closes its server on SIGTERM but its process lingers (a timer keeps Node alive), so
        # wait for it to exit or to log that it closed, then kill what is left.
        deadline = time.monotonic() + STOP_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            if "successfully closed" in self.log.read_text(errors="replace"):
                break
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=STOP_TIMEOUT)
