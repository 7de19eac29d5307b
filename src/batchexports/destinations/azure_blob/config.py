"""Config schema of the Azure Blob Storage destination: files in a container of a storage
account, reached with the account's connection string (a secret).

This module validates configuration and wires the destination's sink (the file exporter over
`store.AzureBlobObjectStore`) and test steps (`checks.py`); the Azure SDK is imported
only when one of them runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from batchexports.destinations.azure_blob import checks as azure_checks
from batchexports.destinations.base import DestinationSpec, Sink
from batchexports.destinations.files.config import FILE_CAPABILITIES, FileOutputConfigSerializer


class AzureBlobConfigSerializer(FileOutputConfigSerializer):
    connection_string = serializers.CharField(
        trim_whitespace=False,
        help_text="Connection string of the storage account (Azure portal, 'Access keys').",
    )
    container_name = serializers.CharField(help_text="Name of the destination container.")
    prefix = serializers.CharField(
        required=False, default="", allow_blank=True, help_text="Name prefix of every exported blob."
    )


def _azure_blob_sink(config: Mapping[str, Any]) -> Sink:
    from batchexports.destinations.azure_blob.store import AzureBlobObjectStore
    from batchexports.destinations.files.exporter import FileSettings
    from batchexports.destinations.files.sink import FileSink

    return FileSink(lambda: AzureBlobObjectStore(config), FileSettings.from_config(config))


SPEC = DestinationSpec(
    type="AzureBlob",
    label="Azure Blob Storage",
    config_serializer=AzureBlobConfigSerializer,
    secret_fields=(("connection_string",),),
    description="Files in an Azure Blob Storage container.",
    test_steps=azure_checks.STEPS,
    sink_factory=_azure_blob_sink,
    capabilities=FILE_CAPABILITIES,
)
