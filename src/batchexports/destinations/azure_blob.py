"""Config schema of the Azure Blob Storage destination: files in a container of a storage
account, reached with the account's connection string (a secret).

This module only validates configuration; it does not talk to Azure.
"""

from __future__ import annotations

from rest_framework import serializers

from batchexports.destinations.base import DestinationSpec
from batchexports.destinations.file import FileOutputConfigSerializer
from batchexports.destinations.registry import register


class AzureBlobConfigSerializer(FileOutputConfigSerializer):
    connection_string = serializers.CharField(
        trim_whitespace=False,
        help_text="Connection string of the storage account (Azure portal, 'Access keys').",
    )
    container_name = serializers.CharField(help_text="Name of the destination container.")
    prefix = serializers.CharField(
        required=False, default="", allow_blank=True, help_text="Name prefix of every exported blob."
    )


SPEC = register(
    DestinationSpec(
        type="AzureBlob",
        label="Azure Blob Storage",
        config_serializer=AzureBlobConfigSerializer,
        secret_fields=(("connection_string",),),
        description="Files in an Azure Blob Storage container.",
    )
)
