"""Config schema of the BigQuery destination: rows loaded into a table of a dataset, as a
Google Cloud service account whose key fields (`private_key`, `private_key_id`, `token_uri`,
`client_email`) are copied from its JSON key file.

Secrets, as PostHog hides them: `private_key`, `private_key_id`, `client_email`, `token_uri`.
This module validates configuration; the sink (`sink.py`) and the test steps
(`checks.py`) connect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from batchexports.destinations.base import DestinationSpec, Sink
from batchexports.destinations.bigquery import checks as bigquery_checks
from batchexports.destinations.fields import EventFilterConfigSerializer, HttpUrlField


class BigQueryConfigSerializer(EventFilterConfigSerializer):
    project_id = serializers.CharField(help_text="Google Cloud project of the dataset.")
    dataset_id = serializers.CharField(help_text="Dataset of the destination table.")
    table_id = serializers.CharField(
        required=False, default="events", help_text="Destination table; created when it does not exist."
    )
    private_key = serializers.CharField(
        trim_whitespace=False,
        help_text="'private_key' of the service account's JSON key file.",
        style={"input_type": "password", "base_template": "textarea.html"},  # a PEM block: many lines
    )
    private_key_id = serializers.CharField(help_text="'private_key_id' of the service account's JSON key file.")
    token_uri = HttpUrlField(help_text="'token_uri' of the key file, usually 'https://oauth2.googleapis.com/token'.")
    client_email = serializers.EmailField(help_text="'client_email' of the key file: the service account.")
    use_json_type = serializers.BooleanField(
        required=False, default=False, help_text="Store properties as BigQuery JSON instead of STRING."
    )


def _bigquery_sink(config: Mapping[str, Any]) -> Sink:
    from batchexports.destinations.bigquery.sink import BigQuerySink

    return BigQuerySink(config)


SPEC = DestinationSpec(
    type="BigQuery",
    label="BigQuery",
    config_serializer=BigQueryConfigSerializer,
    secret_fields=(("private_key",), ("private_key_id",), ("client_email",), ("token_uri",)),
    description="Rows in a Google BigQuery table.",
    test_steps=bigquery_checks.STEPS,
    sink_factory=_bigquery_sink,
)
