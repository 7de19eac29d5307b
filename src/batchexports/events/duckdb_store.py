"""The DuckDB events store: one file in the data directory, owned by one process.

DuckDB allows a single writing process; within it, every thread works on its own cursor.
Ingestion is serialized by a lock because person resolution reads, decides and appends.
Reads stream Arrow record batches; DuckDB's `memory_limit` (spilling to the data
directory) bounds the memory a large interval needs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import duckdb
import pyarrow as pa

from batchexports import datadir
from batchexports.events import duckdb_schema, model_queries
from batchexports.events.ingest import EVENTS_SCHEMA, TIMESTAMP, IngestingStore
from batchexports.events.persons import DistinctIdRow, Person, PersonChanges
from batchexports.events.store import ModelQuery, StoreUnavailable

__all__ = ["EVENTS_SCHEMA", "DuckDBEventsStore", "default_path"]


def default_path() -> Path:
    return datadir.data_dir() / "events.duckdb"


class DuckDBEventsStore(IngestingStore):
    def __init__(self, path: str | os.PathLike[str], memory_limit: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        spill = self.path.parent / "duckdb_tmp"
        config: dict[str, str | bool | int | float | list[str]] = {
            "memory_limit": memory_limit or os.environ.get("BATCHEXPORTS_DUCKDB_MEMORY_LIMIT", "192MB"),
            "temp_directory": str(spill),
            "preserve_insertion_order": False,
        }
        try:
            self._con = duckdb.connect(str(self.path), config=config)
        except duckdb.IOException as error:
            if "lock" in str(error).lower():
                raise StoreUnavailable(
                    f"The events store {self.path} is in use by another process (is `batchexports up` running?). "
                    "Stop it, or send events to its capture endpoint instead."
                ) from None
            raise
        # Set after connecting: the setting needs the ICU extension, loaded with the database.
        self._con.execute("SET TimeZone = 'UTC'")
        duckdb_schema.migrate(self._con)
        super().__init__()

    def close(self) -> None:
        self._con.close()

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        cursor = self._con.cursor()
        cursor.execute("SET TimeZone = 'UTC'")
        return cursor

    # Person state for the resolver

    def load_distinct_ids(self, team_id: int, distinct_ids: Sequence[str]) -> dict[str, DistinctIdRow]:
        rows = (
            self._cursor()
            .execute(
                """
            SELECT distinct_id, arg_max(person_id, version)::VARCHAR, max(version)
            FROM person_distinct_ids
            WHERE team_id = ? AND distinct_id IN (SELECT unnest(?::VARCHAR[]))
            GROUP BY distinct_id
            """,
                [team_id, list(distinct_ids)],
            )
            .fetchall()
        )
        return {d: DistinctIdRow(person_id=p, version=v) for d, p, v in rows}

    def load_persons(self, team_id: int, person_ids: Sequence[str]) -> dict[str, Person]:
        rows = (
            self._cursor()
            .execute(
                """
            SELECT person_id::VARCHAR, arg_max(properties, version)::VARCHAR, max(version),
                   arg_max(is_identified, version), min(created_at), arg_max(is_deleted, version)
            FROM persons
            WHERE team_id = ? AND person_id IN (SELECT unnest(?::UUID[]))
            GROUP BY person_id
            """,
                [team_id, list(person_ids)],
            )
            .fetchall()
        )
        return {
            pid: Person(pid, json.loads(props), version, identified, created, is_deleted=deleted)
            for pid, props, version, identified, created, deleted in rows
        }

    def distinct_ids_of(self, team_id: int, person_id: str) -> list[str]:
        rows = (
            self._cursor()
            .execute(
                """
            SELECT distinct_id FROM person_distinct_ids WHERE team_id = ?
            GROUP BY distinct_id HAVING arg_max(person_id, version) = ?::UUID
            """,
                [team_id, person_id],
            )
            .fetchall()
        )
        return [row[0] for row in rows]

    def _write(self, team_id: int, rows: pa.Table, changes: PersonChanges, now: dt.datetime, historical: bool) -> None:
        cursor = self._cursor()
        persons = pa.table(
            {
                "changed_at": pa.array([p.changed_at for p in changes.persons], TIMESTAMP),
                "person_id": [p.person_id for p in changes.persons],
                "properties": [p.properties_json() for p in changes.persons],
                "is_identified": pa.array([p.is_identified for p in changes.persons], pa.bool_()),
                "created_at": pa.array([p.created_at for p in changes.persons], TIMESTAMP),
                "version": pa.array([p.version for p in changes.persons], pa.int64()),
                "is_deleted": pa.array([p.is_deleted for p in changes.persons], pa.bool_()),
            }
        )
        distinct = pa.table(
            {
                "changed_at": pa.array([r.changed_at for _, r in changes.distinct_ids], TIMESTAMP),
                "distinct_id": [d for d, _ in changes.distinct_ids],
                "person_id": [r.person_id for _, r in changes.distinct_ids],
                "version": pa.array([r.version for _, r in changes.distinct_ids], pa.int64()),
            }
        )
        # Past data makes person changes "arrive" with the data, so that backfills of the past
        # find them; live data arrives now.
        change_time = "changed_at" if historical else "?::TIMESTAMPTZ"
        cursor.register("incoming_events", rows)
        cursor.register("incoming_persons", persons)
        cursor.register("incoming_distinct_ids", distinct)
        cursor.execute("BEGIN TRANSACTION")
        try:
            cursor.execute(
                """
                INSERT INTO events (uuid, event, properties, timestamp, team_id, distinct_id, elements_chain,
                                    created_at, person_id, person_properties, session_id, _inserted_at)
                SELECT uuid::UUID, event, properties::JSON, timestamp, ?, distinct_id, elements_chain,
                       ?::TIMESTAMPTZ, person_id::UUID, person_properties::JSON,
                       nullif(json_extract_string(properties, '$."$session_id"'), ''), _inserted_at
                FROM incoming_events
                """,
                [team_id, now],
            )
            cursor.execute(
                f"""
                INSERT INTO persons (team_id, person_id, properties, is_identified, created_at, version,
                                     is_deleted, _inserted_at)
                SELECT ?, person_id::UUID, properties::JSON, is_identified, created_at, version, is_deleted,
                       {change_time}
                FROM incoming_persons
                """,
                [team_id] if historical else [team_id, now],
            )
            cursor.execute(
                f"""
                INSERT INTO person_distinct_ids (team_id, distinct_id, person_id, version, is_deleted, _inserted_at)
                SELECT ?, distinct_id, person_id::UUID, version, false, {change_time}
                FROM incoming_distinct_ids
                """,
                [team_id] if historical else [team_id, now],
            )
            cursor.execute("COMMIT")
        except Exception:
            cursor.execute("ROLLBACK")
            raise
        finally:
            for name in ("incoming_events", "incoming_persons", "incoming_distinct_ids"):
                cursor.unregister(name)
            cursor.close()

    # Reading

    def read(self, query: ModelQuery) -> pa.RecordBatchReader:
        cursor = self._cursor()
        reader = cursor.sql(model_queries.model_sql(query)).to_arrow_reader(query.batch_rows)

        def batches() -> Iterator[pa.RecordBatch]:
            try:
                yield from reader
            finally:
                cursor.close()

        return pa.RecordBatchReader.from_batches(reader.schema, batches())

    def count(self, query: ModelQuery) -> int:
        cursor = self._cursor()
        try:
            return int(cursor.execute(model_queries.count_sql(query)).fetchall()[0][0])
        finally:
            cursor.close()

    def earliest(self, model: str, team_id: int) -> dt.datetime | None:
        cursor = self._cursor()
        try:
            row = cursor.execute(model_queries.earliest_sql(model, team_id)).fetchall()[0]
        finally:
            cursor.close()
        return row[0] if row else None
