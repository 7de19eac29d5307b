"""Config schemas of the S3 family, PostHog's types: `AwsS3` (a bucket of AWS S3), `S3Compatible`
(any S3-compatible store, at a required `endpoint_url`) and the legacy `S3` (either, from before
PostHog split it in two), each with PostHog's fields of that type.

Access keys are optional: without them the sink uses the credentials of its environment
(instance role, `AWS_*` variables); with them, both keys are needed and both are secrets.
This module validates configuration and wires the sink and the test steps; the I/O lives in
`store.py` (imported lazily, with boto3) and `checks.py`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from rest_framework import serializers

from batchexports.destinations.base import DestinationSpec, Sink
from batchexports.destinations.fields import HttpUrlField
from batchexports.destinations.files.config import FILE_CAPABILITIES, FileOutputConfigSerializer
from batchexports.destinations.s3 import checks as s3_checks

if TYPE_CHECKING:
    from batchexports.destinations.s3.store import S3ObjectStore

_OPTIONAL_STRINGS = ("aws_access_key_id", "aws_secret_access_key", "endpoint_url", "encryption", "kms_key_id")
_SECRETS = (("aws_access_key_id",), ("aws_secret_access_key",))


def _optional(**kwargs: Any) -> dict[str, Any]:
    return {"required": False, "allow_null": True, "allow_blank": True, "default": None, **kwargs}


def _encryption() -> serializers.ChoiceField:
    return serializers.ChoiceField(
        choices=["AES256", "aws:kms"], **_optional(help_text="Server-side encryption; null for none.")
    )


def _kms_key_id() -> serializers.CharField:
    return serializers.CharField(**_optional(help_text="KMS key id, required when encryption is 'aws:kms'."))


def _virtual_style() -> serializers.BooleanField:
    return serializers.BooleanField(
        required=False, default=False, help_text="Address the bucket as a sub-domain instead of a path."
    )


class _S3FamilyConfigSerializer(FileOutputConfigSerializer):
    """What every S3-family type shares: bucket, region and (optional) access keys.

    PostHog keeps the keys in an integration; batchexports has no integrations, so they are config
    fields here, secret and write-only. Without them the environment's credentials are used."""

    bucket_name = serializers.CharField(help_text="Name of the destination bucket.")
    region = serializers.CharField(help_text="Region of the bucket, e.g. 'us-east-1'.")
    prefix = serializers.CharField(
        help_text="Key prefix of every exported object; may use {year} {month} {day} {hour} {minute} {second} "
        "(of the interval's end), {table}, {data_interval_start} and {data_interval_end}."
    )
    aws_access_key_id = serializers.CharField(
        **_optional(help_text="Access key id; null for the environment's credentials.")
    )
    aws_secret_access_key = serializers.CharField(
        **_optional(trim_whitespace=False, help_text="Secret access key, given together with aws_access_key_id.")
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        for name in _OPTIONAL_STRINGS:
            if name in self.fields:
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
        if attrs.get("encryption") == "aws:kms" and not attrs.get("kms_key_id"):
            raise serializers.ValidationError(
                {
                    "kms_key_id": "kms_key_id is required when encryption is 'aws:kms': give the id or ARN "
                    "of the KMS key."
                }
            )
        return attrs


class AwsS3ConfigSerializer(_S3FamilyConfigSerializer):
    """PostHog's `AwsS3`: a bucket of AWS S3 (the endpoint is AWS's; `AWS_ENDPOINT_URL_S3` in the
    service's environment overrides it, as it does for every boto3 client)."""

    encryption = _encryption()
    kms_key_id = _kms_key_id()


class S3CompatibleConfigSerializer(_S3FamilyConfigSerializer):
    """PostHog's `S3Compatible`: any S3-compatible store (Cloudflare R2, MinIO, GCS, DigitalOcean
    Spaces, ...) at `endpoint_url`, which PostHog keeps in the integration and is required here."""

    endpoint_url = HttpUrlField(
        help_text="Endpoint of the S3-compatible store, e.g. 'https://<account>.r2.cloudflarestorage.com'."
    )
    use_virtual_style_addressing = _virtual_style()


class S3ConfigSerializer(_S3FamilyConfigSerializer):
    """The legacy `S3` type, from before PostHog split it in two: AWS S3, or an S3-compatible store
    when `endpoint_url` is given. Existing exports keep working and can be read and updated."""

    prefix = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        help_text="Key prefix of every exported object.",
    )
    endpoint_url = HttpUrlField(
        **_optional(help_text="Endpoint of an S3-compatible store (MinIO, R2, GCS); null for AWS S3.")
    )
    encryption = _encryption()
    kms_key_id = _kms_key_id()
    use_virtual_style_addressing = _virtual_style()


def _s3_store(config: Mapping[str, Any]) -> S3ObjectStore:
    from batchexports.destinations.s3.store import S3ObjectStore  # boto3, only when used

    return S3ObjectStore(config)


def _s3_sink(config: Mapping[str, Any]) -> Sink:
    from batchexports.destinations.files.exporter import FileSettings
    from batchexports.destinations.files.sink import FileSink

    return FileSink(lambda: _s3_store(config), FileSettings.from_config(config))


def _spec(type_: str, label: str, serializer: type[serializers.Serializer], description: str, offered: bool):
    return DestinationSpec(
        type=type_,
        label=label,
        config_serializer=serializer,
        secret_fields=_SECRETS,
        description=description,
        test_steps=s3_checks.STEPS,
        sink_factory=_s3_sink,
        leftover_store=_s3_store,
        capabilities=FILE_CAPABILITIES,
        offered=offered,
    )


AWS_S3 = _spec("AwsS3", "AWS S3", AwsS3ConfigSerializer, "Files in an AWS S3 bucket.", offered=True)
S3_COMPATIBLE = _spec(
    "S3Compatible",
    "S3-compatible storage",
    S3CompatibleConfigSerializer,
    "Files in an S3-compatible object store: Cloudflare R2, MinIO, Google Cloud Storage, DigitalOcean Spaces...",
    offered=True,
)
SPEC = _spec(
    "S3",
    "S3 (legacy)",
    S3ConfigSerializer,
    "The S3 type from before PostHog split it into AWS S3 and S3-compatible; use those for new exports.",
    offered=False,
)
