"""The PostgreSQL sink: the rows of one run into a table, as if the run happened exactly once.

How one run is loaded:

1. One connection (the run's) checks the schema, creates the table when it is missing (PostHog's
   columns, `jsonb` for JSON, a primary key for persons and sessions), reads the columns the table
   has (only those are written) and drops stage tables an earlier attempt of the run left.
2. The calling thread reads the record batches from the events store and hands them to a small
   pool of loader threads (`LOAD_CONNECTIONS`) through a bounded queue (peak memory is a few
   batches). A loader cleans its batch and renders it to PostgreSQL's binary COPY format with
   Arrow kernels (no Python code runs per row), then sends it with `COPY … FROM STDIN (FORMAT
   BINARY)` into an UNLOGGED stage segment (`<table>_stage_<run hash>_<n>`) that it created in
   the same transaction; every `SEGMENT_BYTES` it commits the segment and starts the next one.
   A merger thread merges each committed segment into the table on the run's connection, in
   one transaction that stays open for the whole run. So reading, rendering, the server's
   parsing (on several backends) and the merge all overlap. Progress is reported and
   cancellation checked in the calling thread, between batches.
3. Merging, inside that one transaction:
   - events: each segment is inserted; at the end one `DELETE FROM table WHERE uuid IN (the
     run's uuids) AND xmin <> this transaction` removes the rows the run replaces (earlier
     exports of the same events), so re-running an interval never duplicates a row. (A row
     written exactly 2^32 transactions before, with a re-exported uuid, would be kept: the
     32-bit `xmin` cannot tell it apart.) Without an index on `uuid` the delete scans the
     table; for a large table add one (`CREATE INDEX ON table (uuid)`), which PostgreSQL then
     uses. The sink does not create it: maintaining it made inserting 1M events into the table about
     three times slower on the benchmark's machine.
   - persons and sessions: `INSERT … ON CONFLICT (team_id, distinct_id | session_id) DO UPDATE
     … WHERE` the incoming version is newer (`person_version` / `person_distinct_id_version`,
     `_inserted_at` / `end_timestamp`; a table without these columns takes the incoming row), which
     needs a primary key or unique constraint on the key; a table without one is refused before
     anything is loaded, with the statement that fixes it.
   Then the segments are dropped and the transaction commits: readers see all of the run or
   none of it. Columns of another type than the stage's are converted with an explicit `CAST` to
   the column's type (checked before loading, so an impossible conversion names its column).

Values are cleaned on the way: NUL characters are removed from text and JSON (PostgreSQL
stores neither a NUL byte in `text` nor `\\u0000` in `jsonb`), escaped lone UTF-16 surrogates
are removed from JSON (`jsonb` refuses them), and bytes that are not UTF-8 become U+FFFD.

Errors are classified once, in `classify`: what a person must fix (credentials, missing
database or schema, permissions, a column of an incompatible type, a read-only server) is a
`NonRetryableError` whose message says what to change; what passes (connection refused or
dropped, timeouts, serialization failures, too many connections) is a `RetryableError`. No
message contains the password.

Every connection has bounded waits: `connect_timeout`, TCP keepalives and `tcp_user_timeout` (a
dead peer or a dropped route is noticed within about a minute) and a `statement_timeout`. A server
that is up but stopped answering (SIGSTOP) defeats all of these (its kernel still acknowledges the
keepalives, and its timers are stopped): the run's no-progress watchdog (`pipeline/watchdog.py`)
catches that, and the sink's stall hook shuts its sockets down so every blocked read returns.

Connections use TLS when the server offers it (`sslmode=prefer`); `has_self_signed_cert` insists
on TLS without verifying the certificate (`sslmode=require`). Redshift speaks the same protocol:
`redshift_sink.py` reuses this module with its own dialect.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import queue
import socket
import struct
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchexports.core import watchdog
from batchexports.core.errors import DestinationError, NonRetryableError, RetryableError
from batchexports.core.model_rules import JSON_COLUMNS, MODEL_RULES, ModelRules
from batchexports.core.run import CancelToken, ExportRun, Progress, ProgressCallback
from batchexports.destinations import staging
from batchexports.destinations.base import SinkResult

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10
# TCP keepalives: the first probe after 30 s idle, then every 10 s, 3 unanswered: dead in ~1 min.
KEEPALIVES_IDLE, KEEPALIVES_INTERVAL, KEEPALIVES_COUNT = 30, 10, 3
TCP_USER_TIMEOUT_MS = 60_000  # data sent but unacknowledged for this long: the connection is dead
# One statement (a segment's COPY, a merge) may run this long; the watchdog waits as long in a merge.
STATEMENT_TIMEOUT_S = 3600
APPLICATION_NAME = "batchexports"
LOAD_CONNECTIONS = 2  # COPY streams into the stage at once
SEGMENT_BYTES = 32 * 1024 * 1024  # of COPY data per stage segment, merged while the next ones load
QUEUE_BATCHES_PER_CONNECTION = 2
MAX_IDENTIFIER_BYTES = 63

# -- SQL text -------------------------------------------------------------------------------------


def ident(name: str) -> str:
    """A quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


def literal(value: str) -> str:
    """A quoted SQL string literal (standard conforming: only quotes are doubled)."""
    return "'" + value.replace("'", "''") + "'"


# -- models -----------------------------------------------------------------------------------------


# PostHog's events table for PostgreSQL batch exports, plus the person and insertion columns.
# `elements` holds the elements chain as a JSON string, `ip` is `properties.$ip`, `site_url` is
# kept for compatibility with tables of PostHog's older export app (always NULL).
POSTGRES_EVENTS_TABLE: tuple[tuple[str, str], ...] = (
    ("uuid", "TEXT"),
    ("event", "TEXT"),
    ("properties", "JSONB"),
    ("elements", "JSONB"),
    ("set", "JSONB"),
    ("set_once", "JSONB"),
    ("distinct_id", "TEXT"),
    ("team_id", "BIGINT"),
    ("ip", "TEXT"),
    ("site_url", "TEXT"),
    ("timestamp", "TIMESTAMPTZ"),
    ("person_id", "TEXT"),
    ("person_properties", "JSONB"),
    ("created_at", "TIMESTAMPTZ"),
    ("_inserted_at", "TIMESTAMPTZ"),
)


def column_kind(field: pa.Field) -> str:
    """What a column of the model holds: json, text, int, float, bool, timestamptz, timestamp, date, list."""
    kind = field.type
    if _is_stringish(kind):
        return "json" if field.name in JSON_COLUMNS else "text"
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "float"
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_timestamp(kind):
        return "timestamptz" if kind.tz else "timestamp"
    if pa.types.is_date(kind):
        return "date"
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and _is_stringish(kind.value_type):
        return "list"
    return "text"  # anything else is sent as its text rendering


def _is_stringish(kind: pa.DataType) -> bool:
    """Text, or bytes meant as text (a store may deliver strings as binary)."""
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    )


# -- cleaning ---------------------------------------------------------------------------------------

# Escapes in JSON text that `jsonb` refuses: `\u0000`, and UTF-16 surrogates that are not a
# high-low pair. One left-to-right pass over the escapes: an escaped backslash (kept, so that
# `\\u0000` stays text) and a valid pair (kept) are consumed as units, anything else matched
# (a lone surrogate, `\u0000`) is removed. The cheap pattern finds the values worth the pass.
_SUSPECT_ESCAPE = r"\\u(?:0000|[dD][89a-fA-F])"
_FIX_ESCAPES = (
    r"(\\\\)"
    r"|(\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)"
)


def _as_string(array: pa.Array) -> pa.Array:
    return array if pa.types.is_string(array.type) else array.cast(pa.string())


def _value_bytes(array: pa.Array) -> np.ndarray:
    """The bytes of the values of a string or binary array (the part its offsets cover)."""
    buffers = array.buffers()
    if len(array) == 0 or buffers[2] is None:
        return np.empty(0, np.uint8)
    offsets = np.frombuffer(buffers[1], np.int32, len(array) + 1, array.offset * 4)
    return np.frombuffer(buffers[2], np.uint8)[offsets[0] : offsets[-1]]


def _valid_utf8(array: pa.Array) -> pa.Array:
    """`array` as a string array; values that are not UTF-8 are repaired (rare, so value by value)."""
    try:
        if pa.types.is_string(array.type):
            array.validate(full=True)
            return array
        return array.cast(pa.string())  # binary or large types: the cast checks UTF-8
    except pa.ArrowInvalid:
        raw = array.cast(pa.binary(), safe=False).to_pylist()
        return pa.array([None if v is None else v.decode("utf-8", "replace") for v in raw], pa.string())


def clean_text(array: pa.Array) -> pa.Array:
    """A string array without NUL characters and with valid UTF-8 only."""
    array = _valid_utf8(array)
    values = _value_bytes(array)
    if values.size and values.min() == 0:
        array = pc.replace_substring(array, "\x00", "")
    return array


def clean_json(array: pa.Array) -> pa.Array:
    """`clean_text`, and JSON text without the `\\u0000` escapes and lone surrogates `jsonb` refuses."""
    array = clean_text(array)
    values = _value_bytes(array)
    if not values.size or not (values == ord("\\")).any():  # no escape at all: a single pass of numpy
        return array
    suspect = pc.fill_null(pc.match_substring_regex(array, _SUSPECT_ESCAPE), False)
    if not pc.any(suspect).as_py():
        return array
    fixed = pc.replace_substring_regex(array.filter(suspect), _FIX_ESCAPES, r"\1\2")
    return pc.replace_with_mask(array, suspect, fixed)


def clean_column(array: pa.Array, kind: str) -> pa.Array:
    if kind == "json":
        return clean_json(array)
    if kind == "text":
        return clean_text(array)
    if kind == "list":
        return _clean_list(array)
    return array


def _clean_list(array: pa.Array) -> pa.Array:
    if not pa.types.is_list(array.type):
        array = array.cast(pa.list_(pa.string()))
    offsets = array.offsets
    start = offsets[0].as_py()
    values = clean_text(array.values.slice(start, offsets[-1].as_py() - start))
    relative = pc.subtract(offsets, pa.scalar(start, pa.int32()))
    mask = array.is_null() if array.null_count else None
    return pa.ListArray.from_arrays(relative, values, mask=mask)


# -- PostgreSQL's binary COPY format --------------------------------------------------------------

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970
_PG_EPOCH_DAYS = 10_957
_TEXT_OID = 25
_MAX_BATCH_BYTES = 1 << 29  # render larger batches in halves (the rows use 32-bit offsets)


def _fixed_binary(records: np.ndarray, valid: pa.Array | None = None) -> pa.Array:
    """A binary array over the rows of a numpy (structured) array, without copying; NULL where not `valid`."""
    count, width = len(records), records.dtype.itemsize
    data = pa.py_buffer(np.ascontiguousarray(records).view(np.uint8))
    offsets = pa.py_buffer(np.arange(0, (count + 1) * width, width, dtype=np.int32))
    bitmap = valid.buffers()[1] if valid is not None else None
    return pa.Array.from_buffers(pa.binary(), count, [bitmap, offsets, data])


def _valid(array: pa.Array) -> pa.Array | None:
    """The validity of `array` as a fresh boolean array (bitmap at offset 0), or None without nulls."""
    return pc.is_valid(array) if array.null_count else None


def _lengths(array: pa.Array, extra: int = 0) -> pa.Array:
    """Field lengths (int32, big-endian): the value's byte length + `extra`, or -1 for NULL."""
    lengths = pc.binary_length(array).fill_null(-1 - extra).to_numpy(zero_copy_only=False).astype(np.int32) + extra
    return _fixed_binary(lengths.astype(">i4"))


def _fixed_width_parts(values: np.ndarray, code: str, array: pa.Array) -> list[pa.Array]:
    valid = _valid(array)
    width = np.dtype(code).itemsize
    lengths = np.full(len(values), width, ">i4")
    if valid is not None:
        lengths[~valid.to_numpy(zero_copy_only=False)] = -1
    return [_fixed_binary(lengths), _fixed_binary(values.astype(code), valid)]


def _numbers(array: pa.Array, kind: pa.DataType, fill: Any) -> np.ndarray:
    return array.cast(kind, safe=False).fill_null(fill).to_numpy(zero_copy_only=False)


def _text_array_payload(array: pa.Array) -> pa.Array:
    """list<string> as the payload of `text[]` fields: a one-dimensional array header, then the elements."""
    offsets = array.offsets
    start = offsets[0].as_py()
    values = array.values.slice(start, offsets[-1].as_py() - start).cast(pa.binary())
    elements = pc.binary_join_element_wise(_lengths(values), values, b"", null_handling="replace")
    relative = pc.subtract(offsets, pa.scalar(start, pa.int32()))
    joined = pc.binary_join(pa.ListArray.from_arrays(relative, elements), b"")
    counts = np.diff(relative.to_numpy()).astype(np.int32)
    header = np.empty(len(array), np.dtype([(n, ">i4") for n in ("ndim", "flags", "oid", "length", "lower")]))
    header["ndim"], header["flags"], header["oid"], header["length"], header["lower"] = 1, 0, _TEXT_OID, counts, 1
    empty = pa.scalar(struct.pack(">iii", 0, 0, _TEXT_OID), pa.binary())
    headers = pc.if_else(pa.array(counts == 0), empty, _fixed_binary(header))
    payload = pc.binary_join_element_wise(headers, joined, b"")
    return pc.if_else(array.is_valid(), payload, pa.scalar(None, pa.binary())) if array.null_count else payload


def binary_parts(array: pa.Array, kind: str) -> list[pa.Array]:
    """The COPY fields of one cleaned column, as pieces to concatenate row by row (a NULL piece is empty):
    the field's length (int32, big-endian, -1 for NULL), then its bytes in the stage column's binary format."""
    if kind in ("json", "text"):
        payload = _as_string(array).cast(pa.binary())
        if kind == "text":
            return [_lengths(payload), payload]
        version = _fixed_binary(np.ones(len(payload), np.uint8), _valid(payload))  # jsonb's format version 1
        return [_lengths(payload, extra=1), version, payload]
    if kind == "int":
        return _fixed_width_parts(_numbers(array, pa.int64(), 0), ">i8", array)
    if kind == "float":
        return _fixed_width_parts(_numbers(array, pa.float64(), 0.0), ">f8", array)
    if kind == "bool":
        return _fixed_width_parts(array.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint8), "u1", array)
    if kind in ("timestamptz", "timestamp"):
        unit = pa.timestamp("us", tz=array.type.tz)
        micros = array.cast(unit, safe=False).cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        return _fixed_width_parts(micros - _PG_EPOCH_US, ">i8", array)
    if kind == "date":
        days = array.cast(pa.date32()).cast(pa.int32()).fill_null(0).to_numpy(zero_copy_only=False)
        return _fixed_width_parts(days - _PG_EPOCH_DAYS, ">i4", array)
    if kind == "list":
        payload = _text_array_payload(array)
        return [_lengths(payload), payload]
    raise ValueError(f"no binary encoding for {kind}")


def encode_copy_rows(batch: pa.RecordBatch, kinds: Sequence[str]) -> list[memoryview]:
    """The rows of a cleaned batch in PostgreSQL's binary COPY format (without signature and trailer).

    Every column becomes zero-copy pieces (lengths, version bytes, values); one element-wise join
    copies them, row by row, into the stream's bytes.
    """
    if batch.nbytes > _MAX_BATCH_BYTES and batch.num_rows > 1:
        half = batch.num_rows // 2
        return encode_copy_rows(batch.slice(0, half), kinds) + encode_copy_rows(batch.slice(half), kinds)
    parts = [part for i, kind in enumerate(kinds) for part in binary_parts(batch.column(i), kind)]
    count = pa.scalar(struct.pack(">h", len(kinds)), pa.binary())
    rows = pc.binary_join_element_wise(count, *parts, b"", null_handling="replace", null_replacement=b"")
    offsets = np.frombuffer(rows.buffers()[1], np.int32, len(rows) + 1, rows.offset * 4)
    return [memoryview(rows.buffers()[2])[offsets[0] : offsets[-1]]]


# -- errors -----------------------------------------------------------------------------------------


_SECRET_PATHS = (
    ("password",),
    ("user",),
    ("copy_inputs", "authorization", "aws_access_key_id"),
    ("copy_inputs", "authorization", "aws_secret_access_key"),
    ("copy_inputs", "bucket_credentials", "aws_access_key_id"),
    ("copy_inputs", "bucket_credentials", "aws_secret_access_key"),
)


def secret_values(config: Mapping[str, Any]) -> list[str]:
    """The credentials in a PostgreSQL or Redshift config, longest first."""
    found = []
    for path in _SECRET_PATHS:
        value: Any = config
        for key in path:
            value = value.get(key) if isinstance(value, Mapping) else None
        if value and len(str(value)) >= 4:  # shorter values would mangle messages more than they hide
            found.append(str(value))
    return sorted(found, key=len, reverse=True)


def scrub(message: str, config: Mapping[str, Any]) -> str:
    """`message` without the password, the user name or AWS keys of `config`."""
    for value in secret_values(config):
        message = message.replace(value, "***")
    return message


def _primary(error: BaseException) -> str:
    """The server's one-line message for `error` (psycopg's diagnostics), or the first line of its text."""
    diag = getattr(error, "diag", None)
    text = getattr(diag, "message_primary", None) if diag is not None else None
    if not text:
        lines = str(error).strip().splitlines()
        text = lines[0] if lines else type(error).__name__
    return text.strip()


def _where(config: Mapping[str, Any], label: str) -> str:
    return f"{label} at {config.get('host')}:{config.get('port')}"


def classify_connect(error: BaseException, config: Mapping[str, Any], label: str = "PostgreSQL") -> DestinationError:
    """The error to raise for a failed connection attempt (libpq reports these without an SQLSTATE)."""
    text = str(error)
    lower = text.lower()
    where, database = _where(config, label), config.get("database")
    retryable = False
    if "password authentication failed" in lower or "password authentication" in lower:
        message = f"{where} rejected the password of the configured user: check user and password."
    elif "role" in lower and "does not exist" in lower:
        message = f"{where} has no such user: check user (the role must exist and be allowed to log in)."
    elif "database" in lower and "does not exist" in lower:
        message = f"The database '{database}' does not exist on {where}: create it, or fix database."
    elif "no pg_hba.conf entry" in lower:
        message = (
            f"{where} does not accept connections from this host for this user and database (pg_hba.conf): "
            "allow them on the server, or enable TLS if the server only accepts encrypted connections."
        )
    elif "does not support ssl" in lower:
        message = (
            f"{where} does not support TLS, but has_self_signed_cert requires it: set has_self_signed_cert to "
            "false, or enable TLS on the server."
        )
    elif "certificate" in lower and ("verify" in lower or "self signed" in lower or "self-signed" in lower):
        message = (
            f"The TLS certificate of {where} could not be verified: set has_self_signed_cert to true for a "
            "self-signed certificate."
        )
    elif "resolve host" in lower or "translate host name" in lower or "name or service not known" in lower:
        message = f"The host name '{config.get('host')}' could not be resolved: check host."
    elif "too many clients" in lower or "too many connections" in lower or "remaining connection slots" in lower:
        message, retryable = f"{where} has no free connection slots (too many connections); retrying.", True
    elif "connection refused" in lower:
        message = (
            f"Could not connect to {where} (connection refused); retrying. If this persists, check host and port "
            "and that the server accepts TCP connections from this host."
        )
        retryable = True
    elif "timeout" in lower or "timed out" in lower:
        message = (
            f"Connecting to {where} timed out after {CONNECT_TIMEOUT} s; retrying. If this persists, check host, "
            "port and the firewall between this service and the server."
        )
        retryable = True
    elif "starting up" in lower or "shutting down" in lower or "recovery mode" in lower:
        message, retryable = f"{where} is starting up or shutting down; retrying.", True
    elif "read-only" in lower or "read only" in lower:
        message = f"{where} is read-only (a standby?): connect to the primary server."
    else:
        message, retryable = f"Could not connect to {where}: {_primary(error)}; retrying.", True
    message = scrub(message, config)
    return RetryableError(message) if retryable else NonRetryableError(message)


_RETRYABLE_CLASSES = ("08", "40", "53", "57", "58", "XX")
_NON_RETRYABLE_STATES = {
    "53100": "the server is out of disk space: free space on it",
    "57P04": "the database was dropped",
}


def classify(
    error: BaseException, config: Mapping[str, Any], action: str, label: str = "PostgreSQL"
) -> DestinationError:
    """The `DestinationError` to raise for `error` (from psycopg) met while `action`."""
    if isinstance(error, DestinationError):
        return error
    state = getattr(error, "sqlstate", None) or ""
    primary = scrub(_primary(error), config)
    schema, table, database = config.get("schema"), config.get("table_name"), config.get("database")
    where = _where(config, label)
    retryable = False
    if not state:
        if _is_connection_failure(error):
            message, retryable = f"The connection to {where} failed while {action} ({primary}); retrying.", True
        else:
            message, retryable = f"{where} failed while {action}: {primary}; retrying.", True
    elif state.startswith("28"):
        message = f"{where} refused the credentials while {action}: check user and password."
    elif state == "3D000":
        message = f"The database '{database}' does not exist on {where}: create it, or fix database."
    elif state == "3F000":
        message = (
            f"The schema '{schema}' does not exist in the database '{database}': create it "
            f"(CREATE SCHEMA {ident(str(schema))}), or fix schema."
        )
    elif state == "42501":
        message = (
            f"Permission denied while {action} ({primary}): grant the user USAGE and CREATE on the schema "
            f"'{schema}' and SELECT, INSERT, UPDATE and DELETE on the table '{table}'."
        )
    elif state == "25006":
        message = f"{where} is read-only (a standby?) while {action}: connect to the primary server."
    elif state == "42P10":
        message = (
            f"The table '{schema}.{table}' has no primary key or unique constraint matching the rows' key, which "
            f"merging needs ({primary}): add the primary key, or export into a new table."
        )
    elif state in ("42804", "42846", "42883"):
        message = (
            f"A column of '{schema}.{table}' has a type the exported values cannot be stored in, while {action} "
            f"({primary}): change the column's type or drop the column, or export into a new table."
        )
    elif state in ("22P02", "22P03", "22007", "22008"):
        message = (
            f"{where} could not read an exported value while {action} ({primary}): if a column of "
            f"'{schema}.{table}' has another type than the export creates it with, change it or drop it."
        )
    elif state in _NON_RETRYABLE_STATES:
        message = f"{where}: {_NON_RETRYABLE_STATES[state]} ({primary}), while {action}."
    elif state.startswith(_RETRYABLE_CLASSES):
        message, retryable = f"{where} failed while {action} ({state}: {primary}); retrying.", True
    elif state.startswith(("22", "23")):
        message = (
            f"{where} refused the exported values while {action} ({state}: {primary}): check the columns and "
            f"constraints of '{schema}.{table}'."
        )
    elif state == "42P01":
        message = f"A table disappeared while {action} ({primary}): was '{schema}.{table}' dropped? Retry the run."
    elif state == "42703":
        message = f"A column of '{schema}.{table}' changed while {action} ({primary}): retry the run."
    else:
        message = f"{where} refused a statement while {action} ({state}: {primary})."
    message = scrub(message, config)
    return RetryableError(message) if retryable else NonRetryableError(message)


def _shut_down(duplicate: socket.socket) -> None:
    """End a connection at once: a blocked read or write on any descriptor of the socket returns."""
    with contextlib.suppress(OSError):
        duplicate.shutdown(socket.SHUT_RDWR)


def _is_connection_failure(error: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError | OSError)


# -- the dialect (what Redshift changes) ---------------------------------------------------------


@dataclass(frozen=True)
class TargetColumn:
    name: str
    type: str  # the column's type without modifiers, as the database spells it
    max_length: int | None = None


@dataclass(frozen=True)
class StageColumn:
    name: str
    kind: str
    ddl: str  # the type in CREATE TABLE
    type: str  # the same type as the catalogue spells it


class PostgresDialect:
    label = "PostgreSQL"
    stage_prefix = "CREATE UNLOGGED TABLE"

    _STAGE_TYPES = {
        "json": ("JSONB", "jsonb"),
        "text": ("TEXT", "text"),
        "int": ("BIGINT", "bigint"),
        "float": ("DOUBLE PRECISION", "double precision"),
        "bool": ("BOOLEAN", "boolean"),
        "timestamptz": ("TIMESTAMPTZ", "timestamp with time zone"),
        "timestamp": ("TIMESTAMP", "timestamp without time zone"),
        "date": ("DATE", "date"),
        "list": ("TEXT[]", "text[]"),
    }

    def __init__(self, config: Mapping[str, Any]):
        self.config = config

    def stage_column(self, field: pa.Field) -> StageColumn:
        kind = column_kind(field)
        ddl, spelled = self._STAGE_TYPES[kind]
        return StageColumn(field.name, kind, ddl, spelled)

    def table_ddl(self, model: str, schema: pa.Schema) -> list[tuple[str, str]]:
        """Columns of a table this sink creates for `model`."""
        if model == "events":
            return list(POSTGRES_EVENTS_TABLE)
        return [(field.name, self.stage_column(field).ddl) for field in schema]

    def derived(self, name: str, available: set[str]) -> tuple[str, tuple[str, ...]] | None:
        """An expression over the stage (alias `s`) for a target column that is not a model column."""
        if name == "ip" and "properties" in available:
            return "NULLIF(s.\"properties\" ->> '$ip', '')", ("properties",)
        if name == "elements" and "elements_chain" in available:
            return 'to_jsonb(s."elements_chain")', ("elements_chain",)
        return None

    def convert(self, expression: str, stage: StageColumn, target: TargetColumn) -> str:
        if target.type == stage.type:
            return expression
        if stage.kind == "list" and target.type in ("jsonb", "json"):
            return f"to_jsonb({expression})" + ("::json" if target.type == "json" else "")
        return f"CAST({expression} AS {target.type})"

    def describe(self, cursor: Any, schema: str, table: str) -> list[TargetColumn] | None:
        cursor.execute(
            "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute AS a "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (qualified(schema, table),),
        )
        rows = cursor.fetchall()
        return [TargetColumn(name, kind) for name, kind in rows] or None

    def unique_keys(self, cursor: Any, schema: str, table: str) -> list[set[str]]:
        cursor.execute(
            "SELECT array_agg(a.attname::text) FROM pg_index AS i "
            "JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL "
            "GROUP BY i.indexrelid",
            (qualified(schema, table),),
        )
        return [set(row[0]) for row in cursor.fetchall()]

    def check_conversions(self, cursor: Any, plan: LoadPlan) -> None:
        """Refuse a column whose type the stage's values cannot be cast to, naming it, before loading."""
        for column in plan.columns:
            stage = plan.stage_by_name.get(column)
            target = plan.target_by_name[column]
            if stage is None or target.type == stage.type or "CAST(" not in plan.expressions[column]:
                continue
            try:
                cursor.execute(f"SELECT CAST(NULL::{stage.ddl} AS {target.type})")
                cursor.fetchall()
            except Exception as error:
                if getattr(error, "sqlstate", None) not in ("42846", "42804", "42883"):
                    raise
                cursor.connection.rollback()
                raise NonRetryableError(
                    f"The column '{column}' of '{plan.schema}.{plan.table}' is of type {target.type}, which "
                    f"{stage.type} values cannot be converted to: change its type to {stage.type} "
                    f"(ALTER TABLE {plan.target} ALTER COLUMN {ident(column)} TYPE {stage.ddl} USING ...), drop "
                    "the column, or export into a new table."
                ) from None

    def merge_statements(self, plan: LoadPlan) -> list[str]:
        """The statements merging the single stage table of a `StagedSink` (Redshift's dialect has them)."""
        raise NotImplementedError

    def segment_insert(self, plan: LoadPlan, segment: str) -> str:
        """The statement that merges one committed stage segment into the table (inside the run's transaction).

        Events are inserted (the rows they replace are deleted at the end, see `final_statements`);
        persons and sessions are upserted, the newer version winning.
        """
        columns = ", ".join(ident(c) for c in plan.columns)
        select = ", ".join(plan.expressions[c] for c in plan.columns)
        if not plan.rules.upsert:
            return f"INSERT INTO {plan.target} ({columns}) SELECT {select} FROM {segment} AS s"
        keys = ", ".join(f"s.{ident(k)}" for k in plan.rules.keys)
        order = ", ".join([keys, *(f"s.{ident(v)} DESC NULLS LAST" for v in plan.versions)])
        updated = [c for c in plan.columns if c not in plan.rules.keys]
        if updated:
            assignments = ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in updated)
            newer = " OR ".join(
                f"COALESCE(EXCLUDED.{ident(v)} > t.{ident(v)}, t.{ident(v)} IS NULL)" for v in plan.versions
            )
            action = f"DO UPDATE SET {assignments}" + (f" WHERE {newer}" if newer else "")
        else:
            action = "DO NOTHING"
        conflict = ", ".join(ident(k) for k in plan.rules.keys)
        return (
            f"INSERT INTO {plan.target} AS t ({columns}) SELECT DISTINCT ON ({keys}) {select} FROM {segment} AS s "
            f"ORDER BY {order} ON CONFLICT ({conflict}) {action}"
        )

    def final_statements(self, plan: LoadPlan, segments: Sequence[str]) -> list[str]:
        """After every segment is merged: delete the rows this run's events replace, drop the segments.

        The run's own rows are those this transaction wrote (`xmin` is its transaction id); every
        other row with one of the run's uuids is an earlier export of the same event.
        """
        statements = []
        if not plan.rules.upsert and segments:
            (key,) = plan.rules.keys
            staged = " UNION ALL ".join(f"SELECT {plan.expressions[key]} FROM {segment} AS s" for segment in segments)
            statements.append(
                f"DELETE FROM {plan.target} WHERE {ident(key)} IN ({staged}) "
                "AND NOT (xmin = (txid_current() % 4294967296)::text::xid)"
            )
        if segments:
            statements.append(f"DROP TABLE {', '.join(segments)}")
        return statements


# -- the plan of one run ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadPlan:
    model: str
    rules: ModelRules
    schema: str
    table: str
    target: str  # qualified name of the destination table
    stage_name: str
    stage: str  # qualified name of the stage table
    stage_columns: tuple[StageColumn, ...]
    columns: tuple[str, ...]  # destination columns written, in the table's order
    expressions: dict[str, str]  # destination column -> expression over the stage (alias `s`)
    versions: tuple[str, ...]  # version columns both the stage and the table have
    targets: tuple[TargetColumn, ...]

    @property
    def stage_by_name(self) -> dict[str, StageColumn]:
        return {c.name: c for c in self.stage_columns}

    @property
    def target_by_name(self) -> dict[str, TargetColumn]:
        return {c.name: c for c in self.targets}

    @property
    def stage_names(self) -> list[str]:
        return [c.name for c in self.stage_columns]


def stage_table_name(run: ExportRun, table: str) -> str:
    """`<table>_stage_<hash of the run's identity>`: the same for every attempt of the run, short enough
    for PostgreSQL's 63 bytes with a segment number (`_<n>`, up to 9999) after it."""
    identity = "|".join(
        str(part)
        for part in (run.batch_export_id, run.team_id, run.model, run.data_interval_start, run.data_interval_end)
    )
    digest = hashlib.sha1(identity.encode(), usedforsecurity=False).hexdigest()[:12]
    suffix = f"_stage_{digest}"
    head = table.encode()[: MAX_IDENTIFIER_BYTES - len("_9999") - len(suffix)].decode("utf-8", "ignore")
    return head + suffix


STAGE_COMMENT = staging.STAGE_MARK
STALE_STAGE_AGE = staging.STALE_STAGE_AGE
stage_comment = staging.stage_mark


def stale_stages(cursor: Any, schema: str, export_id: str, older_than: dt.timedelta) -> list[str]:
    """Qualified names of the stage tables (segments) of `export_id` in `schema` created more than `older_than` ago.

    `obj_description` reads the table's comment on PostgreSQL and on Redshift alike."""
    cursor.execute(
        "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class AS c "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r' "
        "AND left(obj_description(c.oid, 'pg_class'), %s) = %s",
        (schema, len(STAGE_COMMENT), STAGE_COMMENT),
    )
    return [
        qualified(schema, name)
        for name, comment in cursor.fetchall()
        if staging.is_stale(comment, export_id, older_than)
    ]


def drop_stale_stages(sink: StagedSink, export_id: str, older_than: dt.timedelta) -> list[str]:
    """The start-up sweep of one export: drop its stage tables older than `older_than`."""
    return sink.drop_stale_stages(export_id, older_than)


def plan_load(
    dialect: PostgresDialect,
    run: ExportRun,
    schema_name: str,
    table: str,
    model_schema: pa.Schema,
    targets: list[TargetColumn],
) -> LoadPlan:
    """Which columns to stage and write, and how, for a table with columns `targets`."""
    rules = MODEL_RULES[run.model]
    fields = {field.name: field for field in model_schema}
    available = set(fields)
    target_names = [t.name for t in targets]
    missing = [key for key in rules.keys if key not in target_names]
    if missing:
        raise NonRetryableError(
            f"The table '{schema_name}.{table}' has no column {', '.join(repr(m) for m in missing)}, which identifies "
            f"{run.model} rows so that a re-run replaces them: add the column, or export into a new table."
        )
    needed: set[str] = set(rules.keys)
    sources: dict[str, tuple[str, tuple[str, ...]]] = {}
    for target in targets:
        if target.name in fields:
            sources[target.name] = (f"s.{ident(target.name)}", (target.name,))
        elif (derived := dialect.derived(target.name, available)) is not None:
            sources[target.name] = derived
    for _, used in sources.values():
        needed.update(used)
    versions = tuple(v for v in rules.versions if v in fields and v in target_names)
    needed.update(versions)
    stage_columns = tuple(dialect.stage_column(fields[name]) for name in model_schema.names if name in needed)
    by_stage = {c.name: c for c in stage_columns}
    by_target = {t.name: t for t in targets}
    expressions: dict[str, str] = {}
    columns: list[str] = []
    for target in targets:
        if target.name not in sources:
            continue
        expression, used = sources[target.name]
        if used == (target.name,) and target.name in by_stage:
            expression = dialect.convert(expression, by_stage[target.name], target)
        columns.append(target.name)
        expressions[target.name] = expression
    for key in rules.keys:
        expressions.setdefault(key, dialect.convert(f"s.{ident(key)}", by_stage[key], by_target[key]))
    stage_name = stage_table_name(run, table)
    return LoadPlan(
        model=run.model,
        rules=rules,
        schema=schema_name,
        table=table,
        target=qualified(schema_name, table),
        stage_name=stage_name,
        stage=qualified(schema_name, stage_name),
        stage_columns=stage_columns,
        columns=tuple(columns),
        expressions=expressions,
        versions=versions,
        targets=tuple(targets),
    )


# -- loading in parallel ---------------------------------------------------------------------------


class LoadSession(ABC):
    """One loader thread's connection to the stage table."""

    @abstractmethod
    def send(self, batch: pa.RecordBatch) -> int:
        """Load the rows of `batch`; return the bytes sent."""

    @abstractmethod
    def finish(self) -> None:
        """Commit what was sent."""

    @abstractmethod
    def abort(self) -> None:
        """Discard what was sent (best effort; never raises)."""


_DONE, _ABORT = object(), object()


class ParallelLoader:
    """Loader threads taking batches from a bounded queue, each through its own `LoadSession`.

    A thread opens its session when it receives its first batch, so a run of one batch uses
    one connection. The first error of any thread stops the others and is raised in the
    calling thread by the next `put` or by `close`.
    """

    def __init__(self, open_session: Callable[[], LoadSession], workers: int, depth: int | None = None):
        self._open_session = open_session
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth or workers * QUEUE_BATCHES_PER_CONNECTION)
        self._failed = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self.rows = 0
        self.bytes = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"batchexports-load-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def _raise_if_failed(self) -> None:
        if self._failed.is_set() and self._error is not None:
            raise self._error

    def _put(self, item: Any) -> None:
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def put(self, batch: pa.RecordBatch) -> None:
        self._put(batch)

    def progress(self) -> tuple[int, int]:
        with self._lock:
            return self.rows, self.bytes

    def close(self) -> None:
        """Wait for every batch to be loaded and committed; raise the first error."""
        for _ in self._threads:
            self._put(_DONE)
        for thread in self._threads:
            thread.join()
        self._raise_if_failed()

    def abort(self) -> None:
        self._failed.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        for _ in self._threads:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_ABORT)
        for thread in self._threads:
            thread.join(timeout=30)

    def _work(self) -> None:
        session: LoadSession | None = None
        finished = False
        try:
            while True:
                item = self._queue.get()
                if item is _ABORT or self._failed.is_set():
                    return
                if item is _DONE:
                    if session is not None:
                        session.finish()
                    finished = True
                    return
                if session is None:
                    session = self._open_session()
                sent = session.send(item)
                with self._lock:
                    self.rows += item.num_rows
                    self.bytes += sent
        except BaseException as error:  # handed to the calling thread
            with self._lock:
                if self._error is None:
                    self._error = error
            self._failed.set()
        finally:
            if session is not None and not finished:
                session.abort()


class Segments:
    """The stage segments of one run: `<stage>_<n>`, created by loader sessions and merged as they commit."""

    def __init__(self, plan: LoadPlan):
        self._plan = plan
        self._lock = threading.Lock()
        self.created: list[str] = []  # qualified names, in the order they were created
        self.committed: queue.Queue[str | None] = queue.Queue()

    def new(self) -> str:
        with self._lock:
            name = qualified(self._plan.schema, f"{self._plan.stage_name}_{len(self.created)}")
            self.created.append(name)
            return name


class SegmentCopySession(LoadSession):
    """`COPY segment FROM STDIN (FORMAT BINARY)` over one connection, a new segment every `segment_bytes`.

    Each segment is created and loaded in one transaction, then committed and handed to the merger.
    """

    def __init__(self, sink: PostgresSink, plan: LoadPlan, segments: Segments):
        self._sink = sink
        self._segments = segments
        self._kinds = [c.kind for c in plan.stage_columns]
        self._names = plan.stage_names
        self._create = ", ".join(f"{ident(c.name)} {c.ddl}" for c in plan.stage_columns)
        self._columns = ", ".join(ident(name) for name in self._names)
        self._connection = sink.connect()
        self._segment: str | None = None
        self._context: Any = None
        self._copy: Any = None
        self._bytes = 0

    def _start_segment(self) -> None:
        segment = self._segments.new()
        with self._sink.translated("creating a stage table"):
            cursor = self._connection.cursor()
            cursor.execute(f"{self._sink.dialect.stage_prefix} {segment} ({self._create})")
            cursor.execute(f"COMMENT ON TABLE {segment} IS {literal(stage_comment(self._sink.export_id))}")
            self._context = cursor.copy(f"COPY {segment} ({self._columns}) FROM STDIN (FORMAT BINARY)")
            self._copy = self._context.__enter__()
            self._copy.write(COPY_SIGNATURE)
        self._segment, self._bytes = segment, 0

    def _finish_segment(self) -> None:
        with self._sink.translated("loading rows into a stage table"):
            self._copy.write(COPY_TRAILER)
            self._context.__exit__(None, None, None)
            self._connection.commit()
        self._copy = self._context = None
        self._segments.committed.put(self._segment)
        self._segment = None

    def send(self, batch: pa.RecordBatch) -> int:
        columns = [clean_column(batch.column(name), kind) for name, kind in zip(self._names, self._kinds, strict=True)]
        chunks = encode_copy_rows(pa.RecordBatch.from_arrays(columns, self._names), self._kinds)
        if self._copy is None:
            self._start_segment()
        with self._sink.translated("loading rows into a stage table"):
            for chunk in chunks:
                self._copy.write(chunk)
        sent = sum(chunk.nbytes for chunk in chunks)
        self._bytes += sent
        if self._bytes >= self._sink.segment_bytes:
            self._finish_segment()
        return sent

    def finish(self) -> None:
        if self._copy is not None:
            self._finish_segment()
        self._connection.close()

    def abort(self) -> None:
        if self._context is not None:
            with contextlib.suppress(BaseException):
                self._context.__exit__(RuntimeError, RuntimeError("the load was stopped"), None)
        with contextlib.suppress(BaseException):
            self._connection.rollback()
        with contextlib.suppress(BaseException):
            self._connection.close()


class Merger:
    """Merges committed segments into the table on the run's connection, in one open transaction,
    while the loaders go on loading the next ones."""

    def __init__(self, sink: PostgresSink, connection: Any, plan: LoadPlan, segments: Segments):
        self._sink, self._connection, self._plan, self._segments = sink, connection, plan, segments
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="batchexports-merge", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            cursor = self._connection.cursor()
            while (segment := self._segments.committed.get()) is not None:
                with self._sink.translated(f"merging the loaded rows into '{self._plan.schema}.{self._plan.table}'"):
                    cursor.execute(self._sink.dialect.segment_insert(self._plan, segment))
        except BaseException as error:  # handed to the calling thread
            self.error = error

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Merge what is left and wait; raise the merger's error."""
        self._segments.committed.put(None)
        self._thread.join()
        self.raise_if_failed()

    def abort(self) -> None:
        self._segments.committed.put(None)
        self._thread.join(timeout=60)


# -- the sinks --------------------------------------------------------------------------------------


class StagedSink:
    """Loads record batches through one stage table, merged into the table at the end of the run.

    The base of the Redshift sink; the PostgreSQL sink below pipelines the merge with the load.
    """

    dialect_class: type[PostgresDialect] = PostgresDialect
    merges_without_unique_key = False  # Redshift merges by delete-then-insert, without ON CONFLICT
    statement_timeout_in_options = True  # Redshift takes no `options` at connect: it is SET instead

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        load_connections: int = LOAD_CONNECTIONS,
        connector: Callable[..., Any] | None = None,
    ):
        self.config = config
        self.dialect = self.dialect_class(config)
        self.load_connections = max(1, load_connections)
        self._connector = connector  # psycopg.connect unless a test passes another
        self._watchdog: watchdog.Watchdog | None = None  # of the export under way
        self.export_id: str | None = None  # of the export under way: named in its stage tables' comments
        self._sockets: list[socket.socket] = []  # duplicates of its connections' sockets, for the stall hook
        self._sockets_lock = threading.Lock()

    # connections

    def connection_options(self) -> dict[str, Any]:
        timeout = {"options": f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}"}
        return {
            "host": self.config["host"],
            "port": int(self.config.get("port") or 5432),
            "dbname": self.config["database"],
            "user": self.config["user"],
            "password": self.config.get("password") or "",
            "connect_timeout": CONNECT_TIMEOUT,
            "keepalives": 1,
            "keepalives_idle": KEEPALIVES_IDLE,
            "keepalives_interval": KEEPALIVES_INTERVAL,
            "keepalives_count": KEEPALIVES_COUNT,
            "tcp_user_timeout": TCP_USER_TIMEOUT_MS,
            **(timeout if self.statement_timeout_in_options else {}),
            "application_name": APPLICATION_NAME,
            # Encrypted whenever the server offers TLS; a self-signed certificate insists on TLS
            # without verifying the certificate (libpq verifies only with verify-ca/verify-full).
            "sslmode": "require" if self.config.get("has_self_signed_cert") else "prefer",
        }

    def connect(self) -> Any:
        import psycopg

        try:
            connection = (self._connector or psycopg.connect)(**self.connection_options())
        except psycopg.Error as error:
            raise classify_connect(error, self.config, self.dialect.label) from None
        try:
            with self.translated("setting up the session"):
                connection.execute("SET TIME ZONE 'UTC'")
                if not self.statement_timeout_in_options:
                    connection.execute(f"SET statement_timeout TO {STATEMENT_TIMEOUT_S * 1000}")
                connection.commit()
        except BaseException:
            connection.close()
            raise
        self._watch(connection)
        return connection

    def _watch(self, connection: Any) -> None:
        """Let the run's watchdog unblock this connection: a duplicate of its socket is shut down if the
        run stalls (a duplicate, so that the descriptor cannot be reused by another socket meanwhile)."""
        dog = self._watchdog
        fileno = getattr(getattr(connection, "pgconn", None), "socket", None)
        if dog is None or not isinstance(fileno, int) or fileno < 0:
            return
        duplicate = socket.socket(fileno=os.dup(fileno))
        with self._sockets_lock:
            self._sockets.append(duplicate)
        dog.on_stall(lambda: _shut_down(duplicate))

    def _release_sockets(self) -> None:
        with self._sockets_lock:
            sockets, self._sockets = self._sockets, []
        for duplicate in sockets:
            with contextlib.suppress(OSError):
                duplicate.close()

    @contextlib.contextmanager
    def translated(self, action: str) -> Iterator[None]:
        """Raise what psycopg raises inside as a `RetryableError` or `NonRetryableError`."""
        try:
            yield
        except DestinationError:
            raise
        except Exception as error:
            import psycopg

            if not isinstance(error, psycopg.Error | OSError):
                raise
            raise classify(error, self.config, action, self.dialect.label) from None

    # the run

    def export(
        self,
        run: ExportRun,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> SinkResult:
        if run.model not in MODEL_RULES:
            raise NonRetryableError(f"{self.dialect.label} destinations cannot export the model '{run.model}'.")
        self._watchdog = watchdog.current()
        self.export_id = run.batch_export_id
        try:
            records, sent = self._export(run, batches, schema, progress, cancel)
        finally:
            self._watchdog = None
            self._release_sockets()
        if progress:
            progress(Progress(records_completed=records, bytes_exported=sent))
        logger.info("loaded %d %s rows into %s", records, run.model, self.config.get("table_name"))
        return SinkResult(records, sent)

    def _export(
        self,
        run: ExportRun,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> tuple[int, int]:
        connection = self.connect()
        plan: LoadPlan | None = None
        try:
            plan = self.prepare(connection, run, schema)
            records, sent = self.load(connection, plan, batches, progress, cancel)
            if cancel:
                cancel.raise_if_cancelled()
            with (
                self.translated(f"merging the loaded rows into '{plan.schema}.{plan.table}'"),
                watchdog.patience(STATEMENT_TIMEOUT_S + 60, self._watchdog),  # the server works, silently
            ):
                self.merge(connection, plan)
            plan = None  # the merge dropped the stage
        except BaseException:
            with contextlib.suppress(BaseException):
                connection.rollback()
            if plan is not None:
                self.drop_stage(connection, plan)
            raise
        finally:
            with contextlib.suppress(BaseException):
                connection.close()
        return records, sent

    def prepare(self, connection: Any, run: ExportRun, model_schema: pa.Schema) -> LoadPlan:
        """Check the schema, create the table if needed, plan the columns, create the stage table."""
        schema_name = str(self.config.get("schema") or "public")
        table = str(self.config["table_name"])
        rules = MODEL_RULES[run.model]
        with self.translated(f"checking the table '{schema_name}.{table}'"):
            cursor = connection.cursor()
            cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema_name,))
            if not cursor.fetchall():
                raise NonRetryableError(
                    f"The schema '{schema_name}' does not exist in the database '{self.config.get('database')}': "
                    f"create it (CREATE SCHEMA {ident(schema_name)}), or fix schema."
                )
            targets = self.dialect.describe(cursor, schema_name, table)
            if targets is None:
                self.create_table(cursor, run.model, schema_name, table, model_schema)
                targets = self.dialect.describe(cursor, schema_name, table) or []
            needs_key = rules.upsert and not self.merges_without_unique_key
            if needs_key and set(rules.keys) not in self.dialect.unique_keys(cursor, schema_name, table):
                keys = ", ".join(rules.keys)
                raise NonRetryableError(
                    f"The table '{schema_name}.{table}' has no primary key on ({keys}), which exporting "
                    f"{run.model} needs to update rows in place: add it (ALTER TABLE "
                    f"{qualified(schema_name, table)} ADD PRIMARY KEY ({keys}), after removing duplicate rows), "
                    "or export into a new table, which the export creates with it."
                )
            plan = plan_load(self.dialect, run, schema_name, table, model_schema, targets)
            self.dialect.check_conversions(cursor, plan)
            self.create_stage(cursor, plan)
            connection.commit()
        return plan

    def create_table(self, cursor: Any, model: str, schema_name: str, table: str, model_schema: pa.Schema) -> None:
        columns = [f"{ident(name)} {ddl}" for name, ddl in self.dialect.table_ddl(model, model_schema)]
        rules = MODEL_RULES[model]
        if rules.upsert:
            columns.append(f"PRIMARY KEY ({', '.join(ident(k) for k in rules.keys)})")
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {qualified(schema_name, table)} ({', '.join(columns)})")

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

    def drop_stale_stages(self, export_id: str, older_than: dt.timedelta) -> list[str]:
        """The start-up sweep of one export: drop its stage tables older than `older_than`."""
        schema = str(self.config.get("schema") or "public")
        connection = self.connect()
        try:
            with self.translated("dropping stale stage tables"):
                stale = stale_stages(connection.cursor(), schema, export_id, older_than)
                if stale:
                    connection.execute(f"DROP TABLE IF EXISTS {', '.join(stale)}")
                connection.commit()
            return stale
        finally:
            connection.close()

    def drop_stage(self, connection: Any, plan: LoadPlan) -> None:
        try:
            connection.execute(f"DROP TABLE IF EXISTS {plan.stage}")
            connection.commit()
        except Exception:  # the next attempt drops it first
            logger.warning("could not drop the stage table %s", plan.stage_name)

    def load(
        self,
        connection: Any,
        plan: LoadPlan,
        batches: Iterable[pa.RecordBatch],
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> tuple[int, int]:
        loader = ParallelLoader(lambda: self.open_session(plan), self.load_connections)
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

    def open_session(self, plan: LoadPlan) -> LoadSession:
        """A loader's session on the single stage table (Redshift); PostgreSQL loads segments instead."""
        raise NotImplementedError(f"{type(self).__name__} does not load through a single stage table")

    def check_batch(self, plan: LoadPlan, batch: pa.RecordBatch) -> pa.RecordBatch:
        """Refuse a batch the destination cannot store (Redshift's VARCHAR limits); PostgreSQL takes all."""
        return batch

    def merge(self, connection: Any, plan: LoadPlan) -> None:
        cursor = connection.cursor()
        for statement in self.dialect.merge_statements(plan):
            cursor.execute(statement)
        cursor.execute(f"DROP TABLE {plan.stage}")
        connection.commit()


class PostgresSink(StagedSink):
    """Loads record batches into a PostgreSQL table; see the module docstring.

    The stage is a series of segments, each committed by a loader once it holds `segment_bytes`
    of rows; a merger thread merges every committed segment into the table in the run's one
    transaction while the loaders go on, so the merge overlaps the load.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        load_connections: int = LOAD_CONNECTIONS,
        connector: Callable[..., Any] | None = None,
        segment_bytes: int = SEGMENT_BYTES,
    ):
        super().__init__(config, load_connections=load_connections, connector=connector)
        self.segment_bytes = segment_bytes
        self._segments: Segments | None = None  # of the export under way (a sink exports one run at a time)

    def create_stage(self, cursor: Any, plan: LoadPlan) -> None:
        """Drop the segments an earlier attempt of this run left (they are created while loading), and
        those of this export's other intervals older than any attempt lives (runs killed and never retried)."""
        prefix = f"{plan.stage_name}_"
        cursor.execute(
            "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' AND left(c.relname, %s) = %s",
            (plan.schema, len(prefix), prefix),
        )
        stale = [qualified(plan.schema, row[0]) for row in cursor.fetchall()]
        if self.export_id:
            stale += [
                name for name in stale_stages(cursor, plan.schema, self.export_id, STALE_STAGE_AGE) if name not in stale
            ]
        if stale:
            cursor.execute(f"DROP TABLE IF EXISTS {', '.join(stale)}")

    def drop_stage(self, connection: Any, plan: LoadPlan) -> None:
        created = self._segments.created if self._segments else []
        if not created:
            return
        try:
            connection.execute(f"DROP TABLE IF EXISTS {', '.join(created)}")
            connection.commit()
        except Exception:  # the next attempt drops them first
            logger.warning("could not drop the stage tables of %s", plan.stage_name)

    def load(
        self,
        connection: Any,
        plan: LoadPlan,
        batches: Iterable[pa.RecordBatch],
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> tuple[int, int]:
        segments = self._segments = Segments(plan)
        loader = ParallelLoader(lambda: SegmentCopySession(self, plan, segments), self.load_connections)
        merger = Merger(self, connection, plan, segments)
        try:
            for batch in batches:
                if cancel:
                    cancel.raise_if_cancelled()
                merger.raise_if_failed()
                loader.put(batch.select(plan.stage_names))
                if progress:
                    rows, sent = loader.progress()
                    progress(Progress(records_completed=rows, bytes_exported=sent))
            if cancel:
                cancel.raise_if_cancelled()
            loader.close()
            merger.close()
        except BaseException:
            loader.abort()
            merger.abort()
            raise
        return loader.progress()

    def merge(self, connection: Any, plan: LoadPlan) -> None:
        created = self._segments.created if self._segments else []
        cursor = connection.cursor()
        for statement in self.dialect.final_statements(plan, created):
            cursor.execute(statement)
        connection.commit()
        self._segments = None
