"""Specification of run receipts: the row count and order-independent checksum of what a run read.

Real throughout: the checksum over real Arrow batches (DuckDB computes the digests). Nothing is faked.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random

import pyarrow as pa

from batchexports.core.receipts import EMPTY, ReceiptTally, identities, receipt_of
from tests.exports_fixtures import known_events


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
