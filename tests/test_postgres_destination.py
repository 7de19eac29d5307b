"""Specification of the PostgreSQL destination, against the real PostgreSQL server on 127.0.0.1:5432.

The module creates a throwaway database (`be_test_<random>`) and drops it at the end. Rows are
exported from a DuckDB events store filled here, read back with psycopg, and compared column by
column with what the store's model queries return and with the source events.

The local server trusts every connection from 127.0.0.1, so it never checks a password: the
wrong-password test talks to `RefusingServer`, a fake that speaks just enough of the PostgreSQL
protocol (through libpq, as a real server) to ask for a password and refuse it.
"""

from __future__ import annotations

import datetime as dt
import json
import socket
import struct
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from batchexports.core.errors import NonRetryableError, RetryableError
from batchexports.core.run import Cancelled, CancelToken, ExportRun, Progress
from batchexports.destinations import registry
from batchexports.destinations.postgres.copy_format import COPY_SIGNATURE, COPY_TRAILER, encode_copy_rows
from batchexports.destinations.postgres.sink import PostgresSink
from batchexports.destinations.warehouse.sql_kit.cleaning import clean_column
from batchexports.destinations.warehouse.sql_kit.dialect import column_kind
from batchexports.destinations.warehouse.sql_kit.stages import stage_table_name
from batchexports.events.duckdb_store import EVENTS_SCHEMA, DuckDBEventsStore
from batchexports.pipeline.export import export, model_query
from tests import contract
from tests.conftest import prefix_for
from tests.exports_fixtures import HOUR, T0, TEAM, expected_rows, known_events

SERVER = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
PASSWORD = contract.register_secret("pg-password-that-must-never-show")


# -- the database ---------------------------------------------------------------------------------


def admin_connection(dbname: str = "postgres") -> psycopg.Connection:
    return psycopg.connect(
        host=SERVER["host"], port=SERVER["port"], user=SERVER["user"], dbname=dbname, autocommit=True
    )


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"be_test_{uuid.uuid4().hex[:12]}"
    with admin_connection() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield name
    with admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg(database: str) -> Iterator[psycopg.Connection]:
    """A connection to the test database, in UTC; the tables of the public schema are dropped after each test."""
    with admin_connection(database) as connection:
        connection.execute("SET TIME ZONE 'UTC'")
        yield connection
        for table in tables(connection):
            connection.execute(f'DROP TABLE "public"."{table}"')


def destination(database: str, /, **overrides: Any) -> dict[str, Any]:
    config = {
        **SERVER,
        "password": PASSWORD,
        "database": database,
        "schema": "public",
        "table_name": "events",
        "has_self_signed_cert": False,
    }
    config.update(overrides)
    return config


def run_of(config: dict[str, Any], model: str = "events", start: dt.datetime = T0) -> ExportRun:
    return ExportRun(
        batch_export_id="00000000-0000-0000-0000-0000000000pg",
        team_id=TEAM,
        model=model,
        destination_type="Postgres",
        destination_config=config,
        data_interval_start=start,
        data_interval_end=start + HOUR,
    )


def rows_of(pg: psycopg.Connection, table: str, order: str) -> list[dict[str, Any]]:
    cursor = pg.cursor(row_factory=psycopg.rows.dict_row)
    return cursor.execute(f'SELECT * FROM "public"."{table}" ORDER BY {order}').fetchall()


def tables(pg: psycopg.Connection) -> set[str]:
    return {row[0] for row in pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()}


def model_rows(store: DuckDBEventsStore, run: ExportRun) -> list[dict[str, Any]]:
    return store.read(model_query(run)).read_all().to_pylist()


def loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


# -- events -----------------------------------------------------------------------------------------


def event_rows(*rows: dict[str, Any]) -> pa.Table:
    defaults = {"event": "$pageview", "distinct_id": "user", "elements_chain": None, "timestamp": T0}
    full = [{**defaults, **row, "properties": json.dumps(row.get("properties", {}))} for row in rows]
    return pa.Table.from_pylist(full, schema=EVENTS_SCHEMA)


def uid(n: int) -> str:
    return str(uuid.UUID(int=(9 << 96) + n, version=4))


def mixed_events() -> pa.Table:
    """1,500 known events plus a few with an IP, an elements chain, `$set` and `$set_once`."""
    extra = event_rows(
        {
            "uuid": uid(1),
            "properties": {"$ip": "10.0.0.7", "$set": {"plan": "pro"}, "$set_once": {"first": "mon"}},
            "timestamp": T0 + dt.timedelta(minutes=5),
            "distinct_id": "ada",
        },
        {
            "uuid": uid(2),
            "event": "$autocapture",
            "elements_chain": 'a.nav:href="/x"nth-child="1"',
            "properties": {"$ip": ""},
            "timestamp": T0 + dt.timedelta(minutes=6),
        },
    )
    return pa.concat_tables([known_events(1500), extra])


@pytest.fixture
def store(tmp_path: Any) -> DuckDBEventsStore:
    store = DuckDBEventsStore(tmp_path / "events.duckdb")
    store.import_table(TEAM, mixed_events())
    return store


def assert_events_match(pg: psycopg.Connection, store: DuckDBEventsStore, run: ExportRun, table: str = "events"):
    exported = {row["uuid"]: row for row in rows_of(pg, table, "uuid")}
    expected = {row["uuid"]: row for row in model_rows(store, run)}
    assert set(exported) == set(expected)
    for key, want in expected.items():
        got = exported[key]
        assert got["event"] == want["event"]
        assert got["distinct_id"] == want["distinct_id"]
        assert got["team_id"] == want["team_id"] == TEAM
        assert got["timestamp"] == want["timestamp"]
        assert got["_inserted_at"] == want["_inserted_at"]
        assert got["created_at"] == want["created_at"]
        assert got["person_id"] == want["person_id"]
        assert got["properties"] == json.loads(want["properties"]), "jsonb holds the same document"
        assert got["person_properties"] == loads(want["person_properties"])
        assert got["set"] == loads(want["set"])
        assert got["set_once"] == loads(want["set_once"])
        assert got["elements"] == want["elements_chain"], "the chain, as a JSON string"
        assert got["ip"] == (json.loads(want["properties"]).get("$ip") or None)
        assert got["site_url"] is None
    return exported


def test_events_are_loaded_with_every_column_and_the_table_is_created(pg, database, store):
    config = destination(database)
    progress: list[Progress] = []
    result = export(run_of(config), store, progress=lambda p: progress.append(Progress(**vars(p))), batch_rows=400)
    assert result.records_completed == 1502
    assert result.bytes_exported > 1502 * 100
    exported = assert_events_match(pg, store, run_of(config))
    source = expected_rows(mixed_events())
    assert {k: (r["event"], r["distinct_id"], r["properties"]) for k, r in exported.items()} == {
        k: (event, distinct_id, properties) for k, (event, distinct_id, properties, _) in source.items()
    }, "the same as the events imported, independently of the model query"
    assert exported[uid(1)]["ip"] == "10.0.0.7" and exported[uid(1)]["set"] == {"plan": "pro"}
    assert exported[uid(2)]["ip"] is None, "an empty $ip is NULL"
    types = dict(
        pg.execute(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'events'"
        ).fetchall()
    )
    assert types["properties"] == "jsonb" and types["elements"] == "jsonb"
    assert types["timestamp"] == "timestamp with time zone" and types["team_id"] == "bigint"
    assert tables(pg) == {"events"}, "the stage table is dropped"
    assert [p.records_completed for p in progress] == sorted(p.records_completed for p in progress)
    assert len(progress) >= 4 and progress[-1].records_completed == 1502


def test_rerunning_an_interval_leaves_the_table_as_if_it_ran_once(pg, database, store):
    config = destination(database)
    export(run_of(config), store, batch_rows=300)
    first = rows_of(pg, "events", "uuid")
    export(run_of(config), store, batch_rows=700)
    export(run_of(config), store)
    assert rows_of(pg, "events", "uuid") == first
    assert len(first) == 1502


def test_other_intervals_are_kept_when_an_interval_is_rerun(pg, database, tmp_path):
    store = DuckDBEventsStore(tmp_path / "events.duckdb")
    store.import_table(TEAM, known_events(50, start=T0, seed=1))
    store.import_table(TEAM, known_events(30, start=T0 + HOUR, seed=2))
    config = destination(database)
    export(run_of(config, start=T0), store)
    export(run_of(config, start=T0 + HOUR), store)
    export(run_of(config, start=T0), store)
    counts = pg.execute("SELECT timestamp < %s, count(*) FROM events GROUP BY 1 ORDER BY 1", (T0 + HOUR,)).fetchall()
    assert counts == [(False, 30), (True, 50)]


def test_an_existing_table_gets_only_its_columns_converted_to_their_types(pg, database, store):
    pg.execute(
        """CREATE TABLE events (
            uuid UUID, event VARCHAR(200), properties JSONB, team_id INTEGER, "timestamp" TIMESTAMP,
            person_properties TEXT, note TEXT DEFAULT 'kept'
        )"""
    )
    config = destination(database)
    export(run_of(config), store)
    export(run_of(config), store)  # the re-run compares uuid with the staged text
    rows = rows_of(pg, "events", "uuid")
    expected = {row["uuid"]: row for row in model_rows(store, run_of(config))}
    assert len(rows) == len(expected) == 1502
    for row in rows:
        want = expected[str(row["uuid"])]
        assert isinstance(row["uuid"], uuid.UUID)
        assert row["event"] == want["event"] and row["team_id"] == TEAM
        assert row["properties"] == json.loads(want["properties"])
        assert row["timestamp"] == want["timestamp"].replace(tzinfo=None), "stored as UTC wall time"
        assert json.loads(row["person_properties"]) == json.loads(want["person_properties"]), "jsonb rendered as text"
        assert row["note"] == "kept"
    assert "distinct_id" not in rows[0]


def test_a_column_of_an_incompatible_type_is_refused_by_name(pg, database, store):
    pg.execute("CREATE TABLE events (uuid TEXT, event TEXT, set_once TIMESTAMPTZ)")
    with pytest.raises(NonRetryableError) as error:
        export(run_of(destination(database)), store)
    message = str(error.value)
    assert "The column 'set_once' of 'public.events' is of type timestamp with time zone" in message
    assert 'ALTER TABLE "public"."events" ALTER COLUMN "set_once" TYPE JSONB' in message
    assert pg.execute("SELECT count(*) FROM events").fetchone() == (0,)
    assert tables(pg) == {"events"}


def test_an_events_table_without_uuid_is_refused(pg, database, store):
    pg.execute("CREATE TABLE events (event TEXT, properties JSONB)")
    with pytest.raises(NonRetryableError, match="no column 'uuid'"):
        export(run_of(destination(database)), store)


def test_nul_characters_are_removed_from_text_and_json(pg, database, tmp_path):
    store = DuckDBEventsStore(tmp_path / "events.duckdb")
    store.import_table(
        TEAM,
        event_rows(
            {
                "uuid": uid(10),
                "event": "sign\x00up",
                "distinct_id": "ad\x00a",
                "properties": {"note": "a\x00b", "path": "C:\\u0000dir", "emoji": "😀"},
            }
        ),
    )
    export(run_of(destination(database)), store)
    (row,) = rows_of(pg, "events", "uuid")
    assert row["event"] == "signup" and row["distinct_id"] == "ada"
    assert row["properties"] == {"note": "ab", "path": "C:\\u0000dir", "emoji": "😀"}, (
        "an escaped backslash before u0000 is text, not a NUL"
    )


def test_lone_surrogates_in_json_are_removed_and_pairs_kept(pg, database, tmp_path):
    """Surrogate escapes cannot pass DuckDB's JSON type, so the batch is built here, as the
    ClickHouse store (which keeps properties as strings) would deliver it."""
    reader = DuckDBEventsStore(tmp_path / "empty.duckdb").read(model_query(run_of({})))
    texts = {
        uid(20): r'{"a": "x\ud800y", "b": "\udc00z", "c": "\ud83d\ude00", "d": "\ud83d\ud83d\ude00", "e": "\\ud800"}',
        uid(21): r'{"n": "\u0000\u0000\u0000", "m": "q\\\u0000r", "s": "\ud800\u0000\udfff"}',
    }
    batch = pa.RecordBatch.from_pylist(
        [
            {"uuid": key, "team_id": TEAM, "timestamp": T0, "_inserted_at": T0, "created_at": T0, "event": "e",
             "properties": text, "distinct_id": "d", "person_properties": text}
            for key, text in texts.items()
        ],
        schema=reader.schema,
    )  # fmt: skip
    PostgresSink(destination(database)).export(run_of({}), [batch], reader.schema, None, None)
    rows = {row["uuid"]: row for row in rows_of(pg, "events", "uuid")}
    assert rows[uid(20)]["properties"] == {"a": "xy", "b": "z", "c": "😀", "d": "😀", "e": "\\ud800"}
    assert rows[uid(21)]["properties"] == {"n": "", "m": "q\\r", "s": ""}
    assert rows[uid(21)]["person_properties"] == rows[uid(21)]["properties"]


def test_a_value_the_server_refuses_in_a_loader_thread_fails_the_run_cleanly(pg, database, tmp_path):
    """Properties that are not JSON (which DuckDB's JSON type would refuse, hence a batch built here)."""
    reader = DuckDBEventsStore(tmp_path / "empty.duckdb").read(model_query(run_of({})))
    good = {"team_id": TEAM, "timestamp": T0, "_inserted_at": T0, "created_at": T0, "event": "e", "distinct_id": "d"}
    batches = [
        pa.RecordBatch.from_pylist(
            [{**good, "uuid": uid(100 * n + i), "properties": "{}" if n < 3 else "{not json"} for i in range(50)],
            schema=reader.schema,
        )
        for n in range(4)
    ]
    with pytest.raises(NonRetryableError) as error:
        PostgresSink(destination(database)).export(run_of({}), batches, reader.schema, None, None)
    assert "invalid input syntax for type json" in str(error.value)
    assert pg.execute("SELECT count(*) FROM events").fetchone() == (0,), "nothing is merged"
    assert tables(pg) == {"events"}, "the stage table is dropped"


@pytest.mark.parametrize("kind", [pa.string(), pa.binary(), pa.large_binary()])
def test_invalid_utf8_becomes_the_replacement_character(kind):
    """A store may deliver text as bytes, or as strings whose bytes are not UTF-8 (a CESU-8 surrogate)."""
    values = [b"ok", b"bad \xed\xa0\x80 surrogate", None, b"n\x00ul"]
    broken = pa.array(values, pa.binary()).cast(kind, safe=False)
    assert clean_column(broken, "text").to_pylist() == ["ok", "bad \ufffd\ufffd\ufffd surrogate", None, "nul"]


MOON = dt.datetime(1969, 7, 20, 20, 17, 40, 123456, tzinfo=dt.UTC)  # before both epochs


def test_binary_copy_round_trips_every_type_and_nulls(pg):
    batch = pa.RecordBatch.from_pydict(
        {
            "t": pa.array(["plain", "ünïcødé\ttab\nline", None, ""]),
            "properties": pa.array(['{"a": [1, "x"]}', None, "{}", '"s"']),
            "i": pa.array([1, None, -(2**62), 0], pa.int64()),
            "f": pa.array([1.5, None, -0.25, 1e300]),
            "b": pa.array([True, False, None, True]),
            "ts": pa.array([T0, None, MOON, T0], pa.timestamp("us", "UTC")),
            "d": pa.array([dt.date(2024, 2, 29), None, dt.date(1999, 12, 31), dt.date(2000, 1, 1)], pa.date32()),
            "l": pa.array([["a", None, "b"], [], None, ["x,y", '"q"']], pa.list_(pa.string())),
        }
    )  # fmt: skip
    pg.execute(
        "CREATE TABLE typed (t TEXT, properties JSONB, i BIGINT, f DOUBLE PRECISION, b BOOLEAN, ts TIMESTAMPTZ, "
        "d DATE, l TEXT[])"
    )
    kinds = [column_kind(field) for field in batch.schema]
    assert kinds == ["text", "json", "int", "float", "bool", "timestamptz", "date", "list"]
    columns = [clean_column(column, kind) for column, kind in zip(batch.columns, kinds, strict=True)]
    cleaned = pa.RecordBatch.from_arrays(columns, batch.schema.names)
    with pg.cursor().copy("COPY typed FROM STDIN (FORMAT BINARY)") as copy:
        copy.write(COPY_SIGNATURE)
        for chunk in encode_copy_rows(cleaned, kinds):
            copy.write(chunk)
        copy.write(COPY_TRAILER)
    got = pg.execute("SELECT t, properties, i, f, b, ts, d, l FROM typed").fetchall()
    expected = [
        ("plain", {"a": [1, "x"]}, 1, 1.5, True, T0, dt.date(2024, 2, 29), ["a", None, "b"]),
        ("ünïcødé\ttab\nline", None, None, None, False, None, None, []),
        (None, {}, -(2**62), -0.25, None, MOON, dt.date(1999, 12, 31), None),
        ("", "s", 0, 1e300, True, T0, dt.date(2000, 1, 1), ["x,y", '"q"']),
    ]  # fmt: skip
    assert got == expected


def sink_export(sink: PostgresSink, run: ExportRun, store: DuckDBEventsStore, batch_rows: int, **kwargs: Any):
    reader = store.read(model_query(run, batch_rows))
    return sink.export(
        run, (b for b in reader if b.num_rows), reader.schema, kwargs.get("progress"), kwargs.get("cancel")
    )


def test_a_run_staged_in_many_segments_is_merged_in_one_transaction(pg, database, store):
    """Segments of ~20 kB: loaders commit dozens of them while the merger inserts them into the table."""
    config = destination(database)
    statements: list[str] = []
    sink = PostgresSink(config, segment_bytes=20_000)
    original = sink.dialect.segment_insert
    sink.dialect.segment_insert = lambda plan, segment: statements.append(segment) or original(plan, segment)
    result = sink_export(sink, run_of(config), store, batch_rows=50)
    assert result.records == 1502 and len(statements) >= 10
    assert_events_match(pg, store, run_of(config))
    first = rows_of(pg, "events", "uuid")
    sink_export(PostgresSink(config, segment_bytes=50_000), run_of(config), store, batch_rows=120)
    assert rows_of(pg, "events", "uuid") == first, "the re-run's own rows survive its delete, the old ones do not"
    assert tables(pg) == {"events"}, "every segment is dropped"


def test_cancelling_while_segments_are_merged_leaves_nothing(pg, database, store):
    config = destination(database)
    token, seen = CancelToken(), []

    def on_progress(progress: Progress) -> None:
        seen.append(progress.records_completed)
        if progress.records_completed >= 800:
            token.cancel()

    with pytest.raises(Cancelled):
        sink_export(
            PostgresSink(config, segment_bytes=20_000), run_of(config), store, 50, progress=on_progress, cancel=token
        )
    assert max(seen) >= 800, "segments were committed (and merged) before the cancel"
    assert pg.execute("SELECT count(*) FROM events").fetchone() == (0,)
    assert tables(pg) == {"events"}


def test_cancelling_between_batches_rolls_back(pg, database, store):
    token = CancelToken()

    def on_progress(progress: Progress) -> None:
        token.cancel()

    with pytest.raises(Cancelled):
        export(run_of(destination(database)), store, progress=on_progress, cancel=token, batch_rows=200)
    assert pg.execute("SELECT count(*) FROM events").fetchone() == (0,)
    assert tables(pg) == {"events"}, "no stage table is left behind"


# -- persons and sessions ---------------------------------------------------------------------------


def identify(distinct_id: str, plan: str, when: dt.datetime, n: int, session: str = "s1") -> pa.Table:
    return event_rows(
        {
            "uuid": uid(n),
            "event": "$set",
            "distinct_id": distinct_id,
            "timestamp": when,
            "properties": {"$set": {"plan": plan}, "$session_id": session, "$current_url": f"https://ex.ample/{n}"},
        }
    )


@pytest.fixture
def people(tmp_path: Any) -> DuckDBEventsStore:
    """ada and bob in the first hour; ada changes plan in the second (a newer person version)."""
    store = DuckDBEventsStore(tmp_path / "events.duckdb")
    store.import_table(TEAM, identify("ada", "free", T0 + dt.timedelta(minutes=10), 1))
    store.import_table(TEAM, identify("bob", "free", T0 + dt.timedelta(minutes=20), 2, session="s2"))
    store.import_table(TEAM, identify("ada", "pro", T0 + HOUR + dt.timedelta(minutes=10), 3))
    return store


def person_state(pg: psycopg.Connection) -> dict[str, tuple]:
    return {
        row["distinct_id"]: (row["properties"]["plan"], row["person_version"], row["_inserted_at"])
        for row in rows_of(pg, "persons", "distinct_id")
    }


def test_persons_newer_versions_replace_older_ones_and_older_ones_do_not(pg, database, people):
    config = destination(database, table_name="persons")
    first, second = run_of(config, "persons", T0), run_of(config, "persons", T0 + HOUR)
    export(first, people)
    after_first = rows_of(pg, "persons", "distinct_id")
    expected = model_rows(people, first)
    assert [
        (r["team_id"], r["distinct_id"], r["person_id"], r["properties"], r["person_version"],
         r["person_distinct_id_version"], r["created_at"], r["is_deleted"], r["_inserted_at"])
        for r in after_first
    ] == [
        (r["team_id"], r["distinct_id"], r["person_id"], json.loads(r["properties"]), r["person_version"],
         r["person_distinct_id_version"], r["created_at"], r["is_deleted"], r["_inserted_at"])
        for r in sorted(expected, key=lambda r: r["distinct_id"])
    ]  # fmt: skip
    assert {d: p for d, (p, _, _) in person_state(pg).items()} == {"ada": "free", "bob": "free"}
    export(first, people)
    assert rows_of(pg, "persons", "distinct_id") == after_first, "a re-run changes nothing"
    export(second, people)
    state = person_state(pg)
    assert state["ada"][0] == "pro" and state["ada"][1] > after_first[0]["person_version"]
    assert state["bob"] == person_state_of(after_first)["bob"]
    export(first, people)  # an older version arrives late: it must not win
    assert person_state(pg) == state
    key = pg.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'persons'::regclass AND contype = 'p'"
    ).fetchone()
    assert key == ("PRIMARY KEY (team_id, distinct_id)",)


def person_state_of(rows: list[dict[str, Any]]) -> dict[str, tuple]:
    return {r["distinct_id"]: (r["properties"]["plan"], r["person_version"], r["_inserted_at"]) for r in rows}


def test_sessions_are_updated_by_newer_aggregates_only(pg, database, people):
    config = destination(database, table_name="sessions")
    first, second = run_of(config, "sessions", T0), run_of(config, "sessions", T0 + HOUR)
    export(first, people)
    rows = {row["session_id"]: row for row in rows_of(pg, "sessions", "session_id")}
    expected = {row["session_id"]: row for row in model_rows(people, first)}
    assert rows == expected, "every column, urls as text[]"
    export(second, people)
    s1 = rows_of(pg, "sessions", "session_id")[0]
    assert s1["urls"] == ["https://ex.ample/1", "https://ex.ample/3"] and s1["session_duration"] == 3600
    export(first, people)
    assert rows_of(pg, "sessions", "session_id")[0] == s1, "the older aggregate does not replace the newer"
    assert rows_of(pg, "sessions", "session_id")[1] == expected["s2"]


def test_a_persons_table_without_the_primary_key_is_refused_with_the_fix(pg, database, people):
    pg.execute("CREATE TABLE persons (team_id BIGINT, distinct_id TEXT, properties JSONB, person_version BIGINT)")
    with pytest.raises(NonRetryableError) as error:
        export(run_of(destination(database, table_name="persons"), "persons"), people)
    assert 'ALTER TABLE "public"."persons" ADD PRIMARY KEY (team_id, distinct_id)' in str(error.value)
    assert tables(pg) == {"persons"}


def test_an_existing_persons_table_with_the_key_gets_only_its_columns(pg, database, people):
    pg.execute(
        "CREATE TABLE persons (team_id INTEGER, distinct_id VARCHAR(200), properties JSON, person_version INTEGER, "
        "extra TEXT, PRIMARY KEY (team_id, distinct_id))"
    )
    config = destination(database, table_name="persons")
    export(run_of(config, "persons", T0), people)
    export(run_of(config, "persons", T0 + HOUR), people)
    rows = pg.execute("SELECT distinct_id, properties::text, person_version, extra FROM persons ORDER BY 1").fetchall()
    latest = {r["distinct_id"]: r for r in model_rows(people, run_of(config, "persons", T0 + HOUR))}
    assert latest["ada"]["person_version"] > 0
    assert [(d, json.loads(p)["plan"], v, e) for d, p, v, e in rows] == [
        ("ada", "pro", latest["ada"]["person_version"], None),
        ("bob", "free", 0, None),
    ]


# -- errors -----------------------------------------------------------------------------------------


class RefusingServer:
    """A fake PostgreSQL server: declines TLS, asks for a cleartext password, refuses it (28P01)."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.passwords: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            with connection:
                self._handle(connection)

    @staticmethod
    def _read(connection: socket.socket, size: int) -> bytes:
        data = b""
        while len(data) < size:
            chunk = connection.recv(size - len(data))
            if not chunk:
                raise ConnectionError("closed")
            data += chunk
        return data

    def _handle(self, connection: socket.socket) -> None:
        try:
            while True:
                length, code = struct.unpack(">ii", self._read(connection, 8))
                if code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
                    connection.sendall(b"N")
                    continue
                self._read(connection, length - 8)  # the startup parameters
                break
            connection.sendall(b"R" + struct.pack(">ii", 8, 3))  # AuthenticationCleartextPassword
            _, length = struct.unpack(">ci", self._read(connection, 5))  # PasswordMessage
            self.passwords.append(self._read(connection, length - 4).rstrip(b"\x00").decode())
            fields = b"SFATAL\x00VFATAL\x00C28P01\x00" + b'Mpassword authentication failed for user "postgres"\x00\x00'
            connection.sendall(b"E" + struct.pack(">i", len(fields) + 4) + fields)
        except (ConnectionError, OSError):
            pass

    def close(self) -> None:
        self._socket.close()


def test_a_wrong_password_is_not_retried_and_never_shown(database, store):
    server = RefusingServer()
    try:
        config = destination(database, port=server.port)
        with pytest.raises(NonRetryableError) as error:
            export(run_of(config), store)
    finally:
        server.close()
    assert server.passwords == [PASSWORD], "the password was sent, and refused"
    assert "check user and password" in str(error.value)
    assert PASSWORD not in str(error.value) and PASSWORD not in repr(error.value)


def test_a_refused_connection_is_retried(database, store):
    closed = socket.create_server(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(RetryableError, match="connection refused"):
        export(run_of(destination(database, port=port)), store)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"database": "be_no_such_database"}, "The database 'be_no_such_database' does not exist"),
        ({"user": "be_no_such_role"}, "has no such user: check user"),
        ({"schema": "analytics"}, 'create it (CREATE SCHEMA "analytics"), or fix schema'),
        ({"has_self_signed_cert": True}, "does not support TLS, but has_self_signed_cert requires it"),
    ],
)
def test_configuration_errors_are_not_retried_and_say_what_to_fix(database, store, overrides, expected):
    with pytest.raises(NonRetryableError) as error:
        export(run_of(destination(database, **overrides)), store)
    assert expected in str(error.value)
    assert PASSWORD not in str(error.value)


@pytest.fixture
def limited_role(database: str) -> Iterator[str]:
    role = f"be_limited_{uuid.uuid4().hex[:8]}"
    with admin_connection() as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
    yield role
    with admin_connection(database) as admin:
        admin.execute(f'DROP OWNED BY "{role}"')
        admin.execute(f'DROP ROLE "{role}"')


def test_a_permission_denied_is_not_retried_and_names_the_grants(pg, database, store, limited_role):
    with pytest.raises(NonRetryableError) as error:
        export(run_of(destination(database, user=limited_role)), store)
    message = str(error.value)
    assert "Permission denied" in message and "permission denied for schema public" in message
    assert "grant the user USAGE and CREATE on the schema 'public'" in message


def test_stage_table_names_are_stable_per_run_and_fit_postgres_limits():
    run = run_of({})
    assert stage_table_name(run, "events") == stage_table_name(run, "events")
    assert stage_table_name(run, "events") != stage_table_name(run_of({}, start=T0 + HOUR), "events")
    long = stage_table_name(run, "é" * 60)
    assert len(f"{long}_9999".encode()) <= 63 and long.endswith(stage_table_name(run, "events")[len("events") :])


# -- destination tests through the API ------------------------------------------------------------


def test_destination_test_steps_pass_against_the_server(api, project, database, pg):
    base = prefix_for("projects", project)
    described = api.get(f"{base}test/", {"destination": "Postgres"})
    assert [step["name"] for step in described.json()["steps"]] == [
        "Connect to the database",
        "Check the schema exists and permissions",
        "Create and drop a test table",
    ]
    payload = {"type": "Postgres", "config": destination(database, has_self_signed_cert=False)}
    for step in range(3):
        response = api.post(f"{base}run_test_step_new/", {"step": step, "destination": payload}, format="json")
        assert response.status_code == 200, response.content
        assert response.json()["result"] == {"status": "Passed", "message": None}, response.json()
    assert tables(pg) == set(), "the test table is dropped"


def test_destination_test_steps_fail_with_what_to_fix(api, project, database, limited_role):
    base = prefix_for("projects", project)

    def run_step(step: int, **overrides: Any) -> dict[str, Any]:
        payload = {"type": "Postgres", "config": destination(database, **overrides)}
        response = api.post(f"{base}run_test_step_new/", {"step": step, "destination": payload}, format="json")
        assert response.status_code == 200
        return response.json()["result"]

    refused = run_step(0, port=1)
    assert refused["status"] == "Failed" and "connection refused" in refused["message"]
    missing = run_step(1, schema="analytics")
    assert missing["status"] == "Failed" and 'CREATE SCHEMA "analytics"' in missing["message"]
    denied = run_step(1, user=limited_role)
    assert denied["status"] == "Failed" and "may not CREATE in the schema 'public'" in denied["message"]
    cannot_create = run_step(2, user=limited_role)
    assert cannot_create["status"] == "Failed" and "Permission denied" in cannot_create["message"]


def test_the_registry_wires_the_sink_and_the_steps():
    spec = registry.get("Postgres")
    assert spec.sink_factory is not None and len(spec.test_steps) == 3
    assert isinstance(spec.sink_factory(destination("x")), PostgresSink)
