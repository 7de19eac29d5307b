"""Config schema of the Databricks destination: rows loaded into a Unity Catalog table
through a SQL warehouse, authenticated as an OAuth service principal (`client_id` and
`client_secret`, both secrets).

This module validates configuration; the sink (`sink.py`) and the test steps
(`checks.py`) connect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from batchexports.destinations.base import DestinationSpec, Sink
from batchexports.destinations.databricks import checks as databricks_checks
from batchexports.destinations.fields import EventFilterConfigSerializer


class DatabricksConfigSerializer(EventFilterConfigSerializer):
    server_hostname = serializers.CharField(
        help_text="Workspace host name, e.g. 'dbc-a1b2c3d4-e5f6.cloud.databricks.com' (no scheme)."
    )
    http_path = serializers.CharField(help_text="HTTP path of the SQL warehouse, e.g. '/sql/1.0/warehouses/abc'.")
    client_id = serializers.CharField(help_text="OAuth client id of the service principal.")
    client_secret = serializers.CharField(trim_whitespace=False, help_text="OAuth secret of the service principal.")
    catalog = serializers.CharField(help_text="Unity Catalog catalog.")
    schema = serializers.CharField(help_text="Schema inside the catalog.")
    table_name = serializers.CharField(help_text="Destination table; created when it does not exist.")
    use_variant_type = serializers.BooleanField(
        required=False, default=True, help_text="Store properties as VARIANT instead of STRING."
    )
    use_automatic_schema_evolution = serializers.BooleanField(
        required=False, default=True, help_text="Add columns of new fields to the table automatically."
    )

    def validate_server_hostname(self, value: str) -> str:
        # Users often paste the workspace URL; keep only its host name.
        host = value.removeprefix("https://").removeprefix("http://").rstrip("/")
        if not host or "/" in host:
            raise serializers.ValidationError(
                "Give the workspace host name only, like 'dbc-a1b2c3d4-e5f6.cloud.databricks.com'."
            )
        return host


def _databricks_sink(config: Mapping[str, Any]) -> Sink:
    from batchexports.destinations.databricks.sink import DatabricksSink

    return DatabricksSink(config)


SPEC = DestinationSpec(
    type="Databricks",
    label="Databricks",
    config_serializer=DatabricksConfigSerializer,
    secret_fields=(("client_id",), ("client_secret",)),
    description="Rows in a Databricks Unity Catalog table.",
    test_steps=databricks_checks.STEPS,
    sink_factory=_databricks_sink,
)
