"""Known events in a fresh store, and readers of exported files, shared by the pipeline and destination tests."""

from __future__ import annotations

import datetime as dt
import io
import json
import uuid
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from batchexports.core.run import ExportRun
from batchexports.events.duckdb_store import EVENTS_SCHEMA, DuckDBEventsStore

T0 = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
TEAM = 3


def known_events(count: int, start: dt.datetime = T0, span: dt.timedelta = HOUR, seed: int = 1) -> pa.Table:
    """`count` events spread over `[start, start + span)`, with nested, unicode and quoted properties."""
    step = span / count
    return pa.table(
        {
            "uuid": [str(uuid.UUID(int=(seed << 96) + i, version=4)) for i in range(count)],
            "event": ["$pageview" if i % 3 else 'signed up, "quoted"' for i in range(count)],
            "properties": [
                json.dumps({"i": i, "$current_url": f"https://ex.ample/{i}", "nested": {"list": [i, "ü"]}})
                for i in range(count)
            ],
            "timestamp": pa.array([start + step * i for i in range(count)], pa.timestamp("us", tz="UTC")),
            "distinct_id": [f"user-{i % 7}" for i in range(count)],
            "elements_chain": [None if i % 2 else 'button:text="Buy, now"' for i in range(count)],
        },
        schema=EVENTS_SCHEMA,
    )


def store_with(tmp_path: Any, *tables: pa.Table, team_id: int = TEAM) -> DuckDBEventsStore:
    store = DuckDBEventsStore(tmp_path / "events.duckdb")
    for table in tables:
        store.import_table(team_id, table)
    return store


def file_run(config: dict[str, Any], destination_type: str = "File", start: dt.datetime = T0,
             end: dt.datetime | None = None, model: str = "events") -> ExportRun:  # fmt: skip
    return ExportRun(
        batch_export_id="00000000-0000-0000-0000-00000000beef",
        team_id=TEAM,
        model=model,
        destination_type=destination_type,
        destination_config=config,
        data_interval_start=start,
        data_interval_end=end or start + HOUR,
    )


def decode_rows(data: bytes, file_format: str, compression: str | None) -> list[dict[str, Any]]:
    """Rows of one exported file, with JSON columns parsed, whatever the format."""
    if file_format == "Parquet":
        rows = pq.read_table(io.BytesIO(data)).to_pylist()
    else:
        raw = pa.input_stream(io.BytesIO(data), compression=compression).read() if compression else data
        if file_format == "JSONLines":
            return [json.loads(line) for line in raw.decode().splitlines() if line]
        rows = pacsv.read_csv(io.BytesIO(raw)).to_pylist()
    for row in rows:
        for column in ("properties", "person_properties", "set", "set_once"):
            if isinstance(row.get(column), str):
                row[column] = json.loads(row[column])
    return rows


def expected_rows(table: pa.Table) -> dict[str, tuple]:
    """uuid -> (event, distinct_id, properties, elements_chain) of the source rows."""
    return {
        r["uuid"]: (r["event"], r["distinct_id"], json.loads(r["properties"]), r["elements_chain"])
        for r in table.to_pylist()
    }


def exported_rows(rows: list[dict[str, Any]]) -> dict[str, tuple]:
    chain = lambda value: value if value not in ("",) else None  # noqa: E731 - CSV writes null as empty
    result = {r["uuid"]: (r["event"], r["distinct_id"], r["properties"], chain(r["elements_chain"])) for r in rows}
    assert len(result) == len(rows), "no uuid is exported twice"
    return result
