"""What the file exporter needs from a place that holds files: the local folder, S3, Azure Blob.

An object is written through a writer and becomes visible only when it is committed, so that a
failed or cancelled run never leaves a half-written file under its final name.
"""

from __future__ import annotations

from typing import Protocol


class ObjectWriter(Protocol):
    def write(self, data: bytes | memoryview) -> int: ...

    def commit(self) -> None:
        """Make the object visible under its key (replacing any object there)."""

    def abort(self) -> None:
        """Discard what was written."""


class ObjectStore(Protocol):
    def open(self, key: str) -> ObjectWriter: ...

    def put(self, key: str, data: bytes) -> None: ...

    def list_keys(self, prefix: str) -> list[str]:
        """Keys that start with `prefix` (a folder-like prefix ends with '/')."""

    def delete(self, keys: list[str]) -> None: ...

    def url(self, key: str) -> str:
        """How a person finds the object: `s3://bucket/key`, a file path, an https URL."""
