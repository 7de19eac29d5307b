"""Specification of the batch export resource: create, list, retrieve, update, delete,
pause/unpause, the engine calls each makes, secrets at rest, the OpenAPI document and health.

Validation rules of a single request live in `test_batch_export_validation.py`.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from openapi_core.validation.response.exceptions import ResponseValidationError

from batchexports.exports import encryption
from batchexports.exports.models import BatchExport, BatchExportDestination, BatchExportRun
from tests import contract
from tests.conftest import export_payload, prefix_for, s3_destination

ACCESS_KEY_ID = "AKIATESTACCESSKEY01"
SECRET_ACCESS_KEY = "s3-secret-value-that-must-not-leak"

# What the API returns as the config of `s3_destination()`: every non-secret field, defaults filled in.
S3_PUBLIC_CONFIG = {
    "bucket_name": "analytics",
    "region": "eu-west-1",
    "prefix": "posthog/{year}/{month}",
    "file_format": "Parquet",
    "compression": "zstd",
    "max_file_size_mb": None,
    "include_events": None,
    "exclude_events": None,
    "endpoint_url": None,
    "encryption": None,
    "kms_key_id": None,
    "use_virtual_style_addressing": False,
    "legacy_parquet_extension": False,  # PostHog sets it off for every new file export
}
S3_FULL_CONFIG = {**S3_PUBLIC_CONFIG, "aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY}

EXPORT_FIELDS = {
    "id",
    "team_id",
    "name",
    "model",
    "destination",
    "interval",
    "paused",
    "created_at",
    "last_updated_at",
    "last_paused_at",
    "start_at",
    "end_at",
    "latest_runs",
    "hogql_query",
    "schema",
    "filters",
    "timezone",
    "offset_day",
    "offset_hour",
}


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def create(api: Any, prefix: str, **overrides: Any) -> dict[str, Any]:
    response = api.post(prefix, export_payload(**overrides), format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def calls(engine: Any) -> list[tuple[str, str, dict[str, Any]]]:
    return [(call.name, call.target_id, call.details) for call in engine.calls]


def assert_not_found(response: Any, needle: str) -> None:
    assert response.status_code == 404
    body = response.json()
    assert set(body) == {"type", "code", "detail", "attr"}
    assert body["type"] == "invalid_request"
    assert body["code"] == "not_found"
    assert body["attr"] is None
    assert needle in body["detail"]


# Create


def test_create_returns_every_field(api, prefix, project, engine):
    before = datetime.now(UTC)
    response = api.post(prefix, export_payload(), format="json")
    after = datetime.now(UTC)

    assert response.status_code == 201, response.json()
    body = response.json()
    assert set(body) == EXPORT_FIELDS
    uuid.UUID(body["id"])
    assert body["team_id"] == project.id
    assert body["name"] == "Events to S3"
    assert body["model"] == "events"
    assert body["destination"] == {"type": "S3", "config": S3_PUBLIC_CONFIG, "integration": None}
    assert body["interval"] == "hour"
    assert body["paused"] is False
    assert before - timedelta(seconds=1) <= parse_time(body["created_at"]) <= after + timedelta(seconds=1)
    assert before - timedelta(seconds=1) <= parse_time(body["last_updated_at"]) <= after + timedelta(seconds=1)
    assert body["last_paused_at"] is None
    assert body["start_at"] is None
    assert body["end_at"] is None
    assert body["latest_runs"] == []
    assert body["hogql_query"] == ""
    assert body["schema"] is None
    assert body["filters"] is None
    assert body["timezone"] == "UTC"
    assert body["offset_day"] is None
    assert body["offset_hour"] is None

    stored = BatchExport.objects.get(id=body["id"])
    assert stored.team_id == project.id
    assert stored.deleted is False
    assert stored.destination.full_config() == S3_FULL_CONFIG
    assert calls(engine) == [("sync_batch_export", body["id"], {"created": True, "paused": False})]


def test_retrieve_returns_what_create_returned(api, prefix):
    created = create(api, prefix)
    response = api.get(f"{prefix}{created['id']}/")
    assert response.status_code == 200
    assert response.json() == created


def test_organization_create_goes_to_the_first_project(api, project, sibling_project):
    response = api.post(prefix_for("organizations", project), export_payload(), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["team_id"] == project.id
    assert BatchExport.objects.get(id=response.json()["id"]).team_id == project.id


def test_organization_create_goes_to_the_first_project_even_after_it_changed(api, project, sibling_project):
    project.name = "Web (renamed)"
    project.save()  # on PostgreSQL, the updated row now comes after the sibling's in an unordered scan
    response = api.post(prefix_for("organizations", project), export_payload(), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["team_id"] == project.id


def test_organization_create_in_the_given_project(api, project, sibling_project):
    org_prefix = prefix_for("organizations", project)
    response = api.post(org_prefix, export_payload(team_id=sibling_project.id), format="json")
    assert response.status_code == 201, response.json()
    export_id = response.json()["id"]
    assert response.json()["team_id"] == sibling_project.id
    assert BatchExport.objects.get(id=export_id).team_id == sibling_project.id
    # Visible from the sibling project and from the organization, not from the other project.
    assert api.get(f"{prefix_for('projects', sibling_project)}{export_id}/").status_code == 200
    assert api.get(f"{org_prefix}{export_id}/").status_code == 200
    assert api.get(f"{prefix_for('projects', project)}{export_id}/").status_code == 404


def test_organization_create_in_a_project_outside_the_organization(api, project, other_organization):
    _, foreign_project, _ = other_organization
    response = api.post(prefix_for("organizations", project), export_payload(team_id=foreign_project.id), format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "validation_error"
    assert body["attr"] == "team_id"
    assert str(foreign_project.id) in body["detail"]
    assert not BatchExport.objects.exists()


def test_project_create_cannot_target_another_project(api, project, sibling_project):
    response = api.post(prefix_for("projects", project), export_payload(team_id=sibling_project.id), format="json")
    assert response.status_code == 400
    assert response.json()["attr"] == "team_id"
    assert not BatchExport.objects.exists()


def test_create_paused_sets_last_paused_at(api, prefix, engine):
    before = datetime.now(UTC)
    body = create(api, prefix, paused=True)
    assert body["paused"] is True
    assert body["last_paused_at"] is not None
    assert parse_time(body["last_paused_at"]) >= before - timedelta(seconds=1)
    stored = BatchExport.objects.get(id=body["id"])
    assert stored.paused is True
    assert stored.last_paused_at is not None
    assert calls(engine) == [("sync_batch_export", body["id"], {"created": True, "paused": True})]


# List


def test_list_is_newest_first_and_pages_with_limit_and_offset(api, prefix):
    created_ids = [create(api, prefix, name=f"export {i}")["id"] for i in range(7)]

    first = api.get(prefix, {"limit": 3})
    assert first.status_code == 200
    page = first.json()
    assert page["count"] == 7
    assert page["previous"] is None
    seen = [e["id"] for e in page["results"]]
    assert len(seen) == 3
    pages = 1
    while page["next"]:
        response = api.get(page["next"])
        assert response.status_code == 200
        page = response.json()
        assert page["count"] == 7
        assert page["previous"] is not None
        seen.extend(e["id"] for e in page["results"])
        pages += 1
        assert pages <= 3, "more pages than 7 exports need"

    assert pages == 3
    assert seen == list(reversed(created_ids))  # each exactly once, newest first


def test_list_default_page_size_is_100(api, project):
    destinations = BatchExportDestination.objects.bulk_create(
        [BatchExportDestination(type="File", config={"path": f"e{i}"}) for i in range(101)]
    )
    exports = BatchExport.objects.bulk_create(
        [
            BatchExport(team=project, name=f"bulk {i}", destination=destination, interval="hour")
            for i, destination in enumerate(destinations)
        ]
    )
    start = datetime(2024, 1, 1, tzinfo=UTC)
    for i, export in enumerate(exports):
        BatchExport.objects.filter(id=export.id).update(created_at=start + timedelta(minutes=i))

    response = api.get(prefix_for("projects", project))
    assert response.status_code == 200
    page = response.json()
    assert page["count"] == 101
    assert len(page["results"]) == 100
    assert page["results"][0]["name"] == "bulk 100"
    assert page["results"][-1]["name"] == "bulk 1"
    assert "limit=100" in page["next"]
    assert "offset=100" in page["next"]
    last = api.get(page["next"]).json()
    assert [e["name"] for e in last["results"]] == ["bulk 0"]
    assert last["next"] is None


def test_organization_list_holds_every_project(api, project, sibling_project):
    in_project = create(api, prefix_for("projects", project))["id"]
    in_sibling = create(api, prefix_for("projects", sibling_project))["id"]
    org = api.get(prefix_for("organizations", project)).json()
    assert [e["id"] for e in org["results"]] == [in_sibling, in_project]
    assert [e["id"] for e in api.get(prefix_for("projects", project)).json()["results"]] == [in_project]


def test_latest_runs_are_the_ten_newest_newest_first(api, prefix):
    export_id = create(api, prefix)["id"]
    start = datetime(2024, 3, 1, tzinfo=UTC)
    run_ids = []
    for i in range(12):
        run = BatchExportRun.objects.create(
            batch_export_id=export_id,
            status=BatchExportRun.Status.COMPLETED,
            data_interval_start=start + timedelta(hours=i),
            data_interval_end=start + timedelta(hours=i + 1),
            records_completed=i,
        )
        BatchExportRun.objects.filter(id=run.id).update(created_at=start + timedelta(hours=i + 1, minutes=1))
        run_ids.append(str(run.id))
    expected = list(reversed(run_ids))[:10]

    detail = api.get(f"{prefix}{export_id}/").json()
    assert [r["id"] for r in detail["latest_runs"]] == expected
    newest = detail["latest_runs"][0]
    assert newest["status"] == "Completed"
    assert newest["records_completed"] == 11
    assert newest["batch_export"] == export_id
    assert parse_time(newest["data_interval_end"]) == start + timedelta(hours=12)

    listed = api.get(prefix).json()
    assert [r["id"] for r in listed["results"][0]["latest_runs"]] == expected


# Retrieve


def test_retrieve_unknown_id_is_404(api, prefix):
    create(api, prefix)
    unknown = str(uuid.uuid4())
    assert_not_found(api.get(f"{prefix}{unknown}/"), unknown)


def test_retrieve_malformed_id_is_404(api, prefix):
    assert_not_found(api.get(f"{prefix}not-a-uuid/"), "not-a-uuid")


# Update


def test_patch_merges_config_and_keeps_secrets(api, prefix, engine):
    created = create(api, prefix)
    engine.clear()
    response = api.patch(
        f"{prefix}{created['id']}/",
        {"destination": {"type": "S3", "config": {"prefix": "new/"}}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["destination"]["config"] == {**S3_PUBLIC_CONFIG, "prefix": "new/"}
    destination = BatchExport.objects.get(id=created["id"]).destination
    assert destination.full_config() == {**S3_FULL_CONFIG, "prefix": "new/"}
    assert calls(engine) == [("sync_batch_export", created["id"], {"created": False, "paused": False})]


def test_patch_config_without_type_merges_too(api, prefix):
    created = create(api, prefix)
    response = api.patch(f"{prefix}{created['id']}/", {"destination": {"config": {"prefix": "x/"}}}, format="json")
    assert response.status_code == 200, response.json()
    destination = BatchExport.objects.get(id=created["id"]).destination
    assert destination.full_config() == {**S3_FULL_CONFIG, "prefix": "x/"}


def test_patch_of_a_secret_replaces_it(api, prefix):
    created = create(api, prefix)
    new_secret = contract.register_secret("rotated-s3-secret-value-never-returned")
    response = api.patch(
        f"{prefix}{created['id']}/",
        {"destination": {"type": "S3", "config": {"aws_secret_access_key": new_secret}}},
        format="json",
    )
    assert response.status_code == 200, response.json()
    assert response.json()["destination"]["config"] == S3_PUBLIC_CONFIG
    destination = BatchExport.objects.get(id=created["id"]).destination
    assert destination.full_config() == {**S3_FULL_CONFIG, "aws_secret_access_key": new_secret}
    assert new_secret not in json.dumps(destination.config)
    assert new_secret not in destination.encrypted_secrets


def test_put_replaces_config_and_keeps_omitted_secrets(api, prefix, engine):
    created = create(api, prefix)
    engine.clear()
    response = api.put(
        f"{prefix}{created['id']}/",
        {
            "name": "Replaced",
            "interval": "day",
            "destination": {"type": "S3", "config": {"bucket_name": "other-bucket", "region": "us-east-1"}},
        },
        format="json",
    )
    assert response.status_code == 200, response.json()
    body = response.json()
    replaced = {
        **S3_PUBLIC_CONFIG,
        "bucket_name": "other-bucket",
        "region": "us-east-1",
        "prefix": "",  # omitted: back to the default
        "file_format": "JSONLines",
        "compression": None,
    }
    assert body["name"] == "Replaced"
    assert body["interval"] == "day"
    assert body["destination"]["config"] == replaced
    destination = BatchExport.objects.get(id=created["id"]).destination
    assert destination.full_config() == {
        **replaced,
        "aws_access_key_id": ACCESS_KEY_ID,
        "aws_secret_access_key": SECRET_ACCESS_KEY,
    }
    assert calls(engine) == [("sync_batch_export", created["id"], {"created": False, "paused": False})]


def test_destination_type_cannot_change(api, prefix):
    created = create(api, prefix)
    response = api.patch(
        f"{prefix}{created['id']}/",
        {"destination": {"type": "File", "config": {"path": "acme"}}},
        format="json",
    )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "validation_error"
    assert body["attr"] == "destination__type"
    assert "Create a new batch export" in body["detail"]
    destination = BatchExport.objects.get(id=created["id"]).destination
    assert destination.type == "S3"
    assert destination.full_config() == S3_FULL_CONFIG


def test_patch_name_only_leaves_everything_else(api, prefix, engine):
    created = create(api, prefix, interval="week", offset_day=2, offset_hour=5, timezone="Europe/Berlin")
    engine.clear()
    response = api.patch(f"{prefix}{created['id']}/", {"name": "Renamed"}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["name"] == "Renamed"
    unchanged = {k: v for k, v in body.items() if k not in ("name", "last_updated_at")}
    assert unchanged == {k: v for k, v in created.items() if k not in ("name", "last_updated_at")}
    assert parse_time(body["last_updated_at"]) >= parse_time(created["last_updated_at"])
    assert BatchExport.objects.get(id=created["id"]).destination.full_config() == S3_FULL_CONFIG
    assert calls(engine) == [("sync_batch_export", created["id"], {"created": False, "paused": False})]


def test_patch_paused_pauses_and_unpauses_through_the_engine(api, prefix, engine):
    export_id = create(api, prefix)["id"]
    engine.clear()
    paused = api.patch(f"{prefix}{export_id}/", {"paused": True}, format="json").json()
    assert paused["paused"] is True
    assert paused["last_paused_at"] is not None
    assert [c[0] for c in calls(engine)] == ["sync_batch_export", "pause"]
    engine.clear()
    unpaused = api.patch(f"{prefix}{export_id}/", {"paused": False}, format="json").json()
    assert unpaused["paused"] is False
    assert unpaused["last_paused_at"] == paused["last_paused_at"]
    assert calls(engine)[-1] == ("unpause", export_id, {"backfill_from": None})


# Delete


def test_delete_is_soft(api, prefix, engine):
    export_id = create(api, prefix)["id"]
    kept_id = create(api, prefix, name="kept")["id"]
    engine.clear()

    response = api.delete(f"{prefix}{export_id}/")
    assert response.status_code == 204
    assert response.content == b""

    assert_not_found(api.get(f"{prefix}{export_id}/"), export_id)
    listed = api.get(prefix).json()
    assert [e["id"] for e in listed["results"]] == [kept_id]
    assert listed["count"] == 1
    assert BatchExport.objects.get(id=export_id).deleted is True
    assert calls(engine) == [("delete", export_id, {})]
    assert_not_found(api.delete(f"{prefix}{export_id}/"), export_id)


# Pause and unpause


def test_pause(api, prefix, engine):
    export_id = create(api, prefix)["id"]
    engine.clear()
    before = datetime.now(UTC)
    response = api.post(f"{prefix}{export_id}/pause/")
    assert response.status_code == 200
    assert response.json() == {"paused": True}

    stored = BatchExport.objects.get(id=export_id)
    assert stored.paused is True
    assert stored.last_paused_at is not None
    assert stored.last_paused_at >= before - timedelta(seconds=1)
    detail = api.get(f"{prefix}{export_id}/").json()
    assert detail["paused"] is True
    assert parse_time(detail["last_paused_at"]) == stored.last_paused_at
    assert calls(engine) == [("pause", export_id, {})]


def test_pausing_a_paused_export_does_not_call_the_engine_again(api, prefix, engine):
    export_id = create(api, prefix)["id"]
    assert api.post(f"{prefix}{export_id}/pause/").status_code == 200
    first_paused_at = BatchExport.objects.get(id=export_id).last_paused_at
    engine.clear()
    response = api.post(f"{prefix}{export_id}/pause/")
    assert response.status_code == 200
    assert response.json() == {"paused": True}
    assert calls(engine) == []
    assert BatchExport.objects.get(id=export_id).last_paused_at == first_paused_at


def test_unpause(api, prefix, engine):
    export_id = create(api, prefix, paused=True)["id"]
    engine.clear()
    response = api.post(f"{prefix}{export_id}/unpause/", {}, format="json")
    assert response.status_code == 200
    assert response.json() == {"paused": False}
    assert BatchExport.objects.get(id=export_id).paused is False
    assert api.get(f"{prefix}{export_id}/").json()["paused"] is False
    assert calls(engine) == [("unpause", export_id, {"backfill_from": None})]


def test_unpause_with_backfill_backfills_from_the_pause(api, prefix, engine):
    export_id = create(api, prefix)["id"]
    api.post(f"{prefix}{export_id}/pause/")
    paused_at = BatchExport.objects.get(id=export_id).last_paused_at
    assert paused_at is not None
    engine.clear()
    response = api.post(f"{prefix}{export_id}/unpause/", {"backfill": True}, format="json")
    assert response.status_code == 200
    assert response.json() == {"paused": False}
    assert calls(engine) == [("unpause", export_id, {"backfill_from": paused_at})]


def test_unpause_with_backfill_records_a_backfill_of_the_missed_hours(api, prefix, engine):
    """The API (exports/services.py) writes the backfill row, then hands it to the engine."""
    from batchexports.exports.models import BatchExportBackfill

    export_id = create(api, prefix)["id"]
    api.post(f"{prefix}{export_id}/pause/")
    paused_at = datetime.now(UTC).replace(minute=30, second=0, microsecond=0) - timedelta(hours=3)
    BatchExport.objects.filter(id=export_id).update(last_paused_at=paused_at)
    engine.clear()
    assert api.post(f"{prefix}{export_id}/unpause/", {"backfill": True}, format="json").status_code == 200
    (backfill,) = BatchExportBackfill.objects.filter(batch_export_id=export_id)
    assert backfill.start_at == paused_at.replace(minute=0)
    assert backfill.end_at == datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    assert [name for name, *_ in calls(engine)] == ["unpause", "start_backfill"]
    assert calls(engine)[1][1] == str(backfill.id)


def test_unpausing_an_unpaused_export_does_not_call_the_engine(api, prefix, engine):
    export_id = create(api, prefix)["id"]
    engine.clear()
    response = api.post(f"{prefix}{export_id}/unpause/", {"backfill": True}, format="json")
    assert response.status_code == 200
    assert response.json() == {"paused": False}
    assert calls(engine) == []


def test_pause_and_unpause_unknown_export_are_404(api, prefix, engine):
    unknown = str(uuid.uuid4())
    assert_not_found(api.post(f"{prefix}{unknown}/pause/"), unknown)
    assert_not_found(api.post(f"{prefix}{unknown}/unpause/", {}, format="json"), unknown)
    assert calls(engine) == []


# Secrets at rest


def test_secrets_are_encrypted_at_rest(api, project):
    export_id = create(api, prefix_for("projects", project))["id"]
    destination = BatchExportDestination.objects.get(batch_export__id=export_id)
    stored_config = json.dumps(destination.config)
    assert destination.config == S3_PUBLIC_CONFIG
    for secret in (ACCESS_KEY_ID, SECRET_ACCESS_KEY):
        assert secret not in stored_config
        assert secret not in destination.encrypted_secrets
    assert destination.encrypted_secrets  # something is stored
    assert destination.secrets() == {"aws_access_key_id": ACCESS_KEY_ID, "aws_secret_access_key": SECRET_ACCESS_KEY}
    assert destination.full_config() == S3_FULL_CONFIG


def test_secrets_survive_key_rotation(api, project, settings):
    export_id = create(api, prefix_for("projects", project))["id"]
    settings.BATCHEXPORTS_SECRET_KEYS = ["new-key", "test-only-secret-key"]
    destination = BatchExportDestination.objects.get(batch_export__id=export_id)
    assert destination.full_config() == S3_FULL_CONFIG

    # The first key encrypts: once saved again, the old key is no longer needed.
    destination.set_full_config(destination.full_config())
    destination.save()
    settings.BATCHEXPORTS_SECRET_KEYS = ["new-key"]
    assert BatchExportDestination.objects.get(id=destination.id).full_config() == S3_FULL_CONFIG


def test_secrets_under_an_unknown_key_are_unreadable_with_an_actionable_message(api, project, settings):
    export_id = create(api, prefix_for("projects", project))["id"]
    settings.BATCHEXPORTS_SECRET_KEYS = ["other"]
    destination = BatchExportDestination.objects.get(batch_export__id=export_id)
    with pytest.raises(encryption.SecretsUnreadable) as raised:
        destination.full_config()
    message = str(raised.value)
    assert "BATCHEXPORTS_SECRET_KEY" in message
    assert "Restore the old key" in message
    assert SECRET_ACCESS_KEY not in message
    # Reading the export does not need its secrets.
    assert api.get(f"{prefix_for('projects', project)}{export_id}/").status_code == 200


# OpenAPI document, health and the contract checker

ROUTE_SUFFIXES = {
    "/batch_exports/": {"get", "post"},
    "/batch_exports/test/": {"get"},
    "/batch_exports/run_test_step_new/": {"post"},
    "/batch_exports/{id}/": {"get", "put", "patch", "delete"},
    "/batch_exports/{id}/pause/": {"post"},
    "/batch_exports/{id}/unpause/": {"post"},
    "/batch_exports/{id}/backfill/": {"post"},
    "/batch_exports/{id}/logs/": {"get"},
    "/batch_exports/{id}/run_test_step/": {"post"},
    "/batch_exports/{batch_export_id}/runs/": {"get"},
    "/batch_exports/{batch_export_id}/runs/{id}/": {"get"},
    "/batch_exports/{batch_export_id}/runs/{id}/retry/": {"post"},
    "/batch_exports/{batch_export_id}/runs/{id}/cancel/": {"post"},
    "/batch_exports/{batch_export_id}/runs/{id}/logs/": {"get"},
    "/batch_exports/{batch_export_id}/backfills/": {"get", "post"},
    "/batch_exports/{batch_export_id}/backfills/{id}/": {"get"},
    "/batch_exports/{batch_export_id}/backfills/{id}/cancel/": {"post"},
}
SCHEMA_PREFIXES = (
    "/api/organizations/{organization_id}",
    "/api/projects/{project_id}",
    "/api/environments/{project_id}",
)
DESTINATION_TYPES = {
    *("S3", "AwsS3", "S3Compatible", "NoOp", "AzureBlob", "File", "Postgres", "Redshift"),
    *("Snowflake", "BigQuery", "Databricks", "HTTP"),
}


@pytest.fixture
def openapi_document(api: Any) -> dict[str, Any]:
    response = api.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return json.loads(response.content)


def test_openapi_document_describes_every_route(openapi_document):
    assert openapi_document["openapi"].startswith("3.")
    paths = openapi_document["paths"]
    for schema_prefix in SCHEMA_PREFIXES:
        for suffix, methods in ROUTE_SUFFIXES.items():
            path = schema_prefix + suffix
            assert path in paths, f"{path} missing from the OpenAPI document"
            assert methods <= set(paths[path]), f"{path}: {sorted(paths[path])}"
    # Every batch exports route of PostHog's own description is described too.
    for path, operations in contract.raw_spec()["paths"].items():
        if "/batch_exports/" in path:
            assert path in paths
            assert set(operations) <= set(paths[path]), path


def test_openapi_destination_is_a_union_discriminated_by_type(openapi_document):
    schemas = openapi_document["components"]["schemas"]
    destination = schemas["BatchExportDestination"]
    assert destination["discriminator"]["propertyName"] == "type"
    mapping = destination["discriminator"]["mapping"]
    assert set(mapping) == DESTINATION_TYPES
    one_of = {variant["$ref"] for variant in destination["oneOf"]}
    assert set(mapping.values()) == one_of
    for destination_type, ref in mapping.items():
        variant = schemas[ref.removeprefix("#/components/schemas/")]
        assert {"type", "config"} <= set(variant["properties"])
        type_schema = variant["properties"]["type"]
        if "$ref" in type_schema:
            type_schema = schemas[type_schema["$ref"].removeprefix("#/components/schemas/")]
        assert type_schema["enum"] == [destination_type]
    # The batch export's destination is that union.
    export_destination = schemas["BatchExport"]["properties"]["destination"]
    refs = json.dumps(export_destination)
    assert "#/components/schemas/BatchExportDestination" in refs


def test_health(api):
    response = api.get("/_health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["dependencies"]["database"]["ok"] is True
    store = body["dependencies"]["events_store"]
    assert store["ok"] is True
    assert datetime.fromisoformat(store["watermark"]) <= datetime.now(UTC)  # no write in flight: "now"


def test_contract_checker_validates_responses(api, project):
    route = ("GET", "/api/projects/{project_id}/batch_exports/")
    contract.validated_routes.discard(route)
    prefix = prefix_for("projects", project)
    create(api, prefix)
    listed = api.get(prefix)
    assert listed.status_code == 200
    assert route in contract.validated_routes


def test_contract_checker_catches_a_violation(api, project):
    prefix = prefix_for("projects", project)
    create(api, prefix)
    body = api.get(prefix).json()
    path = prefix  # a concrete path: the checker finds the template itself
    contract.validate_against_posthog_schema("GET", path, {}, 200, json.dumps(body).encode(), "application/json")

    body["results"][0]["interval"] = "fortnightly"
    with pytest.raises(ResponseValidationError, match="fortnightly"):
        contract.validate_against_posthog_schema("GET", path, {}, 200, json.dumps(body).encode(), "application/json")


def test_secret_checker_catches_a_leak():
    s3_destination()  # registers the fixture's secrets (idempotent)
    with pytest.raises(AssertionError):
        contract.assert_no_secret_in(json.dumps({"config": {"aws_secret_access_key": SECRET_ACCESS_KEY}}).encode())
    contract.assert_no_secret_in(b'{"config": {"bucket_name": "analytics"}}')
