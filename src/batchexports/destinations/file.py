"""Config schema of the local-folder destination ("File"), and the file settings shared by
every destination that writes files (S3, Azure Blob, File).

Files land under `path`, which is relative to the service's export directory: the schema
rejects absolute paths and `..` segments so a config can never write outside that directory.
This module knows nothing about Django models or how files are written (that is the sink's job).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from rest_framework import serializers

from batchexports.destinations import file_checks
from batchexports.destinations.base import DestinationConfigSerializer, DestinationSpec, Sink
from batchexports.destinations.registry import register
from batchexports.pipeline.formats import DEFAULT_FILE_FORMAT, FILE_FORMATS, supported_compressions


def event_names_field(help_text: str) -> serializers.ListField:
    """An optional list of event names (`include_events` / `exclude_events`)."""
    return serializers.ListField(
        child=serializers.CharField(), required=False, allow_null=True, default=None, help_text=help_text
    )


class EventFilterConfigSerializer(DestinationConfigSerializer):
    """Event-name filters, accepted by every destination (they apply to the `events` model)."""

    include_events = event_names_field("Export only events with these names; null for all events.")
    exclude_events = event_names_field("Leave out events with these names; null to leave out none.")


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


def relative_path_error(value: str, what: str = "path") -> str | None:
    """Why `value` is not a safe path relative to the export directory, or None when it is."""
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).anchor:
        return f"'{value}' is an absolute {what}; give a {what} relative to the export directory."
    if ".." in re.split(r"[\\/]", value):
        return f"'{value}' contains a '..' segment; give a {what} that stays inside the export directory."
    if "\x00" in value:
        return f"The {what} contains a NUL character."
    return None


class FileConfigSerializer(FileOutputConfigSerializer):
    path = serializers.CharField(
        help_text="Folder to write into, relative to the service's export directory (e.g. 'acme/events')."
    )
    prefix = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        help_text="Prefix of every file name inside `path`; may contain '/' for sub-folders.",
    )

    def validate_path(self, value: str) -> str:
        error = relative_path_error(value)
        if error:
            raise serializers.ValidationError(error)
        return value

    def validate_prefix(self, value: str) -> str:
        error = relative_path_error(value, "prefix") if value else None
        if error:
            raise serializers.ValidationError(error)
        return value


def _local_folder_sink(config: Mapping[str, Any]) -> Sink:
    from batchexports.destinations.file_sink import FileSink
    from batchexports.destinations.local_folder import LocalFolderStore
    from batchexports.pipeline.files import FileSettings

    return FileSink(lambda: LocalFolderStore(file_checks.resolve_folder(config)), FileSettings.from_config(config))


SPEC = register(
    DestinationSpec(
        type="File",
        label="Local folder",
        config_serializer=FileConfigSerializer,
        secret_fields=(),
        description="Files in a folder of the machine running the service (the embedded default).",
        test_steps=file_checks.STEPS,
        sink_factory=lambda config: _local_folder_sink(config),
    )
)
