"""Ingestion shared by the stores: events in, persons resolved, one write per batch.

A store subclass supplies the person state the resolver reads (`load_distinct_ids`,
`load_persons`, `distinct_ids_of`) and `_write`, which stores one batch of events with the
person versions it produced. Live rows take their `_inserted_at` from the commit clock under the
write lock, just before the write commits (`commit_clock.py`); past rows keep their `timestamp`.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from batchexports.events.commit_clock import CommitClock
from batchexports.events.normalize import CapturedEvent
from batchexports.events.persons import (
    DistinctIdRow,
    Person,
    PersonChanges,
    PersonResolver,
    PersonUpdate,
    needs_person_processing,
)

TIMESTAMP = pa.timestamp("us", tz="UTC")

EVENTS_SCHEMA = pa.schema(
    [
        ("uuid", pa.string()),
        ("event", pa.string()),
        ("properties", pa.string()),
        ("timestamp", TIMESTAMP),
        ("distinct_id", pa.string()),
        ("elements_chain", pa.string()),
    ]
)

SPECIAL_EVENTS = ["$identify", "$create_alias", "$merge_dangerously"]


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


class IngestingStore(ABC):
    def __init__(self) -> None:
        # Person resolution reads, decides and appends: one batch at a time per process.
        self._write_lock = threading.Lock()
        self._commit_clock = CommitClock()

    def watermark(self) -> dt.datetime:
        """The time before which every write to this store (from this process) has committed."""
        return self._commit_clock.watermark()

    @abstractmethod
    def load_distinct_ids(self, team_id: int, distinct_ids: Sequence[str]) -> dict[str, DistinctIdRow]: ...

    @abstractmethod
    def load_persons(self, team_id: int, person_ids: Sequence[str]) -> dict[str, Person]: ...

    @abstractmethod
    def distinct_ids_of(self, team_id: int, person_id: str) -> list[str]: ...

    @abstractmethod
    def _write(self, team_id: int, rows: pa.Table, changes: PersonChanges, now: dt.datetime, historical: bool) -> None:
        """Store `rows` (EVENTS_SCHEMA plus person_id, person_properties, _inserted_at) and `changes`."""

    def capture(self, team_id: int, events: Sequence[CapturedEvent], historical: bool = False) -> int:
        if not events:
            return 0
        table = pa.table(
            {
                "uuid": [e.uuid for e in events],
                "event": [e.event for e in events],
                "properties": [_json(e.properties) for e in events],
                "timestamp": pa.array([e.timestamp for e in events], TIMESTAMP),
                "distinct_id": [e.distinct_id for e in events],
                "elements_chain": [e.elements_chain for e in events],
            },
            schema=EVENTS_SCHEMA,
        )
        parsed = {i: e.properties for i, e in enumerate(events) if needs_person_processing(e.event, e.properties)}
        return self._ingest(team_id, table, historical=historical, parsed_properties=parsed)

    def import_table(self, team_id: int, table: pa.Table) -> int:
        """Past events: `_inserted_at` = `timestamp`; persons are resolved in event-time order."""
        table = table.select(EVENTS_SCHEMA.names).cast(EVENTS_SCHEMA)
        table = table.take(pc.sort_indices(table, [("timestamp", "ascending")]))
        return self._ingest(team_id, table, historical=True, parsed_properties=None)

    def _special_rows(self, table: pa.Table) -> dict[int, dict[str, Any]]:
        """Rows that change persons, with their parsed properties (the others are never parsed)."""
        properties = table.column("properties")
        mask = pc.or_(
            pc.is_in(table.column("event"), pa.array(SPECIAL_EVENTS)),
            pc.or_(
                pc.match_substring(properties, '"$set'),
                pc.match_substring(properties, '"$unset"'),
            ),
        )
        indices = pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()
        props = properties.take(pa.array(indices, pa.int64())).to_pylist() if indices else []
        return {i: json.loads(p) if p else {} for i, p in zip(indices, props, strict=True)}

    def _ingest(
        self, team_id: int, table: pa.Table, historical: bool, parsed_properties: dict[int, dict[str, Any]] | None
    ) -> int:
        special = self._special_rows(table) if parsed_properties is None else parsed_properties
        names = table.column("event").to_pylist()
        distinct_ids = table.column("distinct_id").to_pylist()
        timestamps = table.column("timestamp")
        with self._write_lock:
            resolver = PersonResolver(self, team_id, dt.datetime.now(dt.UTC))
            resolver.preload(distinct_ids)
            person_ids: list[str] = []
            person_properties: list[str] = []
            for i, distinct_id in enumerate(distinct_ids):
                person = None if i in special else resolver.existing(distinct_id)
                if person is None:
                    # Event time, not arrival time: a person is as old as its first event.
                    when = timestamps[i].as_py()
                    if i in special and needs_person_processing(names[i], special[i]):
                        person = resolver.apply(distinct_id, when, PersonUpdate(names[i], special[i]))
                    else:
                        person = resolver.person_for(distinct_id, when)
                person_ids.append(person.person_id)
                person_properties.append(person.properties_json())
            changes = resolver.changes()
            rows = table.append_column("person_id", pa.array(person_ids, pa.string()))
            rows = rows.append_column("person_properties", pa.array(person_properties, pa.string()))
            # Taken last, under the lock: a time taken earlier could fall in an interval read meanwhile.
            with self._commit_clock.committing() as now:
                inserted_at = timestamps if historical else pa.array([now] * len(table), TIMESTAMP)
                self._write(team_id, rows.append_column("_inserted_at", inserted_at), changes, now, historical)
        return len(table)
