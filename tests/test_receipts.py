"""Specification of run receipts: the row count and order-independent checksum of what a run read.

Real throughout: the checksum over real Arrow batches (DuckDB computes the digests), the real
pipeline over the DuckDB events store into the local-folder (File) destination, the real run
book and API on the test database, and Temporal's own data converter decoding an outcome
recorded before receipts existed. Nothing is faked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from temporalio.converter import DataConverter

from batchexports.core.receipts import EMPTY, ReceiptTally, identities, receipt_of
from batchexports.engine.inputs import ExportOutcome, FinishRunInput
from batchexports.exports import run_book
from batchexports.exports.models import BatchExport, BatchExportRun
from batchexports.pipeline.export import export
from tests.conftest import export_payload, prefix_for
from tests.exports_fixtures import T0, file_run, known_events, store_with

BASE = "2024-05-01T10:00:00+00:00-2024-05-01T11:00:00+00:00"


def uuids(count: int) -> list[str]:
    return known_events(count).column("uuid").to_pylist()


def events(ids: list[str]) -> pa.Table:
    return pa.table({"uuid": pa.array(ids, pa.string())})


def batches_of(table: pa.Table, size: int) -> list[pa.RecordBatch]:
    return table.to_batches(max_chunksize=size)


# The checksum


def test_the_checksum_is_the_documented_sum_of_md5_prefixes() -> None:
    """Anyone can compute it again: first 8 bytes of MD5 of the identity, big-endian, summed mod 2**64."""
    ids = uuids(50)
    expected = sum(int(hashlib.md5(i.encode()).hexdigest()[:16], 16) for i in ids) % 2**64
    receipt = receipt_of([events(ids)], "events")
    assert receipt is not None
    assert (receipt.rows, receipt.checksum) == (50, expected)
    assert receipt.checksum_hex == f"{expected:016x}" and len(receipt.checksum_hex) == 16
    assert receipt.as_dict() == {"rows": 50, "checksum": f"{expected:016x}"}


def test_the_checksum_does_not_depend_on_row_order_or_batching() -> None:
    ids = uuids(1000)
    original = receipt_of(batches_of(events(ids), 100), "events")
    shuffled = list(ids)
    random.Random(7).shuffle(shuffled)
    batches = batches_of(events(shuffled), 37)
    random.Random(8).shuffle(batches)
    assert receipt_of(batches, "events") == original
    assert receipt_of([events(shuffled)], "events") == original


def test_a_doubled_a_missing_and_a_changed_row_each_change_the_receipt() -> None:
    ids = uuids(200)
    original = receipt_of([events(ids)], "events")
    assert original is not None
    doubled = receipt_of([events([*ids, ids[5]])], "events")
    missing = receipt_of([events(ids[1:])], "events")
    changed_id = ids[9][:-1] + ("0" if ids[9][-1] != "0" else "1")
    changed = receipt_of([events([*ids[:9], changed_id, *ids[10:]])], "events")
    assert doubled is not None and doubled.rows == 201 and doubled.checksum != original.checksum
    assert missing is not None and missing.rows == 199 and missing.checksum != original.checksum
    assert changed is not None and changed.rows == 200 and changed.checksum != original.checksum


def test_two_doubled_rows_do_not_cancel_out() -> None:
    """What XOR would miss: a row present three times instead of once."""
    ids = uuids(10)
    original = receipt_of([events(ids)], "events")
    tripled = receipt_of([events([*ids, ids[0], ids[0]])], "events")
    assert original is not None and tripled is not None
    assert tripled.checksum != original.checksum


def persons(versions: list[int], distinct_ids: list[str | None] | None = None) -> pa.Table:
    count = len(versions)
    return pa.table(
        {
            "team_id": pa.array([3] * count, pa.int64()),
            "distinct_id": distinct_ids or [f"user-{i}" for i in range(count)],
            "person_version": pa.array(versions, pa.int64()),
            "person_distinct_id_version": pa.array([0] * count, pa.int64()),
            "properties": ["{}"] * count,  # not part of the identity
        }
    )


def test_persons_are_identified_by_their_keys_and_versions() -> None:
    base = receipt_of([persons([1, 2, 3])], "persons")
    assert base is not None
    assert receipt_of([persons([1, 2, 3]).set_column(4, "properties", pa.array(['{"a": 1}'] * 3))], "persons") == base
    newer = receipt_of([persons([1, 2, 4])], "persons")
    assert newer is not None and newer.checksum != base.checksum
    null_id = receipt_of([persons([1, 2, 3], ["user-0", None, "user-2"])], "persons")
    assert null_id is not None and null_id.checksum != base.checksum
    assert identities(persons([5]), "persons").to_pylist() == ["3\x1fuser-0\x1f5\x1f0"]


def test_session_timestamps_count_as_instants_whatever_their_unit() -> None:
    moment = dt.datetime(2024, 5, 1, 10, 30, 15, 123000, tzinfo=dt.UTC)

    def sessions(unit: str, tz: str | None) -> pa.Table:
        stamp = moment if tz else moment.replace(tzinfo=None)
        return pa.table(
            {
                "team_id": pa.array([3], pa.int64()),
                "session_id": ["s-1"],
                "_inserted_at": pa.array([stamp], pa.timestamp(unit, tz=tz)),
                "end_timestamp": pa.array([None], pa.timestamp(unit, tz=tz)),
            }
        )

    micros = receipt_of([sessions("us", "UTC")], "sessions")
    assert receipt_of([sessions("ms", "UTC")], "sessions") == micros
    assert receipt_of([sessions("ns", None)], "sessions") == micros
    epoch_us = int(moment.timestamp() * 1_000_000)
    assert identities(sessions("us", "UTC"), "sessions").to_pylist() == [f"3\x1fs-1\x1f{epoch_us}\x1f\x00"]


def test_rows_without_their_identity_columns_give_no_receipt() -> None:
    tally = ReceiptTally("events")
    tally.add(pa.table({"event": ["$pageview"]}))
    assert tally.receipt is None and tally.rows == 1
    assert receipt_of([], "events") == EMPTY


# Through the pipeline


@pytest.fixture
def export_dir(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "exports"
    monkeypatch.setenv("BATCHEXPORTS_EXPORT_DIR", str(folder))
    return folder


def test_a_completed_export_receipts_the_source_rows(tmp_path, export_dir) -> None:
    source = known_events(3000)
    outside = known_events(40, start=T0 + dt.timedelta(hours=1), seed=5)  # the next interval: not read
    store = store_with(tmp_path, source, outside)
    result = export(file_run({"path": "p", "file_format": "Parquet"}), store, batch_rows=500)
    assert result.receipt is not None
    assert result.receipt.rows == result.records_completed == 3000
    assert result.receipt == receipt_of([source], "events")


def test_an_interval_without_rows_has_an_empty_receipt(tmp_path, export_dir) -> None:
    store = store_with(tmp_path, known_events(10))
    result = export(file_run({"path": "p"}, start=T0 + dt.timedelta(days=1)), store)
    assert result.receipt == EMPTY and result.records_completed == 0


def test_the_manifest_of_a_file_export_carries_the_receipt(tmp_path, export_dir) -> None:
    source = known_events(20_000)
    store = store_with(tmp_path, source)
    config = {"path": "p", "file_format": "JSONLines", "max_file_size_mb": 1}
    result = export(file_run(config), store, batch_rows=1000)
    manifest = json.loads((export_dir / "p" / f"{BASE}_manifest.json").read_text())
    expected = receipt_of([source], "events")
    assert expected is not None and result.receipt == expected
    assert manifest["receipt"] == {"rows": 20_000, "checksum": expected.checksum_hex}
    assert len(manifest["files"]) >= 3


# Recorded on the run, returned by the API


@pytest.fixture
def batch_export(api: Any, project: Any, engine: Any) -> BatchExport:
    response = api.post(prefix_for("projects", project), export_payload(), format="json")
    assert response.status_code == 201, response.json()
    return BatchExport.objects.get(id=response.json()["id"])


def test_the_run_book_records_the_receipt_of_the_outcome(batch_export: BatchExport) -> None:
    run = run_book.start_run(batch_export, T0, T0 + dt.timedelta(hours=1), None, "sched-1", "run-a")
    outcome = ExportOutcome(7, 70, 7, [], receipt_rows=7, receipt_checksum="00000000deadbeef")
    run_book.DjangoRunBook().finish_run(FinishRunInput(str(run.id), "Completed", outcome=outcome), "sched-1", "run-a")
    run.refresh_from_db()
    assert (run.status, run.receipt_rows, run.receipt_checksum) == ("Completed", 7, "00000000deadbeef")


def test_an_outcome_recorded_before_receipts_still_decodes_and_records_none(batch_export: BatchExport) -> None:
    converter = DataConverter.default.payload_converter
    old = json.dumps({"records_completed": 3, "bytes_exported": 9, "records_total_count": 3, "files": []})
    (payload,) = converter.to_payloads([json.loads(old)])
    (outcome,) = converter.from_payloads([payload], [ExportOutcome])
    assert outcome == ExportOutcome(3, 9, 3, [])
    run = run_book.start_run(batch_export, T0, T0 + dt.timedelta(hours=1), None, "sched-1", "run-a")
    run_book.DjangoRunBook().finish_run(FinishRunInput(str(run.id), "Completed", outcome=outcome), "sched-1", "run-a")
    run.refresh_from_db()
    assert (run.records_completed, run.receipt_rows, run.receipt_checksum) == (3, None, None)


@pytest.mark.parametrize("kind", ["organizations", "projects", "environments"])
def test_the_runs_api_returns_the_receipt(api: Any, project: Any, batch_export: BatchExport, kind: str) -> None:
    with_receipt = BatchExportRun.objects.create(
        batch_export=batch_export, status="Completed", data_interval_start=T0,
        data_interval_end=T0 + dt.timedelta(hours=1), records_completed=12,
        receipt_rows=12, receipt_checksum="0123456789abcdef",
    )  # fmt: skip
    without = BatchExportRun.objects.create(
        batch_export=batch_export, status="Completed", data_interval_start=T0 - dt.timedelta(hours=1),
        data_interval_end=T0, records_completed=4,
    )  # fmt: skip
    runs_url = f"{prefix_for(kind, project)}{batch_export.id}/runs/"
    detail = api.get(f"{runs_url}{with_receipt.id}/")
    assert detail.status_code == 200
    assert detail.json()["receipt"] == {"rows": 12, "checksum": "0123456789abcdef"}
    assert api.get(f"{runs_url}{without.id}/").json()["receipt"] is None
    page = api.get(runs_url, {"start": "2023-01-01T00:00:00Z"}).json()["results"]
    listed = {run["id"]: run["receipt"] for run in page}
    assert listed == {str(with_receipt.id): {"rows": 12, "checksum": "0123456789abcdef"}, str(without.id): None}
