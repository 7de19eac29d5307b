"""The test steps of the Snowflake destination: log in and use the warehouse, database and schema;
then create a test table, load a row into it the way a run does (PUT into a table stage, COPY
INTO, PARSE_JSON into VARIANT), read it back and drop it.

Each step connects anew with the sink's own code, so a step passes exactly when a run would get
that far; the failures are the sink's classified errors, whose messages never hold credentials.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchexports.core.errors import DestinationError
from batchexports.destinations.testing import DestinationCheckFailed, TestStep


def _connect(config: Mapping[str, Any]) -> Any:
    from batchexports.destinations.snowflake import sink as snowflake_sink

    try:
        return snowflake_sink.connect(config)
    except DestinationError as error:
        raise DestinationCheckFailed(str(error)) from None


def _check_connection(config: Mapping[str, Any]) -> None:
    from batchexports.destinations.snowflake import sink as snowflake_sink

    connection = _connect(config)
    try:
        with snowflake_sink.classified(config):
            row = connection.cursor().execute("SELECT CURRENT_DATABASE(), CURRENT_SCHEMA()").fetchone()
    except DestinationError as error:
        raise DestinationCheckFailed(str(error)) from None
    finally:
        with contextlib.suppress(Exception):
            connection.close()
    database, schema = (row or (None, None))[:2]
    if not database:
        raise DestinationCheckFailed(
            f"Database '{config['database']}' does not exist, or the role cannot use it: "
            "check 'database' and the role's grants."
        )
    if not schema:
        raise DestinationCheckFailed(
            f"Schema '{config['schema']}' does not exist in database '{config['database']}', or the role cannot "
            "use it: check 'schema' and the role's grants."
        )


def _check_load(config: Mapping[str, Any]) -> None:
    import pyarrow as pa

    from batchexports.destinations.snowflake import sink as snowflake_sink

    probe = f"batchexports_test_{uuid.uuid4().hex[:12]}"
    table = snowflake_sink.quote(probe)
    stage = probe.upper() + "_STAGE"
    row = {"uuid": str(uuid.uuid4()), "properties": json.dumps({"batchexports": "test"})}
    batch = pa.RecordBatch.from_pylist([row], schema=pa.schema([("uuid", pa.string()), ("properties", pa.string())]))
    connection = _connect(config)
    created = False
    try:
        with snowflake_sink.classified(config), tempfile.TemporaryDirectory() as folder:
            files, _, _ = snowflake_sink.stage_parquet(Path(folder), [batch], batch.schema, None, None)
            cursor = connection.cursor()
            cursor.execute(snowflake_sink.table_ddl(table, batch.schema))
            created = True
            sink = snowflake_sink.SnowflakeSink({**config, "table_name": probe})
            sink.load_stage(cursor, stage, batch.schema, files)
            target = sink.target_columns(cursor)
            cursor.execute(sink.merge_sql("events", stage, batch.schema, target))
            cursor.execute(f'SELECT "uuid", "properties" FROM {table}')
            loaded = cursor.fetchall()
            cursor.execute(f"DROP TABLE IF EXISTS {stage}")
            cursor.execute(f"DROP TABLE {table}")
            created = False
        if [(r[0], json.loads(r[1]) if isinstance(r[1], str) else r[1]) for r in loaded] != [
            (row["uuid"], {"batchexports": "test"})
        ]:
            raise DestinationCheckFailed(f"A row loaded into test table {table} read back differently: {loaded}")
    except DestinationError as error:
        raise DestinationCheckFailed(f"{error}") from None
    finally:
        if created:
            with contextlib.suppress(Exception):
                connection.cursor().execute(f"DROP TABLE IF EXISTS {table}")
        with contextlib.suppress(Exception):
            connection.close()


STEPS = (
    TestStep(
        name="Connect to Snowflake",
        description="Log in with the credentials, use the warehouse, and check that the database and schema exist.",
        check=_check_connection,
    ),
    TestStep(
        name="Create, load and drop a test table",
        description="Create a table in the schema, load a row into it through its stage as a run does "
        "(PUT, COPY INTO, VARIANT), read it back, and drop it.",
        check=_check_load,
    ),
)
