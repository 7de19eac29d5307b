"""The BigQuery sink: Parquet load jobs into a stage table, then one query job into the destination.

One run:

1. a client authenticated as the service account whose key fields are in the config
   (`google.oauth2.service_account.Credentials`), for the config's project;
2. the dataset must exist (a missing one is a `NonRetryableError`); the destination table is
   created when missing, events day-partitioned on `timestamp`; JSON columns are `JSON` when
   `use_json_type`, else `STRING`; lists are `REPEATED` columns. An existing table keeps its
   schema: only the columns it has are written;
3. the batches are written as zstd Parquet files in a local temporary folder (bounded parts);
4. this export's stage tables a killed run left are deleted (`drop_stale_stages`), then a stage
   table named after the run (expiring after a day besides) is re-created empty, labelled with
   the export and its creation time (`stage_labels`), and every file is loaded into it by a load
   job (`source_format=PARQUET`, `WRITE_APPEND`); JSON travels as STRING in the stage table;
5. one query job moves the stage into the destination: events `INSERT … SELECT` only uuids the
   table does not hold; persons and sessions `MERGE` on `(team_id, distinct_id)` and
   `(team_id, session_id)` where the incoming version is newer; `PARSE_JSON` for JSON columns;
6. the stage table is deleted.

Stage tables are found by their labels, which `tables.list` returns with every table (a
description would need one `tables.get` per table): the next run of the export and the start-up
sweep delete only tables labelled as this export's stage, created longer ago than any run lives.

Errors are classified in `classify()`: a missing project, dataset or table, denied access,
rejected credentials and invalid data or queries are `NonRetryableError`s naming what to fix;
rate limits, 5xx, timeouts and dropped connections are `RetryableError`s. The private key never
appears in a message.

`google-cloud-bigquery` is imported when a client is made, never when this module is imported.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchexports.core import watchdog
from batchexports.core.errors import DestinationError, NonRetryableError, RetryableError, classified_by
from batchexports.core.model_rules import MERGE_KEYS, VERSION_COLUMNS
from batchexports.core.run import CancelToken, ExportRun, Progress, ProgressCallback
from batchexports.destinations.base import SinkResult
from batchexports.destinations.testing import scrub
from batchexports.destinations.warehouse import staging

logger = logging.getLogger(__name__)

SCOPES = ("https://www.googleapis.com/auth/bigquery",)
STAGE_FILE_BYTES = 256 * 1024 * 1024
STAGE_EXPIRY = dt.timedelta(days=1)
JOB_TIMEOUT = 3600.0
REQUEST_TIMEOUT = (10.0, 300.0)  # (connect, read) seconds of one REST call; uploads send 100 MB+
# Every secret field of the spec (`bigquery.py`), which the API never returns: a message of
# Google's that quotes the service account's e-mail must not show it either.
SECRET_FIELDS = ("private_key", "private_key_id", "client_email", "token_uri")


PARTITION_COLUMN = {"events": "timestamp"}


# Label keys and values: lowercase letters, digits, `_` and `-`, at most 63 characters.
STAGE_LABEL, CREATED_LABEL = "batchexports_stage", "batchexports_created"


def label_value(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "_", text.lower())[:63]


def stage_labels(export_id: str | None, created: dt.datetime | None = None) -> dict[str, str]:
    """The labels of a stage table: whose it is and when it was created (Unix seconds)."""
    created = created or dt.datetime.now(dt.UTC)
    return {STAGE_LABEL: label_value(export_id or ""), CREATED_LABEL: str(int(created.timestamp()))}


def is_stale(labels: Mapping[str, str], export_id: str, older_than: dt.timedelta) -> bool:
    """Whether `labels` mark a stage table of `export_id` created more than `older_than` ago."""
    if not export_id or labels.get(STAGE_LABEL) != label_value(export_id):
        return False
    try:
        created = dt.datetime.fromtimestamp(int(labels[CREATED_LABEL]), dt.UTC)
    except (KeyError, ValueError, OverflowError):
        return False
    return created < dt.datetime.now(dt.UTC) - older_than


def quote(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


def stage_table_id(run: ExportRun, table_id: str) -> str:
    """Deterministic per (batch export, interval, model): a retry replaces the attempt before it."""
    return f"{table_id}_stage_{staging.stage_digest(run)[:16]}"


# --- errors -----------------------------------------------------------------------------------

_RETRYABLE_REASONS = frozenset(
    {"rateLimitExceeded", "backendError", "internalError", "jobBackendError", "jobRateLimitExceeded", "timeout"}
)


def _reasons(error: Any) -> set[str]:
    return {str(item.get("reason")) for item in (getattr(error, "errors", None) or []) if isinstance(item, dict)}


def classify(error: BaseException, config: Mapping[str, Any], what: str = "") -> DestinationError:
    """A client error as a `RetryableError` or a `NonRetryableError` with an actionable message."""
    if isinstance(error, DestinationError):
        return error
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    secrets = {name: config.get(name) for name in SECRET_FIELDS}
    raw = getattr(error, "message", None) or str(error)
    message = scrub(" ".join(str(raw).split())[:500], secrets)
    project, dataset = config.get("project_id"), config.get("dataset_id")
    reasons = _reasons(error)

    def fail(text: str) -> NonRetryableError:
        return NonRetryableError(scrub(text, secrets))

    if isinstance(error, auth.RefreshError):
        return fail(
            "Google rejected the service account's credentials: check 'private_key', 'private_key_id', "
            f"'client_email' and 'token_uri' (from the key file), and that the key is not deleted. ({message})"
        )
    if isinstance(error, auth.TransportError):
        return RetryableError(f"Could not reach Google's token endpoint; the run will retry: {message}")
    if isinstance(error, api.Unauthorized):
        return fail(f"BigQuery rejected the credentials: check the service account key fields. ({message})")
    if isinstance(error, api.NotFound):
        if what == "dataset" or "Dataset" in message:
            return fail(
                f"Dataset '{dataset}' does not exist in project '{project}', or the service account cannot see it: "
                "check 'dataset_id' and 'project_id'."
            )
        return fail(f"BigQuery could not find {what or 'an object'}: {message}")
    if isinstance(error, api.Forbidden | api.TooManyRequests) and reasons & (_RETRYABLE_REASONS | {"quotaExceeded"}):
        return RetryableError(f"BigQuery is rate limiting this export; the run will retry: {message}")
    if isinstance(error, api.Forbidden):
        return fail(
            "The service account lacks a BigQuery permission: grant it BigQuery Data Editor on the dataset and "
            f"BigQuery Job User on project '{project}'. ({message})"
        )
    if isinstance(error, api.TooManyRequests | api.ServerError | api.RetryError | api.DeadlineExceeded):
        return RetryableError(f"BigQuery is unavailable or timed out; the run will retry: {message}")
    if isinstance(error, api.BadRequest | api.Conflict) and reasons & _RETRYABLE_REASONS:
        return RetryableError(f"BigQuery failed a job transiently; the run will retry: {message}")
    if isinstance(error, api.BadRequest):
        words = ("type", "schema", "cast", "convert", "cannot be inserted")
        if reasons & {"invalid", "invalidQuery"} and any(word in message.lower() for word in words):
            return fail(
                f"A column of table '{config.get('table_id')}' does not fit the exported data: {message}. Check that "
                "the table's column types match, or let batchexports create the table."
            )
        return fail(f"BigQuery rejected a request: {message}")
    if isinstance(error, api.GoogleAPICallError):
        return fail(f"BigQuery failed: {message}")
    if isinstance(error, ValueError) and what == "credentials":
        return fail(
            "The service account key cannot be read: check 'private_key' (the whole PEM key from the key file, "
            "with its line breaks) and 'client_email'."
        )
    if isinstance(error, ConnectionError | TimeoutError | OSError) or type(error).__module__.startswith("requests"):
        return RetryableError(f"The connection to BigQuery failed; the run will retry: {type(error).__name__}")
    return RetryableError(f"BigQuery failed ({type(error).__name__}); the run will retry: {message}")


def classified(config: Mapping[str, Any], what: str = "") -> contextlib.AbstractContextManager[None]:
    return classified_by(classify, config, what)


# --- client -----------------------------------------------------------------------------------


def credentials(config: Mapping[str, Any]) -> Any:
    from google.oauth2 import service_account

    info = {
        "type": "service_account",
        "project_id": config["project_id"],
        "private_key": config["private_key"],
        "private_key_id": config["private_key_id"],
        "client_email": config["client_email"],
        "token_uri": config["token_uri"],
    }
    with classified(config, "credentials"):
        return service_account.Credentials.from_service_account_info(info, scopes=list(SCOPES))


def make_client(config: Mapping[str, Any], transport: Any = None) -> Any:
    """A BigQuery client as the service account. `transport` (a `requests` adapter) replaces the
    network for both the token endpoint and BigQuery; the tests pass a fake one."""
    import requests
    from google.auth.transport.requests import AuthorizedSession, Request
    from google.cloud import bigquery

    class BoundedSession(AuthorizedSession):
        """The client passes `timeout=None` (wait forever) on its REST calls: bound each one."""

        def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
            kwargs["timeout"] = kwargs.get("timeout") or REQUEST_TIMEOUT
            return super().request(method, url, *args, **kwargs)

    creds = credentials(config)
    if transport is not None:
        token_session = requests.Session()
        token_session.mount("https://", transport)
        token_session.mount("http://", transport)
        http = BoundedSession(creds, auth_request=Request(token_session))
        http.mount("https://", transport)
        http.mount("http://", transport)
    else:
        http = BoundedSession(creds)
    return bigquery.Client(project=config["project_id"], credentials=creds, _http=http)


# --- schema -----------------------------------------------------------------------------------


_is_json = staging.is_json


def _scalar_type(kind: pa.DataType) -> str:
    if pa.types.is_boolean(kind):
        return "BOOL"
    if pa.types.is_integer(kind):
        return "INT64"
    if pa.types.is_floating(kind):
        return "FLOAT64"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP"
    if pa.types.is_date(kind):
        return "DATE"
    return "STRING"


def schema_fields(schema: pa.Schema, use_json_type: bool, staged: bool = False) -> list[Any]:
    """BigQuery `SchemaField`s of an exported schema; JSON columns are JSON only in the destination."""
    from google.cloud import bigquery

    fields = []
    for field in schema:
        if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
            fields.append(bigquery.SchemaField(field.name, _scalar_type(field.type.value_type), mode="REPEATED"))
        elif _is_json(field):
            kind = "JSON" if use_json_type and not staged else "STRING"
            fields.append(bigquery.SchemaField(field.name, kind, mode="NULLABLE"))
        else:
            fields.append(bigquery.SchemaField(field.name, _scalar_type(field.type), mode="NULLABLE"))
    return fields


# Staged with this warehouse's preferred file size.
stage_parquet = functools.partial(staging.stage_parquet, part_bytes=STAGE_FILE_BYTES)


# --- the sink ---------------------------------------------------------------------------------


class BigQuerySink:
    def __init__(self, config: Mapping[str, Any]):
        self.config = config
        self.project = config["project_id"]
        self.dataset = config["dataset_id"]
        self.table_id = config.get("table_id") or "events"
        self.use_json_type = bool(config.get("use_json_type"))
        self.export_id: str | None = None  # of the export under way: named in its stage table's labels

    def ref(self, table_id: str) -> str:
        return f"{quote(self.project)}.{quote(self.dataset)}.{quote(table_id)}"

    def export(
        self,
        run: ExportRun,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> SinkResult:
        self.export_id = run.batch_export_id
        with tempfile.TemporaryDirectory(prefix="batchexports-bigquery-") as folder:
            files, records, size = stage_parquet(Path(folder), batches, schema, progress, cancel)
            client = make_client(self.config)
            # Load and query jobs report no progress; each wait is bounded by JOB_TIMEOUT, so is the phase.
            try:
                with watchdog.patience(2 * JOB_TIMEOUT):
                    self.check_dataset(client)
                    stage = stage_table_id(run, self.table_id)
                    merge = self.merge_sql(run.model, stage, schema, self.ensure_table(client, run.model, schema))
                    staging.drop_stale_at_run_start(functools.partial(self.drop_stale, client), self.export_id)
                    try:
                        self.load_stage(client, stage, schema, files, cancel)
                        if progress:
                            progress(Progress(records, size))
                        self.run_query(client, merge)
                    finally:
                        with contextlib.suppress(Exception):
                            client.delete_table(f"{self.project}.{self.dataset}.{stage}", not_found_ok=True)
            finally:
                with contextlib.suppress(Exception):
                    client.close()
        if progress:
            progress(Progress(records, size))
        return SinkResult(records, size, ())

    def drop_stale_stages(self, export_id: str, older_than: dt.timedelta) -> list[str]:
        """The start-up sweep of one export: delete its stage tables older than `older_than`."""
        client = make_client(self.config)
        try:
            return self.drop_stale(client, export_id, older_than)
        finally:
            with contextlib.suppress(Exception):
                client.close()

    def drop_stale(self, client: Any, export_id: str, older_than: dt.timedelta) -> list[str]:
        """Delete the dataset's tables labelled as stages of `export_id` created more than `older_than` ago."""
        with classified(self.config, "dataset"):
            stale = [
                item.table_id
                for item in client.list_tables(f"{self.project}.{self.dataset}")
                if is_stale(item.labels or {}, export_id, older_than)
            ]
            for table_id in stale:
                client.delete_table(f"{self.project}.{self.dataset}.{table_id}", not_found_ok=True)
        return stale

    def create_stage(self, client: Any, stage: str, fields: list[Any], created: dt.datetime | None = None) -> None:
        """The empty stage table, labelled as this export's, expiring after `STAGE_EXPIRY` besides."""
        from google.cloud import bigquery

        table = bigquery.Table(f"{self.project}.{self.dataset}.{stage}", schema=fields)
        table.expires = dt.datetime.now(dt.UTC) + STAGE_EXPIRY
        table.labels = stage_labels(self.export_id, created)
        client.create_table(table)

    def check_dataset(self, client: Any) -> None:
        with classified(self.config, "dataset"):
            client.get_dataset(f"{self.project}.{self.dataset}")

    def ensure_table(self, client: Any, model: str, schema: pa.Schema) -> dict[str, str]:
        """Create the destination table when missing; its columns: name -> BigQuery type."""
        from google.api_core.exceptions import NotFound
        from google.cloud import bigquery

        table_ref = f"{self.project}.{self.dataset}.{self.table_id}"
        with classified(self.config, f"table '{self.table_id}'"):
            try:
                table = client.get_table(table_ref)
            except NotFound:
                table = bigquery.Table(table_ref, schema=schema_fields(schema, self.use_json_type))
                partition = PARTITION_COLUMN.get(model)
                if partition and partition in schema.names:
                    table.time_partitioning = bigquery.TimePartitioning(
                        type_=bigquery.TimePartitioningType.DAY, field=partition
                    )
                table = client.create_table(table, exists_ok=True)
        # BigQuery column names are case-insensitive.
        return {field.name.lower(): f"{field.mode} {field.field_type}".upper() for field in table.schema}

    def load_stage(
        self, client: Any, stage: str, schema: pa.Schema, files: list[Path], cancel: CancelToken | None = None
    ) -> None:
        """Re-create the stage table empty, and load every Parquet file into it with a load job."""
        from google.cloud import bigquery

        stage_ref = f"{self.project}.{self.dataset}.{stage}"
        fields = schema_fields(schema, self.use_json_type, staged=True)
        with classified(self.config, f"stage table '{stage}'"):
            client.delete_table(stage_ref, not_found_ok=True)
            self.create_stage(client, stage, fields)
            for path in files:
                if cancel:
                    cancel.raise_if_cancelled()
                job_config = bigquery.LoadJobConfig(
                    source_format=bigquery.SourceFormat.PARQUET,
                    write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
                    create_disposition=bigquery.CreateDisposition.CREATE_NEVER,
                    schema=fields,
                )
                parquet_options = bigquery.ParquetOptions()
                parquet_options.enable_list_inference = True
                job_config.parquet_options = parquet_options
                with open(path, "rb") as file:
                    job = client.load_table_from_file(
                        file, stage_ref, job_config=job_config, size=path.stat().st_size, job_id_prefix="batchexports_"
                    )
                job.result(timeout=JOB_TIMEOUT)

    def run_query(self, client: Any, sql: str) -> None:
        with classified(self.config, f"table '{self.table_id}'"):
            client.query(sql, job_id_prefix="batchexports_").result(timeout=JOB_TIMEOUT)

    def merge_sql(self, model: str, stage: str, schema: pa.Schema, target: Mapping[str, str]) -> str:
        keys = MERGE_KEYS[model]
        missing = [key for key in keys if key not in target]
        if missing:
            raise NonRetryableError(
                f"Table '{self.table_id}' has no column {', '.join(missing)}, which batchexports merges {model} on: "
                "add it, or export into a new table."
            )
        columns = [field for field in schema if field.name.lower() in target]

        def value(field: pa.Field) -> str:
            source = f"s.{quote(field.name)}"
            return (
                f"PARSE_JSON({source})" if _is_json(field) and target[field.name.lower()].endswith("JSON") else source
            )

        names = [quote(field.name) for field in columns]
        select = ", ".join(f"{value(field)} AS {quote(field.name)}" for field in columns)
        on = " AND ".join(f"t.{quote(key)} = s.{quote(key)}" for key in keys)
        destination, staged = self.ref(self.table_id), self.ref(stage)
        if model == "events":
            return (
                f"INSERT INTO {destination} ({', '.join(names)}) SELECT {select} FROM {staged} AS s "
                f"WHERE NOT EXISTS (SELECT 1 FROM {destination} AS t WHERE {on})"
            )
        versions = [quote(v) for v in VERSION_COLUMNS[model] if v.lower() in target]
        newer = " OR ".join(f"t.{v} IS NULL OR t.{v} < s.{v}" for v in versions)
        condition = f" AND ({newer})" if newer else ""
        updates = ", ".join(f"{name} = s.{name}" for name in names if name not in {quote(k) for k in keys})
        return (
            f"MERGE INTO {destination} AS t USING (SELECT {select} FROM {staged} AS s) AS s ON {on} "
            f"WHEN MATCHED{condition} THEN UPDATE SET {updates} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) VALUES ({', '.join('s.' + n for n in names)})"
        )
