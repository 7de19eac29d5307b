"""The Snowflake sink: Parquet files staged in a table stage, `COPY INTO` a stage table, then one
statement that leaves the destination table as if the interval ran once.

One run:

1. connect (password, or key pair: the PEM `private_key`, decrypted with its optional
   passphrase, handed to the connector as PKCS#8 DER bytes) and `USE WAREHOUSE`;
2. `CREATE TABLE IF NOT EXISTS` the destination table (VARIANT for JSON columns and lists),
   then read its columns: only the columns both sides have are written, so a table created
   by PostHog or by hand keeps working;
3. write the batches as zstd Parquet files in a local temporary folder (bounded parts);
4. drop this export's stage tables a killed run left (`drop_stale_stages`), then `load_stage()`:
   `CREATE OR REPLACE TRANSIENT TABLE` a stage table named after the run, its `COMMENT` the
   stage mark (`staging.stage_mark`: the export and the creation time), `PUT file://… @%stage/…`
   every file into that table's own stage, and
   `COPY INTO stage … MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE PURGE = TRUE`;
5. one statement from the stage table into the destination: events insert only the uuids the
   table does not hold yet; persons and sessions `MERGE` on `(team_id, distinct_id)` and
   `(team_id, session_id)`, updating a row only when the incoming version is newer
   (`person_version`/`person_distinct_id_version`; `_inserted_at` for sessions);
6. drop the stage table. A TRANSIENT table outlives the session, so a killed worker leaves it:
   the next run of the export and the start-up sweep drop the export's marked stage tables older
   than any run lives, found by their comment in `INFORMATION_SCHEMA.TABLES`.

JSON columns travel as text in the stage table and become VARIANT through `PARSE_JSON` in
step 5, inside a `USING (SELECT …)` subquery so the MERGE's own clauses only name columns.

Errors are classified once, in `classify()`: credentials, a missing database, schema or
warehouse, missing privileges and values that do not fit a column are `NonRetryableError`s
whose message names what to fix; dropped connections, timeouts and Snowflake's 5xx/429 are
`RetryableError`s. Messages never contain the user, password or key (`scrub`).

`snowflake.connector` is imported when a sink connects, never when this module is imported.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import logging
import re
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from batchexports.core import watchdog
from batchexports.core.errors import DestinationError, NonRetryableError, RetryableError, classified_by
from batchexports.core.model_rules import JSON_COLUMNS, MERGE_KEYS, VERSION_COLUMNS
from batchexports.core.run import CancelToken, ExportRun, Progress, ProgressCallback
from batchexports.destinations.base import SinkResult
from batchexports.destinations.testing import scrub
from batchexports.destinations.warehouse import staging

logger = logging.getLogger(__name__)

STAGE_FILE_BYTES = 128 * 1024 * 1024  # Snowflake recommends 100-250 MB compressed files per COPY
LOGIN_TIMEOUT = 30
NETWORK_TIMEOUT = 600
SOCKET_TIMEOUT = 120  # one read on the connector's socket
REMOTE_PATIENCE = 3600.0  # the no-progress limit while Snowflake loads and merges
SECRET_FIELDS = ("user", "password", "private_key", "private_key_passphrase")


_VARIANT_TYPES = ("VARIANT", "OBJECT", "ARRAY")
_PLAIN_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*$")


def quote(name: str) -> str:
    """A case-sensitive Snowflake identifier."""
    return '"' + name.replace('"', '""') + '"'


def string(text: str) -> str:
    """A Snowflake string literal (backslash is an escape character in them)."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def object_name(name: str) -> str:
    """A warehouse/database name as a user types it: unquoted (case-insensitive) when it can be."""
    return name if _PLAIN_IDENTIFIER.match(name) else quote(name)


def stage_table_name(run: ExportRun) -> str:
    """Deterministic per (batch export, interval, model), and an unquoted identifier: a retried run
    replaces the stage of the attempt before it, and `@%NAME` needs no quoting."""
    return "BATCHEXPORTS_STAGE_" + staging.stage_digest(run)[:20].upper()


# --- errors -------------------------------------------------------------------------------

_AUTH_ERRNOS = frozenset({390100, 390101, 390102, 390103, 390104, 390144, 390190, 390191, 390318, 394304})
_RETRYABLE_ERRNOS = frozenset(
    {
        250002,  # connection is closed
        250003,  # failed to request (network)
        250005,  # failed to reach the server
        251011,  # connection timeout
        251012,  # retryable HTTP code
        604,  # statement canceled
        625,  # statement timeout
        630,  # statement reached its timeout
        390114,  # authentication token expired: a new connection logs in again
        90034,  # warehouse is being resumed / suspended concurrently
    }
)
_RETRYABLE_CLASSES = (
    "InternalServerError",
    "ServiceUnavailableError",
    "GatewayTimeoutError",
    "BadGatewayError",
    "RequestTimeoutError",
    "TooManyRequests",
    "OtherHTTPRetryableError",
)


def _secrets(config: Mapping[str, Any]) -> dict[str, Any]:
    return {name: config.get(name) for name in SECRET_FIELDS}


def classify(error: BaseException, config: Mapping[str, Any]) -> DestinationError:
    """A connector error as a `RetryableError` or a `NonRetryableError` with an actionable message."""
    if isinstance(error, DestinationError):
        return error
    errno = getattr(error, "errno", None) or 0
    sqlstate = str(getattr(error, "sqlstate", None) or "")
    raw = str(getattr(error, "raw_msg", None) or getattr(error, "msg", None) or error)
    message = scrub(" ".join(raw.split()), _secrets(config))
    lower = message.lower()
    name = type(error).__name__
    database, schema = config.get("database", ""), config.get("schema", "")
    warehouse = config.get("warehouse", "")

    def fail(text: str) -> NonRetryableError:
        return NonRetryableError(scrub(text, _secrets(config)))

    if errno == 390144 or "jwt token is invalid" in lower:
        return fail(
            "Snowflake rejected the key pair: check that 'private_key' is the private key of the public key "
            "set on the user (RSA_PUBLIC_KEY), and the user name."
        )
    if errno in _AUTH_ERRNOS or "incorrect username or password" in lower or sqlstate == "28000":
        return fail("Snowflake rejected the credentials: check 'user' and 'password' (or the key pair).")
    if errno == 251008 or ("private key" in lower and ("invalid" in lower or "could not" in lower)):
        return fail("The private key cannot be used: check 'private_key' and 'private_key_passphrase'.")
    if errno == 606 or "no active warehouse" in lower or ("warehouse" in lower and "does not exist" in lower):
        return fail(
            f"Snowflake has no usable warehouse '{warehouse}': check 'warehouse', that it exists and can resume, "
            "and that the role has USAGE on it."
        )
    if (
        errno == 90105
        or (f"database '{database.lower()}' does not exist" in lower)
        or ("database" in lower and "does not exist" in lower and "schema" not in lower)
    ):
        return fail(
            f"Database '{database}' does not exist, or the role cannot use it: check 'database' and the role's grants."
        )
    if errno == 90106 or ("schema" in lower and "does not exist" in lower):
        return fail(
            f"Schema '{schema}' does not exist in database '{database}', or the role cannot use it: "
            "check 'schema' and the role's grants."
        )
    if errno == 3001 or sqlstate == "42501" or "insufficient privileges" in lower or "not authorized" in lower:
        return fail(f"The role lacks a privilege Snowflake needs for this export: {message}")
    if "role" in lower and ("does not exist" in lower or "not granted" in lower):
        return fail(f"The role cannot be used: check 'role'. Snowflake said: {message}")
    if sqlstate.startswith("22") or errno in (100038, 100035, 100037, 100071, 100072):
        return fail(
            f"A value did not fit a column of table '{config.get('table_name')}': {message}. Check that the "
            "table's column types match the exported columns, or let batchexports create the table."
        )
    if errno == 904 or "invalid identifier" in lower:
        return fail(f"The table lacks a column the export needs: {message}")
    if name in _RETRYABLE_CLASSES or errno in _RETRYABLE_ERRNOS:
        return RetryableError(f"Snowflake is unavailable or timed out ({name}); the run will retry: {message}")
    if errno == 250001:
        if "403" in message or "404" in message or "account" in lower:
            return fail(f"Cannot reach Snowflake account '{config.get('account')}': check 'account'. ({message})")
        return RetryableError(f"Could not connect to Snowflake; the run will retry: {message}")
    if name == "OperationalError" or name == "InterfaceError":
        return RetryableError(f"The connection to Snowflake failed; the run will retry: {message}")
    if name == "ProgrammingError" and ("sql compilation error" in lower or sqlstate.startswith("42")):
        return fail(f"Snowflake rejected a statement: {message}")
    return RetryableError(f"Snowflake failed ({name}); the run will retry: {message}")


def classified(config: Mapping[str, Any]) -> contextlib.AbstractContextManager[None]:
    return classified_by(classify, config)


# --- connection -----------------------------------------------------------------------------


def private_key_bytes(pem: str, passphrase: str | None) -> bytes:
    """The PEM key (optionally encrypted) as unencrypted PKCS#8 DER, what the connector takes."""
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(pem.encode(), password=passphrase.encode() if passphrase else None)
    except TypeError:
        # Raised both for "encrypted but no passphrase" and "passphrase given but not encrypted".
        if passphrase:
            raise NonRetryableError("'private_key' is not encrypted: leave 'private_key_passphrase' empty.") from None
        raise NonRetryableError("'private_key' is encrypted: give its 'private_key_passphrase'.") from None
    except ValueError:
        raise NonRetryableError(
            "'private_key' cannot be read: give a PEM private key, and the right 'private_key_passphrase' "
            "when it is encrypted."
        ) from None
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def connect_params(config: Mapping[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {
        "account": config["account"],
        "user": config["user"],
        "database": config["database"],
        "schema": config["schema"],
        "warehouse": config["warehouse"],
        "login_timeout": LOGIN_TIMEOUT,
        "network_timeout": NETWORK_TIMEOUT,
        "socket_timeout": SOCKET_TIMEOUT,
        "application": "batchexports",
        "session_parameters": {"QUERY_TAG": "batchexports", "TIMEZONE": "UTC"},
    }
    if config.get("role"):
        params["role"] = config["role"]
    if config.get("authentication_type") == "keypair":
        params["authenticator"] = "SNOWFLAKE_JWT"
        params["private_key"] = private_key_bytes(config["private_key"], config.get("private_key_passphrase"))
    else:
        params["password"] = config.get("password")
    return params


def connect(config: Mapping[str, Any]) -> Any:
    """An open connector connection with the configured warehouse in use."""
    import snowflake.connector

    params = connect_params(config)
    with classified(config):
        connection = snowflake.connector.connect(**params)
    try:
        connection.cursor().execute(f"USE WAREHOUSE {object_name(config['warehouse'])}")
    except Exception as error:
        with contextlib.suppress(Exception):
            connection.close()
        failure = classify(error, config)
        if isinstance(failure, NonRetryableError) and type(error).__name__ == "ProgrammingError":
            # Snowflake says "Object does not exist, or operation cannot be performed": name the object.
            raise NonRetryableError(
                f"Snowflake cannot use warehouse '{config['warehouse']}': check 'warehouse', that it exists, and "
                "that the role has USAGE on it."
            ) from None
        raise failure from None
    return connection


# --- table schema --------------------------------------------------------------------------


def _is_json(field: pa.Field) -> bool:
    return field.name in JSON_COLUMNS or pa.types.is_nested(field.type)


def column_type(field: pa.Field, staged: bool = False) -> str:
    """Snowflake type of an exported column; in the stage table, JSON travels as text."""
    kind = field.type
    if _is_json(field):
        if staged:
            return "STRING"
        return "ARRAY" if pa.types.is_list(kind) or pa.types.is_large_list(kind) else "VARIANT"
    if pa.types.is_boolean(kind):
        return "BOOLEAN"
    if pa.types.is_integer(kind):
        return "INTEGER"
    if pa.types.is_floating(kind):
        return "FLOAT"
    if pa.types.is_timestamp(kind):
        return "TIMESTAMP"
    if pa.types.is_date(kind):
        return "DATE"
    return "STRING"


def table_ddl(name: str, schema: pa.Schema, staged: bool = False, mark: str | None = None) -> str:
    """The destination table's DDL, or (`staged`) the stage table's, commented with its stage `mark`."""
    columns = ", ".join(f"{quote(f.name)} {column_type(f, staged)}" for f in schema)
    if staged:
        comment = f" COMMENT = {string(mark)}" if mark else ""
        return f"CREATE OR REPLACE TRANSIENT TABLE {name} ({columns}){comment}"
    return f"CREATE TABLE IF NOT EXISTS {name} ({columns})"


STAGE_TABLES_SQL = (
    "SELECT table_name, comment FROM information_schema.tables WHERE table_schema = CURRENT_SCHEMA() "
    f"AND comment LIKE {string(staging.STAGE_MARK + '%')}"
)


def stale_stages(cursor: Any, export_id: str, older_than: dt.timedelta) -> list[str]:
    """The stage tables of `export_id` in the connection's schema created more than `older_than` ago."""
    cursor.execute(STAGE_TABLES_SQL)
    return [quote(name) for name, comment in cursor.fetchall() if staging.is_stale(comment, export_id, older_than)]


def drop_stale(cursor: Any, export_id: str, older_than: dt.timedelta) -> list[str]:
    stale = stale_stages(cursor, export_id, older_than)
    for name in stale:
        cursor.execute(f"DROP TABLE IF EXISTS {name}")
    return stale


def _as_json_text(batches: Iterable[pa.RecordBatch], schema: pa.Schema) -> tuple[Iterator[pa.RecordBatch], pa.Schema]:
    """List and struct columns rendered as JSON text (the stage table holds them as STRING)."""
    nested = [f.name for f in schema if pa.types.is_nested(f.type)]
    if not nested:
        return iter(batches), schema
    import duckdb

    out_schema = pa.schema([pa.field(f.name, pa.string()) if f.name in nested else f for f in schema])
    select = ", ".join(
        f'to_json("{f.name}")::VARCHAR AS "{f.name}"' if f.name in nested else f'"{f.name}"' for f in schema
    )

    def convert() -> Iterator[pa.RecordBatch]:
        con = duckdb.connect()
        try:
            for batch in batches:
                con.register("incoming", pa.Table.from_batches([batch]))
                table = con.sql(f"SELECT {select} FROM incoming").to_arrow_table().cast(out_schema)
                con.unregister("incoming")
                yield from table.to_batches()
        finally:
            con.close()

    return convert(), out_schema


# --- staging --------------------------------------------------------------------------------


# Staged with this warehouse's preferred file size.
stage_parquet = functools.partial(staging.stage_parquet, part_bytes=STAGE_FILE_BYTES)


# --- the sink -------------------------------------------------------------------------------


class SnowflakeSink:
    def __init__(self, config: Mapping[str, Any]):
        self.config = config
        self.table = quote(config.get("table_name") or "events")
        self.export_id: str | None = None  # of the export under way: named in its stage table's mark

    def drop_stale_stages(self, export_id: str, older_than: dt.timedelta) -> list[str]:
        """The start-up sweep of one export: drop its stage tables older than `older_than`."""
        connection = connect(self.config)
        try:
            with classified(self.config):
                return drop_stale(connection.cursor(), export_id, older_than)
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def export(
        self,
        run: ExportRun,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> SinkResult:
        self.export_id = run.batch_export_id
        batches, staged_schema = _as_json_text(batches, schema)
        with tempfile.TemporaryDirectory(prefix="batchexports-snowflake-") as folder:
            files, records, size = stage_parquet(Path(folder), batches, staged_schema, progress, cancel)
            connection = connect(self.config)
            try:
                # COPY INTO and the merge report no progress; each request is bounded by NETWORK_TIMEOUT.
                with classified(self.config), watchdog.patience(REMOTE_PATIENCE):
                    cursor = connection.cursor()
                    cursor.execute(table_ddl(self.table, schema))
                    stage = stage_table_name(run)
                    merge = self.merge_sql(run.model, stage, schema, self.target_columns(cursor))
                    staging.drop_stale_at_run_start(functools.partial(drop_stale, cursor), self.export_id)
                    try:
                        self.load_stage(cursor, stage, staged_schema, files, progress, cancel, Progress(records, size))
                        cursor.execute(merge)
                    finally:
                        with contextlib.suppress(Exception):
                            cursor.execute(f"DROP TABLE IF EXISTS {stage}")
            finally:
                with contextlib.suppress(Exception):
                    connection.close()
        if progress:
            progress(Progress(records_completed=records, bytes_exported=size))
        return SinkResult(records, size, ())

    def target_columns(self, cursor: Any) -> dict[str, tuple[str, str]]:
        """Columns of the destination table: lower-cased name -> (real name, type)."""
        cursor.execute(f"DESC TABLE {self.table}")
        return {str(row[0]).lower(): (str(row[0]), str(row[1]).upper()) for row in cursor.fetchall()}

    def load_stage(
        self,
        cursor: Any,
        stage: str,
        staged_schema: pa.Schema,
        files: list[Path],
        progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
        totals: Progress | None = None,
    ) -> None:
        """Create the stage table, PUT the files into its table stage, and COPY them in."""
        cursor.execute(table_ddl(stage, staged_schema, staged=True, mark=staging.stage_mark(self.export_id)))
        folder = "batchexports"
        for path in files:
            if cancel:
                cancel.raise_if_cancelled()
            cursor.execute(f"PUT 'file://{path.as_posix()}' @%{stage}/{folder} AUTO_COMPRESS=FALSE OVERWRITE=TRUE")
            if progress and totals:
                progress(totals)  # a heartbeat while uploading
        cursor.execute(
            f"COPY INTO {stage} FROM @%{stage}/{folder} FILE_FORMAT = (TYPE = 'PARQUET') "
            "MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE PURGE = TRUE"
        )
        results = cursor.fetchall()
        failed = [row for row in results if len(row) > 1 and str(row[1]).upper() not in ("LOADED", "LOAD_SKIPPED")]
        if failed:
            raise NonRetryableError(f"Snowflake could not load a staged file: {failed[0]}")

    def merge_sql(self, model: str, stage: str, schema: pa.Schema, target: Mapping[str, tuple[str, str]]) -> str:
        """The one statement that moves the stage table into the destination table."""
        columns = [(f, target[f.name.lower()]) for f in schema if f.name.lower() in target]
        keys = MERGE_KEYS[model]
        missing = [key for key in keys if key not in target]
        if missing:
            raise NonRetryableError(
                f"Table {self.table} has no column {', '.join(map(quote, missing))}, which batchexports merges "
                f"{model} on: add it, or export into a new table."
            )

        def value(field: pa.Field, real: tuple[str, str]) -> str:
            source = f"s.{quote(field.name)}"
            if _is_json(field) and real[1].startswith(_VARIANT_TYPES):
                return f"PARSE_JSON({source})"
            return source

        names = [quote(real[0]) for _, real in columns]
        source = ", ".join(f"{value(field, real)} AS {quote(real[0])}" for field, real in columns)
        on = " AND ".join(f"t.{quote(target[key][0])} = s.{quote(target[key][0])}" for key in keys)
        if model == "events":
            return (
                f"INSERT INTO {self.table} ({', '.join(names)}) SELECT {', '.join(names)} FROM "
                f"(SELECT {source} FROM {stage} AS s) AS s "
                f"WHERE NOT EXISTS (SELECT 1 FROM {self.table} AS t WHERE {on})"
            )
        versions = [target[v][0] for v in VERSION_COLUMNS[model] if v in target]
        newer = " OR ".join(f"t.{quote(v)} < s.{quote(v)} OR t.{quote(v)} IS NULL" for v in versions)
        matched = f"WHEN MATCHED AND ({newer}) THEN UPDATE SET " if newer else "WHEN MATCHED THEN UPDATE SET "
        key_names = {quote(target[key][0]) for key in keys}
        updates = ", ".join(f"{name} = s.{name}" for name in names if name not in key_names)
        return (
            f"MERGE INTO {self.table} AS t USING (SELECT {source} FROM {stage} AS s) AS s ON {on} "
            f"{matched}{updates} "
            f"WHEN NOT MATCHED THEN INSERT ({', '.join(names)}) VALUES ({', '.join('s.' + n for n in names)})"
        )
