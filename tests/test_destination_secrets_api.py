"""Responses hide what PostHog hides: for every destination type, the fields PostHog's serializer
strips from `destination.config` (its `BatchExportDestination.secret_fields`) never come back from
the API, while the export keeps them for its runs."""

from __future__ import annotations

from typing import Any

import pytest

from batchexports.destinations import registry
from batchexports.exports import encryption
from batchexports.exports.models import BatchExport, BatchExportDestination
from tests import contract
from tests.conftest import prefix_for
from tests.test_destination_configs import MINIMAL, POSTHOG_SECRET_FIELDS, WITH_SECRETS, leaves


def names_at_any_depth(value: Any) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {name for item in value.values() for name in names_at_any_depth(item)}
    if isinstance(value, list):
        return {name for item in value for name in names_at_any_depth(item)}
    return set()


def test_every_registered_type_is_covered():
    assert set(registry.types()) == set(MINIMAL) == set(POSTHOG_SECRET_FIELDS)


@pytest.mark.parametrize("destination_type", sorted(MINIMAL))
def test_no_response_carries_a_field_posthog_hides(api, project, engine, destination_type):
    base = prefix_for("projects", project)
    config = {**MINIMAL[destination_type], **WITH_SECRETS[destination_type]}
    for leaf in leaves(WITH_SECRETS[destination_type]):
        if "secret" in str(leaf):
            contract.register_secret(str(leaf))  # the checked client fails on any response showing it
    payload = {
        "name": destination_type,
        "interval": "hour",
        "destination": {"type": destination_type, "config": config},
    }
    created = api.post(base, payload, format="json")
    assert created.status_code == 201, created.json()
    export_id = created.json()["id"]
    patched = api.patch(f"{base}{export_id}/", {"name": "renamed"}, format="json")
    assert patched.status_code == 200, patched.json()
    responses = [
        created.json(),
        patched.json(),
        api.get(f"{base}{export_id}/").json(),
        *api.get(base).json()["results"],
    ]
    hidden = POSTHOG_SECRET_FIELDS[destination_type]
    for response in responses:
        shown = names_at_any_depth(response["destination"]["config"])
        assert not shown & hidden, f"{destination_type} shows {sorted(shown & hidden)}"
    full = BatchExport.objects.get(id=export_id).destination.full_config()
    assert {name for name in names_at_any_depth(WITH_SECRETS[destination_type])} <= names_at_any_depth(full)


def test_a_bigquery_row_saved_before_client_email_was_secret_hides_it_and_keeps_it(api, project, engine):
    """Until now `client_email` and `token_uri` were stored in the public part of the config."""
    base = prefix_for("projects", project)
    config = {**MINIMAL["BigQuery"], "client_email": contract.register_secret("old-sa@proj.iam.gserviceaccount.com")}
    created = api.post(
        base, {"name": "bq", "interval": "hour", "destination": {"type": "BigQuery", "config": config}}, format="json"
    )
    assert created.status_code == 201, created.json()
    destination = BatchExportDestination.objects.get(batch_export__id=created.json()["id"])
    secrets = destination.secrets()
    destination.config = {
        **destination.config,
        "client_email": secrets.pop("client_email"),
        "token_uri": secrets.pop("token_uri"),
    }
    destination.encrypted_secrets = encryption.encrypt_json(secrets)  # private_key, private_key_id
    destination.save()  # as the previous version stored it

    shown = api.get(f"{base}{created.json()['id']}/").json()["destination"]["config"]
    assert "client_email" not in shown and "token_uri" not in shown
    full = destination.full_config()
    assert full["client_email"] == "old-sa@proj.iam.gserviceaccount.com" and full["private_key"]
