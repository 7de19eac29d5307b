"""Config schema of the PostgreSQL destination: rows inserted into a table of a database.

Both `user` and `password` are secrets. Redshift speaks the same protocol and extends this
schema (see `redshift/config.py`). This module validates configuration and wires the sink and the test
steps; the I/O lives in `sink.py` and `checks.py` (psycopg imported lazily).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from batchexports.destinations.base import DestinationSpec, Sink
from batchexports.destinations.fields import EventFilterConfigSerializer
from batchexports.destinations.postgres import checks as postgres_checks


def port_field(default: int) -> serializers.IntegerField:
    return serializers.IntegerField(
        required=False, default=default, min_value=1, max_value=65535, help_text="Port the server listens on."
    )


class PostgresConfigSerializer(EventFilterConfigSerializer):
    user = serializers.CharField(help_text="User to connect as.")
    password = serializers.CharField(
        trim_whitespace=False,
        allow_blank=True,
        help_text="Password of the user; empty for servers that trust the connection.",
    )
    host = serializers.CharField(help_text="Host name or IP address of the server.")
    port = port_field(5432)
    database = serializers.CharField(help_text="Database to connect to.")
    schema = serializers.CharField(required=False, default="public", help_text="Schema of the destination table.")
    table_name = serializers.CharField(
        required=False, default="events", help_text="Destination table; created when it does not exist."
    )
    has_self_signed_cert = serializers.BooleanField(
        required=False, default=False, help_text="Accept a self-signed TLS certificate from the server."
    )


def _postgres_sink(config: Mapping[str, Any]) -> Sink:
    from batchexports.destinations.postgres.sink import PostgresSink

    return PostgresSink(config)


SPEC = DestinationSpec(
    type="Postgres",
    label="PostgreSQL",
    config_serializer=PostgresConfigSerializer,
    secret_fields=(("user",), ("password",)),
    description="Rows in a PostgreSQL table.",
    test_steps=postgres_checks.STEPS,
    sink_factory=lambda config: _postgres_sink(config),
)
