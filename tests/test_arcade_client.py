"""Every batch-export tool of `arcade-posthog-api` (the released wheel, 0.2.x, on `arcade-tdk`),
called as an agent calls it, against a live server, under every prefix it has a variant for.

The tools are the package's own functions, unchanged: each reads the server's address and the key
from its ToolContext secrets (`POSTHOG_SERVER_URL`, `POSTHOG_PERSONAL_API_KEY`) and sends real HTTP
to pytest-django's `live_server` (a real HTTP server on a loopback port, over the test database).
The tools are found by reading the package (every tool whose route is under `batch_exports/` or
`app_metrics/`), so a tool added by a new release fails `test_the_table_names_every_tool`.

Two things stand in for the rest of the service, and are named here as the standard asks: the
engine is the tests' RecordingEngine (the tools drive the API, not Temporal), and the runs the
run tools read are rows written as the engine's run book writes them, since no worker runs here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib.metadata
import inspect
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from arcade_core.errors import ToolRuntimeError
from arcade_core.schema import ToolSecretItem
from arcade_tdk import ToolContext

from batchexports.accounts.models import Organization, OrganizationMembership, PersonalAPIKey, Project, User
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportLogEntry, BatchExportRun

tools_module = pytest.importorskip("arcade_posthog_api.tools")
ToolMode = tools_module.ToolMode

CLIENT_VERSION = importlib.metadata.version("arcade-posthog-api")
PREFIXES = ("projects", "environments", "organizations")

# What each tool does, by prefix. The organization prefix has no run, backfill or app-metrics
# tools in this client (PostHog's organization routes stop at the export itself).
TOOLS: dict[str, dict[str, str]] = {
    "list": {"projects": "fetch_batch_exports", "environments": "list_env_batch_exports",
             "organizations": "list_batch_exports"},
    "create": {"projects": "create_batch_export", "environments": "create_batch_export_for_environments",
               "organizations": "create_batch_exports"},
    "retrieve": {"projects": "retrieve_posthog_batch_exports", "environments": "retrieve_environment_batch_export",
                 "organizations": "retrieve_batch_export_details"},
    "update": {"projects": "update_batch_export", "environments": "update_environment_batch_exports",
               "organizations": "update_batch_exports"},
    "partial_update": {"projects": "edit_batch_exports", "environments": "update_environment_export",
                       "organizations": "modify_batch_exports"},
    "destroy": {"projects": "destroy_batch_export", "environments": "delete_batch_export",
                "organizations": "remove_batch_export"},
    "pause": {"projects": "suspend_batch_export", "environments": "pause_batch_export",
              "organizations": "halt_batch_export"},
    "unpause": {"projects": "reactivate_batch_export", "environments": "unpause_batch_export",
                "organizations": "resume_batch_export"},
    "backfill": {"projects": "start_batch_export_backfill", "environments": "trigger_batch_export_backfill",
                 "organizations": "initiate_export_backfill"},
    "logs": {"projects": "retrieve_log_exports", "environments": "retrieve_environment_logs",
             "organizations": "retrieve_batch_export_logs"},
    "test": {"projects": "retrieve_batch_export_tests", "environments": "get_environments_batch_export_status",
             "organizations": "retrieve_batch_exports_test"},
    "run_test_step_new": {"projects": "run_batch_exports_test_step", "environments": "create_environment_batch_export",
                          "organizations": "run_test_step_new_for_batch_exports"},
    "run_test_step": {"projects": "run_test_step_batch_export", "environments": "run_environment_test_step",
                      "organizations": "run_batch_export_test_step"},
    "runs": {"projects": "list_batch_export_runs", "environments": "list_environment_exports"},
    "run": {"projects": "retrieve_batch_export_run", "environments": "retrieve_environment_export_run"},
    "run_cancel": {"projects": "stop_batch_export_run", "environments": "cancel_batch_export_run"},
    "run_retry": {"projects": "retry_export_run", "environments": "retry_batch_export_run"},
    "run_logs": {"projects": "retrieve_batch_export_run_logs", "environments": "retrieve_environment_batch_export_logs"},  # noqa: E501
    "backfills": {"projects": "list_backfill_exports", "environments": "list_batch_export_backfills"},
    "backfills_create": {"projects": "create_batch_export_backfill", "environments": "create_backfill_for_batch_export"},  # noqa: E501
    "backfill_get": {"projects": "get_batch_export_backfill", "environments": "retrieve_batch_export_backfill"},
    "backfill_cancel": {"projects": "terminate_batch_export_backfill", "environments": "cancel_batch_export_backfill"},
    "app_metrics": {"projects": "get_app_metrics", "environments": "retrieve_app_metrics"},
    "app_metrics_errors": {"projects": "get_error_details_for_app_metrics",
                           "environments": "retrieve_app_metrics_error_details"},
    "historical_exports": {"projects": "fetch_metrics_history", "environments": "retrieve_app_metrics_exports"},
    "historical_export": {"projects": "retrieve_app_metrics_historical_exports",
                          "environments": "retrieve_historical_app_metrics"},
}  # fmt: skip


@dataclass(frozen=True)
class Tool:
    name: str
    function: Any
    method: str
    route: str  # e.g. /api/projects/{project_id}/batch_exports/{id}/
    arguments: dict[str, str]  # route placeholder -> the tool's argument that fills it
    parameters: frozenset[str]


_URL = re.compile(r'url="\{posthog_server_url\}(?P<route>[^"]+)"\.format\((?P<args>.*?)\),\s*#')


def discover_tools() -> dict[str, Tool]:
    """Every tool of the package whose route is a batch-export or app-metrics route."""
    found = {}
    for name, function in vars(tools_module).items():
        if not callable(function) or not hasattr(function, "__tool_name__"):
            continue
        source = inspect.getsource(inspect.unwrap(function))
        match = _URL.search(source)
        if not match or not re.search(r"/(batch_exports|app_metrics)/", match["route"]):
            continue
        arguments = dict(re.findall(r"(\w+)=(\w+)", match["args"]))
        arguments.pop("posthog_server_url", None)
        method = re.search(r'method="(\w+)"', source[match.end() :])
        parameters = frozenset(inspect.signature(function).parameters) - {"context"}
        found[name] = Tool(name, function, method[1], match["route"], arguments, parameters)
    return found


@pytest.fixture(scope="module")
def tools() -> dict[str, Tool]:
    return discover_tools()


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for every call: the package's HTTP client is module-level and keeps its pool."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join(timeout=5)


class Agent:
    """Calls tools as an agent would: by name, with ids for the route's placeholders and a JSON body."""

    def __init__(self, tools: dict[str, Tool], loop: asyncio.AbstractEventLoop, url: str, key: str) -> None:
        self.tools, self.loop = tools, loop
        self.context = ToolContext(
            secrets=[
                ToolSecretItem(key="POSTHOG_SERVER_URL", value=url),
                ToolSecretItem(key="POSTHOG_PERSONAL_API_KEY", value=key),
            ]
        )
        self.called: list[str] = []

    def __call__(self, name: str, body: dict[str, Any] | None = None, **ids: Any) -> Any:
        tool = self.tools[name]
        kwargs: dict[str, Any] = {argument: str(ids[placeholder]) for placeholder, argument in tool.arguments.items()}
        if "mode" in tool.parameters:
            kwargs["mode"] = ToolMode.EXECUTE
        if "request_body" in tool.parameters:
            kwargs["request_body"] = json.dumps(body or {})
        self.called.append(name)
        future = asyncio.run_coroutine_threadsafe(tool.function(self.context, **kwargs), self.loop)
        answer = future.result(timeout=60)
        return answer.get("response_json", answer.get("response_text"))


@pytest.fixture
def accounts(transactional_db: Any) -> tuple[Organization, Project, User]:
    organization = Organization.objects.create(name="Acme")
    project = Project.objects.create(organization=organization, name="Web")
    user = User.objects.create_user(email="agent@acme.example", password="x")
    OrganizationMembership.objects.create(organization=organization, user=user)
    return organization, project, user


@pytest.fixture
def agent(tools: dict[str, Tool], loop: Any, live_server: Any, accounts: Any) -> Agent:
    _, _, user = accounts
    _, key = PersonalAPIKey.create_for(user, ["*"], label="arcade")
    return Agent(tools, loop, live_server.url, key)


@pytest.fixture
def export_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    folder = tmp_path / "exports"
    monkeypatch.setenv("BATCHEXPORTS_EXPORT_DIR", str(folder))
    return folder


def file_destination(path: str = "acme/events") -> dict[str, Any]:
    return {"type": "File", "config": {"path": path, "file_format": "JSONLines"}}


def hour(offset: int) -> dt.datetime:
    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    return now + dt.timedelta(hours=offset)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def test_the_client_is_the_released_0_2_line() -> None:
    assert CLIENT_VERSION.startswith("0.2."), CLIENT_VERSION


def test_the_table_names_every_tool(tools: dict[str, Tool]) -> None:
    named = {name for per_prefix in TOOLS.values() for name in per_prefix.values()}
    assert named == set(tools), f"tools not in the table: {set(tools) - named}; gone: {named - set(tools)}"
    assert len(tools) == 65
    for operation, per_prefix in TOOLS.items():
        for prefix, name in per_prefix.items():
            assert tools[name].route.startswith(f"/api/{prefix}/"), (operation, name, tools[name].route)


def _ids(prefix: str, organization: Organization, project: Project) -> dict[str, Any]:
    if prefix == "organizations":
        return {"organization_id": organization.id}
    return {"project_id": project.id}


def _error_of(agent: Agent, name: str, **kwargs: Any) -> str:
    with pytest.raises(ToolRuntimeError) as raised:
        agent(name, **kwargs)
    error = raised.value
    upstream = getattr(error.__cause__, "response", None)  # the httpx error the tool raised from
    body = upstream.text if upstream is not None else ""
    return " ".join(str(part) for part in (error, getattr(error, "developer_message", ""), body))


@pytest.mark.parametrize("prefix", PREFIXES)
def test_every_export_tool(agent: Agent, accounts: Any, prefix: str, export_dir: Any, tools: dict[str, Tool]) -> None:
    organization, project, _ = accounts
    ids = _ids(prefix, organization, project)
    tool = {operation: per_prefix[prefix] for operation, per_prefix in TOOLS.items() if prefix in per_prefix}

    # Describing a destination's test needs ?destination=, which this client's tool cannot send:
    # PostHog answers 400 too; the error reaches the agent naming what is missing.
    assert "destination" in _error_of(agent, tool["test"], **ids)

    checked = agent(tool["run_test_step_new"], {"step": 0, "destination": file_destination()}, **ids)
    assert checked["name"] == "Create the folder" and checked["result"] == {"status": "Passed", "message": None}
    assert (export_dir / "acme" / "events").is_dir()

    payload = {"name": "Events to files", "interval": "hour", "destination": file_destination()}
    created = agent(tool["create"], payload, **ids)
    export_id = created["id"]
    assert created["name"] == "Events to files" and created["team_id"] == project.id
    assert created["destination"]["type"] == "File" and created["destination"]["config"]["path"] == "acme/events"
    assert BatchExport.objects.filter(id=export_id, team_id=project.id).exists()

    listed = agent(tool["list"], **ids)
    assert listed["count"] == 1 and [e["id"] for e in listed["results"]] == [export_id]
    assert agent(tool["retrieve"], **ids, id=export_id)["name"] == "Events to files"

    replaced = agent(tool["update"], {**payload, "name": "Replaced", "interval": "day"}, **ids, id=export_id)
    assert (replaced["name"], replaced["interval"]) == ("Replaced", "day")
    patched = agent(tool["partial_update"], {"name": "Patched", "interval": "hour"}, **ids, id=export_id)
    assert patched["name"] == "Patched" and patched["interval"] == "hour"
    assert patched["destination"]["config"]["path"] == "acme/events"

    assert agent(tool["pause"], **ids, id=export_id) == {"paused": True}
    assert agent(tool["retrieve"], **ids, id=export_id)["paused"] is True
    assert agent(tool["unpause"], {"backfill": False}, **ids, id=export_id) == {"paused": False}
    assert BatchExport.objects.get(id=export_id).paused is False

    stepped = agent(tool["run_test_step"], {"step": 1}, **ids, id=export_id)
    assert stepped["name"] == "Write and delete a test file" and stepped["result"]["status"] == "Passed"

    batch_export = BatchExport.objects.get(id=export_id)
    BatchExportLogEntry.objects.create(
        team_id=project.id, batch_export=batch_export, timestamp=dt.datetime.now(dt.UTC), message="hello from a run"
    )
    assert [entry["message"] for entry in agent(tool["logs"], **ids, id=export_id)["results"]] == ["hello from a run"]

    window = {"start_at": iso(hour(-48)), "end_at": iso(hour(-24))}
    old_style = agent(tool["backfill"], window, **ids, id=export_id)
    backfill = BatchExportBackfill.objects.get(id=old_style["backfill_id"])
    assert backfill.batch_export_id == batch_export.id and backfill.start_at == hour(-48)
    backfill.status = BatchExportBackfill.Status.CANCELLED
    backfill.save()

    if prefix != "organizations":
        _run_backfill_and_metrics_tools(agent, tool, ids, batch_export)

    assert agent(tool["destroy"], **ids, id=export_id) in ("", None)
    assert BatchExport.objects.get(id=export_id).deleted is True
    assert "404" in _error_of(agent, tool["retrieve"], **ids, id=export_id)
    assert set(agent.called) == set(tool.values())


def _run_backfill_and_metrics_tools(
    agent: Agent, tool: dict[str, str], ids: dict[str, Any], export: BatchExport
) -> None:
    nested = {**ids, "batch_export_id": export.id}

    created = agent(tool["backfills_create"], {"start_at": iso(hour(-6)), "end_at": iso(hour(-3))}, **nested)
    backfill_id = created["backfill_id"]
    got = agent(tool["backfill_get"], **nested, id=backfill_id)
    assert (got["id"], got["status"]) == (backfill_id, "Starting")
    assert dt.datetime.fromisoformat(got["start_at"].replace("Z", "+00:00")) == hour(-6)
    listed = agent(tool["backfills"], **nested)
    assert backfill_id in [b["id"] for b in listed["results"]]
    assert agent(tool["backfill_cancel"], **nested, id=backfill_id) == {"cancelled": True}
    assert agent(tool["backfill_get"], **nested, id=backfill_id)["status"] == "Cancelled"

    # Runs, as the engine's run book records them: one running, one failed, one completed.
    running = BatchExportRun.objects.create(
        batch_export=export, status="Running", data_interval_start=hour(-2), data_interval_end=hour(-1)
    )
    failed = BatchExportRun.objects.create(
        batch_export=export,
        status="Failed",
        data_interval_start=hour(-3),
        data_interval_end=hour(-2),
        latest_error="The folder is not writable",
        finished_at=hour(-2),
    )
    BatchExportRun.objects.create(
        batch_export=export,
        status="Completed",
        data_interval_start=hour(-4),
        data_interval_end=hour(-3),
        records_completed=12,
        finished_at=hour(-3),
    )
    BatchExportLogEntry.objects.create(
        team_id=export.team_id,
        batch_export=export,
        run_id=running.id,
        timestamp=dt.datetime.now(dt.UTC),
        message="writing part 1",
    )

    runs = agent(tool["runs"], **nested)
    assert {r["id"] for r in runs["results"]} == {str(r.id) for r in export.runs.all()}
    one = agent(tool["run"], **nested, id=running.id)
    assert (one["id"], one["status"], one["batch_export"]) == (str(running.id), "Running", str(export.id))
    assert [e["message"] for e in agent(tool["run_logs"], **nested, id=running.id)["results"]] == ["writing part 1"]
    assert agent(tool["run_cancel"], **nested, id=running.id) == {"cancelled": True}
    assert BatchExportRun.objects.get(id=running.id).status == "Cancelled"
    retried = agent(tool["run_retry"], **nested, id=failed.id)
    retry = BatchExportBackfill.objects.get(id=retried["backfill_id"])
    assert (retry.start_at, retry.end_at) == (hour(-3), hour(-2))
    assert agent(tool["backfill_cancel"], **nested, id=retry.id) == {"cancelled": True}

    metrics_ids = {**ids, "id": export.id, "plugin_config_id": export.id}
    metrics = agent(tool["app_metrics"], **metrics_ids)
    assert sum(metrics["metrics"]["successes"]) == 1 and sum(metrics["metrics"]["failures"]) >= 1
    errors = agent(tool["app_metrics_errors"], **metrics_ids)
    assert [e["error_uuid"] for e in errors["result"]][-1] == str(failed.id)
    assert errors["result"][-1]["error_details"]["error"]["message"] == "The folder is not writable"
    history = agent(tool["historical_exports"], **metrics_ids)
    assert str(backfill_id) in [h["job_id"] for h in history["results"]]
    one_export = agent(tool["historical_export"], **{**metrics_ids, "id": backfill_id})
    assert one_export["job_id"] == backfill_id and one_export["status"] == "fail"
