"""The web page knows PostHog's current destination types: it offers AwsS3, S3Compatible and NoOp
for new exports (not the legacy S3, which still opens for editing), with forms built from their
config schemas."""

from __future__ import annotations

import re
from typing import Any

import pytest

from batchexports.exports.models import BatchExport
from tests import contract
from tests.conftest import export_payload, prefix_for
from tests.test_web_views import errors_beside

pytestmark = pytest.mark.django_db


@pytest.fixture
def web(client: Any, user: Any) -> Any:
    client.force_login(user)
    return client


def test_the_chooser_offers_the_current_types_and_not_the_legacy_s3(web, project):
    chooser = web.get(f"/projects/{project.id}/exports/new/").content.decode()
    offered = set(re.findall(r"\?type=([A-Za-z0-9]+)", chooser))
    assert {"AwsS3", "S3Compatible", "NoOp", "File"} <= offered
    assert "S3" not in offered


def test_the_s3_compatible_form_asks_for_the_endpoint_and_the_aws_form_does_not(web, project):
    compatible = web.get(f"/projects/{project.id}/exports/new/?type=S3Compatible").content.decode()
    assert re.search(r'for="config-endpoint-url">Endpoint URL <span class="req"', compatible)
    assert 'name="config.legacy_parquet_extension"' in compatible
    aws = web.get(f"/projects/{project.id}/exports/new/?type=AwsS3").content.decode()
    assert 'name="config.endpoint_url"' not in aws and 'name="config.kms_key_id"' in aws


def s3_compatible_form(**overrides: str) -> dict[str, str]:
    form = {
        "destination_type": "S3Compatible",
        "name": "To R2",
        "model": "events",
        "interval": "hour",
        "timezone": "UTC",
        "config.bucket_name": "analytics",
        "config.region": "auto",
        "config.prefix": "posthog/{table}",
        "config.endpoint_url": "https://acct.r2.cloudflarestorage.com",
        "config.aws_access_key_id": contract.register_secret("AKIAWEBFORMKEY000001"),
        "config.aws_secret_access_key": contract.register_secret("web-form-s3-compatible-secret"),
        "config.file_format": "Parquet",
        "config.compression": "zstd",
        "config.max_file_size_mb": "",
        "config.include_events": "",
        "config.exclude_events": "",
        "hogql_query": "",
        "filters": "",
    }
    form.update(overrides)
    return form


def test_an_s3_compatible_export_is_created_through_the_form(web, project, engine):
    missing = web.post(f"/projects/{project.id}/exports/new/", s3_compatible_form(**{"config.endpoint_url": ""}))
    assert missing.status_code == 200
    assert errors_beside(missing.content.decode(), "config.endpoint_url")
    response = web.post(f"/projects/{project.id}/exports/new/", s3_compatible_form())
    assert response.status_code == 302, response.content.decode()[:2000]
    export = BatchExport.objects.get(team=project)
    assert export.destination.type == "S3Compatible"
    assert export.destination.config["endpoint_url"] == "https://acct.r2.cloudflarestorage.com"
    assert "aws_secret_access_key" not in export.destination.config
    assert export.destination.full_config()["aws_secret_access_key"] == "web-form-s3-compatible-secret"


def test_a_legacy_s3_export_still_opens_for_editing(web, api, project, engine):
    created = api.post(prefix_for("projects", project), export_payload(), format="json")
    assert created.status_code == 201, created.json()
    page = web.get(f"/projects/{project.id}/exports/{created.json()['id']}/edit/")
    assert page.status_code == 200
    assert 'value="analytics"' in page.content.decode()
