"""Config schema of the S3 destination: files in an AWS S3 bucket or an S3-compatible store
(MinIO, Cloudflare R2, Google Cloud Storage) reached through `endpoint_url`.

Access keys are optional: without them the sink uses the credentials of its environment
(instance role, `AWS_*` variables); with them, both keys are needed and both are secrets.
This module validates configuration and wires the sink and the test steps; the I/O lives in
`s3_store.py` (imported lazily, with boto3) and `s3_checks.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from batchexports.destinations import s3_checks
from batchexports.destinations.base import DestinationSpec, Sink
from batchexports.destinations.file import FileOutputConfigSerializer
from batchexports.destinations.http import HttpUrlField
from batchexports.destinations.registry import register

_OPTIONAL_STRINGS = ("aws_access_key_id", "aws_secret_access_key", "endpoint_url", "encryption", "kms_key_id")


def _optional(**kwargs: Any) -> dict[str, Any]:
    return {"required": False, "allow_null": True, "allow_blank": True, "default": None, **kwargs}


class S3ConfigSerializer(FileOutputConfigSerializer):
    bucket_name = serializers.CharField(help_text="Name of the destination bucket.")
    region = serializers.CharField(help_text="Region of the bucket, e.g. 'us-east-1'.")
    prefix = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        help_text="Key prefix of every exported object.",
    )
    aws_access_key_id = serializers.CharField(
        **_optional(help_text="Access key id; null for the environment's credentials.")
    )
    aws_secret_access_key = serializers.CharField(
        **_optional(trim_whitespace=False, help_text="Secret access key, given together with aws_access_key_id.")
    )
    endpoint_url = HttpUrlField(
        **_optional(help_text="Endpoint of an S3-compatible store (MinIO, R2, GCS); null for AWS S3.")
    )
    encryption = serializers.ChoiceField(
        choices=["AES256", "aws:kms"], **_optional(help_text="Server-side encryption; null for none.")
    )
    kms_key_id = serializers.CharField(**_optional(help_text="KMS key id, required when encryption is 'aws:kms'."))
    use_virtual_style_addressing = serializers.BooleanField(
        required=False, default=False, help_text="Address the bucket as a sub-domain instead of a path."
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        for name in _OPTIONAL_STRINGS:
            attrs[name] = attrs.get(name) or None
        key_id, secret = attrs["aws_access_key_id"], attrs["aws_secret_access_key"]
        if key_id and not secret:
            raise serializers.ValidationError(
                {"aws_secret_access_key": "aws_secret_access_key is required when aws_access_key_id is given."}
            )
        if secret and not key_id:
            raise serializers.ValidationError(
                {"aws_access_key_id": "aws_access_key_id is required when aws_secret_access_key is given."}
            )
        if attrs["encryption"] == "aws:kms" and not attrs["kms_key_id"]:
            raise serializers.ValidationError(
                {
                    "kms_key_id": "kms_key_id is required when encryption is 'aws:kms': give the id or ARN "
                    "of the KMS key."
                }
            )
        return attrs


def _s3_sink(config: Mapping[str, Any]) -> Sink:
    from batchexports.destinations.file_sink import FileSink
    from batchexports.destinations.s3_store import S3ObjectStore
    from batchexports.pipeline.files import FileSettings

    return FileSink(lambda: S3ObjectStore(config), FileSettings.from_config(config))


SPEC = register(
    DestinationSpec(
        type="S3",
        label="S3",
        config_serializer=S3ConfigSerializer,
        secret_fields=(("aws_access_key_id",), ("aws_secret_access_key",)),
        description="Files in an AWS S3 bucket or an S3-compatible object store.",
        test_steps=s3_checks.STEPS,
        sink_factory=lambda config: _s3_sink(config),
    )
)
