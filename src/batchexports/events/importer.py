"""Bulk import of past events from Parquet, JSON lines or CSV files.

DuckDB reads the file (so any size streams in bounded batches) and normalizes its columns to
what the store takes; rows arrive as past data, `_inserted_at` = `timestamp`, so that backfills
of those intervals export them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa

from batchexports.events.duckdb_store import EVENTS_SCHEMA

READERS = {
    ".parquet": "read_parquet(?)",
    ".jsonl": "read_json(?, format = 'newline_delimited')",
    ".ndjson": "read_json(?, format = 'newline_delimited')",
    ".json": "read_json(?, format = 'auto')",
    ".csv": "read_csv(?, header = true)",
}
REQUIRED = ("event", "distinct_id", "timestamp")


class ImportFileError(ValueError):
    """The file cannot be imported; the message says what to change."""


def _reader_for(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".zst", ".gzip")]
    if suffixes and suffixes[-1] in READERS:
        return READERS[suffixes[-1]]
    raise ImportFileError(f"Cannot tell the format of '{path.name}': name it .parquet, .jsonl, .ndjson, .json or .csv")


def _select_list(columns: dict[str, str]) -> str:
    missing = [name for name in REQUIRED if name not in columns]
    if missing:
        raise ImportFileError(f"The file has no {', '.join(repr(m) for m in missing)} column")
    properties_type = columns.get("properties", "")
    if not properties_type:
        properties = "'{}'"
    elif properties_type.upper().startswith(("VARCHAR", "JSON")):
        properties = "coalesce(properties::VARCHAR, '{}')"
    else:  # a struct or map inferred from JSON or Parquet
        properties = "coalesce(to_json(properties)::VARCHAR, '{}')"
    uuid = "coalesce(CAST(uuid AS UUID), uuid())::VARCHAR" if "uuid" in columns else "uuid()::VARCHAR"
    chain = "elements_chain::VARCHAR" if "elements_chain" in columns else "NULL::VARCHAR"
    return (
        f"{uuid} AS uuid, event::VARCHAR AS event, {properties} AS properties, "
        "CAST(timestamp AS TIMESTAMPTZ) AS timestamp, distinct_id::VARCHAR AS distinct_id, "
        f"{chain} AS elements_chain"
    )


class EventsFile:
    """One file of events, read in batches shaped like the store's input."""

    def __init__(self, path: str | Path, batch_rows: int = 100_000):
        self.path = Path(path)
        if not self.path.is_file():
            raise ImportFileError(f"No such file: {self.path}")
        self.batch_rows = batch_rows
        self._con = duckdb.connect()
        self._con.execute("SET TimeZone = 'UTC'")
        self._source = _reader_for(self.path)
        try:
            described = self._con.execute(f"DESCRIBE SELECT * FROM {self._source}", [str(self.path)]).fetchall()
        except duckdb.Error as error:
            raise ImportFileError(f"Cannot read '{self.path.name}': {error}") from None
        self._select = _select_list({row[0]: row[1] for row in described})

    def count(self) -> int:
        return int(self._con.execute(f"SELECT count(*) FROM {self._source}", [str(self.path)]).fetchall()[0][0])

    def batches(self) -> Iterator[pa.Table]:
        query = f"SELECT {self._select} FROM {self._source} WHERE event IS NOT NULL"
        try:
            reader = self._con.sql(query, params=[str(self.path)]).to_arrow_reader(self.batch_rows)
            for batch in reader:
                yield pa.Table.from_batches([batch]).cast(EVENTS_SCHEMA)
        except duckdb.ConversionException as error:
            raise ImportFileError(f"A value in '{self.path.name}' has the wrong type: {error}") from None
        except duckdb.Error as error:
            raise ImportFileError(f"Cannot read '{self.path.name}': {error}") from None

    def close(self) -> None:
        self._con.close()
