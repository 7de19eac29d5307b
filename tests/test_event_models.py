"""Specification of the rows a run of each model exports for an interval `[start, end)`."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

import pyarrow as pa
import pytest

from batchexports.events.duckdb_store import EVENTS_SCHEMA, DuckDBEventsStore
from batchexports.events.model_queries import EVENTS_COLUMNS, PERSONS_COLUMNS, SESSIONS_COLUMNS
from batchexports.events.normalize import normalize_event
from batchexports.events.store import ModelQuery

T0 = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
TEAM = 7


@pytest.fixture
def store(tmp_path: Any) -> DuckDBEventsStore:
    opened = DuckDBEventsStore(tmp_path / "events.duckdb")
    yield opened
    opened.close()


def past_events(*specs: tuple[str, str, dt.datetime, dict[str, Any]], uuids: list[str] | None = None) -> pa.Table:
    """Events as `import` takes them: (event, distinct_id, timestamp, properties)."""
    return pa.table(
        {
            "uuid": uuids or [str(uuid.uuid4()) for _ in specs],
            "event": [s[0] for s in specs],
            "properties": [json.dumps(s[3]) for s in specs],
            "timestamp": pa.array([s[2] for s in specs], pa.timestamp("us", tz="UTC")),
            "distinct_id": [s[1] for s in specs],
            "elements_chain": [None for _ in specs],
        },
        schema=EVENTS_SCHEMA,
    )


def read(store: DuckDBEventsStore, model: str, start: dt.datetime, end: dt.datetime, **kw: Any) -> list[dict]:
    return store.read(ModelQuery(model, TEAM, start, end, **kw)).read_all().to_pylist()


def test_events_of_an_interval_are_those_that_arrived_in_it(store):
    store.import_table(TEAM, past_events(
        ("a", "u", T0 - dt.timedelta(minutes=1), {}),
        ("b", "u", T0, {}),
        ("c", "u", T0 + HOUR - dt.timedelta(microseconds=1), {}),
        ("d", "u", T0 + HOUR, {}),
    ))  # fmt: skip
    assert sorted(r["event"] for r in read(store, "events", T0, T0 + HOUR)) == ["b", "c"]


def test_a_late_event_lands_in_the_interval_of_its_arrival(store):
    late = normalize_event(
        {"event": "late", "distinct_id": "u", "timestamp": (T0 - 24 * HOUR).isoformat()},
        now=T0,
        historical=False,
    )
    store.capture(TEAM, [late])
    now = dt.datetime.now(dt.UTC)
    assert [r["event"] for r in read(store, "events", now - HOUR, now + HOUR)] == ["late"]
    assert read(store, "events", T0 - 25 * HOUR, T0 - 23 * HOUR) == []


def test_events_columns_are_posthogs(store):
    store.import_table(TEAM, past_events(("$identify", "u", T0, {"$set": {"a": 1}, "$set_once": {"b": 2}})))
    batches = store.read(ModelQuery("events", TEAM, T0, T0 + HOUR))
    assert tuple(batches.schema.names) == EVENTS_COLUMNS
    (row,) = batches.read_all().to_pylist()
    assert json.loads(row["set"]) == {"a": 1}
    assert json.loads(row["set_once"]) == {"b": 2}
    assert json.loads(row["person_properties"]) == {"a": 1, "b": 2}
    assert row["team_id"] == TEAM
    assert row["_inserted_at"] == T0


def test_duplicates_by_uuid_appear_once(store):
    same = str(uuid.uuid4())
    store.import_table(TEAM, past_events(("a", "u", T0, {}), uuids=[same]))
    store.import_table(TEAM, past_events(("a", "u", T0 + dt.timedelta(seconds=1), {}), uuids=[same]))
    assert [r["uuid"] for r in read(store, "events", T0, T0 + HOUR)] == [same]
    assert store.count(ModelQuery("events", TEAM, T0, T0 + HOUR)) == 1


def test_include_and_exclude_events(store):
    store.import_table(TEAM, past_events(*[(name, "u", T0, {}) for name in ("a", "b", "c")]))
    included = read(store, "events", T0, T0 + HOUR, include_events=("a", "b"))
    excluded = read(store, "events", T0, T0 + HOUR, exclude_events=("a",))
    assert sorted(r["event"] for r in included) == ["a", "b"]
    assert sorted(r["event"] for r in excluded) == ["b", "c"]


def test_other_projects_rows_never_appear(store):
    store.import_table(TEAM, past_events(("mine", "u", T0, {})))
    store.import_table(TEAM + 1, past_events(("theirs", "u", T0, {})))
    assert [r["event"] for r in read(store, "events", T0, T0 + HOUR)] == ["mine"]


def test_persons_changed_in_an_interval_at_their_latest_version_then(store):
    store.import_table(TEAM, past_events(
        ("$set", "u", T0, {"$set": {"plan": "free"}}),
        ("$set", "v", T0 + dt.timedelta(minutes=5), {"$set": {"x": 1}}),
    ))  # fmt: skip
    store.import_table(TEAM, past_events(("$set", "u", T0 + 2 * HOUR, {"$set": {"plan": "pro"}})))
    first = {r["distinct_id"]: r for r in read(store, "persons", T0, T0 + HOUR)}
    assert set(first) == {"u", "v"}
    assert json.loads(first["u"]["properties"]) == {"plan": "free"}
    assert read(store, "persons", T0 + HOUR, T0 + 2 * HOUR) == []
    third = read(store, "persons", T0 + 2 * HOUR, T0 + 3 * HOUR)
    assert [(r["distinct_id"], json.loads(r["properties"]), r["person_version"]) for r in third] == [
        ("u", {"plan": "pro"}, 1)
    ]
    assert tuple(store.read(ModelQuery("persons", TEAM, T0, T0 + HOUR)).schema.names) == PERSONS_COLUMNS


def test_sessions_touched_in_an_interval_are_aggregated_over_all_their_events(store):
    def page(minute: int, path: str, **extra: Any) -> tuple:
        props = {"$session_id": "s1", "$current_url": f"https://shop.example{path}", "$pathname": path, **extra}
        return ("$pageview", "u", T0 + dt.timedelta(minutes=minute), props)

    store.import_table(TEAM, past_events(
        page(0, "/", utm_source="newsletter", **{"$referring_domain": "mail.example"}),
        page(3, "/cart"),
        ("$autocapture", "u", T0 + dt.timedelta(minutes=4), {"$session_id": "s1"}),
    ))  # fmt: skip
    store.import_table(TEAM, past_events(page(70, "/thanks")))  # the session goes on in the next hour
    (first,) = read(store, "sessions", T0, T0 + HOUR)
    assert tuple(store.read(ModelQuery("sessions", TEAM, T0, T0 + HOUR)).schema.names) == SESSIONS_COLUMNS
    assert first["entry_pathname"] == "/" and first["exit_pathname"] == "/cart"
    assert first["pageview_count"] == 2 and first["autocapture_count"] == 1
    assert first["entry_utm_source"] == "newsletter"
    assert first["entry_referring_domain"] == "mail.example"
    assert first["session_duration"] == 240
    assert first["is_bounce"] is False
    (second,) = read(store, "sessions", T0 + HOUR, T0 + 2 * HOUR)
    assert second["pageview_count"] == 3
    assert second["exit_url"] == "https://shop.example/thanks"
    assert second["urls"] == sorted(f"https://shop.example{p}" for p in ("/", "/cart", "/thanks"))
    assert second["session_duration"] == 70 * 60


def test_a_single_short_pageview_is_a_bounce(store):
    store.import_table(TEAM, past_events(("$pageview", "u", T0, {"$session_id": "b"})))
    (session,) = read(store, "sessions", T0, T0 + HOUR)
    assert session["is_bounce"] is True


def test_batches_are_bounded_by_batch_rows(store):
    count = 25_000
    store.import_table(
        TEAM,
        past_events(*[("e", f"u{i % 100}", T0 + dt.timedelta(milliseconds=i), {"i": i}) for i in range(count)]),
    )
    reader = store.read(ModelQuery("events", TEAM, T0, T0 + HOUR, batch_rows=4096))
    sizes = [batch.num_rows for batch in reader]
    assert sum(sizes) == count
    assert max(sizes) <= 4096
    assert len(sizes) >= count // 4096


def test_earliest_and_count(store):
    assert store.earliest("events", TEAM) is None
    store.import_table(TEAM, past_events(("a", "u", T0 + HOUR, {}), ("b", "u", T0, {"$session_id": "s"})))
    assert store.earliest("events", TEAM) == T0
    assert store.earliest("sessions", TEAM) == T0
    assert store.earliest("persons", TEAM) == T0
    assert store.count(ModelQuery("events", TEAM, None, T0 + 2 * HOUR)) == 2


def test_a_second_process_cannot_open_the_store_and_is_told_why(store, tmp_path):
    import subprocess
    import sys

    code = (
        "from batchexports.events.duckdb_store import DuckDBEventsStore\n"
        "from batchexports.events.store import StoreUnavailable\n"
        f"try:\n    DuckDBEventsStore({str(tmp_path / 'events.duckdb')!r})\n"
        "except StoreUnavailable as e:\n    print('refused:', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "refused:" in result.stdout
    assert "in use by another process" in result.stdout
