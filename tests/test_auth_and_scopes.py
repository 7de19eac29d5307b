"""Authentication, API scopes and isolation between organizations and projects.

PostHog's rules, which PostHog clients rely on:

- no credentials, a malformed or an unknown key -> 401 `authentication_error`;
- a personal API key may only do what its scopes cover (`batch_export:read`, `batch_export:write`,
  `plugin:read`, `*`; a write scope implies the read scope of the same object), else 403
  `permission_denied` naming the missing scope;
- a user of another organization gets 403; a project the key may not see, within an
  organization the user belongs to, is 404, as is any unknown or malformed id;
- a logged-in user (session) uses the API without a key.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from batchexports.accounts.models import Organization, PersonalAPIKey, Project, User
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportDestination, BatchExportRun
from tests.conftest import CheckedAPIClient, export_payload, prefix_for

READ = "batch_export:read"
WRITE = "batch_export:write"
PLUGIN_READ = "plugin:read"

BACKFILL_BODY = {"start_at": "2024-01-01T00:00:00Z", "end_at": "2024-01-01T02:00:00Z"}
FILE_DESTINATION = {"type": "File", "config": {"path": "scope-tests"}}


# --- helpers -------------------------------------------------------------------------------


def key_for(user: User, scopes: list[str], **limits: Any) -> str:
    """A key with exactly `scopes` (the conftest helper turns an empty list into `*`)."""
    _, value = PersonalAPIKey.create_for(user, scopes, **limits)
    return value


def with_key(value: str) -> CheckedAPIClient:
    client = CheckedAPIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {value}")
    return client


def covers(scopes: list[str], required: str) -> bool:
    """What the API should grant: `*` everything, a scope itself, and write implies read."""
    if "*" in scopes or required in scopes:
        return True
    obj, _, action = required.partition(":")
    return action == "read" and f"{obj}:write" in scopes


def assert_error(response: Any, status: int, code: str, error_type: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.content[:500])
    body = response.json()
    assert set(body) >= {"type", "code", "detail", "attr"}, body
    assert body["code"] == code, body
    assert body["attr"] is None, body
    assert isinstance(body["detail"], str) and body["detail"], body
    if error_type is not None:
        assert body["type"] == error_type, body
    return body


def make_file_export(project: Project, name: str = "Events to a folder") -> BatchExport:
    destination = BatchExportDestination(type="File")
    destination.set_full_config({"path": "scope-tests"})
    destination.save()
    return BatchExport.objects.create(team=project, name=name, destination=destination, interval="hour")


@dataclass(frozen=True)
class Objects:
    """What the routes of the matrix address."""

    project: Project
    export: BatchExport
    run: BatchExportRun
    backfill: BatchExportBackfill

    def fill(self, template: str, kind: str = "projects") -> str:
        return template.format(
            prefix=prefix_for(kind, self.project),
            metrics=f"/api/{'environments' if kind == 'environments' else 'projects'}/{self.project.id}/app_metrics/",
            export=self.export.id,
            run=self.run.id,
            backfill=self.backfill.id,
        )


@pytest.fixture
def objects(project: Project, engine: Any) -> Objects:
    export = make_file_export(project)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    backfill = BatchExportBackfill.objects.create(
        team=project,
        batch_export=export,
        start_at=start,
        end_at=start + dt.timedelta(hours=2),
        status=BatchExportBackfill.Status.RUNNING,
        total_runs=2,
    )
    run = BatchExportRun.objects.create(
        batch_export=export,
        status=BatchExportRun.Status.RUNNING,
        data_interval_start=start,
        data_interval_end=start + dt.timedelta(hours=1),
    )
    return Objects(project=project, export=export, run=run, backfill=backfill)


# (name, method, path template, body, required scope). Every route of the API.
ROUTES: list[tuple[str, str, str, Any, str]] = [
    ("list", "get", "{prefix}", None, READ),
    ("create", "post", "{prefix}", export_payload(destination=FILE_DESTINATION), WRITE),
    ("retrieve", "get", "{prefix}{export}/", None, READ),
    ("update", "put", "{prefix}{export}/", export_payload(name="Renamed", destination=FILE_DESTINATION), WRITE),
    ("partial_update", "patch", "{prefix}{export}/", {"name": "Patched"}, WRITE),
    ("delete", "delete", "{prefix}{export}/", None, WRITE),
    ("pause", "post", "{prefix}{export}/pause/", {}, WRITE),
    ("unpause", "post", "{prefix}{export}/unpause/", {"backfill": False}, WRITE),
    ("backfill (deprecated)", "post", "{prefix}{export}/backfill/", BACKFILL_BODY, WRITE),
    ("logs", "get", "{prefix}{export}/logs/", None, READ),
    ("test", "get", "{prefix}test/?destination=File", None, READ),
    ("run_test_step_new", "post", "{prefix}run_test_step_new/", {"step": 0, "destination": FILE_DESTINATION}, WRITE),
    ("run_test_step", "post", "{prefix}{export}/run_test_step/", {"step": 0}, WRITE),
    ("runs list", "get", "{prefix}{export}/runs/", None, READ),
    ("run retrieve", "get", "{prefix}{export}/runs/{run}/", None, READ),
    ("run retry", "post", "{prefix}{export}/runs/{run}/retry/", {}, WRITE),
    ("run cancel", "post", "{prefix}{export}/runs/{run}/cancel/", {}, WRITE),
    ("run logs", "get", "{prefix}{export}/runs/{run}/logs/", None, READ),
    ("backfills list", "get", "{prefix}{export}/backfills/", None, READ),
    ("backfills create", "post", "{prefix}{export}/backfills/", BACKFILL_BODY, WRITE),
    ("backfill retrieve", "get", "{prefix}{export}/backfills/{backfill}/", None, READ),
    ("backfill cancel", "post", "{prefix}{export}/backfills/{backfill}/cancel/", {}, WRITE),
    ("app_metrics", "get", "{metrics}{export}/?date_from=-7d", None, PLUGIN_READ),
    ("app_metrics error_details", "get", "{metrics}{export}/error_details/", None, PLUGIN_READ),
    ("historical_exports list", "get", "{metrics}{export}/historical_exports/", None, PLUGIN_READ),
    ("historical_export retrieve", "get", "{metrics}{export}/historical_exports/{backfill}/", None, PLUGIN_READ),
]

KEY_SCOPES: list[list[str]] = [[], [READ], [WRITE], [PLUGIN_READ], ["*"]]


def scopes_id(scopes: list[str]) -> str:
    return "+".join(scopes) or "no-scope"


def route_params(routes: list[tuple[str, str, str, Any, str]], *scopes: list[str]) -> list[Any]:
    """pytest params of `routes`, times `scopes` when given, named after the route (and the scopes)."""
    params = []
    for name, method, template, body, required in routes:
        if not scopes:
            params.append(pytest.param(method, template, body, required, id=name))
        for key_scopes in scopes:
            params.append(
                pytest.param(method, template, body, required, key_scopes, id=f"{name}-{scopes_id(key_scopes)}")
            )
    return params


MATRIX = route_params(ROUTES, *KEY_SCOPES)


def call(client: CheckedAPIClient, method: str, path: str, body: Any) -> Any:
    if body is None:
        return getattr(client, method)(path)
    return getattr(client, method)(path, body, format="json")


# --- authentication ------------------------------------------------------------------------


def test_no_credentials_is_401_not_authenticated(client: CheckedAPIClient, project: Project) -> None:
    response = client.get(prefix_for("projects", project))
    body = assert_error(response, 401, "not_authenticated", "authentication_error")
    assert "credentials" in body["detail"].lower()


@pytest.mark.parametrize(
    ("header", "why"),
    [
        ("Bearer phx_this-key-does-not-exist", "unknown key"),
        ("Bearer ", "Bearer and no key"),
        ("Bearer", "Bearer and no key, no space"),
        ("bearer phx_this-key-does-not-exist", "lower-case scheme, unknown key"),
    ],
)
def test_bad_bearer_credentials_are_401(client: CheckedAPIClient, project: Project, header: str, why: str) -> None:
    client.credentials(HTTP_AUTHORIZATION=header)
    response = client.get(prefix_for("projects", project))
    assert_error(response, 401, "authentication_failed", "authentication_error")


def test_key_of_an_inactive_user_is_401(client: CheckedAPIClient, user: User, project: Project) -> None:
    value = key_for(user, ["*"])
    user.is_active = False
    user.save()
    response = with_key(value).get(prefix_for("projects", project))
    assert_error(response, 401, "authentication_failed", "authentication_error")


def test_valid_key_is_accepted(project: Project, user: User) -> None:
    response = with_key(key_for(user, [READ])).get(prefix_for("projects", project))
    assert response.status_code == 200, response.content
    assert response.json()["results"] == []


def test_session_user_uses_the_api_without_a_key(
    client: CheckedAPIClient, user: User, project: Project, engine: Any
) -> None:
    client.force_login(user)
    prefix = prefix_for("projects", project)
    created = client.post(prefix, export_payload(), format="json")
    assert created.status_code == 201, created.content
    listed = client.get(prefix)
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()["results"]] == [created.json()["id"]]
    assert client.get(f"/api/organizations/{project.organization_id}/batch_exports/").status_code == 200


def test_session_user_of_another_organization_gets_403(
    client: CheckedAPIClient, project: Project, other_organization: tuple[Organization, Project, User]
) -> None:
    client.force_login(other_organization[2])
    assert_error(client.get(prefix_for("projects", project)), 403, "permission_denied")


# --- the scope matrix ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "template", "body", "required", "scopes"), MATRIX)
def test_scope_matrix(
    objects: Objects, user: User, method: str, template: str, body: Any, required: str, scopes: list[str]
) -> None:
    response = call(with_key(key_for(user, scopes)), method, objects.fill(template), body)
    if covers(scopes, required):
        assert response.status_code not in (401, 403), (response.status_code, response.content[:500])
        assert response.status_code < 500
    else:
        body_json = assert_error(response, 403, "permission_denied")
        assert required in body_json["detail"], body_json


@pytest.mark.parametrize(("method", "template", "body", "required"), route_params(ROUTES))
def test_covered_requests_succeed_with_a_full_key(
    objects: Objects, user: User, method: str, template: str, body: Any, required: str
) -> None:
    """With `*` every route of the matrix does its job on the fixture's objects (no 4xx at all)."""
    response = call(with_key(key_for(user, ["*"])), method, objects.fill(template), body)
    assert response.status_code in (200, 201, 204), (response.status_code, response.content[:500])


SUBSET = [route for route in ROUTES if route[0] in {"list", "create", "retrieve", "partial_update", "runs list"}]


@pytest.mark.parametrize("kind", ["organizations", "projects", "environments"])
@pytest.mark.parametrize("scopes", [[], [READ], [PLUGIN_READ], [WRITE]], ids=scopes_id)
@pytest.mark.parametrize(("method", "template", "body", "required"), route_params(SUBSET))
def test_scopes_under_every_prefix(
    objects: Objects, user: User, kind: str, scopes: list[str], method: str, template: str, body: Any, required: str
) -> None:
    response = call(with_key(key_for(user, scopes)), method, objects.fill(template, kind), body)
    if covers(scopes, required):
        assert response.status_code in (200, 201), (response.status_code, response.content[:500])
    else:
        assert required in assert_error(response, 403, "permission_denied")["detail"]


@pytest.mark.parametrize("kind", ["projects", "environments"])
def test_app_metrics_scopes_under_both_prefixes(objects: Objects, user: User, kind: str) -> None:
    path = objects.fill("{metrics}{export}/", kind)
    assert with_key(key_for(user, [PLUGIN_READ])).get(path).status_code == 200
    denied = assert_error(with_key(key_for(user, [WRITE])).get(path), 403, "permission_denied")
    assert PLUGIN_READ in denied["detail"]


def test_write_implies_read(objects: Objects, user: User) -> None:
    client = with_key(key_for(user, [WRITE]))
    prefix = prefix_for("projects", objects.project)
    listed = client.get(prefix)
    assert listed.status_code == 200
    assert [e["id"] for e in listed.json()["results"]] == [str(objects.export.id)]
    assert client.get(f"{prefix}{objects.export.id}/runs/{objects.run.id}/").json()["id"] == str(objects.run.id)
    # ...but not the read scope of another object.
    metrics = objects.fill("{metrics}{export}/")
    assert PLUGIN_READ in assert_error(client.get(metrics), 403, "permission_denied")["detail"]


def test_read_key_changes_nothing(objects: Objects, user: User) -> None:
    client = with_key(key_for(user, [READ]))
    prefix = prefix_for("projects", objects.project)
    assert_error(client.patch(f"{prefix}{objects.export.id}/", {"name": "No"}, format="json"), 403, "permission_denied")
    assert_error(client.delete(f"{prefix}{objects.export.id}/"), 403, "permission_denied")
    assert_error(client.post(f"{prefix}{objects.export.id}/pause/"), 403, "permission_denied")
    objects.export.refresh_from_db()
    assert (objects.export.name, objects.export.deleted, objects.export.paused) == ("Events to a folder", False, False)


# --- isolation between organizations and projects ------------------------------------------


def routes_of(project: Project, export: BatchExport) -> list[str]:
    return [
        f"/api/organizations/{project.organization_id}/batch_exports/",
        f"/api/organizations/{project.organization_id}/batch_exports/{export.id}/",
        f"/api/projects/{project.id}/batch_exports/",
        f"/api/projects/{project.id}/batch_exports/{export.id}/",
        f"/api/projects/{project.id}/batch_exports/{export.id}/runs/",
        f"/api/environments/{project.id}/batch_exports/{export.id}/runs/",
        f"/api/projects/{project.id}/app_metrics/{export.id}/",
    ]


def test_user_of_another_organization_gets_403(
    objects: Objects, user: User, other_organization: tuple[Organization, Project, User]
) -> None:
    _, other_project, other_user = other_organization
    other_export = make_file_export(other_project, "Globex export")
    theirs = with_key(key_for(other_user, ["*"]))
    ours = with_key(key_for(user, ["*"]))
    for path in routes_of(objects.project, objects.export):
        assert_error(theirs.get(path), 403, "permission_denied")
        assert ours.get(path).status_code == 200, path
    for path in routes_of(other_project, other_export):
        assert_error(ours.get(path), 403, "permission_denied")
        assert theirs.get(path).status_code == 200, path
    # Nor can they write.
    assert_error(
        theirs.post(prefix_for("projects", objects.project), export_payload(), format="json"), 403, "permission_denied"
    )
    assert_error(
        theirs.delete(f"{prefix_for('projects', objects.project)}{objects.export.id}/"), 403, "permission_denied"
    )
    assert BatchExport.objects.filter(team=objects.project, deleted=False).count() == 1


def test_export_of_another_organization_under_our_prefix_is_404(
    objects: Objects, user: User, other_organization: tuple[Organization, Project, User]
) -> None:
    other_export = make_file_export(other_organization[1], "Globex export")
    ours = with_key(key_for(user, ["*"]))
    for kind in ("organizations", "projects", "environments"):
        path = f"{prefix_for(kind, objects.project)}{other_export.id}/"
        assert_error(ours.get(path), 404, "not_found")
        assert_error(ours.get(f"{path}runs/"), 404, "not_found")


def test_key_scoped_to_one_project_does_not_see_its_sibling(
    objects: Objects, user: User, sibling_project: Project
) -> None:
    sibling_export = make_file_export(sibling_project, "Mobile export")
    client = with_key(key_for(user, ["*"], scoped_teams=[objects.project.id]))
    assert client.get(prefix_for("projects", objects.project)).status_code == 200
    for kind in ("projects", "environments"):
        sibling_prefix = prefix_for(kind, sibling_project)
        assert_error(client.get(sibling_prefix), 404, "not_found")
        assert_error(client.get(f"{sibling_prefix}{sibling_export.id}/"), 404, "not_found")
        assert_error(client.get(f"{sibling_prefix}{sibling_export.id}/runs/"), 404, "not_found")
        assert_error(client.post(sibling_prefix, export_payload(), format="json"), 404, "not_found")
    assert_error(client.get(f"/api/projects/{sibling_project.id}/app_metrics/{sibling_export.id}/"), 404, "not_found")
    org_prefix = prefix_for("organizations", objects.project)
    assert_error(client.get(f"{org_prefix}{sibling_export.id}/"), 404, "not_found")
    assert_error(client.delete(f"{org_prefix}{sibling_export.id}/"), 404, "not_found")
    sibling_export.refresh_from_db()
    assert not sibling_export.deleted
    # The same user without the limit sees the sibling project.
    unlimited = with_key(key_for(user, ["*"]))
    assert unlimited.get(f"{prefix_for('projects', sibling_project)}{sibling_export.id}/").status_code == 200


def test_key_scoped_to_another_organization_gets_403_on_ours(
    objects: Objects, user: User, other_organization: tuple[Organization, Project, User]
) -> None:
    other_org = other_organization[0]
    client = with_key(key_for(user, ["*"], scoped_organizations=[str(other_org.id)]))
    for path in routes_of(objects.project, objects.export):
        assert_error(client.get(path), 403, "permission_denied")
    allowed = with_key(key_for(user, ["*"], scoped_organizations=[str(objects.project.organization_id)]))
    for path in routes_of(objects.project, objects.export):
        assert allowed.get(path).status_code == 200, path


def test_export_of_a_sibling_project_under_our_project_prefix_is_404(
    objects: Objects, user: User, sibling_project: Project
) -> None:
    sibling_export = make_file_export(sibling_project, "Mobile export")
    client = with_key(key_for(user, ["*"]))
    for kind in ("projects", "environments"):
        path = f"{prefix_for(kind, objects.project)}{sibling_export.id}/"
        assert_error(client.get(path), 404, "not_found")
        assert_error(client.patch(path, {"name": "Hijacked"}, format="json"), 404, "not_found")
        assert_error(client.get(f"{path}runs/"), 404, "not_found")
    assert_error(client.get(f"/api/projects/{objects.project.id}/app_metrics/{sibling_export.id}/"), 404, "not_found")
    sibling_export.refresh_from_db()
    assert sibling_export.name == "Mobile export"
    # A run of our export addressed under another export's runs is not found either.
    assert_error(
        client.get(f"{prefix_for('projects', sibling_project)}{sibling_export.id}/runs/{objects.run.id}/"),
        404,
        "not_found",
    )


@pytest.mark.parametrize(
    "path",
    [
        "/api/projects/999999/batch_exports/",
        "/api/environments/999999/batch_exports/",
        "/api/projects/not-a-number/batch_exports/",
        "/api/environments/1.5/batch_exports/",
        "/api/projects/999999/app_metrics/00000000-0000-0000-0000-000000000000/",
        f"/api/organizations/{uuid.UUID(int=1)}/batch_exports/",
        "/api/organizations/not-a-uuid/batch_exports/",
    ],
)
def test_unknown_or_malformed_ids_are_404(api: CheckedAPIClient, project: Project, path: str) -> None:
    assert_error(api.get(path), 404, "not_found")


def test_unknown_or_malformed_export_ids_are_404(objects: Objects, api: CheckedAPIClient) -> None:
    prefix = prefix_for("projects", objects.project)
    for path in (
        f"{prefix}{uuid.uuid4()}/",
        f"{prefix}not-a-uuid/",
        f"{prefix}{uuid.uuid4()}/runs/",
        f"{prefix}{objects.export.id}/runs/{uuid.uuid4()}/",
        f"{prefix}{objects.export.id}/runs/not-a-uuid/",
        f"{prefix}{objects.export.id}/backfills/{uuid.uuid4()}/",
    ):
        assert_error(api.get(path), 404, "not_found")


@pytest.mark.parametrize("kind", ["projects", "environments"])
def test_current_project_is_the_users_first_project(
    api: CheckedAPIClient, project: Project, sibling_project: Project, kind: str, engine: Any
) -> None:
    ours = make_file_export(project, "First project's")
    make_file_export(sibling_project, "Second project's")
    listed = api.get(f"/api/{kind}/@current/batch_exports/")
    assert listed.status_code == 200, listed.content
    assert [e["id"] for e in listed.json()["results"]] == [str(ours.id)]
    assert listed.json()["results"][0]["team_id"] == project.id
    created = api.post(f"/api/{kind}/@current/batch_exports/", export_payload(), format="json")
    assert created.status_code == 201, created.content
    assert BatchExport.objects.get(id=created.json()["id"]).team_id == project.id


def test_current_project_respects_a_keys_project_limit(user: User, project: Project, sibling_project: Project) -> None:
    theirs = make_file_export(sibling_project, "Second project's")
    client = with_key(key_for(user, ["*"], scoped_teams=[sibling_project.id]))
    listed = client.get("/api/projects/@current/batch_exports/")
    assert listed.status_code == 200, listed.content
    assert [e["id"] for e in listed.json()["results"]] == [str(theirs.id)]


def test_current_organization(api: CheckedAPIClient, project: Project) -> None:
    export = make_file_export(project)
    listed = api.get("/api/organizations/@current/batch_exports/")
    assert listed.status_code == 200, listed.content
    assert [e["id"] for e in listed.json()["results"]] == [str(export.id)]


def test_organization_list_shows_every_project_unless_the_key_is_limited(
    user: User, project: Project, sibling_project: Project, engine: Any
) -> None:
    client = with_key(key_for(user, ["*"]))
    in_project = client.post(prefix_for("projects", project), export_payload(name="Web export"), format="json")
    in_sibling = client.post(
        prefix_for("projects", sibling_project), export_payload(name="Mobile export"), format="json"
    )
    assert in_project.status_code == in_sibling.status_code == 201
    org_prefix = prefix_for("organizations", project)

    listed = client.get(org_prefix).json()
    assert listed["count"] == 2
    assert {e["id"] for e in listed["results"]} == {in_project.json()["id"], in_sibling.json()["id"]}
    assert {e["team_id"] for e in listed["results"]} == {project.id, sibling_project.id}
    # A project prefix lists only that project's.
    assert [e["id"] for e in client.get(prefix_for("projects", project)).json()["results"]] == [in_project.json()["id"]]

    limited = with_key(key_for(user, ["*"], scoped_teams=[project.id]))
    limited_list = limited.get(org_prefix).json()
    assert limited_list["count"] == 1
    assert [e["id"] for e in limited_list["results"]] == [in_project.json()["id"]]
