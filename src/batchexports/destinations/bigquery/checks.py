"""The test steps of the BigQuery destination: the service account gets a token and sees the
dataset; then a test table is created, a row is loaded into it by a Parquet load job as a run
loads its stage table, and the table is deleted.

Each step builds its client with the sink's code; failures are the sink's classified errors,
whose messages never hold the private key.
"""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from batchexports.core.errors import DestinationError
from batchexports.destinations.testing import DestinationCheckFailed, TestStep


def _check_dataset(config: Mapping[str, Any]) -> None:
    from batchexports.destinations.bigquery.sink import BigQuerySink, make_client

    try:
        client = make_client(config)
        BigQuerySink(config).check_dataset(client)
    except DestinationError as error:
        raise DestinationCheckFailed(str(error)) from None


def _check_load(config: Mapping[str, Any]) -> None:
    import pyarrow as pa

    from batchexports.destinations.bigquery import sink as bigquery_sink

    probe = f"batchexports_test_{uuid.uuid4().hex[:12]}"
    batch = pa.RecordBatch.from_pylist(
        [{"uuid": str(uuid.uuid4()), "event": "batchexports test"}],
        schema=pa.schema([("uuid", pa.string()), ("event", pa.string())]),
    )
    sink = bigquery_sink.BigQuerySink(config)
    created = False
    client = None
    try:
        client = bigquery_sink.make_client(config)
        sink.check_dataset(client)
        with tempfile.TemporaryDirectory() as folder:
            files, _, _ = bigquery_sink.stage_parquet(Path(folder), [batch], batch.schema, None, None)
            created = True
            sink.load_stage(client, probe, batch.schema, files)
        with bigquery_sink.classified(config, f"test table '{probe}'"):
            rows = client.get_table(f"{sink.project}.{sink.dataset}.{probe}").num_rows
            client.delete_table(f"{sink.project}.{sink.dataset}.{probe}", not_found_ok=True)
            created = False
        if rows != 1:
            raise DestinationCheckFailed(f"A row loaded into test table '{probe}' was not there: {rows} rows.")
    except DestinationError as error:
        raise DestinationCheckFailed(str(error)) from None
    finally:
        if created and client is not None:
            with contextlib.suppress(Exception):
                client.delete_table(f"{sink.project}.{sink.dataset}.{probe}", not_found_ok=True)


STEPS = (
    TestStep(
        name="Connect to the dataset",
        description="Get a token for the service account and check that the dataset exists and is visible to it.",
        check=_check_dataset,
    ),
    TestStep(
        name="Create, load and delete a test table",
        description="Create a table in the dataset, load a row into it with a Parquet load job, and delete it.",
        check=_check_load,
    ),
)
