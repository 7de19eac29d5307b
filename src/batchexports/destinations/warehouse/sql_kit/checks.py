"""The test steps of the PostgreSQL-protocol destinations: connect, check the schema and the
permissions the export needs, then create, write, read and drop a test table.

Each step connects anew through the sink's own connection code (same TLS mode, timeouts and
error classification), so a step passes exactly when the sink could do the same. The sink is made
by the factory each destination's `checks` module passes to `make_steps`, when a step runs.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from batchexports.core.errors import DestinationError
from batchexports.destinations.testing import DestinationCheckFailed, TestStep
from batchexports.destinations.warehouse.sql_kit.identifiers import ident, qualified

TABLE_PRIVILEGES = ("SELECT", "INSERT", "DELETE")


@contextlib.contextmanager
def _connected(sink: Any) -> Iterator[Any]:
    try:
        connection = sink.connect()
    except DestinationError as error:
        raise DestinationCheckFailed(str(error)) from None
    try:
        yield connection
    except DestinationError as error:
        raise DestinationCheckFailed(str(error)) from None
    finally:
        with contextlib.suppress(Exception):
            connection.rollback()
        with contextlib.suppress(Exception):
            connection.close()


def _names(config: Mapping[str, Any]) -> tuple[str, str]:
    return str(config.get("schema") or "public"), str(config.get("table_name") or "events")


def make_steps(make_sink: Callable[[Mapping[str, Any]], Any], label: str) -> tuple[TestStep, ...]:
    def check_connection(config: Mapping[str, Any]) -> None:
        sink = make_sink(config)
        with _connected(sink) as connection, sink.translated("running a query"):
            cursor = connection.cursor()
            cursor.execute("SELECT 1")
            cursor.fetchall()

    def check_schema(config: Mapping[str, Any]) -> None:
        sink = make_sink(config)
        schema, table = _names(config)
        with _connected(sink) as connection, sink.translated(f"checking the schema '{schema}'"):
            cursor = connection.cursor()
            cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
            if not cursor.fetchall():
                raise DestinationCheckFailed(
                    f"The schema '{schema}' does not exist in the database '{config.get('database')}': create it "
                    f"(CREATE SCHEMA {ident(schema)}), or fix schema."
                )
            cursor.execute(
                "SELECT has_schema_privilege(%s, 'USAGE'), has_schema_privilege(%s, 'CREATE')", (schema, schema)
            )
            usage, create = cursor.fetchall()[0]
            missing = [name for name, granted in (("USAGE", usage), ("CREATE", create)) if not granted]
            if missing:
                raise DestinationCheckFailed(
                    f"The user may not {' and '.join(missing)} in the schema '{schema}', which the export needs (it "
                    f"creates the table when missing and a stage table for each run): GRANT {', '.join(missing)} ON "
                    f"SCHEMA {ident(schema)} TO the user."
                )
            cursor.execute(
                "SELECT 1 FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
                "WHERE n.nspname = %s AND c.relname = %s",
                (schema, table),
            )
            if not cursor.fetchall():
                return  # the export creates it, as its owner
            name = qualified(schema, table)
            denied = []
            for privilege in TABLE_PRIVILEGES:
                cursor.execute("SELECT has_table_privilege(%s, %s)", (name, privilege))
                if not cursor.fetchall()[0][0]:
                    denied.append(privilege)
            if denied:
                raise DestinationCheckFailed(
                    f"The user may not {', '.join(denied)} on the existing table '{schema}.{table}', which the "
                    f"export needs (and UPDATE for persons and sessions): GRANT {', '.join(denied)} ON {name} TO "
                    "the user."
                )

    def check_table(config: Mapping[str, Any]) -> None:
        sink = make_sink(config)
        schema, _ = _names(config)
        name = qualified(schema, f"batchexports_test_{uuid.uuid4().hex[:16]}")
        json_type = sink.dialect.json_type
        parse = "JSON_PARSE(%s)" if json_type == "SUPER" else "%s"
        payload = '{"$browser": "batchexports"}'
        with _connected(sink) as connection, sink.translated(f"creating a test table in the schema '{schema}'"):
            cursor = connection.cursor()
            # One transaction: if a statement fails, the rollback takes the table away with it.
            cursor.execute(
                f'CREATE TABLE {name} ("uuid" VARCHAR(200), "properties" {json_type}, "timestamp" TIMESTAMPTZ)'
            )
            cursor.execute(f"INSERT INTO {name} VALUES (%s, {parse}, %s)", ("test", payload, "2024-01-01T00:00:00Z"))
            cursor.execute(f'SELECT "uuid" FROM {name}')
            if [row[0] for row in cursor.fetchall()] != ["test"]:
                raise DestinationCheckFailed(f"A row written to a test table in '{schema}' read back different.")
            cursor.execute(f"DROP TABLE {name}")
            connection.commit()

    return (
        TestStep(
            name="Connect to the database",
            description=f"Connect to the {label} database with the given host, port, user and password.",
            check=check_connection,
        ),
        TestStep(
            name="Check the schema exists and permissions",
            description="Check that the schema exists and that the user may create tables in it and select, insert "
            "and delete rows of the table when it exists.",
            check=check_schema,
        ),
        TestStep(
            name="Create and drop a test table",
            description="Create a table in the schema, insert a row and read it back, then drop the table.",
            check=check_table,
        ),
    )
