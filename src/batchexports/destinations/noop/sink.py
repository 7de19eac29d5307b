"""The NoOp sink: never given rows, since the pipeline reads no source for NoOp (`reads_source=False`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from batchexports.destinations.base import SinkResult

if TYPE_CHECKING:
    import pyarrow as pa

    from batchexports.core.run import CancelToken, ExportRun, ProgressCallback


class NoOpSink:
    """Consumes nothing: `export()` is never reached with rows, since the pipeline reads no source."""

    def export(
        self,
        run: ExportRun,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> SinkResult:
        return SinkResult(records=0, bytes_exported=0)
