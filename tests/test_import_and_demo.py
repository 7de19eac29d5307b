"""Specification of bulk data: `batchexports import FILE` and `batchexports demo`, written straight to the store."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from batchexports import cli

PAST = dt.datetime(2024, 2, 10, 8, 0, tzinfo=dt.UTC)


@pytest.fixture
def store_path(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    from batchexports.events.stores import reset_store

    path = tmp_path / "events.duckdb"
    monkeypatch.setenv("BATCHEXPORTS_DUCKDB_PATH", str(path))
    reset_store()
    yield path
    reset_store()


def stored(path: Any, team_id: int) -> list[tuple]:
    con = duckdb.connect(str(path), read_only=True)
    con.execute("SET TimeZone = 'UTC'")
    try:
        return con.execute(
            "SELECT uuid::VARCHAR, event, distinct_id, properties::VARCHAR, timestamp, _inserted_at, elements_chain "
            "FROM events WHERE team_id = ? ORDER BY timestamp, uuid",
            [team_id],
        ).fetchall()
    finally:
        con.close()


def source_table() -> pa.Table:
    return pa.table(
        {
            "uuid": ["0190f7c2-6c1e-7000-8000-00000000000a", "0190f7c2-6c1e-7000-8000-00000000000b"],
            "event": ["$pageview", "signed_up"],
            "distinct_id": ["u1", "u2"],
            "timestamp": pa.array([PAST, PAST + dt.timedelta(minutes=5)], pa.timestamp("us", tz="UTC")),
            "properties": [json.dumps({"$current_url": "https://a.example/"}), json.dumps({"plan": "pro"})],
            "elements_chain": [None, 'a:href="/x"'],
        }
    )


def expected_rows() -> list[tuple]:
    table = source_table().to_pylist()
    return [
        (r["uuid"], r["event"], r["distinct_id"], r["properties"].replace(" ", ""), r["timestamp"], r["timestamp"],
         r["elements_chain"])
        for r in table
    ]  # fmt: skip


def normalized(rows: list[tuple]) -> list[tuple]:
    return [(r[0], r[1], r[2], json.dumps(json.loads(r[3]), separators=(",", ":")), *r[4:]) for r in rows]


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "csv"])
def test_import_loads_past_events_from_each_format(db, project, store_path, tmp_path, capsys, fmt):
    path = tmp_path / f"events.{fmt}"
    table = source_table()
    if fmt == "parquet":
        pq.write_table(table, path)
    elif fmt == "csv":
        pacsv.write_csv(table, path)
    else:
        path.write_text(
            "\n".join(json.dumps({**r, "timestamp": r["timestamp"].isoformat()}) for r in table.to_pylist())
        )
    assert cli.main(["import", str(path), "--project", str(project.id)]) == 0
    assert "imported 2 events" in capsys.readouterr().out
    assert normalized(stored(store_path, project.id)) == expected_rows()


def test_jsonl_properties_as_objects_are_kept_as_json(db, project, store_path, tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps({"event": "e", "distinct_id": "d", "timestamp": PAST.isoformat(),
                                "properties": {"nested": {"a": [1, 2]}, "n": 1.5}}))  # fmt: skip
    assert cli.main(["import", str(path), "--project", str(project.id)]) == 0
    (row,) = stored(store_path, project.id)
    assert json.loads(row[3]) == {"nested": {"a": [1, 2]}, "n": 1.5}


def test_import_without_a_required_column_says_which(db, project, store_path, tmp_path, capsys):
    path = tmp_path / "events.parquet"
    pq.write_table(source_table().drop_columns(["distinct_id"]), path)
    assert cli.main(["import", str(path), "--project", str(project.id)]) == 2
    assert "no 'distinct_id' column" in capsys.readouterr().err


def test_import_of_an_unknown_format_or_project_is_refused(db, project, store_path, tmp_path, capsys):
    odd = tmp_path / "events.xlsx"
    odd.write_text("x")
    assert cli.main(["import", str(odd), "--project", str(project.id)]) == 2
    assert "Cannot tell the format" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["import", str(odd), "--project", "999999"])
    assert exit_info.value.code == 2


def test_demo_is_deterministic_and_realistic(db, project, store_path, tmp_path, monkeypatch, capsys):
    assert cli.main(["demo", "--project", str(project.id), "--events", "3000", "--days", "2", "--seed", "7"]) == 0
    first = stored(store_path, project.id)
    from batchexports.events.stores import reset_store

    other = tmp_path / "other.duckdb"
    monkeypatch.setenv("BATCHEXPORTS_DUCKDB_PATH", str(other))
    reset_store()
    assert cli.main(["demo", "--project", str(project.id), "--events", "3000", "--days", "2", "--seed", "7"]) == 0
    second = stored(other, project.id)
    assert len(first) == 3000
    assert first == second, "same seed, same events"

    events = {row[1] for row in first}
    assert {"$pageview", "$autocapture", "$identify"} <= events
    properties = [json.loads(row[3]) for row in first]
    assert any("utm_source" in p for p in properties)
    assert any("$set" in p and "email" in p["$set"] for p in properties)
    assert all(row[4] == row[5] for row in first), "demo data is past data: _inserted_at = timestamp"
    assert any(row[6] for row in first if row[1] == "$autocapture")
    now = dt.datetime.now(dt.UTC)
    assert all(now - dt.timedelta(days=2, hours=1) <= row[4] <= now for row in first)
