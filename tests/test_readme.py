"""The README's quick start and API tour, run as written against a live `batchexports up`.

The shell blocks between the README's `<!-- quickstart -->` and `<!-- api-tour -->` markers are run by
bash in a fresh folder that has the project's `.venv`, exactly as a user pastes them (only the port
is changed to a free one). A README edit that breaks a command fails here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.test_processes import free_port, wait_for_health

pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"


def shell_blocks(marker: str) -> list[str]:
    """The ```sh blocks between `<!-- marker… -->` and `<!-- /marker -->`."""
    text = README.read_text()
    section = re.search(rf"<!-- {marker}\b.*?-->(.*?)<!-- /{marker} -->", text, re.S)
    assert section, f"README has no {marker} section"
    return re.findall(r"```sh\n(.*?)```", section.group(1), re.S)


def test_readme_quick_start_and_api_tour_run_as_written(tmp_path: Path) -> None:
    assert shell_blocks("quickstart") and shell_blocks("api-tour")
    (tmp_path / ".venv").symlink_to(Path(sys.prefix))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BATCHEXPORTS_", "DJANGO_", "DATABASE_URL"))}
    env["PATH"] = f"{Path(sys.prefix) / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    service = subprocess.Popen(
        [str(tmp_path / ".venv/bin/batchexports"), "up", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        wait_for_health(port, service)
        script = "\n".join(["set -euo pipefail", *shell_blocks("quickstart"), *shell_blocks("api-tour")])
        script = script.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        script += '\nprintf "\\n==vars== %s %s %s\\n" "$KEY" "$PROJECT" "$ID"\n'
        done = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
        )
        assert done.returncode == 0, done.stdout + done.stderr
        key, project, export_id = done.stdout.rsplit("==vars== ", 1)[1].split()

        # What the quick start says it yields: three hourly runs Completed, 4 records each, three files.
        exported = sorted(p.name for p in (tmp_path / ".batchexports/exports/quickstart").iterdir())
        assert len(exported) == 3, exported
        for name in exported:
            assert name in done.stdout  # `ls` printed them
        api = f"http://127.0.0.1:{port}/api/projects/{project}/batch_exports/{export_id}"
        headers = {"Authorization": f"Bearer {key}"}
        runs = httpx.get(f"{api}/runs/", headers=headers, timeout=10).json()["results"]
        # The quick start's backfill is the first; the tour's retry then added a run of its own.
        quick_start = min(runs, key=lambda r: r["created_at"])["backfill"]
        first_three = {r["data_interval_start"]: r for r in runs if r["backfill"] == quick_start}
        assert len(first_three) == 3
        assert {r["status"] for r in first_three.values()} <= {"Completed"}
        assert all(r["records_completed"] == 4 for r in first_three.values())
        rows = [json.loads(line) for name in exported for line in
                (tmp_path / ".batchexports/exports/quickstart" / name).read_text().splitlines()]  # fmt: skip
        assert len(rows) == 12 and {r["event"] for r in rows} == {"page_viewed"}
        # The tour deleted the export it created and left the quick start's one.
        listed = httpx.get(f"http://127.0.0.1:{port}/api/projects/{project}/batch_exports/", headers=headers).json()
        assert [e["name"] for e in listed["results"]] == ["Hourly events"]
    finally:
        service.send_signal(signal.SIGINT)
        try:
            service.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(service.pid, signal.SIGKILL)
            service.communicate()
