"""Specification of the destination config schemas: required fields, defaults,
coercion, cross-field rules and which values are secrets. No database needed."""

from __future__ import annotations

from typing import Any

import django
import pytest
from django.conf import settings

if not settings.configured:  # run without pytest-django: `pytest -p no:django`
    settings.configure()
    django.setup()

from rest_framework import serializers

from batchexports.destinations import registry
from batchexports.destinations.base import ALL_MODELS, split_secrets
from batchexports.destinations.files.formats import FILE_FORMATS

PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----\n"

# Exactly the required fields of each type.
MINIMAL: dict[str, dict[str, Any]] = {
    "S3": {"bucket_name": "exports", "region": "eu-west-1"},
    "AwsS3": {"bucket_name": "exports", "region": "eu-west-1", "prefix": "posthog"},
    "S3Compatible": {
        "bucket_name": "exports",
        "region": "auto",
        "prefix": "posthog",
        "endpoint_url": "https://acct.r2.cloudflarestorage.com",
    },
    "NoOp": {},
    "AzureBlob": {"connection_string": "DefaultEndpointsProtocol=https;AccountKey=k", "container_name": "c"},
    "File": {"path": "acme/events"},
    "Postgres": {"user": "u", "password": "p", "host": "db", "database": "analytics"},
    "Redshift": {"user": "u", "password": "p", "host": "rs", "database": "dev"},
    "Snowflake": {
        "account": "org-acct",
        "user": "u",
        "password": "p",
        "database": "DB",
        "warehouse": "WH",
        "schema": "PUBLIC",
    },
    "BigQuery": {
        "project_id": "proj",
        "dataset_id": "ds",
        "private_key": PEM_KEY,
        "private_key_id": "kid",
        "token_uri": "https://oauth2.googleapis.com/token",
        "client_email": "sa@proj.iam.gserviceaccount.com",
    },
    "Databricks": {
        "server_hostname": "dbc-1.cloud.databricks.com",
        "http_path": "/sql/1.0/warehouses/abc",
        "client_id": "cid",
        "client_secret": "csecret",
        "catalog": "main",
        "schema": "default",
        "table_name": "events",
    },
    "HTTP": {"url": "https://eu.i.posthog.com/batch/", "token": "phc_abc"},
}

EVENT_FILTERS = {"include_events": None, "exclude_events": None}
FILE_OUTPUT = {
    **EVENT_FILTERS,
    "file_format": "JSONLines",
    "compression": None,
    "max_file_size_mb": None,
    "legacy_parquet_extension": False,
}
S3_KEYS = {"aws_access_key_id": None, "aws_secret_access_key": None}
POSTGRES_DEFAULTS = {
    **EVENT_FILTERS,
    "schema": "public",
    "table_name": "events",
    "has_self_signed_cert": False,
}

DEFAULTS: dict[str, dict[str, Any]] = {
    "S3": {
        **FILE_OUTPUT,
        "prefix": "",
        "aws_access_key_id": None,
        "aws_secret_access_key": None,
        "endpoint_url": None,
        "encryption": None,
        "kms_key_id": None,
        "use_virtual_style_addressing": False,
    },
    "AwsS3": {**FILE_OUTPUT, **S3_KEYS, "encryption": None, "kms_key_id": None},
    "S3Compatible": {**FILE_OUTPUT, **S3_KEYS, "use_virtual_style_addressing": False},
    "NoOp": {},
    "AzureBlob": {**FILE_OUTPUT, "prefix": ""},
    "File": {**FILE_OUTPUT, "prefix": ""},
    "Postgres": {**POSTGRES_DEFAULTS, "port": 5432},
    "Redshift": {
        **POSTGRES_DEFAULTS,
        "port": 5439,
        "properties_data_type": "varchar",
        "mode": "INSERT",
        "copy_inputs": None,
    },
    "Snowflake": {
        **EVENT_FILTERS,
        "authentication_type": "password",
        "private_key": None,
        "private_key_passphrase": None,
        "table_name": "events",
        "role": None,
    },
    "BigQuery": {**EVENT_FILTERS, "table_id": "events", "use_json_type": False},
    "Databricks": {**EVENT_FILTERS, "use_variant_type": True, "use_automatic_schema_evolution": True},
    "HTTP": EVENT_FILTERS,
}

FILE_TYPES = ["S3", "AwsS3", "S3Compatible", "AzureBlob", "File"]

COPY_INPUTS = {
    "s3_bucket": "stage",
    "region_name": "us-east-1",
    "authorization": "arn:aws:iam::123456789012:role/rs",
}


def validate(destination_type: str, **changes: Any) -> dict[str, Any]:
    config = {**MINIMAL[destination_type], **changes}
    return registry.get(destination_type).validate_config({k: v for k, v in config.items() if v is not ...})


def errors(destination_type: str, **changes: Any) -> dict[str, Any]:
    """The error detail of an invalid config; `...` as a value removes that field."""
    with pytest.raises(serializers.ValidationError) as raised:
        validate(destination_type, **changes)
    return raised.value.detail


def test_every_destination_type_is_registered() -> None:
    assert sorted(registry.types()) == sorted(MINIMAL)


@pytest.mark.parametrize("destination_type", MINIMAL)
def test_minimal_config_is_valid_and_filled_with_defaults(destination_type: str) -> None:
    assert validate(destination_type) == {**MINIMAL[destination_type], **DEFAULTS[destination_type]}


@pytest.mark.parametrize(
    ("destination_type", "field"),
    [(destination_type, field) for destination_type, config in MINIMAL.items() for field in config],
)
def test_missing_required_field_is_reported_on_that_field(destination_type: str, field: str) -> None:
    assert set(errors(destination_type, **{field: ...})) == {field}


@pytest.mark.parametrize("destination_type", [t for t in MINIMAL if t != "NoOp"])
def test_unknown_field_is_rejected_by_name(destination_type: str) -> None:
    detail = errors(destination_type, bucket="typo")
    assert detail == {"bucket": ["Unknown field 'bucket' for this destination."]}


@pytest.mark.parametrize(
    ("destination_type", "field", "raw", "expected"),
    [
        ("Postgres", "port", "5433", 5433),
        ("Postgres", "has_self_signed_cert", "true", True),
        ("Redshift", "port", "5440", 5440),
        ("S3", "max_file_size_mb", "100", 100),
        ("S3", "use_virtual_style_addressing", "true", True),
        ("BigQuery", "use_json_type", "True", True),
        ("Databricks", "use_variant_type", "false", False),
        ("Databricks", "use_automatic_schema_evolution", 0, False),
    ],
)
def test_strings_are_coerced_to_declared_types(destination_type: str, field: str, raw: Any, expected: Any) -> None:
    assert validate(destination_type, **{field: raw})[field] == expected


@pytest.mark.parametrize(
    ("destination_type", "field", "value"),
    [
        ("Postgres", "port", "abc"),
        ("Postgres", "port", 0),
        ("Postgres", "port", 65536),
        ("Postgres", "host", ""),
        ("S3", "bucket_name", "   "),
        ("S3", "max_file_size_mb", 0),
        ("File", "max_file_size_mb", -5),
        ("Redshift", "properties_data_type", "json"),
        ("Redshift", "mode", "UPSERT"),
        ("Snowflake", "authentication_type", "oauth"),
        ("S3", "encryption", "rot13"),
        ("S3", "endpoint_url", "minio:9000"),
        ("HTTP", "url", "ftp://example.com/batch/"),
        ("HTTP", "url", "not a url"),
        ("BigQuery", "client_email", "not-an-email"),
        ("S3", "include_events", "$pageview"),
    ],
)
def test_invalid_values_are_reported_on_their_field(destination_type: str, field: str, value: Any) -> None:
    assert set(errors(destination_type, **{field: value})) == {field}


@pytest.mark.parametrize("destination_type", FILE_TYPES)
@pytest.mark.parametrize(
    ("file_format", "compression"),
    [(fmt, comp) for fmt, comps in FILE_FORMATS.items() for comp in (None, *comps)],
)
def test_every_supported_format_and_compression_is_accepted(
    destination_type: str, file_format: str, compression: str | None
) -> None:
    config = validate(destination_type, file_format=file_format, compression=compression)
    assert (config["file_format"], config["compression"]) == (file_format, compression)


@pytest.mark.parametrize("destination_type", FILE_TYPES)
def test_compression_unsupported_by_the_format_is_rejected_on_compression(destination_type: str) -> None:
    assert errors(destination_type, file_format="JSONLines", compression="lz4") == {
        "compression": [
            "Compression 'lz4' is not supported for file format 'JSONLines'. "
            "Supported compressions are: gzip, brotli, zstd."
        ]
    }
    assert set(errors(destination_type, compression="bzip2")) == {"compression"}
    assert set(errors(destination_type, file_format="XML")) == {"file_format"}


def test_blank_compression_means_no_compression() -> None:
    assert validate("S3", compression="")["compression"] is None


def test_event_filters_are_kept_as_lists() -> None:
    config = validate("Postgres", include_events=["$pageview", "signup"], exclude_events=[])
    assert (config["include_events"], config["exclude_events"]) == (["$pageview", "signup"], [])


@pytest.mark.parametrize(
    "path", ["/var/exports", "\\\\server\\share", "C:\\exports", "C:exports", "..", "a/../b", "a\\..\\b", ""]
)
def test_file_path_must_stay_inside_the_export_directory(path: str) -> None:
    assert set(errors("File", path=path)) == {"path"}


@pytest.mark.parametrize("path", ["exports", "acme/events/", "./acme", "a..b/c"])
def test_file_relative_paths_are_accepted(path: str) -> None:
    assert validate("File", path=path)["path"] == path


@pytest.mark.parametrize("prefix", ["../escape", "/abs", "x/../../y"])
def test_file_prefix_cannot_leave_the_path(prefix: str) -> None:
    assert set(errors("File", prefix=prefix)) == {"prefix"}


def test_s3_kms_encryption_requires_a_key_id() -> None:
    assert set(errors("S3", encryption="aws:kms")) == {"kms_key_id"}
    assert set(errors("S3", encryption="aws:kms", kms_key_id="")) == {"kms_key_id"}
    config = validate("S3", encryption="aws:kms", kms_key_id="arn:aws:kms:eu-west-1:1:key/k")
    assert config["kms_key_id"] == "arn:aws:kms:eu-west-1:1:key/k"
    assert validate("S3", encryption="AES256")["kms_key_id"] is None


def test_s3_access_keys_come_in_pairs() -> None:
    assert set(errors("S3", aws_access_key_id="AKIA")) == {"aws_secret_access_key"}
    assert set(errors("S3", aws_secret_access_key="shh")) == {"aws_access_key_id"}
    blank = validate("S3", aws_access_key_id="", aws_secret_access_key="")
    assert (blank["aws_access_key_id"], blank["aws_secret_access_key"]) == (None, None)


def test_s3_accepts_endpoints_of_compatible_stores() -> None:
    assert validate("S3", endpoint_url="http://minio:9000")["endpoint_url"] == "http://minio:9000"
    assert validate("S3", endpoint_url="")["endpoint_url"] is None


def test_snowflake_password_authentication_requires_a_password() -> None:
    assert set(errors("Snowflake", password=...)) == {"password"}
    assert set(errors("Snowflake", password="")) == {"password"}


def test_snowflake_keypair_authentication_requires_a_pem_private_key() -> None:
    assert set(errors("Snowflake", authentication_type="keypair", password=...)) == {"private_key"}
    assert set(errors("Snowflake", authentication_type="keypair", private_key="abc")) == {"private_key"}
    config = validate("Snowflake", authentication_type="keypair", password="", private_key=PEM_KEY)
    assert (config["private_key"], config["password"]) == (PEM_KEY, None)


def test_redshift_copy_mode_requires_copy_inputs() -> None:
    detail = errors("Redshift", mode="COPY")
    assert set(detail) == {"copy_inputs"}
    assert "s3_bucket" in str(detail["copy_inputs"])


@pytest.mark.parametrize("missing", ["s3_bucket", "region_name", "authorization"])
def test_redshift_copy_inputs_report_missing_fields_inside_copy_inputs(missing: str) -> None:
    copy_inputs = {k: v for k, v in COPY_INPUTS.items() if k != missing}
    detail = errors("Redshift", mode="COPY", copy_inputs=copy_inputs)
    assert set(detail) == {"copy_inputs"}
    assert set(detail["copy_inputs"]) == {missing}


def test_redshift_copy_inputs_accept_a_role_or_credentials() -> None:
    with_role = validate("Redshift", mode="COPY", copy_inputs=COPY_INPUTS)["copy_inputs"]
    assert with_role == {**COPY_INPUTS, "s3_key_prefix": "", "bucket_credentials": None}
    keys = {"aws_access_key_id": "AKIA", "aws_secret_access_key": "shh"}
    with_keys = validate(
        "Redshift",
        mode="COPY",
        copy_inputs={**COPY_INPUTS, "authorization": keys, "bucket_credentials": keys},
    )["copy_inputs"]
    assert (with_keys["authorization"], with_keys["bucket_credentials"]) == (keys, keys)


@pytest.mark.parametrize(
    ("authorization", "error_keys"),
    [
        ("my-role", None),
        ("", None),
        (42, None),
        ({"aws_access_key_id": "AKIA"}, {"aws_secret_access_key"}),
        ({"aws_access_key_id": "AKIA", "aws_secret_access_key": "s", "token": "t"}, {"token"}),
    ],
)
def test_redshift_copy_authorization_is_validated(authorization: Any, error_keys: set[str] | None) -> None:
    detail = errors("Redshift", mode="COPY", copy_inputs={**COPY_INPUTS, "authorization": authorization})
    authorization_errors = detail["copy_inputs"]["authorization"]
    if error_keys is None:
        assert "IAM role" in str(authorization_errors)
    else:
        assert set(authorization_errors) == error_keys


def test_databricks_hostname_is_taken_from_a_pasted_url() -> None:
    config = validate("Databricks", server_hostname="https://dbc-1.cloud.databricks.com/")
    assert config["server_hostname"] == "dbc-1.cloud.databricks.com"
    assert set(errors("Databricks", server_hostname="https://dbc-1.cloud.databricks.com/sql")) == {"server_hostname"}


@pytest.mark.parametrize("destination_type", MINIMAL)
def test_supported_models(destination_type: str) -> None:
    expected = frozenset({"events"}) if destination_type == "HTTP" else ALL_MODELS
    assert registry.get(destination_type).supported_models == expected


# Every secret of each type set to a distinct value; the values must all leave the public part.
CREDENTIALS = {"aws_access_key_id": "secret-copy-key-id", "aws_secret_access_key": "secret-copy-key"}
WITH_SECRETS: dict[str, dict[str, Any]] = {
    "S3": {"aws_access_key_id": "secret-key-id", "aws_secret_access_key": "secret-key"},
    "AwsS3": {"aws_access_key_id": "secret-key-id", "aws_secret_access_key": "secret-key"},
    "S3Compatible": {"aws_access_key_id": "secret-key-id", "aws_secret_access_key": "secret-key"},
    "NoOp": {},
    "AzureBlob": {"connection_string": "secret-connection-string"},
    "File": {},
    "Postgres": {"user": "secret-user", "password": "secret-password"},
    "Redshift": {
        "user": "secret-user",
        "password": "secret-password",
        "mode": "COPY",
        "copy_inputs": {
            **COPY_INPUTS,
            "authorization": CREDENTIALS,
            "bucket_credentials": {k: v.replace("copy", "bucket") for k, v in CREDENTIALS.items()},
        },
    },
    "Snowflake": {
        "user": "secret-user",
        "password": "secret-password",
        "authentication_type": "keypair",
        "private_key": PEM_KEY + "secret-pem",
        "private_key_passphrase": "secret-passphrase",
    },
    "BigQuery": {
        "private_key": PEM_KEY + "secret-pem",
        "private_key_id": "secret-key-id",
        "client_email": "secret-sa@proj.iam.gserviceaccount.com",
        "token_uri": "https://secret-token-uri.example.com/token",
    },
    "Databricks": {"client_id": "secret-client-id", "client_secret": "secret-client-secret"},
    "HTTP": {"token": "secret-token"},
}


def leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in leaves(item)]
    if isinstance(value, list):
        return [leaf for item in value for leaf in leaves(item)]
    return [value]


@pytest.mark.parametrize("destination_type", MINIMAL)
def test_split_secrets_removes_every_secret_value_from_the_public_part(destination_type: str) -> None:
    spec = registry.get(destination_type)
    config = validate(destination_type, **WITH_SECRETS[destination_type])
    public, secrets = split_secrets(config, spec.secret_fields)

    secret_values = [leaf for leaf in leaves(WITH_SECRETS[destination_type]) if "secret" in str(leaf)]
    assert sorted(leaves(secrets)) == sorted(secret_values)
    assert not [leaf for leaf in leaves(public) if "secret" in str(leaf)]
    # Nothing else moved: public + secrets cover the whole config.
    assert len(leaves(public)) + len(leaves(secrets)) == len(leaves(config))


def test_redshift_role_arn_is_not_a_secret() -> None:
    spec = registry.get("Redshift")
    public, secrets = split_secrets(validate("Redshift", mode="COPY", copy_inputs=COPY_INPUTS), spec.secret_fields)
    assert public["copy_inputs"]["authorization"] == COPY_INPUTS["authorization"]
    assert secrets == {"user": "u", "password": "p"}


# PostHog's `BatchExportDestination.secret_fields` (products/batch_exports/backend/models/batch_export.py),
# which its serializer's `to_representation` strips at any depth. Databricks and AzureBlob keep
# their credentials in an integration there; here they are config fields, and secret too.
POSTHOG_SECRET_FIELDS: dict[str, set[str]] = {
    "S3": {"aws_access_key_id", "aws_secret_access_key"},
    "AwsS3": {"aws_access_key_id", "aws_secret_access_key"},
    "S3Compatible": {"aws_access_key_id", "aws_secret_access_key"},
    "Snowflake": {"user", "password", "private_key", "private_key_passphrase"},
    "Postgres": {"user", "password"},
    "Redshift": {"user", "password", "aws_access_key_id", "aws_secret_access_key"},
    "BigQuery": {"private_key", "private_key_id", "client_email", "token_uri"},
    "Databricks": {"client_id", "client_secret"},
    "AzureBlob": {"connection_string"},
    "HTTP": {"token"},
    "NoOp": set(),
    "File": set(),
}


@pytest.mark.parametrize("destination_type", MINIMAL)
def test_every_field_posthog_hides_is_a_secret(destination_type: str) -> None:
    """A field name PostHog strips from responses is a secret wherever it appears in the config."""
    secret_names = {path[-1] for path in registry.get(destination_type).secret_fields}
    assert secret_names == POSTHOG_SECRET_FIELDS[destination_type]


def test_s3_compatible_requires_an_endpoint_and_aws_s3_takes_none() -> None:
    assert errors("S3Compatible", endpoint_url=...) == {"endpoint_url": ["This field is required."]}
    assert set(errors("S3Compatible", endpoint_url="r2.example.com")) == {"endpoint_url"}
    assert errors("AwsS3", endpoint_url="http://localhost:9000") == {
        "endpoint_url": ["Unknown field 'endpoint_url' for this destination."]
    }
    assert set(errors("AwsS3", use_virtual_style_addressing=True)) == {"use_virtual_style_addressing"}
    assert set(errors("S3Compatible", encryption="AES256")) == {"encryption"}


@pytest.mark.parametrize("destination_type", ["AwsS3", "S3Compatible"])
def test_the_new_s3_types_require_a_prefix_that_is_not_blank(destination_type: str) -> None:
    """PostHog: `prefix` has no default in `S3FamilyBaseInputs`, and an empty one is refused."""
    assert set(errors(destination_type, prefix="")) == {"prefix"}
    assert validate("S3")["prefix"] == "", "the legacy S3 type keeps its optional prefix"


def test_noop_accepts_any_config() -> None:
    config = {"arg": "hello", "anything": {"nested": [1, 2]}, "bucket": "x"}
    assert validate("NoOp", **config) == config
    assert registry.get("NoOp").reads_source is False
