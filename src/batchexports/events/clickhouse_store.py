"""The ClickHouse events store: PostHog's events schema, so a self-hosted PostHog's ClickHouse can be
the source; capture and import write to it too.

SQL comes from the shared query builder in the ClickHouse dialect. The store talks to ClickHouse
through a small connection interface: `clickhouse-connect` over HTTP in production
(`CLICKHOUSE_URL`), chdb (ClickHouse in process) in the tests. ClickHouse has no transactions:
person versions are written before the events that reference them, so a failed batch leaves at
most unreferenced person versions (harmless), never events without their persons.

`inserted_at` and the watermark. In PostHog's own ClickHouse, `inserted_at` is the column's
`DEFAULT NOW64()`: each server's clock when the Kafka engine's materialized view inserts a block
(through a Distributed table into `ReplicatedReplacingMergeTree` shards). So it is taken before
the block is visible, per shard, with no order between shards or replicas and no bound on how late
a block becomes readable: a row can still appear with a time inside an interval already read, and
ClickHouse offers no watermark to wait for. What this store does: rows written through it (capture
and import in this process) take their `inserted_at` from the same commit clock as DuckDB's, under
the write lock, and `watermark()` is that clock's, so a run waits for this process's writes exactly
as with DuckDB. It cannot see writes by anyone else (PostHog's ingestion, another process): for
such a source the guarantee is not given, and a run reads at the watermark of its own writes only.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from typing import Protocol
from urllib.parse import urlparse

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from batchexports.events import model_queries
from batchexports.events.dialects import CLICKHOUSE
from batchexports.events.ingest import IngestingStore
from batchexports.events.persons import DistinctIdRow, Person, PersonChanges
from batchexports.events.store import ModelQuery, StoreUnavailable

SCHEMA = [
    """
    CREATE TABLE IF NOT EXISTS events (
        uuid UUID, event String, properties String, timestamp DateTime64(6, 'UTC'), team_id Int64,
        distinct_id String, elements_chain String, created_at DateTime64(6, 'UTC'), person_id UUID,
        person_properties String, `$session_id` String, inserted_at Nullable(DateTime64(6, 'UTC')),
        _timestamp DateTime
    ) ENGINE = MergeTree ORDER BY (team_id, toDate(timestamp), event, uuid)
    """,
    """
    CREATE TABLE IF NOT EXISTS person (
        id UUID, team_id Int64, properties String, is_identified Int8, created_at DateTime64(6, 'UTC'),
        version UInt64, is_deleted Int8, _timestamp DateTime
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (team_id, id)
    """,
    """
    CREATE TABLE IF NOT EXISTS person_distinct_id2 (
        team_id Int64, distinct_id String, person_id UUID, is_deleted Int8, version Int64, _timestamp DateTime
    ) ENGINE = ReplacingMergeTree(version) ORDER BY (team_id, distinct_id)
    """,
]


class ClickHouseConnection(Protocol):
    def command(self, sql: str) -> None: ...

    def rows(self, sql: str) -> list[tuple]: ...

    def stream(self, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]: ...

    def empty(self, sql: str) -> pa.Schema:
        """The schema of `sql`'s result without running it over data."""

    def insert(self, table: str, data: pa.Table) -> None: ...


class HTTPConnection:
    """clickhouse-connect over HTTP(S): `CLICKHOUSE_URL=http(s)://user:password@host:8123/database`."""

    def __init__(self, url: str):
        import clickhouse_connect

        parsed = urlparse(url)
        try:
            self._client = clickhouse_connect.get_client(
                host=parsed.hostname or "localhost",
                port=parsed.port or (8443 if parsed.scheme == "https" else 8123),
                username=parsed.username or "default",
                password=parsed.password or "",
                database=(parsed.path or "/default").lstrip("/") or "default",
                secure=parsed.scheme == "https",
                settings={"date_time_output_format": "iso"},
            )
        except Exception as error:  # connection errors of every kind: say where, never the password
            raise StoreUnavailable(
                f"Cannot connect to ClickHouse at {parsed.hostname}:{parsed.port}: {type(error).__name__}"
            ) from None

    def command(self, sql: str) -> None:
        self._client.command(sql)

    def rows(self, sql: str) -> list[tuple]:
        return [tuple(row) for row in self._client.query(sql).result_rows]

    def stream(self, sql: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
        with self._client.query_arrow_stream(sql, settings={"max_block_size": batch_rows}) as stream:
            for block in stream:
                yield from (block.to_batches() if isinstance(block, pa.Table) else [block])

    def empty(self, sql: str) -> pa.Schema:
        return self._client.query_arrow(f"SELECT * FROM ({sql}) LIMIT 0").schema

    def insert(self, table: str, data: pa.Table) -> None:
        self._client.insert_arrow(table, data)


def _session_ids(rows: pa.Table) -> pa.Array:
    """The `$session_id` of each event, extracted vectorized (DuckDB reads JSON fast)."""
    con = duckdb.connect()
    try:
        con.register("incoming", rows.select(["properties"]))
        extracted = con.sql("SELECT coalesce(json_extract_string(properties, '$.\"$session_id\"'), '') FROM incoming")
        return extracted.to_arrow_table().column(0).combine_chunks()
    finally:
        con.close()


def _seconds(moments: pa.Array | pa.ChunkedArray) -> pa.Array:
    return pc.cast(moments, pa.timestamp("s", tz="UTC"), safe=False)


class ClickHouseEventsStore(IngestingStore):
    def __init__(self, connection: ClickHouseConnection):
        super().__init__()
        self.connection = connection
        for statement in SCHEMA:
            connection.command(statement)

    def close(self) -> None:
        pass

    # Person state

    def load_distinct_ids(self, team_id: int, distinct_ids: Sequence[str]) -> dict[str, DistinctIdRow]:
        rows = self.connection.rows(
            f"SELECT distinct_id, toString(argMax(person_id, version)), max(version) FROM person_distinct_id2 "
            f"WHERE team_id = {int(team_id)} AND distinct_id IN {CLICKHOUSE.string_list(list(distinct_ids))} "
            "GROUP BY distinct_id"
        )
        return {d: DistinctIdRow(person_id=p, version=int(v)) for d, p, v in rows}

    def load_persons(self, team_id: int, person_ids: Sequence[str]) -> dict[str, Person]:
        ids = ", ".join(f"toUUID({CLICKHOUSE.literal(p)})" for p in person_ids)
        rows = self.connection.rows(
            "SELECT toString(id), argMax(properties, version), max(version), argMax(is_identified, version), "
            f"min(created_at), argMax(is_deleted, version) FROM person WHERE team_id = {int(team_id)} "
            f"AND id IN ({ids}) GROUP BY id"
        )
        return {
            pid: Person(pid, json.loads(props), int(version), bool(identified), _utc(created), is_deleted=bool(deleted))
            for pid, props, version, identified, created, deleted in rows
        }

    def distinct_ids_of(self, team_id: int, person_id: str) -> list[str]:
        rows = self.connection.rows(
            f"SELECT distinct_id FROM person_distinct_id2 WHERE team_id = {int(team_id)} GROUP BY distinct_id "
            f"HAVING argMax(person_id, version) = toUUID({CLICKHOUSE.literal(person_id)})"
        )
        return [row[0] for row in rows]

    # Writing

    def _write(self, team_id: int, rows: pa.Table, changes: PersonChanges, now: dt.datetime, historical: bool) -> None:
        def at(value: dt.datetime | None) -> dt.datetime:
            return value if historical and value is not None else now

        if changes.persons:
            person_times = pa.array([at(p.changed_at) for p in changes.persons], pa.timestamp("us", tz="UTC"))
            self.connection.insert("person", pa.table({
                "id": [p.person_id for p in changes.persons],
                "team_id": pa.array([team_id] * len(changes.persons), pa.int64()),
                "properties": [p.properties_json() for p in changes.persons],
                "is_identified": pa.array([int(p.is_identified) for p in changes.persons], pa.int8()),
                "created_at": pa.array([p.created_at for p in changes.persons], pa.timestamp("us", tz="UTC")),
                "version": pa.array([p.version for p in changes.persons], pa.uint64()),
                "is_deleted": pa.array([int(p.is_deleted) for p in changes.persons], pa.int8()),
                "_timestamp": _seconds(person_times),
            }))  # fmt: skip
        if changes.distinct_ids:
            id_times = pa.array([at(r.changed_at) for _, r in changes.distinct_ids], pa.timestamp("us", tz="UTC"))
            self.connection.insert("person_distinct_id2", pa.table({
                "team_id": pa.array([team_id] * len(changes.distinct_ids), pa.int64()),
                "distinct_id": [d for d, _ in changes.distinct_ids],
                "person_id": [r.person_id for _, r in changes.distinct_ids],
                "is_deleted": pa.array([0] * len(changes.distinct_ids), pa.int8()),
                "version": pa.array([r.version for _, r in changes.distinct_ids], pa.int64()),
                "_timestamp": _seconds(id_times),
            }))  # fmt: skip
        count = rows.num_rows
        inserted = rows.column("_inserted_at").combine_chunks()
        self.connection.insert("events", pa.table({
            "uuid": rows.column("uuid"),
            "event": rows.column("event"),
            "properties": rows.column("properties"),
            "timestamp": rows.column("timestamp"),
            "team_id": pa.array([team_id] * count, pa.int64()),
            "distinct_id": rows.column("distinct_id"),
            "elements_chain": pc.fill_null(rows.column("elements_chain"), ""),
            "created_at": pa.array([now] * count, pa.timestamp("us", tz="UTC")),
            "person_id": rows.column("person_id"),
            "person_properties": rows.column("person_properties"),
            "$session_id": _session_ids(rows),
            "inserted_at": inserted,
            "_timestamp": _seconds(inserted),
        }))  # fmt: skip

    # Reading

    def read(self, query: ModelQuery) -> pa.RecordBatchReader:
        sql = model_queries.model_sql(query, CLICKHOUSE)
        schema = self.connection.empty(sql)

        def batches() -> Iterator[pa.RecordBatch]:
            for batch in self.connection.stream(sql, query.batch_rows):
                for offset in range(0, batch.num_rows, query.batch_rows):
                    yield batch.slice(offset, query.batch_rows).cast(schema)

        return pa.RecordBatchReader.from_batches(schema, batches())

    def count(self, query: ModelQuery) -> int:
        return int(self.connection.rows(model_queries.count_sql(query, CLICKHOUSE))[0][0])

    def earliest(self, model: str, team_id: int) -> dt.datetime | None:
        value = self.connection.rows(model_queries.earliest_sql(model, team_id, CLICKHOUSE))[0][0]
        moment = _utc(value) if value else None
        return None if moment is None or moment.timestamp() <= 0 else moment


def _utc(value: object) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    assert isinstance(value, dt.datetime)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)
