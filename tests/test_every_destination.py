"""The same behaviours, specified over every registered destination type.

For each type of `registry.types()`: a re-run of an interval replaces what the first run
exported; a run cancelled after its first batch leaves nothing of the interval; the secret
values of a config never appear in the error of a failing run or in the logs; an interval
without events never contacts the destination. A registered type without a harness fails the
suite (see `test_every_registered_destination_has_a_harness`).

Each export runs through the pipeline (`export(run, store)`) from a real DuckDB events store,
without Temporal. What each type exports into (real services, emulators, fakes) is listed in
`tests/destination_harnesses.py`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import traceback
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from batchexports.core import receipts
from batchexports.core.run import Cancelled, CancelToken, ExportResult, ExportRun
from batchexports.destinations import registry
from batchexports.events.duckdb_store import DuckDBEventsStore
from batchexports.events.store import ModelQuery
from batchexports.pipeline.export import export
from tests.destination_harnesses import (  # noqa: F401 - the harness fixtures, requested by name
    HARNESSES,
    Harness,
    Row,
    aws_s3_harness,
    azure_harness,
    azurite_service,
    bigquery_harness,
    bigquery_key_pair,
    databricks_harness,
    file_harness,
    http_harness,
    moto_endpoint,
    noop_harness,
    postgres_database,
    postgres_harness,
    redshift_database,
    redshift_harness,
    s3_compatible_harness,
    s3_legacy_harness,
    snowflake_harness,
)
from tests.exports_fixtures import HOUR, T0, TEAM, known_events

# fakesnow's own DuckDB calls warn about an extra Arrow copy; nothing the sinks do.
pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")

EVENTS = 300
BATCH_ROWS = 50  # six batches of the interval
EMPTY = T0 + 5 * HOUR  # an hour without events
TYPES = registry.types()


class WatchedStore:
    """The events store, counting the queries runs make; with `cancel`, it cancels that token
    once the first non-empty batch has been handed out and the next one is asked for."""

    def __init__(self, store: DuckDBEventsStore, cancel: CancelToken | None = None):
        self.store, self.cancel = store, cancel
        self.queries = 0

    def count(self, query: ModelQuery) -> int:
        self.queries += 1
        return self.store.count(query)

    def watermark(self) -> dt.datetime:
        return self.store.watermark()

    def read(self, query: ModelQuery) -> pa.RecordBatchReader:
        self.queries += 1
        reader = self.store.read(query)
        if self.cancel is None:
            return reader
        return pa.RecordBatchReader.from_batches(reader.schema, self._cancelling(reader))

    def _cancelling(self, reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
        assert self.cancel is not None
        handed = 0
        for batch in reader:
            if handed and batch.num_rows:
                self.cancel.cancel()
            handed += bool(batch.num_rows)
            yield batch


@pytest.fixture
def store(tmp_path: Any) -> Iterator[DuckDBEventsStore]:
    # Not events.duckdb: the HTTP harness receives into conftest's events_store there, and a project
    # id equal to TEAM would read the source rows back as if they had been sent.
    store = DuckDBEventsStore(tmp_path / "source.duckdb")
    store.import_table(TEAM, known_events(EVENTS))
    yield store
    store.close()


# The HTTP harness receives through batchexports' own capture endpoint (`live_server`), whose
# database pytest-django sets up from the marks it sees when collecting.
MARKS = {"HTTP": pytest.mark.django_db(transaction=True)}


@pytest.fixture(params=[pytest.param(t, marks=MARKS.get(t, ()), id=t) for t in TYPES])
def harness(request: pytest.FixtureRequest) -> Harness:
    destination_type = request.param
    if destination_type not in HARNESSES:
        pytest.fail(
            f"The destination type {destination_type!r} has no harness in tests/destination_harnesses.py: give it "
            "one (a config at a real or emulated service, and a reader of what it holds) so the suite covers it.",
            pytrace=False,
        )
    harness: Harness = request.getfixturevalue(HARNESSES[destination_type])
    assert harness.destination_type == destination_type
    return harness


def run_of(harness: Harness, config: dict[str, Any] | None = None, start: dt.datetime = T0) -> ExportRun:
    return ExportRun(
        batch_export_id="00000000-0000-0000-0000-00000000c055",
        team_id=TEAM,
        model="events",
        destination_type=harness.destination_type,
        destination_config=harness.config if config is None else config,
        data_interval_start=start,
        data_interval_end=start + HOUR,
    )


def source_rows(store: DuckDBEventsStore, start: dt.datetime = T0) -> dict[str, tuple]:
    """uuid -> (event, distinct_id, properties) of the events imported into [start, start + 1h)."""
    table = store.read(ModelQuery("events", TEAM, start, start + HOUR)).read_all()
    return {r["uuid"]: (r["event"], r["distinct_id"], json.loads(r["properties"])) for r in table.to_pylist()}


def by_uuid(rows: list[Row]) -> dict[str, tuple]:
    exported = {r["uuid"]: (r["event"], r["distinct_id"], r["properties"]) for r in rows}
    assert len(exported) == len(rows), "a uuid was exported more than once"
    return exported


def secret_values(destination_type: str, config: dict[str, Any]) -> list[str]:
    """The values at the type's secret paths (as the API's scrubbing sees them: 4 characters or more)."""
    values = []
    for path in registry.get(destination_type).secret_fields:
        value: Any = config
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value not in (None, "") and len(str(value)) >= 4:
            values.append(str(value))
    return values


def test_every_registered_destination_has_a_harness():
    missing = sorted(set(TYPES) - set(HARNESSES))
    assert not missing, f"destination types without a harness in tests/destination_harnesses.py: {missing}"
    assert set(HARNESSES) <= set(TYPES), "a harness of a type the registry no longer has"


def test_a_rerun_of_an_interval_replaces_what_it_exported(harness, store):
    """Export the interval, add an event to it, export it again: each uuid once, as in the source."""
    watched = WatchedStore(store)
    first = export(run_of(harness), watched, batch_rows=BATCH_ROWS)
    if not harness.exports_rows:  # NoOp: nothing is read, nothing is exported
        assert (first.records_completed, watched.queries) == (0, 0)
        return
    assert first.records_completed == EVENTS
    assert by_uuid(harness.read_back()) == source_rows(store)
    # The receipt is of the rows read, whatever the sink (`core/receipts.py`, test_receipts.py).
    assert first.receipt == receipts.receipt_of([pa.table({"uuid": list(source_rows(store))})], "events")

    store.import_table(TEAM, known_events(1, start=T0 + dt.timedelta(minutes=30), seed=2))
    again = export(run_of(harness), store, batch_rows=BATCH_ROWS)
    assert again.records_completed == EVENTS + 1
    assert by_uuid(harness.read_back()) == source_rows(store)
    assert len(source_rows(store)) == EVENTS + 1
    assert harness.leftovers() == []


def test_a_run_cancelled_after_its_first_batch_leaves_nothing(harness, store):
    """The token is cancelled once the sink has taken the first of six batches; the run raises
    `Cancelled` and the destination holds nothing: no rows, objects, stage tables or uploads.

    HTTP has no transaction: what it had POSTed before a cancel stays sent (a re-run's events are
    de-duplicated by uuid at the receiver). Here the interval fits one request, which is only sent
    once complete, so nothing is sent."""
    if not harness.exports_rows:
        pytest.skip("NoOp reads no batch, so no run of it can be cancelled after one")
    token = CancelToken()
    with pytest.raises(Cancelled):
        export(run_of(harness), WatchedStore(store, cancel=token), cancel=token, batch_rows=BATCH_ROWS)
    assert token.cancelled, "the sink asked for a second batch, so the cancel came after the first"
    assert harness.read_back() == []
    assert harness.leftovers() == []


def test_secret_values_never_appear_in_a_failing_runs_error_or_logs(harness, store, caplog):
    """The destination refuses the config's credentials (or is unreachable); the error, its chain
    of causes (Temporal records them) and the log records name no secret value. Logs are captured
    at DEBUG for batchexports and at the service's level (INFO) for the libraries."""
    spec = registry.get(harness.destination_type)
    if harness.failing is None:
        assert spec.secret_fields == (), "a type with secret fields needs a failing config in its harness"
        return
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="batchexports")
    with harness.failing() as config, pytest.raises(Exception) as raised:
        export(run_of(harness, config), store, batch_rows=BATCH_ROWS)
    secrets = secret_values(harness.destination_type, config)
    assert secrets, "the failing config holds secret values"
    error = raised.value
    assert not isinstance(error, AssertionError | Cancelled), error
    text = "".join(traceback.format_exception(error)) + repr(error) + caplog.text
    leaked = [secret for secret in secrets if secret in text]
    assert not leaked, f"secret values shown: {leaked} in {text[-3000:]}"
    if harness.contacts is not None:
        assert harness.contacts() > 0, "the failure came from the destination, not before it"


def test_an_interval_without_events_never_contacts_the_destination(harness, store):
    """0 records, and the destination is not contacted: nothing written, no request or connection
    seen where the harness counts them, and a config that fails on contact does not fail."""
    watched = WatchedStore(store)
    result = export(run_of(harness, start=EMPTY), watched, batch_rows=BATCH_ROWS)
    assert (result.records_completed, result.bytes_exported, result.files) == (0, 0, ())
    assert harness.read_back() == [] and harness.leftovers() == []
    if harness.contacts is not None:
        assert harness.contacts() == 0
    if harness.failing is not None:
        with harness.failing() as config:
            # Nothing read: a receipt of no rows (`core/receipts.py`), or none where nothing is read at all (NoOp).
            receipt = receipts.EMPTY if harness.exports_rows else None
            assert export(run_of(harness, config, EMPTY), store) == ExportResult(0, 0, (), 0, receipt)
        if harness.contacts is not None:
            assert harness.contacts() == 0
    if not harness.exports_rows:
        assert watched.queries == 0, "NoOp does not even read the source"
