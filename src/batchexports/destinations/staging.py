"""What the warehouses that load staged files share (Snowflake's table stage, BigQuery load jobs,
Databricks volumes): the keys and version columns each model merges on, which columns hold JSON,
and staging record batches as local Parquet files.

Files are zstd Parquet parts of bounded size, so memory stays bounded by one part's buffers, and
progress and cancellation are honoured between batches, as in the file exporter.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchexports.core.model_rules import JSON_COLUMNS
from batchexports.core.run import CancelToken, Progress, ProgressCallback
from batchexports.pipeline.writers import ParquetWriter

DEFAULT_PART_BYTES = 128 * 1024 * 1024


def is_json(field: pa.Field) -> bool:
    """A string column that holds JSON documents (typed JSON/VARIANT in the warehouse)."""
    return field.name in JSON_COLUMNS and (pa.types.is_string(field.type) or pa.types.is_large_string(field.type))


def stage_parquet(
    folder: Path,
    batches: Iterable[pa.RecordBatch],
    schema: pa.Schema,
    progress: ProgressCallback | None,
    cancel: CancelToken | None,
    part_bytes: int = DEFAULT_PART_BYTES,
) -> tuple[list[Path], int, int]:
    """Write `batches` as zstd Parquet files `part-N.parquet` in `folder`: (files, records, bytes)."""
    files: list[Path] = []
    records = total = 0
    state = Progress()
    writer: ParquetWriter | None = None
    raw: Any = None

    def finish() -> None:
        nonlocal writer, raw, total
        if writer is not None:
            writer.close()
            raw.close()
            total += writer.bytes_written
            writer = raw = None

    try:
        for batch in batches:
            if cancel:
                cancel.raise_if_cancelled()
            if writer is None:
                path = folder / f"part-{len(files)}.parquet"
                raw = open(path, "wb")  # noqa: SIM115 - closed in finish()
                writer = ParquetWriter(raw, schema, "zstd")
                files.append(path)
            writer.write(batch)
            records += batch.num_rows
            if writer.bytes_written >= part_bytes:
                finish()
            if progress:
                state.records_completed = records
                state.bytes_exported = total + (writer.bytes_written if writer else 0)
                progress(state)
        finish()
    finally:
        if raw is not None:
            raw.close()
    if cancel:
        cancel.raise_if_cancelled()
    return files, records, total
