"""What the warehouses that load staged files share (Snowflake's table stage, BigQuery load jobs,
Databricks volumes): which columns hold JSON, staging record batches as local Parquet files, and
the mark every stage table carries.

The mark (`stage_mark()`, a table comment where the engine has one) names the export that created
the stage table and when: a run killed before it dropped its stage leaves a table only the mark
tells apart from a user's table of a similar name, so only marked tables of the export, older than
any attempt of a run lives, are ever dropped (`is_stale()`).

Files are zstd Parquet parts of bounded size, so memory stays bounded by one part's buffers, and
progress and cancellation are honoured between batches, as in the file exporter.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchexports.core.model_rules import JSON_COLUMNS
from batchexports.core.run import CancelToken, ExportRun, Progress, ProgressCallback
from batchexports.destinations.files.writers import ParquetWriter

logger = logging.getLogger(__name__)

DEFAULT_PART_BYTES = 128 * 1024 * 1024

STAGE_MARK = "batchexports-stage "
# No attempt of a run lives longer than the longest run timeout: a stage this old is nobody's.
STALE_STAGE_AGE = dt.timedelta(hours=24)


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
        if writer is not None:  # a cancel or a failure: close the writer first, or its finaliser
            with contextlib.suppress(Exception):  # writes the footer into the closed file later
                writer.close()
        if raw is not None:
            raw.close()
    if cancel:
        cancel.raise_if_cancelled()
    return files, records, total


def stage_digest(run: ExportRun) -> str:
    """The sha256 hex digest of (batch export, interval, model): the stable part of a stage table's
    name, so a retried run replaces the stage of the attempt before it."""
    start = run.data_interval_start.isoformat() if run.data_interval_start else ""
    key = f"{run.batch_export_id}|{start}|{run.data_interval_end.isoformat()}|{run.model}"
    return hashlib.sha256(key.encode()).hexdigest()


def stage_mark(export_id: str | None, created: dt.datetime | None = None) -> str:
    """The comment on a stage table: whose it is and when it was created, for the sweep of stale ones."""
    created = created or dt.datetime.now(dt.UTC)
    return STAGE_MARK + json.dumps({"export": export_id, "created": created.isoformat()})


def is_stale(mark: str | None, export_id: str, older_than: dt.timedelta) -> bool:
    """Whether `mark` is the stage mark of `export_id` from more than `older_than` ago; False for
    any other comment (a user's table) and for a mark that cannot be read."""
    if not mark or not mark.startswith(STAGE_MARK):
        return False
    try:
        owner = json.loads(mark[len(STAGE_MARK) :])
        created = dt.datetime.fromisoformat(owner["created"])
    except (ValueError, KeyError, TypeError):
        return False
    if created.tzinfo is None:
        return False
    return owner.get("export") == export_id and created < dt.datetime.now(dt.UTC) - older_than


def drop_stale_at_run_start(drop: Callable[[str, dt.timedelta], list[str]], export_id: str | None) -> list[str]:
    """At a run's start, `drop(export_id, STALE_STAGE_AGE)`. Cleaning never fails a run: a failure is
    logged (by its type: a driver's message may hold a secret) and the next run or sweep tries again."""
    if not export_id:
        return []
    try:
        return drop(export_id, STALE_STAGE_AGE)
    except Exception as error:
        logger.warning("could not drop the stale stage tables of export %s: %s", export_id, type(error).__name__)
        return []
