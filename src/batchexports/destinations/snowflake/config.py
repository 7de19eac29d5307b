"""Config schema of the Snowflake destination: rows loaded into a table through a warehouse,
authenticated by password or by key pair (a PEM private key, optionally encrypted).

Secrets: `user`, `password`, `private_key`, `private_key_passphrase`. This module validates
configuration; the sink (`sink.py`) and the test steps (`checks.py`) connect.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from batchexports.destinations.base import DestinationSpec, Sink
from batchexports.destinations.fields import EventFilterConfigSerializer
from batchexports.destinations.snowflake import checks as snowflake_checks


def _optional_secret(help_text: str, multiline: bool = False) -> serializers.CharField:
    style = {"input_type": "password", **({"base_template": "textarea.html"} if multiline else {})}
    return serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        trim_whitespace=False,
        help_text=help_text,
        style=style,  # DRF's field styles, which the web form renders
    )


class SnowflakeConfigSerializer(EventFilterConfigSerializer):
    account = serializers.CharField(help_text="Account identifier, e.g. 'myorg-myaccount'.")
    user = serializers.CharField(help_text="User to connect as.")
    authentication_type = serializers.ChoiceField(
        choices=["password", "keypair"],
        required=False,
        default="password",
        help_text="'password', or 'keypair' for key-pair authentication.",
    )
    password = _optional_secret("Password of the user; required when authentication_type is 'password'.")
    private_key = _optional_secret("PEM private key; required when authentication_type is 'keypair'.", multiline=True)
    private_key_passphrase = _optional_secret("Passphrase of an encrypted private key.")
    database = serializers.CharField(help_text="Database of the destination table.")
    warehouse = serializers.CharField(help_text="Warehouse that runs the loads.")
    schema = serializers.CharField(help_text="Schema of the destination table.")
    table_name = serializers.CharField(
        required=False, default="events", help_text="Destination table; created when it does not exist."
    )
    role = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        help_text="Role to use; null for the default.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        for name in ("password", "private_key", "private_key_passphrase", "role"):
            attrs[name] = attrs.get(name) or None
        if attrs["authentication_type"] == "password" and not attrs["password"]:
            raise serializers.ValidationError(
                {"password": "password is required when authentication_type is 'password'."}
            )
        if attrs["authentication_type"] == "keypair":
            if not attrs["private_key"]:
                raise serializers.ValidationError(
                    {"private_key": "private_key is required when authentication_type is 'keypair'."}
                )
            if "-----BEGIN" not in attrs["private_key"]:
                raise serializers.ValidationError(
                    {"private_key": "private_key must be a PEM key, starting with '-----BEGIN ... PRIVATE KEY-----'."}
                )
        return attrs


def _snowflake_sink(config: Mapping[str, Any]) -> Sink:
    from batchexports.destinations.snowflake.sink import SnowflakeSink

    return SnowflakeSink(config)


SPEC = DestinationSpec(
    type="Snowflake",
    label="Snowflake",
    config_serializer=SnowflakeConfigSerializer,
    secret_fields=(("user",), ("password",), ("private_key",), ("private_key_passphrase",)),
    description="Rows in a Snowflake table.",
    test_steps=snowflake_checks.STEPS,
    sink_factory=_snowflake_sink,
)
