"""The sink of every destination that writes files (local folder, S3, Azure Blob): the file
exporter over that destination's object store."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pyarrow as pa

from batchexports.core.run import CancelToken, ExportRun, ProgressCallback
from batchexports.destinations.base import SinkResult
from batchexports.destinations.files.exporter import FileSettings, export_files
from batchexports.destinations.files.object_store import ObjectStore


class FileSink:
    def __init__(self, open_store: Callable[[], ObjectStore], settings: FileSettings):
        self._open_store = open_store
        self.settings = settings

    def export(
        self,
        run: ExportRun,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> SinkResult:
        written = export_files(self._open_store(), run, self.settings, batches, schema, progress, cancel)
        return SinkResult(written.records, written.bytes_written, written.urls)
