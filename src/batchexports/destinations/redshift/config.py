"""Config schema of the Redshift destination: the PostgreSQL schema plus Redshift's column
type for JSON properties and its load mode, either INSERT statements or COPY from files
staged in S3 (`copy_inputs`, required in COPY mode).

Secrets: `user`, `password` and every AWS key inside `copy_inputs`; an IAM role ARN is not a
secret. This module validates configuration and wires the sink (`sink.py`) and the
test steps (`checks.py`); psycopg and boto3 are imported lazily.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from batchexports.destinations.base import DestinationConfigSerializer, DestinationSpec, Sink
from batchexports.destinations.postgres.config import PostgresConfigSerializer, port_field
from batchexports.destinations.redshift import checks as redshift_checks

IAM_ROLE_ARN = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/\S+$")
_AUTHORIZATION_HELP = (
    "authorization must be the ARN of an IAM role attached to the cluster "
    "('arn:aws:iam::123456789012:role/name') or an object with aws_access_key_id and aws_secret_access_key."
)


class AWSCredentialsSerializer(DestinationConfigSerializer):
    aws_access_key_id = serializers.CharField()
    aws_secret_access_key = serializers.CharField(trim_whitespace=False)


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "description": "IAM role ARN"},
            {
                "type": "object",
                "properties": {"aws_access_key_id": {"type": "string"}, "aws_secret_access_key": {"type": "string"}},
                "required": ["aws_access_key_id", "aws_secret_access_key"],
            },
        ]
    }
)
class RedshiftAuthorizationField(serializers.Field):
    """What Redshift uses to read the staged files: an IAM role ARN or AWS credentials."""

    def to_internal_value(self, data: Any) -> str | dict[str, str]:
        if isinstance(data, str):
            if not IAM_ROLE_ARN.match(data.strip()):
                raise serializers.ValidationError(f"This is not an IAM role ARN; {_AUTHORIZATION_HELP}")
            return data.strip()
        if isinstance(data, dict):
            credentials = AWSCredentialsSerializer(data=data)
            if not credentials.is_valid():
                raise serializers.ValidationError(credentials.errors)
            return dict(credentials.validated_data)
        raise serializers.ValidationError(_AUTHORIZATION_HELP)

    def to_representation(self, value: Any) -> Any:
        return value


class RedshiftCopyInputsSerializer(DestinationConfigSerializer):
    s3_bucket = serializers.CharField(help_text="S3 bucket where files are staged before the COPY.")
    region_name = serializers.CharField(help_text="Region of the staging bucket.")
    s3_key_prefix = serializers.CharField(
        required=False, default="", allow_blank=True, help_text="Key prefix of the staged files."
    )
    authorization = RedshiftAuthorizationField(
        help_text="IAM role ARN attached to the cluster, or {aws_access_key_id, aws_secret_access_key}."
    )
    bucket_credentials = AWSCredentialsSerializer(
        required=False,
        allow_null=True,
        default=None,
        help_text="Keys used to stage files in the bucket; null for the environment's credentials.",
    )


class RedshiftConfigSerializer(PostgresConfigSerializer):
    port = port_field(5439)
    properties_data_type = serializers.ChoiceField(
        choices=["varchar", "super"],
        required=False,
        default="varchar",
        help_text="Column type of JSON properties: 'varchar' or Redshift's semi-structured 'super'.",
    )
    mode = serializers.ChoiceField(
        choices=["INSERT", "COPY"],
        required=False,
        default="INSERT",
        help_text="How rows are loaded: INSERT statements, or COPY from files staged in S3.",
    )
    copy_inputs = RedshiftCopyInputsSerializer(
        required=False,
        allow_null=True,
        default=None,
        help_text="S3 staging settings, required when mode is 'COPY'.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if attrs["mode"] == "COPY" and not attrs.get("copy_inputs"):
            raise serializers.ValidationError(
                {
                    "copy_inputs": "copy_inputs is required when mode is 'COPY': give s3_bucket, region_name "
                    "and authorization (an IAM role ARN or AWS keys) so Redshift can load files staged in S3."
                }
            )
        return attrs


_AWS_KEYS = ("aws_access_key_id", "aws_secret_access_key")


def _redshift_sink(config: Mapping[str, Any]) -> Sink:
    from batchexports.destinations.redshift.sink import RedshiftSink

    return RedshiftSink(config)


SPEC = DestinationSpec(
    type="Redshift",
    label="Redshift",
    config_serializer=RedshiftConfigSerializer,
    secret_fields=(
        ("user",),
        ("password",),
        *(("copy_inputs", "authorization", key) for key in _AWS_KEYS),
        *(("copy_inputs", "bucket_credentials", key) for key in _AWS_KEYS),
    ),
    description="Rows in an Amazon Redshift table, by INSERT or by COPY from S3.",
    test_steps=redshift_checks.STEPS,
    sink_factory=lambda config: _redshift_sink(config),
)
