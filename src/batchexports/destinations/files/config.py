"""The file settings of every destination that writes files (S3, Azure Blob, File): format,
compression and file splitting, checked against the writers' catalogue (`formats.py`).
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from batchexports.destinations.base import Capabilities
from batchexports.destinations.fields import EventFilterConfigSerializer
from batchexports.destinations.files.formats import DEFAULT_FILE_FORMAT, FILE_FORMATS, supported_compressions

# Every destination that writes files offers every format of the writers' catalogue.
FILE_CAPABILITIES = Capabilities(file_formats=tuple(FILE_FORMATS), writes="files")


class FileOutputConfigSerializer(EventFilterConfigSerializer):
    """File format, compression and file splitting, checked against the writers' catalogue."""

    file_format = serializers.ChoiceField(
        choices=list(FILE_FORMATS),
        required=False,
        default=DEFAULT_FILE_FORMAT,
        error_messages={
            "invalid_choice": "File format '{input}' is not supported. Supported file formats are: "
            + ", ".join(FILE_FORMATS)
            + "."
        },
        help_text="Format of the exported files.",
    )
    compression = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        default=None,
        help_text="Compression codec; the valid codecs depend on file_format. Null for none.",
    )
    max_file_size_mb = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=1,
        help_text="Start a new file once the current one exceeds this many MB; null for one file per run.",
    )
    # PostHog's field of the same name. Parquet records its codec inside the file, so names end in
    # `.parquet`; true keeps PostHog's older `.parquet.zst` (and the like) for pipelines that match
    # on it. It cannot be switched on for an export that has it off (see the API's serializer).
    legacy_parquet_extension = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Keep the compression codec in Parquet file names ('.parquet.zst' instead of '.parquet'). "
        "Has no effect on JSONLines and CSV, whose names always carry their codec.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        file_format = attrs["file_format"]
        compression = attrs.get("compression") or None
        supported = supported_compressions(file_format)
        if compression is not None and compression not in supported:
            raise serializers.ValidationError(
                {
                    "compression": f"Compression '{compression}' is not supported for file format "
                    f"'{file_format}'. Supported compressions are: {', '.join(supported)}."
                }
            )
        attrs["compression"] = compression
        return attrs
