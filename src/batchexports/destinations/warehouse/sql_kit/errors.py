"""Error translation of the PostgreSQL-protocol sinks: psycopg's errors as what a person can act on.

Errors are classified once, in `classify` (and `classify_connect` for a failed connection attempt):
what a person must fix (credentials, missing database or schema, permissions, a column of an
incompatible type, a read-only server) is a `NonRetryableError` whose message says what to change;
what passes (connection refused or dropped, timeouts, serialization failures, too many connections)
is a `RetryableError`. No message contains the password, the user name or an AWS key (`scrub`).
psycopg is imported only when an error is classified.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchexports.core.errors import DestinationError, NonRetryableError, RetryableError
from batchexports.destinations.warehouse.sql_kit.connection import CONNECT_TIMEOUT
from batchexports.destinations.warehouse.sql_kit.identifiers import ident

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


def _is_connection_failure(error: BaseException) -> bool:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(error, psycopg.OperationalError | psycopg.InterfaceError | OSError)
