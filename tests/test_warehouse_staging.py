"""Stage table names of the warehouse sinks, built on the warehouse kit's `stage_digest`.

Real: the sinks' naming functions and the kit; nothing is faked, no warehouse is reached. The
expected names are computed here from the formula the sinks used before the kit shared it, so a
run retried across an upgrade still replaces the stage its earlier attempt created.
"""

from __future__ import annotations

import hashlib

from batchexports.destinations.bigquery import sink as bigquery_sink
from batchexports.destinations.databricks import sink as databricks_sink
from batchexports.destinations.snowflake import sink as snowflake_sink
from batchexports.destinations.warehouse import staging
from tests.exports_fixtures import HOUR, T0, file_run


def expected_digest(export_id: str, start: str, end: str, model: str) -> str:
    return hashlib.sha256(f"{export_id}|{start}|{end}|{model}".encode()).hexdigest()


def test_the_stage_digest_is_that_of_export_interval_and_model():
    run = file_run({}, "Snowflake", start=T0)
    expected = expected_digest(run.batch_export_id, T0.isoformat(), (T0 + HOUR).isoformat(), run.model)
    assert run.data_interval_end == T0 + HOUR
    assert staging.stage_digest(run) == expected
    assert staging.stage_digest(file_run({}, "Snowflake", start=T0 + HOUR)) != expected


def test_every_warehouse_names_its_stage_as_before():
    run = file_run({}, "Snowflake", start=T0)
    digest = expected_digest(run.batch_export_id, T0.isoformat(), (T0 + HOUR).isoformat(), run.model)
    assert snowflake_sink.stage_table_name(run) == "BATCHEXPORTS_STAGE_" + digest[:20].upper()
    assert databricks_sink.stage_name(run) == "batchexports_stage_" + digest[:16]
    assert bigquery_sink.stage_table_id(run, "events") == "events_stage_" + digest[:16]
