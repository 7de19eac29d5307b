"""The account routes PostHog clients call first, personal API keys where PostHog accepts them,
and the API's answers for unknown paths, unknown methods and paths without a trailing slash.

Shapes are checked against PostHog's own OpenAPI description (the copy published inside the
`arcade-posthog-api` wheel, `moar/openapi.json`), which has `/api/organizations/…`,
`/api/projects/:id/environments/…` and `/api/users/…`; `/api/projects/` and `/api/environments/`
(which PostHog leaves out of it) are checked against the schemas of the same serializers there.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable
from functools import cache
from importlib import resources
from typing import Any

import pytest
from openapi_schema_validator import OAS30ReadValidator, validate

from batchexports.accounts import redaction
from batchexports.accounts.models import Organization, OrganizationMembership, PersonalAPIKey, Project, User
from tests.conftest import CheckedAPIClient, export_payload

# drf-spectacular types a method field it cannot introspect as a string; PostHog's API answers a
# list, object, boolean or number there (as its serializers' code shows), and so do we.
MISTYPED_METHOD_FIELDS = frozenset(
    {
        "product_intents",
        "managed_viewsets",
        "default_modifiers",
        "person_on_events_querying_enabled",
        "metadata",
        "member_count",
    }
)


@cache
def posthog_paths() -> dict[str, Any]:
    spec = resources.files("arcade_posthog_api").joinpath("moar/openapi.json").read_text()
    return json.loads(spec)["paths"]


def _loosen(node: Any) -> Any:
    if isinstance(node, dict):
        props = node.get("properties")
        if isinstance(props, dict):
            for name in MISTYPED_METHOD_FIELDS & set(props):
                props[name] = {}
        for value in node.values():
            _loosen(value)
    elif isinstance(node, list):
        for value in node:
            _loosen(value)
    return node


@cache
def response_schema(template: str) -> dict[str, Any]:
    schema = posthog_paths()[template]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    return _loosen(copy.deepcopy(schema))


def assert_posthog_shape(body: dict[str, Any], template: str) -> None:
    validate(body, response_schema(template), cls=OAS30ReadValidator)


def with_key(value: str) -> CheckedAPIClient:
    client = CheckedAPIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {value}")
    return client


# --- shapes ---------------------------------------------------------------------------------


def test_projects_list_in_posthogs_shape(api: Any, project: Project, sibling_project: Project) -> None:
    body = api.get("/api/projects/").json()
    assert_posthog_shape(body, "/api/organizations/{organization_id}/projects/")
    assert body["count"] == 2 and body["next"] is None
    first = body["results"][0]
    assert first["id"] == project.id and first["project_id"] == project.id
    assert first["uuid"] == str(project.uuid)
    assert first["organization"] == str(project.organization_id)
    assert first["api_token"] == project.api_token and first["name"] == "Web" and first["timezone"] == "UTC"


@pytest.mark.parametrize("kind", ["projects", "environments"])
def test_one_project_in_posthogs_shape(api: Any, user: User, project: Project, kind: str) -> None:
    project.timezone = "Europe/Berlin"
    project.save()
    body = api.get(f"/api/{kind}/{project.id}/").json()
    template = (
        "/api/organizations/{organization_id}/projects/{id}/"
        if kind == "projects"
        else "/api/projects/{project_id}/environments/{id}/"
    )
    assert_posthog_shape(body, template)
    assert (body["id"], body["uuid"], body["name"]) == (project.id, str(project.uuid), "Web")
    assert body["organization"] == str(project.organization_id)
    assert body["api_token"] == project.api_token
    assert body["timezone"] == "Europe/Berlin"
    assert body["effective_membership_level"] == OrganizationMembership.Level.MEMBER
    assert body["user_access_level"] == "member"
    assert body["secret_api_token"] is None  # there are no project secret tokens here


def test_current_project_is_the_callers_first_project(
    api: Any, project: Project, sibling_project: Project, other_organization: Any
) -> None:
    for kind in ("projects", "environments"):
        body = api.get(f"/api/{kind}/@current/").json()
        assert body["id"] == project.id, kind


def test_environments_list_and_a_projects_environments(api: Any, project: Project, sibling_project: Project) -> None:
    listing = api.get("/api/environments/").json()
    assert_posthog_shape(listing, "/api/projects/{project_id}/environments/")
    assert [p["id"] for p in listing["results"]] == [project.id, sibling_project.id]

    own = api.get(f"/api/projects/{sibling_project.id}/environments/").json()
    assert_posthog_shape(own, "/api/projects/{project_id}/environments/")
    assert [p["id"] for p in own["results"]] == [sibling_project.id]
    one = api.get(f"/api/projects/{sibling_project.id}/environments/{sibling_project.id}/")
    assert one.json()["id"] == sibling_project.id
    assert api.get(f"/api/projects/{sibling_project.id}/environments/{project.id}/").status_code == 404


def test_organizations_in_posthogs_shape(api: Any, organization: Organization, project: Project, user: User) -> None:
    listing = api.get("/api/organizations/").json()
    assert_posthog_shape(listing, "/api/organizations/")
    assert [o["id"] for o in listing["results"]] == [str(organization.id)]

    body = api.get(f"/api/organizations/{organization.id}/").json()
    assert_posthog_shape(body, "/api/organizations/{id}/")
    assert (body["id"], body["name"], body["slug"]) == (str(organization.id), "Acme", "acme")
    assert body["membership_level"] == OrganizationMembership.Level.MEMBER
    assert body["member_count"] == 1
    assert [t["id"] for t in body["teams"]] == [project.id]
    assert body["projects"] == [{"id": project.id, "organization_id": str(organization.id), "name": "Web"}]
    assert api.get("/api/organizations/@current/").json()["id"] == str(organization.id)


def test_organization_projects(
    api: Any, organization: Organization, project: Project, sibling_project: Project
) -> None:
    listing = api.get(f"/api/organizations/{organization.id}/projects/").json()
    assert_posthog_shape(listing, "/api/organizations/{organization_id}/projects/")
    assert [p["name"] for p in listing["results"]] == ["Web", "Mobile"]
    one = api.get(f"/api/organizations/{organization.id}/projects/{sibling_project.id}/").json()
    assert_posthog_shape(one, "/api/organizations/{organization_id}/projects/{id}/")
    assert one["name"] == "Mobile"


def test_users_me_in_posthogs_shape(api: Any, user: User, organization: Organization, project: Project) -> None:
    user.first_name = "Ada"
    user.save()
    body = api.get("/api/users/@me/").json()
    assert_posthog_shape(body, "/api/users/{uuid}/")
    assert body["email"] == "ada@example.com" and body["first_name"] == "Ada"
    assert body["uuid"] == str(user.uuid) and body["distinct_id"] == user.distinct_id
    assert body["team"]["id"] == project.id and body["team"]["api_token"] == project.api_token
    assert body["organization"]["id"] == str(organization.id)
    assert [(o["id"], o["membership_level"]) for o in body["organizations"]] == [(str(organization.id), 1)]
    assert "password" not in body

    listing = api.get("/api/users/").json()
    assert_posthog_shape(listing, "/api/users/")
    assert [u["email"] for u in listing["results"]] == ["ada@example.com"]


def test_users_other_than_me_only_for_staff(
    api: Any, make_key: Callable[..., str], user: User, other_organization: Any
) -> None:
    _, _, hank = other_organization
    response = api.get(f"/api/users/{hank.uuid}/")
    assert response.status_code == 403
    assert "@me" in response.json()["detail"]

    user.is_staff = True
    user.save()
    assert api.get(f"/api/users/{hank.uuid}/").json()["email"] == "hank@globex.example"
    assert {u["email"] for u in api.get("/api/users/").json()["results"]} == {"ada@example.com", hank.email}
    assert api.get("/api/users/00000000-0000-0000-0000-000000000000/").status_code == 404


def test_account_lists_are_limit_offset_paginated(api: Any, organization: Organization, project: Project) -> None:
    for index in range(4):
        Project.objects.create(organization=organization, name=f"P{index}")
    first = api.get("/api/projects/", {"limit": 2}).json()
    assert first["count"] == 5 and len(first["results"]) == 2
    assert "offset=2" in first["next"] and first["previous"] is None
    second = api.get(first["next"]).json()
    assert [p["name"] for p in second["results"]] == ["P1", "P2"]
    assert [p["name"] for p in api.get("/api/projects/", {"limit": 2, "offset": 4}).json()["results"]] == ["P3"]


# --- what a key may see ---------------------------------------------------------------------


def test_a_key_limited_to_one_project_sees_only_it(
    make_key: Callable[..., str], organization: Organization, project: Project, sibling_project: Project
) -> None:
    client = with_key(make_key(["*"], scoped_teams=[sibling_project.id]))
    assert [p["id"] for p in client.get("/api/projects/").json()["results"]] == [sibling_project.id]
    assert client.get(f"/api/projects/{project.id}/").status_code == 404
    assert client.get("/api/projects/@current/").json()["id"] == sibling_project.id
    organization_body = client.get(f"/api/organizations/{organization.id}/").json()
    assert [t["id"] for t in organization_body["teams"]] == [sibling_project.id]
    org_projects = client.get(f"/api/organizations/{organization.id}/projects/").json()
    assert [p["id"] for p in org_projects["results"]] == [sibling_project.id]
    me = client.get("/api/users/@me/").json()
    assert me["team"]["id"] == sibling_project.id


def test_a_key_limited_to_one_organization_sees_only_it(
    make_key: Callable[..., str], user: User, organization: Organization, project: Project, other_organization: Any
) -> None:
    globex, globex_project, _ = other_organization
    OrganizationMembership.objects.create(organization=globex, user=user)
    unlimited = with_key(make_key(["*"]))
    assert len(unlimited.get("/api/organizations/").json()["results"]) == 2

    client = with_key(make_key(["*"], scoped_organizations=[str(globex.id)]))
    assert [o["id"] for o in client.get("/api/organizations/").json()["results"]] == [str(globex.id)]
    assert [p["id"] for p in client.get("/api/projects/").json()["results"]] == [globex_project.id]
    assert client.get(f"/api/organizations/{organization.id}/").status_code == 403
    assert client.get(f"/api/projects/{project.id}/").status_code == 403
    assert [o["id"] for o in client.get("/api/users/@me/").json()["organizations"]] == [str(globex.id)]


def test_another_organizations_objects_are_refused(api: Any, other_organization: Any) -> None:
    globex, globex_project, _ = other_organization
    for url in (
        f"/api/organizations/{globex.id}/",
        f"/api/organizations/{globex.id}/projects/",
        f"/api/projects/{globex_project.id}/",
        f"/api/environments/{globex_project.id}/",
    ):
        response = api.get(url)
        assert response.status_code == 403, url
        assert set(response.json()) == {"type", "code", "detail", "attr"}
    assert [o["name"] for o in api.get("/api/organizations/").json()["results"]] == ["Acme"]


@pytest.mark.parametrize("url", ["/api/projects/999999/", "/api/projects/nope/", "/api/organizations/not-a-uuid/"])
def test_unknown_ids_are_a_json_404(api: Any, project: Project, url: str) -> None:
    response = api.get(url)
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    ("url", "scope"),
    [
        ("/api/projects/", "project:read"),
        ("/api/environments/", "project:read"),
        ("/api/organizations/", "organization:read"),
        ("/api/users/@me/", "user:read"),
    ],
)
def test_account_routes_need_their_posthog_scope(
    make_key: Callable[..., str], project: Project, url: str, scope: str
) -> None:
    refused = with_key(make_key(["batch_export:write"])).get(url)
    assert refused.status_code == 403
    assert refused.json()["detail"] == f"API key missing required scope '{scope}'."
    assert with_key(make_key([scope])).get(url).status_code == 200
    assert with_key(make_key([scope.replace(":read", ":write")])).get(url).status_code == 200


def test_organization_projects_need_project_read(make_key: Callable[..., str], organization: Organization) -> None:
    url = f"/api/organizations/{organization.id}/projects/"
    assert with_key(make_key(["organization:read"])).get(url).status_code == 403
    assert with_key(make_key(["project:read"])).get(url).status_code == 200


def test_account_routes_only_read(api: Any, project: Project) -> None:
    response = api.post("/api/projects/", {"name": "New"}, format="json")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert api.delete(f"/api/projects/{project.id}/").status_code == 405
    assert Project.objects.filter(pk=project.pk).exists()


# --- personal API keys in the query string and the body -------------------------------------


def test_key_in_the_query_string(client: CheckedAPIClient, make_key: Callable[..., str], project: Project) -> None:
    key = make_key(["*"])
    response = client.get("/api/projects/", {"personal_api_key": key})
    assert response.status_code == 200
    assert response.json()["results"][0]["id"] == project.id
    assert PersonalAPIKey.objects.get().last_used_at is not None


def test_key_in_a_json_body(client: CheckedAPIClient, make_key: Callable[..., str], project: Project) -> None:
    body = {**export_payload(), "personal_api_key": make_key(["batch_export:write"])}
    response = client.post(f"/api/projects/{project.id}/batch_exports/", body, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["name"] == "Events to S3"
    assert "personal_api_key" not in response.json()


def test_key_in_a_form_body(client: CheckedAPIClient, make_key: Callable[..., str], project: Project) -> None:
    response = client.post(
        f"/api/projects/{project.id}/batch_exports/1/pause/", {"personal_api_key": make_key(["*"])}, format="multipart"
    )
    assert response.status_code == 404  # authenticated: the export is what is missing
    assert "Batch export" in response.json()["detail"]


@pytest.mark.parametrize(
    ("kwargs", "source"),
    [
        ({"path": "/api/projects/", "data": {"personal_api_key": "phx_wrong"}}, "query string"),
        ({"path": "/api/projects/", "HTTP_AUTHORIZATION": "Bearer phx_wrong"}, "Authorization header"),
    ],
)
def test_an_unknown_key_is_a_401_naming_where_it_was_found(
    client: CheckedAPIClient, project: Project, kwargs: dict[str, Any], source: str
) -> None:
    response = client.get(**kwargs)
    assert response.status_code == 401
    assert response.json()["detail"] == f"Personal API key found in request {source} is invalid."
    assert "phx_wrong" not in response.content.decode()


def test_an_unknown_key_in_the_body_is_a_401(client: CheckedAPIClient, project: Project) -> None:
    body = {**export_payload(), "personal_api_key": "phx_wrong"}
    response = client.post(f"/api/projects/{project.id}/batch_exports/", body, format="json")
    assert response.status_code == 401
    assert response.json()["detail"] == "Personal API key found in request body is invalid."


def test_only_the_first_key_found_is_tried(
    client: CheckedAPIClient, make_key: Callable[..., str], project: Project
) -> None:
    good = make_key(["*"])
    header_wins = client.get("/api/projects/", {"personal_api_key": "phx_wrong"}, HTTP_AUTHORIZATION=f"Bearer {good}")
    assert header_wins.status_code == 200
    bad_header = client.get("/api/projects/", {"personal_api_key": good}, HTTP_AUTHORIZATION="Bearer phx_wrong")
    assert bad_header.status_code == 401


def test_a_query_string_key_never_reaches_a_log_line() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d', None, None
    )  # fmt: skip
    record.args = ("127.0.0.1:5000", "GET", "/api/projects/?a=1&personal_api_key=phx_secret123&b=2", "1.1", 200)
    logger = logging.getLogger("uvicorn.access")
    assert any(isinstance(f, redaction.RedactPersonalAPIKeys) for f in logger.filters)
    assert logger.filter(record)
    assert record.getMessage() == (
        '127.0.0.1:5000 - "GET /api/projects/?a=1&personal_api_key=[redacted]&b=2 HTTP/1.1" 200'
    )


# --- unknown paths, methods and missing trailing slashes -------------------------------------


@pytest.mark.parametrize("path", ["/api/nope/", "/api/nope", "/api/projects/1/nothing/here/", "/api"])
@pytest.mark.parametrize("method", ["get", "post", "patch", "delete"])
def test_an_unknown_api_path_is_a_json_404(client: CheckedAPIClient, path: str, method: str) -> None:
    response = getattr(client, method)(path)
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {
        "type": "invalid_request",
        "code": "not_found",
        "detail": "Endpoint not found.",
        "attr": None,
    }


def test_an_unknown_method_is_a_json_405(api: Any, project: Project) -> None:
    response = api.generic("PURGE", f"/api/projects/{project.id}/batch_exports/")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"


def test_writes_without_the_trailing_slash_reach_their_route(api: Any, project: Project) -> None:
    base = f"/api/projects/{project.id}/batch_exports"
    created = api.post(base, export_payload(), format="json")
    assert created.status_code == 201, created.content
    export_id = created.json()["id"]
    patched = api.patch(f"{base}/{export_id}", {"name": "Renamed"}, format="json")
    assert patched.status_code == 200 and patched.json()["name"] == "Renamed"
    assert api.post(f"{base}/{export_id}/pause", format="json").json() == {"paused": True}
    listed = api.get(base)
    assert listed.status_code == 200 and listed.json()["results"][0]["name"] == "Renamed"
    assert api.delete(f"{base}/{export_id}").status_code == 204
    assert api.get(f"{base}/{export_id}").status_code == 404


def test_account_routes_answer_without_the_trailing_slash(api: Any, project: Project) -> None:
    assert api.get("/api/projects").json()["count"] == 1
    assert api.get(f"/api/projects/{project.id}").json()["id"] == project.id
    assert api.get("/api/users/@me").json()["email"] == "ada@example.com"


def test_pages_outside_the_api_keep_their_slash_redirect(client: CheckedAPIClient) -> None:
    response = client.get("/login")
    assert response.status_code == 301
    assert response["Location"] == "/login/"


@pytest.mark.slow
def test_a_real_api_process_answers_a_query_string_key_and_logs_it_redacted(tmp_path: Any) -> None:
    import subprocess

    import httpx

    from tests.test_processes import BIN, env_for, free_port, stop, wait_for_health

    env = env_for(tmp_path)
    boot = subprocess.run([BIN, "bootstrap", "--json"], env=env, capture_output=True, text=True, timeout=60, check=True)
    key = json.loads(boot.stdout)["personal_api_key"]
    port = free_port()
    process = subprocess.Popen(
        [BIN, "api", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for_health(port, process)
        response = httpx.get(f"http://127.0.0.1:{port}/api/projects/", params={"personal_api_key": key}, timeout=10)
        assert response.status_code == 200
        assert response.json()["results"][0]["name"] == "Default project"
    finally:
        output = stop(process)
    assert "personal_api_key=[redacted]" in output
    assert key not in output
