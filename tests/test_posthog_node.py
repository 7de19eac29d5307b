"""posthog-node, as it is shipped, in a Node.js process of its own, against the live service.

What is real: `batchexports up` in its own process (tests/service_process.py: embedded Temporal,
worker, DuckDB store), Node.js running a script that uses posthog-node from node_modules (the version
in node_modules/posthog-node/package.json, 5.70.0 when written) with its default options but for
`flushAt` / `flushInterval` (send at once), the batch export created and backfilled through the REST
API, and the files the File destination wrote.

Nothing is faked. posthog-node's events are live events (stored with `_inserted_at` = now), so the
export waits for the current 5-minute interval to end, once for the module (`export_live_events`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.service_process import Service, export_live_events, now_utc, properties_of, running_service

pytestmark = pytest.mark.slow

NODE_MODULES = Path(__file__).resolve().parents[1] / "node_modules"
POSTHOG_NODE = NODE_MODULES / "posthog-node"
NODE = shutil.which("node")
USER = "node-user-7"
ALIAS = "node-alias-7"

if NODE is None or not (POSTHOG_NODE / "package.json").is_file():
    if os.environ.get("CI"):
        raise RuntimeError("Node.js and posthog-node (npm ci) are required in CI")
    pytest.skip("Node.js or posthog-node is not installed (npm ci)", allow_module_level=True)

# What a Node.js backend does: capture, identify, alias, ask for flags, shut down (which flushes).
# Anything posthog-node reports as an error is collected and printed; the exit code says if there was any.
SCRIPT = """
const { PostHog } = require("posthog-node");
const [host, apiKey, user, alias] = process.argv.slice(2);

async function main() {
  const errors = [];
  const client = new PostHog(apiKey, { host, flushAt: 1, flushInterval: 0 });
  client.on("error", (error) => errors.push(String(error && error.stack ? error.stack : error)));
  client.capture({ distinctId: user, event: "node_signup", properties: { plan: "pro", seats: 3 } });
  client.identify({ distinctId: user, properties: { email: "node@example.com" } });
  client.alias({ distinctId: user, alias });
  client.capture({ distinctId: user, event: "node_purchase", properties: { amount: 9.5, items: ["a", "b"] } });
  const flags = await client.getAllFlags(user);
  await client.shutdown();
  console.log(JSON.stringify({ version: client.getLibraryVersion(), flags, errors }));
  process.exitCode = errors.length ? 1 : 0;
}

main().catch((error) => {
  console.error(error && error.stack ? error.stack : error);
  process.exitCode = 2;
});
"""


def posthog_node_version() -> str:
    return json.loads((POSTHOG_NODE / "package.json").read_text())["version"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("posthog-node") / "data") as running:
        yield running


@dataclass
class NodeRun:
    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any]
    started: Any
    ended: Any


@pytest.fixture(scope="module")
def node_run(service: Service, tmp_path_factory: pytest.TempPathFactory) -> NodeRun:
    script = tmp_path_factory.mktemp("node") / "capture.js"
    script.write_text(SCRIPT)
    started = now_utc()
    done = subprocess.run(
        [str(NODE), str(script), service.url, str(service.project_api_key), USER, ALIAS],
        env={**os.environ, "NODE_PATH": str(NODE_MODULES)},  # the script lives outside the repo
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    ended = now_utc()
    lines = done.stdout.strip().splitlines()
    report = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {}
    return NodeRun(done.returncode, done.stdout, done.stderr, report, started, ended)


def test_posthog_node_captures_identifies_aliases_and_shuts_down_cleanly(node_run: NodeRun) -> None:
    assert posthog_node_version() == "5.70.0", "the version this suite was written against (package.json)"
    assert node_run.returncode == 0, f"stdout: {node_run.stdout}\nstderr: {node_run.stderr}"
    assert node_run.stderr == ""
    assert node_run.report["errors"] == []
    assert node_run.report["version"] == posthog_node_version()
    assert node_run.report["flags"] == {}  # /flags/ answered: the project has none


@pytest.fixture(scope="module")
def exported(service: Service, node_run: NodeRun) -> list[dict[str, Any]]:
    return export_live_events(service, "posthog-node", node_run.started, node_run.ended)


def only(rows: list[dict[str, Any]], event: str) -> dict[str, Any]:
    matching = [row for row in rows if row["event"] == event]
    assert len(matching) == 1, f"{event!r} exported {len(matching)} times; exported: {[r['event'] for r in rows]}"
    return matching[0]


def test_its_events_are_exported(exported: list[dict[str, Any]]) -> None:
    signup, identify, alias, purchase = (
        only(exported, name) for name in ("node_signup", "$identify", "$create_alias", "node_purchase")
    )
    assert len(exported) == 4, [row["event"] for row in exported]
    assert {row["distinct_id"] for row in exported} == {USER}
    assert (properties_of(signup)["plan"], properties_of(signup)["seats"]) == ("pro", 3)
    assert (properties_of(purchase)["amount"], properties_of(purchase)["items"]) == (9.5, ["a", "b"])
    assert properties_of(identify)["$set"] == {"email": "node@example.com"}
    assert properties_of(alias)["alias"] == ALIAS
    for row in exported:
        assert properties_of(row)["$lib"] == "posthog-node"
        assert properties_of(row)["$lib_version"] == posthog_node_version()
