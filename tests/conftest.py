"""Shared fixtures: accounts, API keys and an API client that checks every response."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from rest_framework.test import APIClient

from batchexports.accounts.models import Organization, OrganizationMembership, PersonalAPIKey, Project, User
from batchexports.exports.engine_port import get_engine
from batchexports.exports.recording_engine import RecordingEngine
from tests import contract

PREFIXES = ("organizations", "projects", "environments")


class CheckedAPIClient(APIClient):
    """An APIClient whose every response is checked for leaked secrets and against PostHog's schema."""

    def request(self, **kwargs: Any) -> Any:
        response = super().request(**kwargs)
        content = b"".join(response.streaming_content) if response.streaming else response.content
        contract.assert_no_secret_in(content)
        method = kwargs.get("REQUEST_METHOD", "GET")
        query = dict(response.wsgi_request.GET.items())
        contract.validate_against_posthog_schema(
            method,
            kwargs.get("PATH_INFO", ""),
            query,
            response.status_code,
            content,
            response.get("Content-Type", ""),
        )
        return response


@pytest.fixture
def engine() -> RecordingEngine:
    recorder = get_engine()
    assert isinstance(recorder, RecordingEngine)
    recorder.clear()
    return recorder


@pytest.fixture
def organization(db: Any) -> Organization:
    return Organization.objects.create(name="Acme")


@pytest.fixture
def project(organization: Organization) -> Project:
    return Project.objects.create(organization=organization, name="Web")


@pytest.fixture
def sibling_project(organization: Organization) -> Project:
    """Another project of the same organization."""
    return Project.objects.create(organization=organization, name="Mobile")


@pytest.fixture
def user(organization: Organization) -> User:
    user = User.objects.create_user(email="ada@example.com", password="correct horse")
    OrganizationMembership.objects.create(organization=organization, user=user)
    return user


@pytest.fixture
def other_organization(db: Any) -> tuple[Organization, Project, User]:
    org = Organization.objects.create(name="Globex")
    other_project = Project.objects.create(organization=org, name="Globex web")
    other_user = User.objects.create_user(email="hank@globex.example", password="x")
    OrganizationMembership.objects.create(organization=org, user=other_user)
    return org, other_project, other_user


@pytest.fixture
def make_key(user: User) -> Callable[..., str]:
    def make(scopes: list[str] | None = None, for_user: User | None = None, **limits: Any) -> str:
        _, value = PersonalAPIKey.create_for(for_user or user, scopes or ["*"], **limits)
        return value

    return make


@pytest.fixture
def client() -> CheckedAPIClient:
    return CheckedAPIClient()


@pytest.fixture
def api(client: CheckedAPIClient, make_key: Callable[..., str]) -> CheckedAPIClient:
    """A client authenticated with a `*` key of `user`."""
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_key(['*'])}")
    return client


def prefix_for(kind: str, project: Project) -> str:
    if kind == "organizations":
        return f"/api/organizations/{project.organization_id}/batch_exports/"
    return f"/api/{kind}/{project.id}/batch_exports/"


@pytest.fixture(params=PREFIXES)
def prefix(request: pytest.FixtureRequest, project: Project) -> str:
    """`/api/<organizations|projects|environments>/<id>/batch_exports/` for `project`."""
    return prefix_for(request.param, project)


def walk(api: Any, url: str, params: dict[str, str] | None = None) -> list[list[dict[str, Any]]]:
    """Every page of a cursor-paginated list, following `next` to the end."""
    pages = []
    response = api.get(url, params or {})
    while True:
        assert response.status_code == 200, response.json()
        body = response.json()
        assert set(body) == {"next", "previous", "results"}
        pages.append(body["results"])
        if body["next"] is None:
            return pages
        assert len(pages) < 20, "pagination does not end"
        response = api.get(body["next"])


def s3_destination(**overrides: Any) -> dict[str, Any]:
    config = {
        "bucket_name": "analytics",
        "region": "eu-west-1",
        "prefix": "posthog/{year}/{month}",
        "aws_access_key_id": contract.register_secret("AKIATESTACCESSKEY01"),
        "aws_secret_access_key": contract.register_secret("s3-secret-value-that-must-not-leak"),
        "file_format": "Parquet",
        "compression": "zstd",
    }
    config.update(overrides)
    return {"type": "S3", "config": config}


def export_payload(**overrides: Any) -> dict[str, Any]:
    payload: dict[str, Any] = {"name": "Events to S3", "interval": "hour", "destination": s3_destination()}
    payload.update(overrides)
    return payload


@pytest.fixture
def events_store(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh DuckDB events store for the test, used by capture and the model queries."""
    from batchexports.events.stores import get_store, reset_store

    monkeypatch.setenv("BATCHEXPORTS_DUCKDB_PATH", str(tmp_path / "events.duckdb"))
    reset_store()
    yield get_store()
    reset_store()
