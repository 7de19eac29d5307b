"""Specification of request validation of batch exports: one test per rule.

Every rejection is a 400 with `type` "validation_error", the `attr` of the offending field
(nested fields joined by `__`) and a `detail` that tells the client what to do.
"""

from __future__ import annotations

from typing import Any

import pytest

from batchexports.exports.models import BatchExport
from tests import contract
from tests.conftest import export_payload, prefix_for

PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC-validation-test\n-----END PRIVATE KEY-----\n"
secret = contract.register_secret

# A minimal valid config of each destination type (only its required fields), and those fields.
MINIMAL_CONFIGS: dict[str, dict[str, Any]] = {
    "S3": {"bucket_name": "exports", "region": "eu-west-1"},
    "AzureBlob": {
        "connection_string": secret("DefaultEndpointsProtocol=https;AccountName=acme;AccountKey=validation-key=="),
        "container_name": "events",
    },
    "File": {"path": "acme/events"},
    "Postgres": {
        "user": secret("validation-pg-user"),
        "password": secret("validation-pg-password"),
        "host": "db.internal",
        "database": "analytics",
    },
    "Redshift": {
        "user": secret("validation-rs-user"),
        "password": secret("validation-rs-password"),
        "host": "cluster.redshift.amazonaws.com",
        "database": "dev",
    },
    "Snowflake": {
        "account": "myorg-myaccount",
        "user": secret("validation-sf-user"),
        "password": secret("validation-sf-password"),
        "database": "ANALYTICS",
        "warehouse": "COMPUTE_WH",
        "schema": "PUBLIC",
    },
    "BigQuery": {
        "project_id": "acme-analytics",
        "dataset_id": "posthog",
        "private_key": secret(PEM_KEY),
        "private_key_id": secret("validation-bq-private-key-id"),
        "token_uri": "https://oauth2.googleapis.com/token",
        "client_email": "exporter@acme-analytics.iam.gserviceaccount.com",
    },
    "Databricks": {
        "server_hostname": "dbc-a1b2c3d4-e5f6.cloud.databricks.com",
        "http_path": "/sql/1.0/warehouses/abc",
        "client_id": secret("validation-dbx-client-id"),
        "client_secret": secret("validation-dbx-client-secret"),
        "catalog": "main",
        "schema": "default",
        "table_name": "events",
    },
    "HTTP": {"url": "https://eu.i.posthog.com/batch/", "token": secret("phc_validation_token_of_receiver")},
}
REQUIRED_FIELDS = [(kind, name) for kind, config in MINIMAL_CONFIGS.items() for name in config]
INTERVALS = ("hour", "day", "week", "every 5 minutes", "every 15 minutes")


@pytest.fixture
def url(project: Any) -> str:
    return prefix_for("projects", project)


def destination(kind: str, **config: Any) -> dict[str, Any]:
    return {"type": kind, "config": {**MINIMAL_CONFIGS[kind], **config}}


def post(api: Any, url: str, payload: dict[str, Any]) -> Any:
    return api.post(url, payload, format="json")


def assert_rejected(response: Any, attr: str, *phrases: str, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == 400, response.content
    body = response.json()
    assert body["type"] == "validation_error", body
    assert body["attr"] == attr, body
    for phrase in phrases:
        assert phrase in body["detail"], body
    if code is not None:
        assert body["code"] == code, body
    assert not BatchExport.objects.exists()
    return body


def created(response: Any) -> dict[str, Any]:
    assert response.status_code == 201, response.content
    return response.json()


# Name, interval, model


def test_name_is_required(api, url):
    payload = export_payload()
    del payload["name"]
    assert_rejected(post(api, url, payload), "name", "This field is required.", code="required")


@pytest.mark.parametrize("blank", ["", "   "])
def test_name_cannot_be_blank(api, url, blank):
    assert_rejected(post(api, url, export_payload(name=blank)), "name", "blank")


def test_interval_is_required(api, url):
    payload = export_payload()
    del payload["interval"]
    assert_rejected(post(api, url, payload), "interval", "This field is required.", code="required")


def test_unknown_interval(api, url):
    assert_rejected(
        post(api, url, export_payload(interval="fortnightly")), "interval", "fortnightly", code="invalid_choice"
    )


@pytest.mark.parametrize("interval", INTERVALS)
def test_every_interval_is_accepted(api, url, interval):
    body = created(post(api, url, export_payload(interval=interval)))
    assert body["interval"] == interval
    assert BatchExport.objects.get(id=body["id"]).interval == interval


def test_unknown_model(api, url):
    assert_rejected(post(api, url, export_payload(model="groups")), "model", "groups", code="invalid_choice")


@pytest.mark.parametrize("model", ["events", "persons", "sessions"])
def test_every_model_is_accepted(api, url, model):
    assert created(post(api, url, export_payload(model=model)))["model"] == model


def test_http_exports_only_events(api, url):
    payload = export_payload(model="persons", destination=destination("HTTP"))
    assert_rejected(post(api, url, payload), "model", "only support the events model", "persons")


def test_http_export_cannot_be_patched_to_persons(api, url):
    export_id = created(post(api, url, export_payload(destination=destination("HTTP"))))["id"]
    response = api.patch(f"{url}{export_id}/", {"model": "persons"}, format="json")
    assert response.status_code == 400
    assert response.json()["attr"] == "model"
    assert BatchExport.objects.get(id=export_id).model == "events"


# Destination


def test_destination_is_required(api, url):
    payload = export_payload()
    del payload["destination"]
    assert_rejected(post(api, url, payload), "destination", "This field is required.", code="required")


def test_unknown_destination_type(api, url):
    payload = export_payload(destination={"type": "Kafka", "config": {}})
    assert_rejected(post(api, url, payload), "destination__type", "Kafka", code="invalid_choice")


def test_unknown_config_field(api, url):
    payload = export_payload(destination=destination("S3", bucket="typo"))
    assert_rejected(post(api, url, payload), "destination__config__bucket", "Unknown field 'bucket'")


@pytest.mark.parametrize("kind", list(MINIMAL_CONFIGS))
def test_minimal_config_of_each_type_is_accepted(api, url, kind):
    body = created(post(api, url, export_payload(destination=destination(kind))))
    assert body["destination"]["type"] == kind
    stored = BatchExport.objects.get(id=body["id"]).destination.full_config()
    assert {name: stored[name] for name in MINIMAL_CONFIGS[kind]} == MINIMAL_CONFIGS[kind]


@pytest.mark.parametrize(("kind", "field"), REQUIRED_FIELDS, ids=[f"{k}-{f}" for k, f in REQUIRED_FIELDS])
def test_required_config_field_is_required(api, url, kind, field):
    config = {name: value for name, value in MINIMAL_CONFIGS[kind].items() if name != field}
    payload = export_payload(destination={"type": kind, "config": config})
    # Snowflake's password is required by its default authentication_type, hence "required" alone.
    assert_rejected(post(api, url, payload), f"destination__config__{field}", "required")


def test_config_values_are_coerced(api, url):
    payload = export_payload(destination=destination("Postgres", port="5432", has_self_signed_cert="true"))
    body = created(post(api, url, payload))
    assert body["destination"]["config"]["port"] == 5432
    assert body["destination"]["config"]["has_self_signed_cert"] is True
    stored = BatchExport.objects.get(id=body["id"]).destination
    assert stored.config["port"] == 5432
    assert stored.config["has_self_signed_cert"] is True
    assert "user" not in body["destination"]["config"]
    assert "password" not in body["destination"]["config"]


def test_config_value_that_cannot_be_coerced(api, url):
    payload = export_payload(destination=destination("Postgres", port="fifty"))
    assert_rejected(post(api, url, payload), "destination__config__port", "valid integer")


def test_parquet_with_lz4_is_accepted(api, url):
    payload = export_payload(destination=destination("S3", file_format="Parquet", compression="lz4"))
    config = created(post(api, url, payload))["destination"]["config"]
    assert (config["file_format"], config["compression"]) == ("Parquet", "lz4")


def test_jsonlines_with_lz4_is_rejected(api, url):
    payload = export_payload(destination=destination("S3", file_format="JSONLines", compression="lz4"))
    assert_rejected(
        post(api, url, payload), "destination__config__compression", "'lz4'", "Supported compressions are: gzip"
    )


@pytest.mark.parametrize("path", ["/etc/exports", "acme/../../etc", ".."])
def test_file_path_must_stay_inside_the_export_directory(api, url, path):
    payload = export_payload(destination=destination("File", path=path))
    body = assert_rejected(post(api, url, payload), "destination__config__path")
    assert "relative to the export directory" in body["detail"] or "stays inside the export directory" in body["detail"]


def test_snowflake_keypair_needs_a_private_key(api, url):
    config = {**MINIMAL_CONFIGS["Snowflake"], "authentication_type": "keypair"}
    del config["password"]
    payload = export_payload(destination={"type": "Snowflake", "config": config})
    assert_rejected(post(api, url, payload), "destination__config__private_key", "private_key is required")


def test_snowflake_keypair_with_a_private_key_is_accepted(api, url):
    config = {**MINIMAL_CONFIGS["Snowflake"], "authentication_type": "keypair", "private_key": PEM_KEY}
    del config["password"]
    body = created(post(api, url, export_payload(destination={"type": "Snowflake", "config": config})))
    assert body["destination"]["config"]["authentication_type"] == "keypair"
    assert "private_key" not in body["destination"]["config"]


def test_redshift_copy_needs_copy_inputs(api, url):
    payload = export_payload(destination=destination("Redshift", mode="COPY"))
    assert_rejected(post(api, url, payload), "destination__config__copy_inputs", "copy_inputs is required", "s3_bucket")


# Offsets


def test_offset_hour_does_not_apply_to_hourly_exports(api, url):
    assert_rejected(post(api, url, export_payload(interval="hour", offset_hour=3)), "offset_hour", "daily and weekly")


def test_offset_day_does_not_apply_to_daily_exports(api, url):
    assert_rejected(post(api, url, export_payload(interval="day", offset_day=1)), "offset_day", "weekly")


@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [("offset_day", 7, "6"), ("offset_day", -1, "0"), ("offset_hour", 24, "23"), ("offset_hour", -1, "0")],
)
def test_offsets_out_of_range(api, url, field, value, limit):
    body = assert_rejected(post(api, url, export_payload(interval="week", **{field: value})), field)
    assert limit in body["detail"]


def test_weekly_offsets_are_stored_and_returned(api, url):
    body = created(post(api, url, export_payload(interval="week", offset_day=1, offset_hour=3)))
    assert (body["offset_day"], body["offset_hour"]) == (1, 3)
    assert BatchExport.objects.get(id=body["id"]).interval_offset == 86400 + 3 * 3600
    assert (api.get(f"{url}{body['id']}/").json()["offset_day"], body["offset_hour"]) == (1, 3)


def test_daily_offset_hour_is_stored_and_returned(api, url):
    body = created(post(api, url, export_payload(interval="day", offset_hour=6)))
    assert (body["offset_day"], body["offset_hour"]) == (None, 6)
    assert BatchExport.objects.get(id=body["id"]).interval_offset == 6 * 3600


def test_patch_offset_hour_keeps_offset_day(api, url):
    export_id = created(post(api, url, export_payload(interval="week", offset_day=2, offset_hour=3)))["id"]
    response = api.patch(f"{url}{export_id}/", {"offset_hour": 7}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["offset_day"], response.json()["offset_hour"]) == (2, 7)
    assert BatchExport.objects.get(id=export_id).interval_offset == 2 * 86400 + 7 * 3600


def test_changing_interval_to_hour_clears_offsets(api, url):
    export_id = created(post(api, url, export_payload(interval="week", offset_day=2, offset_hour=3)))["id"]
    response = api.patch(f"{url}{export_id}/", {"interval": "hour"}, format="json")
    assert response.status_code == 200, response.content
    assert (response.json()["offset_day"], response.json()["offset_hour"]) == (None, None)
    assert BatchExport.objects.get(id=export_id).interval_offset is None


def test_patch_offset_day_on_a_daily_export_is_rejected(api, url):
    export_id = created(post(api, url, export_payload(interval="day", offset_hour=3)))["id"]
    response = api.patch(f"{url}{export_id}/", {"offset_day": 1}, format="json")
    assert response.status_code == 400
    assert response.json()["attr"] == "offset_day"
    assert BatchExport.objects.get(id=export_id).interval_offset == 3 * 3600


# Timezone, time range, query and filters


def test_unknown_timezone(api, url):
    assert_rejected(
        post(api, url, export_payload(timezone="Mars/Olympus")), "timezone", "Mars/Olympus", "Europe/Berlin"
    )


def test_known_timezone_is_stored(api, url):
    body = created(post(api, url, export_payload(timezone="Europe/Berlin")))
    assert body["timezone"] == "Europe/Berlin"
    assert BatchExport.objects.get(id=body["id"]).timezone == "Europe/Berlin"


def test_start_at_after_end_at(api, url):
    payload = export_payload(start_at="2024-05-02T00:00:00Z", end_at="2024-05-01T00:00:00Z")
    assert_rejected(post(api, url, payload), "end_at", "end_at must be after start_at")


def test_start_at_and_end_at_are_stored(api, url):
    body = created(post(api, url, export_payload(start_at="2024-05-01T00:00:00Z", end_at="2024-06-01T00:00:00Z")))
    assert body["start_at"] == "2024-05-01T00:00:00Z"
    assert body["end_at"] == "2024-06-01T00:00:00Z"


def test_hogql_query_and_filters_are_returned_as_given(api, url):
    query = "SELECT uuid, event, properties.$browser AS browser FROM events"
    filters = [{"key": "$browser", "type": "event", "value": ["Chrome"], "operator": "exact"}]
    body = created(post(api, url, export_payload(hogql_query=query, filters=filters)))
    assert body["hogql_query"] == query
    assert body["filters"] == filters
    stored = BatchExport.objects.get(id=body["id"])
    assert (stored.hogql_query, stored.filters) == (query, filters)
    assert api.get(f"{url}{body['id']}/").json()["filters"] == filters


def test_filters_may_be_null(api, url):
    assert created(post(api, url, export_payload(filters=None)))["filters"] is None


def test_filters_must_be_a_list(api, url):
    payload = export_payload(filters={"key": "$browser", "value": "Chrome"})
    assert_rejected(post(api, url, payload), "filters", "must be a list")


# Integrations


@pytest.mark.parametrize("field", ["integration", "integration_id"])
def test_integrations_are_rejected(api, url, field):
    payload = export_payload()
    payload["destination"][field] = 42
    assert_rejected(post(api, url, payload), "destination__integration", "Integrations are not supported", "config")
