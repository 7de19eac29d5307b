"""The Databricks sink: Parquet files PUT into a Unity Catalog volume, `COPY INTO` a stage table,
then one `MERGE` into the destination table.

One run:

1. connect to the SQL warehouse as the OAuth service principal (`OAuthM2M`: the client
   credentials grant against the workspace's `/oidc/v1/token`, a bearer token refreshed
   before it expires, handed to the connector as its `credentials_provider`);
2. `CREATE TABLE IF NOT EXISTS` the destination (VARIANT for JSON columns when
   `use_variant_type`, else STRING; lists as ARRAY<STRING>), then `DESCRIBE TABLE` it;
3. write the batches as zstd Parquet files in a local temporary folder (bounded parts), the
   only folder the connector may read for PUT (`staging_allowed_local_path`);
4. this export's stage tables (and their volumes) a killed run left are dropped
   (`drop_stale_stages`), then `load_stage()`: a stage table named after the run, its `COMMENT`
   the stage mark (`staging.stage_mark`: the export and the creation time), and a volume of the
   same name are (re)created, in that order so that a marked table covers every volume,
   `PUT '<file>' INTO '/Volumes/<catalog>/<schema>/<volume>/<file>' OVERWRITE` every file,
   then `COPY INTO` the stage table `FROM` the volume folder (`FILEFORMAT = PARQUET`);
5. one `MERGE` from the stage table: events insert the uuids the table does not hold;
   persons and sessions match on `(team_id, distinct_id)` / `(team_id, session_id)` and update
   only when the incoming version is newer. With `use_automatic_schema_evolution` it is
   `MERGE WITH SCHEMA EVOLUTION … UPDATE SET * / INSERT *`, so new columns are added to the
   table; without it, only the columns the table has are written;
6. the stage table and the volume are dropped. A killed run leaves both: the next run of the
   export and the start-up sweep find the export's marked stage tables by their comment in the
   catalog's `information_schema.tables` and drop those older than any run lives, with their volume.

Errors are classified in `classify()`: rejected client credentials, a missing catalog, schema
or warehouse, missing privileges and values that do not fit a column are `NonRetryableError`s;
network failures, timeouts, 429/503 and concurrent-write conflicts are `RetryableError`s.
Neither `client_id` nor `client_secret` ever appears in a message.

`databricks-sql-connector` is imported when connecting, never when this module is imported.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
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

STAGE_FILE_BYTES = 128 * 1024 * 1024
TOKEN_TIMEOUT = 30.0
SOCKET_TIMEOUT = 900.0
REMOTE_PATIENCE = 3600.0  # the no-progress limit while the warehouse loads and merges
SECRET_FIELDS = ("client_id", "client_secret")


def quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def string(text: str) -> str:
    """A Databricks SQL string literal (backslash is an escape character in them)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def stage_name(run: ExportRun) -> str:
    """Deterministic per (batch export, interval, model): a retry replaces the attempt before it."""
    return "batchexports_stage_" + staging.stage_digest(run)[:16]


# --- authentication ---------------------------------------------------------------------------


class OAuthM2M:
    """OAuth machine-to-machine authentication of a Databricks service principal, as a
    `credentials_provider` of the SQL connector: `provider()` gives a header factory that returns
    `{"Authorization": "Bearer <token>"}`, fetching a token with the client credentials grant and
    fetching a new one a minute before it expires."""

    def __init__(self, host: str, client_id: str, client_secret: str, token_url: str | None = None):
        self.token_url = token_url or f"https://{host}/oidc/v1/token"
        self._client_id = client_id
        self._client_secret = client_secret
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def auth_type(self) -> str:
        return "oauth-m2m"

    def __call__(self, *args: Any, **kwargs: Any) -> Callable[[], dict[str, str]]:
        return lambda: {"Authorization": f"Bearer {self.token()}"}

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() > self._expires - 60:
                self._token, lifetime = self._fetch()
                self._expires = time.monotonic() + lifetime
            return self._token

    def _fetch(self) -> tuple[str, float]:
        import httpx

        secrets = {"client_id": self._client_id, "client_secret": self._client_secret}
        try:
            response = httpx.post(
                self.token_url,
                data={"grant_type": "client_credentials", "scope": "all-apis"},
                auth=(self._client_id, self._client_secret),
                timeout=TOKEN_TIMEOUT,
            )
        except httpx.HTTPError as error:
            raise RetryableError(
                f"Could not reach the workspace's token endpoint ({type(error).__name__}); the run will retry."
            ) from None
        if response.status_code in (400, 401, 403):
            try:
                detail = response.json().get("error_description") or response.json().get("error") or ""
            except ValueError:
                detail = ""
            raise NonRetryableError(
                scrub(
                    "Databricks rejected the service principal's OAuth credentials: check 'client_id' and "
                    f"'client_secret' (an OAuth secret of the service principal). ({detail})",
                    secrets,
                )
            )
        if response.status_code >= 300:
            raise RetryableError(f"The workspace's token endpoint answered {response.status_code}; the run will retry.")
        body = response.json()
        return str(body["access_token"]), float(body.get("expires_in") or 3600)


def connect(config: Mapping[str, Any], staging_dir: Path | None = None) -> Any:
    """A connector connection to the SQL warehouse; PUT may read files only under `staging_dir`."""
    from databricks import sql

    provider = OAuthM2M(config["server_hostname"], config["client_id"], config["client_secret"])
    with classified(config):
        return sql.connect(
            server_hostname=config["server_hostname"],
            http_path=config["http_path"],
            credentials_provider=provider,
            staging_allowed_local_path=str(staging_dir) if staging_dir else None,
            user_agent_entry="batchexports",
            _socket_timeout=SOCKET_TIMEOUT,
        )


# --- errors -----------------------------------------------------------------------------------

_TYPE_ERRORS = (
    "CAST_INVALID_INPUT", "DATATYPE_MISMATCH", "DELTA_FAILED_TO_MERGE_FIELDS", "INCOMPATIBLE_DATA",
    "DELTA_MERGE_INCOMPATIBLE_DATATYPE", "CANNOT_PARSE_JSON", "INVALID_VARIANT", "MALFORMED_RECORD",
    "CANNOT_UP_CAST", "CONVERSION ERROR",
)  # fmt: skip
_TRANSIENT = (
    "CONCURRENT", "TEMPORARILY_UNAVAILABLE", "RESOURCE_EXHAUSTED", "TOO_MANY_REQUESTS", "SERVICE_UNAVAILABLE",
    "WAREHOUSE_STARTING", "TIMED OUT", "TIMEOUT",
)  # fmt: skip


def _cause(error: BaseException) -> DestinationError | None:
    """Our own token errors, raised inside the connector's requests, come back wrapped."""
    seen = 0
    current: BaseException | None = error
    while current is not None and seen < 10:
        if isinstance(current, DestinationError):
            return current
        original = (getattr(current, "context", None) or {}).get("original-exception")
        if isinstance(original, DestinationError):
            return original
        current = current.__cause__ or current.__context__
        seen += 1
    return None


def classify(error: BaseException, config: Mapping[str, Any]) -> DestinationError:
    if isinstance(error, DestinationError):
        return error
    wrapped = _cause(error)
    if wrapped is not None:
        return wrapped
    secrets = {name: config.get(name) for name in SECRET_FIELDS}
    context = getattr(error, "context", None) or {}
    status = context.get("http-code")
    raw = getattr(error, "message", None) or str(error)
    message = scrub(" ".join(str(raw).split())[:500], secrets)
    upper = message.upper()
    name = type(error).__name__
    catalog, schema = config.get("catalog"), config.get("schema")

    def fail(text: str) -> NonRetryableError:
        return NonRetryableError(scrub(text, secrets))

    if status == 401:
        return fail("Databricks rejected the service principal's token: check 'client_id' and 'client_secret'.")
    if status == 403:
        return fail(
            "The service principal may not use the SQL warehouse: grant it CAN USE on the warehouse of "
            f"'http_path'. ({message})"
        )
    if status == 404:
        return fail(
            "There is no SQL warehouse at 'http_path' on 'server_hostname': copy both from the warehouse's "
            "connection details."
        )
    if "CATALOG_NOT_FOUND" in upper or "NO_SUCH_CATALOG" in upper:
        return fail(f"Catalog '{catalog}' does not exist, or the service principal cannot see it: check 'catalog'.")
    if "SCHEMA_NOT_FOUND" in upper:
        return fail(
            f"Schema '{schema}' does not exist in catalog '{catalog}', or the service principal cannot see it: "
            "check 'schema'."
        )
    if "PERMISSION_DENIED" in upper or "INSUFFICIENT_PERMISSIONS" in upper or "UNAUTHORIZED" in upper:
        return fail(
            "The service principal lacks a privilege: it needs USE CATALOG, USE SCHEMA, CREATE TABLE, CREATE "
            f"VOLUME, READ/WRITE VOLUME and MODIFY in '{catalog}.{schema}'. ({message})"
        )
    if any(kind in upper for kind in _TYPE_ERRORS):
        return fail(
            f"A value did not fit a column of table '{config.get('table_name')}': {message}. Check that the table's "
            "column types match the exported columns, or let batchexports create the table."
        )
    if "UNRESOLVED_COLUMN" in upper or "FIELD_NOT_FOUND" in upper:
        return fail(f"The table lacks a column the export needs: {message}")
    if any(kind in upper for kind in _TRANSIENT):
        return RetryableError(f"Databricks is busy or a concurrent write conflicted; the run will retry: {message}")
    if name == "ServerOperationError" or name == "ProgrammingError":
        return fail(f"Databricks rejected a statement: {message}")
    if status in (429, 503) or name in ("RequestError", "MaxRetryDurationError", "OperationalError", "InterfaceError"):
        return RetryableError(f"The connection to Databricks failed ({name}); the run will retry: {message}")
    return RetryableError(f"Databricks failed ({name}); the run will retry: {message}")


def classified(config: Mapping[str, Any]) -> contextlib.AbstractContextManager[None]:
    return classified_by(classify, config)


# --- schema -----------------------------------------------------------------------------------


_is_json = staging.is_json


def _scalar_type(kind: pa.DataType) -> str:
    if pa.types.is_boolean(kind):
        return "BOOLEAN"
    if pa.types.is_integer(kind):
        return "BIGINT"
    if pa.types.is_floating(kind):
        return "DOUBLE"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP"
    if pa.types.is_date(kind):
        return "DATE"
    return "STRING"


def column_type(field: pa.Field, use_variant: bool, staged: bool = False) -> str:
    if pa.types.is_list(field.type) or pa.types.is_large_list(field.type):
        return f"ARRAY<{_scalar_type(field.type.value_type)}>"
    if _is_json(field):
        return "VARIANT" if use_variant and not staged else "STRING"
    return _scalar_type(field.type)


# Staged with this warehouse's preferred file size.
stage_parquet = functools.partial(staging.stage_parquet, part_bytes=STAGE_FILE_BYTES)


# --- the sink ---------------------------------------------------------------------------------


class DatabricksSink:
    def __init__(self, config: Mapping[str, Any]):
        self.config = config
        self.catalog = config["catalog"]
        self.schema = config["schema"]
        self.table_name = config["table_name"]
        self.use_variant = bool(config.get("use_variant_type", True))
        self.evolve = bool(config.get("use_automatic_schema_evolution", True))
        self.export_id: str | None = None  # of the export under way: named in its stage table's mark

    def drop_stale_stages(self, export_id: str, older_than: dt.timedelta) -> list[str]:
        """The start-up sweep of one export: drop its stage tables (and volumes) older than `older_than`."""
        connection = connect(self.config)
        try:
            with classified(self.config):
                return self.drop_stale(connection.cursor(), export_id, older_than)
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def drop_stale(self, cursor: Any, export_id: str, older_than: dt.timedelta) -> list[str]:
        """Drop the schema's tables marked as stages of `export_id` created more than `older_than` ago."""
        cursor.execute(
            f"SELECT table_name, comment FROM {quote(self.catalog)}.information_schema.tables "
            f"WHERE table_schema = {string(self.schema.lower())} AND comment LIKE {string(staging.STAGE_MARK + '%')}"
        )
        stale = [str(name) for name, comment in cursor.fetchall() if staging.is_stale(comment, export_id, older_than)]
        for name in stale:
            self.drop_stage(cursor, name)
        return stale

    def ref(self, name: str) -> str:
        return f"{quote(self.catalog)}.{quote(self.schema)}.{quote(name)}"

    def volume_path(self, volume: str, file_name: str = "") -> str:
        # Unity Catalog stores names in lower case; volume paths name them so.
        return f"/Volumes/{self.catalog.lower()}/{self.schema.lower()}/{volume}/{file_name}"

    def export(
        self,
        run: ExportRun,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> SinkResult:
        self.export_id = run.batch_export_id
        with tempfile.TemporaryDirectory(prefix="batchexports-databricks-") as folder:
            files, records, size = stage_parquet(Path(folder), batches, schema, progress, cancel)
            connection = connect(self.config, Path(folder))
            try:
                # Uploads, COPY INTO and MERGE report no progress; every request is bounded by SOCKET_TIMEOUT.
                with classified(self.config), watchdog.patience(REMOTE_PATIENCE):
                    cursor = connection.cursor()
                    cursor.execute(self.table_ddl(self.ref(self.table_name), schema))
                    stage = stage_name(run)
                    merge = self.merge_sql(run.model, stage, schema, self.target_columns(cursor, self.table_name))
                    staging.drop_stale_at_run_start(functools.partial(self.drop_stale, cursor), self.export_id)
                    try:
                        self.load_stage(cursor, stage, schema, files, cancel)
                        if progress:
                            progress(Progress(records, size))
                        cursor.execute(merge)
                    finally:
                        with contextlib.suppress(Exception):
                            self.drop_stage(cursor, stage)
            finally:
                with contextlib.suppress(Exception):
                    connection.close()
        if progress:
            progress(Progress(records, size))
        return SinkResult(records, size, ())

    def table_ddl(self, ref: str, schema: pa.Schema, staged: bool = False, mark: str | None = None) -> str:
        """The destination table's DDL, or (`staged`) the stage table's, commented with its stage `mark`."""
        columns = ", ".join(f"{quote(f.name)} {column_type(f, self.use_variant, staged)}" for f in schema)
        if staged:
            comment = f" COMMENT {string(mark)}" if mark else ""
            return f"CREATE OR REPLACE TABLE {ref} ({columns}){comment}"
        return f"CREATE TABLE IF NOT EXISTS {ref} ({columns})"

    def target_columns(self, cursor: Any, table: str) -> dict[str, str]:
        """Columns of a table: lower-cased name -> upper-cased type (DESCRIBE TABLE stops at its blank row)."""
        cursor.execute(f"DESCRIBE TABLE {self.ref(table)}")
        columns: dict[str, str] = {}
        for row in cursor.fetchall():
            name = str(row[0] or "").strip()
            if not name or name.startswith("#"):
                break
            columns[name.lower()] = str(row[1]).upper()
        return columns

    def load_stage(
        self, cursor: Any, stage: str, schema: pa.Schema, files: list[Path], cancel: CancelToken | None = None
    ) -> None:
        """(Re)create the marked stage table and its volume, PUT the files into the volume, COPY them in."""
        cursor.execute(self.table_ddl(self.ref(stage), schema, staged=True, mark=staging.stage_mark(self.export_id)))
        cursor.execute(f"CREATE VOLUME IF NOT EXISTS {self.ref(stage)}")
        for path in files:
            if cancel:
                cancel.raise_if_cancelled()
            cursor.execute(f"PUT '{path.as_posix()}' INTO '{self.volume_path(stage, path.name)}' OVERWRITE")
        cursor.execute(
            f"COPY INTO {self.ref(stage)} FROM '{self.volume_path(stage)}' FILEFORMAT = PARQUET "
            "FORMAT_OPTIONS ('mergeSchema' = 'false') COPY_OPTIONS ('force' = 'true', 'mergeSchema' = 'false')"
        )

    def drop_stage(self, cursor: Any, stage: str) -> None:
        try:
            cursor.execute(f"DROP TABLE IF EXISTS {self.ref(stage)}")
        finally:
            cursor.execute(f"DROP VOLUME IF EXISTS {self.ref(stage)}")

    def merge_sql(self, model: str, stage: str, schema: pa.Schema, target: Mapping[str, str]) -> str:
        keys = MERGE_KEYS[model]
        missing = [key for key in keys if key not in target]
        if missing:
            raise NonRetryableError(
                f"Table '{self.table_name}' has no column {', '.join(missing)}, which batchexports merges {model} on: "
                "add it, or export into a new table."
            )
        columns = [f for f in schema if self.evolve or f.name.lower() in target]

        def value(field: pa.Field) -> str:
            source = f"s.{quote(field.name)}"
            existing = target.get(field.name.lower())
            variant = existing.startswith("VARIANT") if existing else self.use_variant
            return f"PARSE_JSON({source})" if _is_json(field) and variant else source

        names = [quote(f.name) for f in columns]
        select = ", ".join(f"{value(f)} AS {quote(f.name)}" for f in columns)
        on = " AND ".join(f"t.{quote(key)} = s.{quote(key)}" for key in keys)
        merge = "MERGE WITH SCHEMA EVOLUTION INTO" if self.evolve else "MERGE INTO"
        head = (
            f"{merge} {self.ref(self.table_name)} AS t USING (SELECT {select} FROM {self.ref(stage)} AS s) AS s ON {on}"
        )
        if self.evolve:
            insert, update = "INSERT *", "UPDATE SET *"
        else:
            insert = f"INSERT ({', '.join(names)}) VALUES ({', '.join('s.' + n for n in names)})"
            update = "UPDATE SET " + ", ".join(f"{n} = s.{n}" for n in names if n not in {quote(k) for k in keys})
        if model == "events":
            return f"{head} WHEN NOT MATCHED THEN {insert}"
        versions = [quote(v) for v in VERSION_COLUMNS[model] if v.lower() in target]
        newer = " OR ".join(f"t.{v} IS NULL OR t.{v} < s.{v}" for v in versions)
        matched = f"WHEN MATCHED AND ({newer})" if newer else "WHEN MATCHED"
        return f"{head} {matched} THEN {update} WHEN NOT MATCHED THEN {insert}"
