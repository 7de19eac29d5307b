"""A `ClickHouseConnection` over chdb: real ClickHouse, in this process, on a folder of the test's.

It lets the ClickHouse store's own SQL run unchanged in the tests; only the transport (HTTP via
clickhouse-connect in production) differs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
from chdb import session


class ChdbConnection:
    def __init__(self, path: Path):
        self.session = session.Session(str(path))

    def command(self, sql: str) -> None:
        self.session.query(sql)

    def query(self, sql: str) -> pa.Table:
        return self.session.query(sql, "ArrowTable")

    def rows(self, sql: str) -> list[tuple]:
        return [tuple(row.values()) for row in self.query(sql).to_pylist()]

    def stream(self, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        yield from self.query(sql).to_batches(max_chunksize=batch_rows)

    def empty(self, sql: str) -> pa.Schema:
        return self.query(f"SELECT * FROM ({sql}) LIMIT 0").schema

    def insert(self, table: str, data: pa.Table) -> None:
        incoming = data  # noqa: F841 - read by chdb's Python() table function from this frame
        self.session.query(f"INSERT INTO {table} SELECT * FROM Python(incoming)")

    def close(self) -> None:
        self.session.close()
