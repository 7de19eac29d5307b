"""The Redshift sink: the skeleton PostgreSQL's sink has too (`warehouse/sql_kit/sink.py`), in Redshift's
dialect (`dialect.py`), through one stage table loaded whole, then merged.

What differs from PostgreSQL:

- Redshift has no `COPY … FROM STDIN`. `mode` INSERT loads the stage table with multi-row
  `INSERT … VALUES (…), (…)` statements of at most `MAX_STATEMENT_BYTES` (Redshift refuses
  statements over 16 MB) and `MAX_ROWS_PER_STATEMENT` rows, rendered by psycopg's client-side
  cursor as PostHog's Redshift export does. `mode` COPY writes the rows as Parquet parts to
  `s3://{copy_inputs.s3_bucket}/{copy_inputs.s3_key_prefix}/batchexports/<stage table>/`
  (through the S3 object store, a multipart upload per part), with a manifest, then runs
  `COPY stage (…) FROM 's3://…/manifest.json' IAM_ROLE '…' | ACCESS_KEY_ID '…' SECRET_ACCESS_KEY
  '…' FORMAT AS PARQUET MANIFEST`; the staged files are deleted once the stage is loaded.
- Redshift enforces no primary key and has no `ON CONFLICT`: every model is merged by
  delete-then-insert in one transaction (`dialect.py`). Events: delete the table's rows whose uuid is staged,
  insert the stage. Persons and sessions: drop the staged rows that are not newer than the
  table's (by the same version columns as PostgreSQL), delete the rows they replace, insert.
- Text is `VARCHAR(65535)` (Redshift's `TEXT` is `VARCHAR(256)`), and JSON is either that or
  `SUPER` (`properties_data_type`), parsed with `JSON_PARSE` when merging. Lists (the sessions'
  `urls`) are staged as JSON text. A VARCHAR holds at most 65535 bytes; a value longer than
  its column allows (65535, or a narrower column of an existing table) is refused before it is
  sent, with a `NonRetryableError` naming the column and the row. PostHog truncates such values
  instead; a truncated JSON document is not JSON any more and its data is silently lost, so
  this sink stops and says what to change instead.

The stage table is marked as PostgreSQL's segments are (`warehouse/sql_kit/stages.py`): its comment
(`COMMENT ON TABLE`, read back with `obj_description`, which Redshift has too) names the export and
the creation time, and the run's start drops the export's marked stages older than any run lives,
as does the start-up sweep (`drop_stale_stages`), never a table without the mark.

Credentials (the user's password and the AWS keys of `copy_inputs`) are only ever part of the
statements sent to Redshift; they are scrubbed from every error message and never logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchexports.core import watchdog
from batchexports.core.errors import DestinationError, NonRetryableError
from batchexports.core.run import CancelToken, Progress, ProgressCallback
from batchexports.destinations.files import keys
from batchexports.destinations.redshift.dialect import VARCHAR_MAX, RedshiftDialect
from batchexports.destinations.warehouse.sql_kit.cleaning import clean_column
from batchexports.destinations.warehouse.sql_kit.connection import STATEMENT_TIMEOUT_S
from batchexports.destinations.warehouse.sql_kit.dialect import TargetColumn
from batchexports.destinations.warehouse.sql_kit.errors import scrub
from batchexports.destinations.warehouse.sql_kit.identifiers import ident, literal
from batchexports.destinations.warehouse.sql_kit.loading import LoadSession, ParallelLoader
from batchexports.destinations.warehouse.sql_kit.plan import LoadPlan
from batchexports.destinations.warehouse.sql_kit.sink import PgFamilySink
from batchexports.destinations.warehouse.sql_kit.stages import STALE_STAGE_AGE, stage_comment, stale_stages

logger = logging.getLogger(__name__)

MAX_STATEMENT_BYTES = 8 * 1024 * 1024  # Redshift's limit is 16 MB
MAX_ROWS_PER_STATEMENT = 5000
PART_BYTES = 256 * 1024 * 1024  # of Arrow data per staged Parquet part
PARQUET_COMPRESSION = "snappy"
_VALUE_OVERHEAD = 16  # quotes, separators and casts around each value of an INSERT

# -- values -----------------------------------------------------------------------------------------


def lists_as_json(array: pa.Array) -> pa.Array:
    """list<string> as JSON text (`["a","b"]`), rendered by DuckDB; NULL stays NULL."""
    import duckdb

    con = duckdb.connect()
    try:
        con.register("incoming", pa.table({"value": array}))
        return (
            con.sql("SELECT to_json(value)::VARCHAR AS value FROM incoming").to_arrow_table().column(0).combine_chunks()
        )
    finally:
        con.close()


def _row_label(plan: LoadPlan, batch: pa.RecordBatch, index: int) -> str:
    names = [k for k in plan.rules.keys if k in batch.schema.names]
    values = ", ".join(f"{name} {batch.column(name)[index].as_py()!r}" for name in names)
    return f"the {plan.model} row with {values}" if values else f"a {plan.model} row"


# -- INSERT mode ----------------------------------------------------------------------------------


def insert_statements(stage: str, names: list[str], batch: pa.RecordBatch) -> Iterable[tuple[str, list[Any], int]]:
    """(statement, parameters, estimated bytes) of multi-row INSERTs of `batch` into `stage`."""
    sizes = np.full(batch.num_rows, _VALUE_OVERHEAD * max(1, batch.num_columns), np.int64)
    for column in batch.columns:
        if pa.types.is_string(column.type) or pa.types.is_binary(column.type):
            sizes += pc.binary_length(column).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            sizes += 32
    columns = ", ".join(ident(name).replace("%", "%%") for name in names)
    head = f"INSERT INTO {stage.replace('%', '%%')} ({columns}) VALUES "
    row = "(" + ", ".join(["%s"] * len(names)) + ")"
    values = [column.to_pylist() for column in batch.columns]
    start = 0
    while start < batch.num_rows:
        end, total = start, len(head)
        while end < batch.num_rows and end - start < MAX_ROWS_PER_STATEMENT:
            if end > start and total + sizes[end] > MAX_STATEMENT_BYTES:
                break
            total += int(sizes[end])
            end += 1
        parameters = [column[i] for i in range(start, end) for column in values]
        yield head + ", ".join([row] * (end - start)), parameters, total
        start = end


class InsertSession(LoadSession):
    """Multi-row INSERT statements into the stage table, over one connection."""

    def __init__(self, sink: RedshiftSink, plan: LoadPlan):
        self._sink = sink
        self._plan = plan
        self._connection = sink.connect()
        self._cursor = self._connection.cursor()

    def send(self, batch: pa.RecordBatch) -> int:
        sent = 0
        with self._sink.translated("inserting rows into the stage table"):
            for statement, parameters, size in insert_statements(self._plan.stage, self._plan.stage_names, batch):
                self._cursor.execute(statement, parameters)
                sent += size
        return sent

    def finish(self) -> None:
        with self._sink.translated("inserting rows into the stage table"):
            self._connection.commit()
        self._connection.close()

    def abort(self) -> None:
        with contextlib.suppress(BaseException):
            self._connection.rollback()
        with contextlib.suppress(BaseException):
            self._connection.close()


# -- COPY mode --------------------------------------------------------------------------------------


def staging_store_config(copy_inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The S3 object store config of the staging bucket: its own keys, else the COPY's keys, else the environment's."""
    credentials = copy_inputs.get("bucket_credentials") or {}
    authorization = copy_inputs.get("authorization")
    if not credentials and isinstance(authorization, Mapping):
        credentials = authorization
    return {
        "bucket_name": copy_inputs["s3_bucket"],
        "region": copy_inputs.get("region_name"),
        "aws_access_key_id": credentials.get("aws_access_key_id"),
        "aws_secret_access_key": credentials.get("aws_secret_access_key"),
    }


def copy_statement(plan: LoadPlan, manifest_url: str, authorization: str | Mapping[str, Any]) -> str:
    columns = ", ".join(ident(name) for name in plan.stage_names)
    if isinstance(authorization, Mapping):
        credentials = (
            f"ACCESS_KEY_ID {literal(str(authorization['aws_access_key_id']))} "
            f"SECRET_ACCESS_KEY {literal(str(authorization['aws_secret_access_key']))}"
        )
    else:
        credentials = f"IAM_ROLE {literal(str(authorization))}"
    return f"COPY {plan.stage} ({columns}) FROM {literal(manifest_url)} {credentials} FORMAT AS PARQUET MANIFEST"


# -- the sink ---------------------------------------------------------------------------------------


class RedshiftSink(PgFamilySink):
    """Loads record batches into a Redshift table; see the module docstring."""

    dialect_class = RedshiftDialect
    dialect: RedshiftDialect
    merges_without_unique_key = True
    statement_timeout_in_options = False  # Redshift rejects libpq's `options`: SET after connecting

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        connector: Callable[..., Any] | None = None,
        store_factory: Callable[[Mapping[str, Any]], Any] | None = None,
        part_bytes: int = PART_BYTES,
    ):
        super().__init__(config, load_connections=1, connector=connector)
        self.mode = str(config.get("mode") or "INSERT").upper()
        self._store_factory = store_factory
        self.part_bytes = part_bytes

    def connection_options(self) -> dict[str, Any]:
        import psycopg

        options = super().connection_options()
        options["port"] = int(self.config.get("port") or 5439)
        # Redshift has no DEALLOCATE (psycopg's prepared statements) and PostHog renders its
        # INSERTs client-side: the same here.
        options["prepare_threshold"] = None
        options["cursor_factory"] = psycopg.ClientCursor
        return options

    @contextlib.contextmanager
    def translated(self, action: str) -> Any:
        try:
            with super().translated(action):
                yield
        except DestinationError as error:
            advice = _redshift_advice(str(error), action)
            if advice is None:
                raise type(error)(scrub(str(error), self.config)) from None
            raise NonRetryableError(scrub(advice, self.config)) from None

    # the stage

    def create_stage(self, cursor: Any, plan: LoadPlan) -> None:
        """Drop the stage an earlier attempt of this run left, and this export's stages of other intervals
        older than any attempt lives (runs killed and never retried); create the stage, marked as ours."""
        stale = [plan.stage]
        if self.export_id:
            stale += [
                name for name in stale_stages(cursor, plan.schema, self.export_id, STALE_STAGE_AGE) if name not in stale
            ]
        cursor.execute(f"DROP TABLE IF EXISTS {', '.join(stale)}")
        columns = ", ".join(f"{ident(c.name)} {c.ddl}" for c in plan.stage_columns)
        cursor.execute(f"{self.dialect.stage_prefix} {plan.stage} ({columns})")
        cursor.execute(f"COMMENT ON TABLE {plan.stage} IS {literal(stage_comment(self.export_id))}")

    def drop_stage(self, connection: Any, plan: LoadPlan) -> None:
        try:
            connection.execute(f"DROP TABLE IF EXISTS {plan.stage}")
            connection.commit()
        except Exception:  # the next attempt drops it first
            logger.warning("could not drop the stage table %s", plan.stage_name)

    def merge(self, connection: Any, plan: LoadPlan) -> None:
        cursor = connection.cursor()
        for statement in self.dialect.merge_statements(plan):
            cursor.execute(statement)
        cursor.execute(f"DROP TABLE {plan.stage}")
        connection.commit()

    # loading

    def check_batch(self, plan: LoadPlan, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Clean the batch, render lists as JSON, and refuse a value longer than its VARCHAR column."""
        targets = plan.target_by_name
        columns = []
        for stage in plan.stage_columns:
            column = clean_column(batch.column(stage.name), stage.kind)
            if stage.kind == "list":
                column = lists_as_json(column)
            if stage.kind in ("json", "text", "list"):
                target = targets.get(stage.name)
                limit = VARCHAR_MAX
                if target is not None and target.max_length and target.type != "super":
                    limit = min(limit, int(target.max_length))
                self._check_length(plan, batch, stage.name, column, limit, target)
            columns.append(column)
        return pa.RecordBatch.from_arrays(columns, plan.stage_names)

    def _check_length(
        self,
        plan: LoadPlan,
        batch: pa.RecordBatch,
        name: str,
        column: pa.Array,
        limit: int,
        target: TargetColumn | None,
    ) -> None:
        lengths = pc.binary_length(column)
        over = pc.fill_null(pc.greater(lengths, limit), False)
        count = pc.sum(over).as_py() or 0
        if not count:
            return
        first = pc.indices_nonzero(over)[0].as_py()
        size = lengths[first].as_py()
        column_type = f"VARCHAR({limit})" if target is None or target.type != "super" else "SUPER (staged as VARCHAR)"
        if limit < VARCHAR_MAX:
            fix = f"widen the column (ALTER TABLE {plan.target} ALTER COLUMN {ident(name)} TYPE VARCHAR({VARCHAR_MAX}))"
        else:
            fix = (
                "Redshift cannot store a longer value: exclude these events (exclude_events), or keep such large "
                "values out of the data at its source"
            )
        raise NonRetryableError(
            f"The value of '{name}' is {size:,} bytes in {_row_label(plan, batch, first)}, over the {limit:,} bytes "
            f"a {column_type} column of '{plan.schema}.{plan.table}' holds ({count:,} value(s) of this batch are "
            f"over it): {fix}."
        )

    def load(
        self,
        connection: Any,
        plan: LoadPlan,
        batches: Iterable[pa.RecordBatch],
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> tuple[int, int]:
        if self.mode != "COPY":
            return self._insert(plan, batches, progress, cancel)
        copy_inputs = self.config.get("copy_inputs") or {}
        store = self._open_store(copy_inputs)
        folder = keys.join_key(str(copy_inputs.get("s3_key_prefix") or ""), f"batchexports/{plan.stage_name}")
        try:
            parts, records = self._stage_files(store, folder, plan, batches, progress, cancel)
            entries = [
                {"url": store.url(key), "mandatory": True, "meta": {"content_length": size}} for key, size in parts
            ]
            manifest = keys.join_key(folder, "manifest.json")
            store.put(manifest, json.dumps({"entries": entries}, indent=2).encode())
            if cancel:
                cancel.raise_if_cancelled()
            with (
                self.translated(f"copying the staged files into the stage table of '{plan.schema}.{plan.table}'"),
                watchdog.patience(STATEMENT_TIMEOUT_S + 60, self._watchdog),  # Redshift reads S3, silently
            ):
                cursor = connection.cursor()
                cursor.execute(copy_statement(plan, store.url(manifest), copy_inputs["authorization"]))
                connection.commit()
            return records, sum(size for _, size in parts)
        finally:
            self._remove_staged(store, folder)

    def _insert(
        self,
        plan: LoadPlan,
        batches: Iterable[pa.RecordBatch],
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> tuple[int, int]:
        """INSERT mode: the batches through `InsertSession`s into the stage table."""
        loader = ParallelLoader(lambda: InsertSession(self, plan), self.load_connections)
        try:
            for batch in batches:
                if cancel:
                    cancel.raise_if_cancelled()
                loader.put(self.check_batch(plan, batch.select(plan.stage_names)))
                if progress:
                    rows, sent = loader.progress()
                    progress(Progress(records_completed=rows, bytes_exported=sent))
            if cancel:
                cancel.raise_if_cancelled()
            loader.close()
        except BaseException:
            loader.abort()
            raise
        return loader.progress()

    def _open_store(self, copy_inputs: Mapping[str, Any]) -> Any:
        config = staging_store_config(copy_inputs)
        if self._store_factory is not None:
            return self._store_factory(config)
        from batchexports.destinations.s3.store import S3ObjectStore

        return S3ObjectStore(config)

    def _stage_files(
        self,
        store: Any,
        folder: str,
        plan: LoadPlan,
        batches: Iterable[pa.RecordBatch],
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> tuple[list[tuple[str, int]], int]:
        """Write the batches as Parquet parts under `folder`; return [(key, size)] and the row count."""
        from batchexports.destinations.files.writers import open_writer

        parts: list[tuple[str, int]] = []
        records = part_bytes = 0
        writer: Any = None
        target: Any = None
        key = ""

        def finish_part() -> None:
            nonlocal writer, target
            writer.close()
            target.commit()
            parts.append((key, writer.bytes_written))
            writer = target = None

        try:
            for batch in batches:
                if cancel:
                    cancel.raise_if_cancelled()
                prepared = self.check_batch(plan, batch.select(plan.stage_names))
                if writer is None:
                    key = keys.join_key(folder, f"part-{len(parts):05d}.parquet")
                    target = store.open(key)
                    writer = open_writer("Parquet", target, prepared.schema, PARQUET_COMPRESSION)
                    part_bytes = 0
                writer.write(prepared)
                records += prepared.num_rows
                part_bytes += prepared.nbytes
                if part_bytes >= self.part_bytes:
                    finish_part()
                if progress:
                    done = sum(size for _, size in parts)
                    progress(Progress(records_completed=records, bytes_exported=done))
            if writer is not None:
                finish_part()
        except BaseException:
            if target is not None:
                with contextlib.suppress(Exception):
                    target.abort()
            raise
        return parts, records

    def _remove_staged(self, store: Any, folder: str) -> None:
        try:
            staged = store.list_keys(folder + "/")
            if staged:
                store.delete(staged)
        except Exception as error:  # the next attempt overwrites them; a lifecycle rule may expire them
            logger.warning("could not delete the staged files under %s: %s", folder, type(error).__name__)


def _redshift_advice(message: str, action: str) -> str | None:
    """What to check when Redshift could not read the staged files or refused a row of them (not retryable)."""
    lower = message.lower()
    if "s3serviceexception" in lower or "access denied" in lower or "not authorized to assume" in lower:
        return (
            f"{message} Redshift could not read the staged files while {action}: check copy_inputs.authorization "
            "(the IAM role must be attached to the cluster and allow s3:GetObject and s3:ListBucket on the bucket, "
            "or the keys must allow them) and that the bucket is in the cluster's region."
        )
    if "stl_load_errors" in lower or "sys_load_error_detail" in lower:
        return f"{message} See Redshift's sys_load_error_detail table for the row it refused."
    return None
