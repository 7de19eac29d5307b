"""Config schema and definition of the local-folder destination ("File").

Files land under `path`, which is relative to the service's export directory: the schema
rejects absolute paths and `..` segments so a config can never write outside that directory.
This module knows nothing about Django models or how files are written (that is the sink's job).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any

from rest_framework import serializers

from batchexports.destinations.base import DestinationSpec, Sink
from batchexports.destinations.file import checks as file_checks
from batchexports.destinations.files.config import FILE_CAPABILITIES, FileOutputConfigSerializer

if TYPE_CHECKING:
    from batchexports.destinations.file.store import LocalFolderStore


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


def _local_folder(config: Mapping[str, Any]) -> LocalFolderStore:
    from batchexports.destinations.file.store import LocalFolderStore

    return LocalFolderStore(file_checks.resolve_folder(config))


def _local_folder_sink(config: Mapping[str, Any]) -> Sink:
    from batchexports.destinations.files.exporter import FileSettings
    from batchexports.destinations.files.sink import FileSink

    return FileSink(lambda: _local_folder(config), FileSettings.from_config(config))


SPEC = DestinationSpec(
    type="File",
    label="Local folder",
    config_serializer=FileConfigSerializer,
    secret_fields=(),
    description="Files in a folder of the machine running the service (the embedded default).",
    test_steps=file_checks.STEPS,
    sink_factory=lambda config: _local_folder_sink(config),
    leftover_store=_local_folder,
    capabilities=FILE_CAPABILITIES,
)
