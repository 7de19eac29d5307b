"""The `batchexports` command as a user runs it: real processes on loopback, bounded in time."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).with_name("batchexports")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def env_for(data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DJANGO_SETTINGS_MODULE", "BATCHEXPORTS_SECRET_KEY")}
    env.pop("DATABASE_URL", None)  # each process gets its own SQLite file under its data dir
    env["BATCHEXPORTS_DATA_DIR"] = str(data_dir)
    return env


def wait_for_health(port: int, process: subprocess.Popen, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"process exited early with {process.returncode}: {process.stdout.read()}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/_health", timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError("service did not answer /_health in time")


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGINT)
    try:
        output, _ = process.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return output


def test_bootstrap_then_api_serves_the_key_it_printed(tmp_path):
    env = env_for(tmp_path)
    boot = subprocess.run(
        [BIN, "bootstrap", "--json", "--organization", "Acme", "--email", "ops@acme.example"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    created = json.loads(boot.stdout)
    assert set(created) == {"organization_id", "project_id", "personal_api_key", "project_api_key"}
    assert (tmp_path / "secret_key").exists()
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"

    port = free_port()
    process = subprocess.Popen(
        [BIN, "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        health = wait_for_health(port, process)
        assert health.status_code == 200
        assert health.json()["dependencies"]["database"]["ok"] is True
        listed = httpx.get(
            f"http://127.0.0.1:{port}/api/projects/{created['project_id']}/batch_exports/",
            headers={"Authorization": f"Bearer {created['personal_api_key']}"},
            timeout=5,
        )
        assert listed.status_code == 200
        assert listed.json() == {"count": 0, "next": None, "previous": None, "results": []}
    finally:
        stop(process)


def test_up_on_a_fresh_data_dir_bootstraps_and_prints_a_working_key(tmp_path):
    port = free_port()
    process = subprocess.Popen(
        [BIN, "up", "--port", str(port)],
        env=env_for(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert wait_for_health(port, process).status_code == 200
    finally:
        output = stop(process)
    assert process.returncode == 0, output  # SIGINT is a graceful stop
    key = next(line.split()[3] for line in output.splitlines() if line.startswith("personal API key:"))
    project_id = next(line.split()[2] for line in output.splitlines() if line.startswith("project id:"))
    assert key.startswith("phx_")
    assert "admin user:" in output
    assert (tmp_path / "metadata.sqlite3").exists()

    # A second start reuses the data dir: no new bootstrap, and the key still works.
    process = subprocess.Popen(
        [BIN, "up", "--port", str(port)],
        env=env_for(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_health(port, process)
        response = httpx.get(
            f"http://127.0.0.1:{port}/api/projects/{project_id}/batch_exports/",
            headers={"Authorization": f"Bearer {key}"},
            timeout=5,
        )
        assert response.status_code == 200
    finally:
        second_output = stop(process)
    assert "personal API key:" not in second_output
