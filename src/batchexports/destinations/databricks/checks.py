"""The test steps of the Databricks destination: the service principal gets a token, the SQL
warehouse answers and the schema exists; then a test table is created, a row is loaded into it
the way a run loads (PUT into a volume, COPY INTO, MERGE), read back, and dropped with the volume.

Each step connects anew with the sink's code; failures are the sink's classified errors, whose
messages never hold `client_id` or `client_secret`.
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


def _check_connection(config: Mapping[str, Any]) -> None:
    from batchexports.destinations.databricks import sink as databricks_sink

    sink = databricks_sink.DatabricksSink(config)
    try:
        connection = databricks_sink.connect(config)
        try:
            with databricks_sink.classified(config):
                cursor = connection.cursor()
                cursor.execute("SELECT 1")
                cursor.fetchall()
                cursor.execute(
                    f"DESCRIBE SCHEMA {databricks_sink.quote(sink.catalog)}.{databricks_sink.quote(sink.schema)}"
                )
                cursor.fetchall()
        finally:
            with contextlib.suppress(Exception):
                connection.close()
    except DestinationError as error:
        raise DestinationCheckFailed(str(error)) from None


def _check_load(config: Mapping[str, Any]) -> None:
    import pyarrow as pa

    from batchexports.destinations.databricks import sink as databricks_sink

    probe = f"batchexports_test_{uuid.uuid4().hex[:12]}"
    sink = databricks_sink.DatabricksSink({**config, "table_name": probe})
    row = {"uuid": str(uuid.uuid4()), "properties": json.dumps({"batchexports": "test"})}
    batch = pa.RecordBatch.from_pylist([row], schema=pa.schema([("uuid", pa.string()), ("properties", pa.string())]))
    try:
        with tempfile.TemporaryDirectory() as folder:
            files, _, _ = databricks_sink.stage_parquet(Path(folder), [batch], batch.schema, None, None)
            connection = databricks_sink.connect(config, Path(folder))
            try:
                with databricks_sink.classified(config):
                    cursor = connection.cursor()
                    cursor.execute(sink.table_ddl(sink.ref(probe), batch.schema))
                    stage = probe + "_stage"
                    try:
                        sink.load_stage(cursor, stage, batch.schema, files)
                        target = sink.target_columns(cursor, probe)
                        cursor.execute(sink.merge_sql("events", stage, batch.schema, target))
                        cursor.execute(f"SELECT count(*) FROM {sink.ref(probe)}")
                        (count,) = cursor.fetchall()[0]
                    finally:
                        with contextlib.suppress(Exception):  # the stage table is created before the volume
                            sink.drop_stage(cursor, stage)
                        cursor.execute(f"DROP TABLE IF EXISTS {sink.ref(probe)}")
            finally:
                with contextlib.suppress(Exception):
                    connection.close()
    except DestinationError as error:
        raise DestinationCheckFailed(str(error)) from None
    if count != 1:
        raise DestinationCheckFailed(f"A row loaded into test table '{probe}' was not there: {count} rows.")


STEPS = (
    TestStep(
        name="Connect to the SQL warehouse",
        description="Get an OAuth token for the service principal, run a query on the warehouse, and check that "
        "the catalog and schema exist.",
        check=_check_connection,
    ),
    TestStep(
        name="Create, load and drop a test table",
        description="Create a table in the schema, load a row into it through a volume as a run does "
        "(PUT, COPY INTO, MERGE), read it back, and drop the table and the volume.",
        check=_check_load,
    ),
)
