"""The Snowflake destination, against fakesnow (Snowflake's SQL and connector emulated on DuckDB).

fakesnow runs the sink's real statements through the real `snowflake.connector` API: CREATE
TABLE, `PUT file://… @%stage`, `COPY INTO … MATCH_BY_COLUMN_NAME`, `MERGE`, `PARSE_JSON` into
VARIANT, table comments read back from `information_schema.tables` (the stage tables' marks).
fakesnow ignores TRANSIENT and reports a fixed CREATED (1970): the sink compares the creation
time written in the mark, on Snowflake too, never CREATED. What fakesnow cannot produce (a wrong
password, a missing warehouse, Snowflake's 5xx), the classifier is tested on connector exceptions
built here, as Snowflake raises them.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from batchexports.core.errors import NonRetryableError, RetryableError
from batchexports.core.run import Cancelled, CancelToken
from batchexports.destinations.testing import run_step
from batchexports.events.duckdb_store import EVENTS_SCHEMA
from batchexports.pipeline.export import export
from tests.exports_fixtures import HOUR, T0, expected_rows, file_run, known_events, store_with

fakesnow = pytest.importorskip("fakesnow")
snowflake_connector = pytest.importorskip("snowflake.connector")

# fakesnow's own DuckDB calls warn about an extra Arrow copy; nothing the sink does.
pytestmark = pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")

PASSWORD = "sf-password-that-must-not-leak"
USER = "loader_user"


def snowflake_config(**overrides: Any) -> dict[str, Any]:
    config = {
        "account": "acme-analytics",
        "user": USER,
        "authentication_type": "password",
        "password": PASSWORD,
        "private_key": None,
        "private_key_passphrase": None,
        "database": "analytics",
        "schema": "posthog",
        "warehouse": "loading_wh",
        "table_name": "events",
        "role": None,
    }
    config.update(overrides)
    return config


def event_row(i: int, when: dt.datetime, distinct_id: str, properties: dict[str, Any]) -> dict[str, Any]:
    return {
        "uuid": str(uuid.UUID(int=(9 << 96) + i, version=4)),
        "event": "$pageview",
        "properties": json.dumps(properties),
        "timestamp": when,
        "distinct_id": distinct_id,
        "elements_chain": None,
    }


def two_interval_events() -> tuple[pa.Table, pa.Table]:
    """Two imports, one per hour: ada is 'free' (person_version 0) then 'pro' (version 1); the
    session s1 spans both hours, s2 only the first."""
    first = [
        event_row(0, T0 + dt.timedelta(minutes=5), "ada", {"$set": {"plan": "free"}, "$session_id": "s1",
                                                            "$current_url": "https://ex.ample/1"}),
        event_row(1, T0 + dt.timedelta(minutes=6), "bob", {"$set": {"plan": "free"}, "$session_id": "s2",
                                                           "$current_url": "https://ex.ample/2"}),
    ]  # fmt: skip
    second = [
        event_row(2, T0 + HOUR + dt.timedelta(minutes=5), "ada", {"$set": {"plan": "pro"}, "$session_id": "s1",
                                                                  "$current_url": "https://ex.ample/3"}),
    ]  # fmt: skip
    return pa.Table.from_pylist(first, schema=EVENTS_SCHEMA), pa.Table.from_pylist(second, schema=EVENTS_SCHEMA)


@pytest.fixture
def fake_snowflake() -> Iterator[Any]:
    """fakesnow patched into `snowflake.connector.connect`; yields a reading cursor on the same data."""
    with fakesnow.patch():
        connection = snowflake_connector.connect(database="analytics", schema="posthog")
        yield connection.cursor()
        connection.close()


def rows(cursor: Any, sql: str) -> list[dict[str, Any]]:
    cursor.execute(sql)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def parse(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def test_events_arrive_with_their_content_and_a_rerun_adds_no_duplicates(tmp_path, fake_snowflake):
    source = known_events(300)
    store = store_with(tmp_path, source)
    result = export(file_run(snowflake_config(), "Snowflake"), store)
    assert result.records_completed == 300
    assert result.bytes_exported > 0

    loaded = rows(fake_snowflake, 'SELECT * FROM "events"')
    got = {r["uuid"]: (r["event"], r["distinct_id"], parse(r["properties"]), r["elements_chain"]) for r in loaded}
    assert got == expected_rows(source)
    assert len(loaded) == 300
    first = next(r for r in loaded if r["uuid"] == source.column("uuid")[7].as_py())
    assert first["timestamp"] == source.column("timestamp")[7].as_py().replace(tzinfo=None)
    assert first["team_id"] == 3

    # Retried, and backfilled over a wider interval: each uuid still once.
    export(file_run(snowflake_config(), "Snowflake"), store)
    export(file_run(snowflake_config(), "Snowflake", start=T0 - HOUR, end=T0 + 2 * HOUR), store)
    assert rows(fake_snowflake, 'SELECT count(*) AS n, count(DISTINCT "uuid") AS u FROM "events"') == [
        {"N": 300, "U": 300}
    ]


def test_json_columns_are_variant_and_queryable_by_path(tmp_path, fake_snowflake):
    store = store_with(tmp_path, known_events(5))
    export(file_run(snowflake_config(), "Snowflake"), store)
    types = {r[0]: r[1] for r in fake_snowflake.execute('DESC TABLE "events"').fetchall()}
    assert types["properties"] == "VARIANT"
    assert types["person_properties"] == "VARIANT"
    assert types["uuid"].startswith("VARCHAR")
    assert types["timestamp"].startswith("TIMESTAMP")
    fake_snowflake.execute('SELECT "properties":nested.list[1]::string, "properties":i FROM "events" ORDER BY "uuid"')
    assert [(a, int(b)) for a, b in fake_snowflake.fetchall()] == [("ü", i) for i in range(5)]


def test_the_load_goes_through_a_table_stage_and_leaves_no_stage_table(tmp_path, monkeypatch):
    """The statements are recorded on fakesnow's cursor while fakesnow runs them."""
    import fakesnow.cursor

    sent: list[str] = []
    original = fakesnow.cursor.FakeSnowflakeCursor.execute

    def recording(self: Any, command: str, *args: Any, **kwargs: Any) -> Any:
        sent.append(command)
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(fakesnow.cursor.FakeSnowflakeCursor, "execute", recording)
    store = store_with(tmp_path, known_events(20))
    with fakesnow.patch():
        export(file_run(snowflake_config(), "Snowflake"), store)
        cursor = snowflake_connector.connect(database="analytics", schema="posthog").cursor()
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'POSTHOG'")
        tables = [r[0] for r in cursor.fetchall()]
    (put,) = [s for s in sent if s.startswith("PUT ")]
    (copy,) = [s for s in sent if s.startswith("COPY INTO")]
    stage = copy.split()[2]
    assert stage.startswith("BATCHEXPORTS_STAGE_")
    assert put.startswith("PUT 'file://") and f" @%{stage}/" in put and "AUTO_COMPRESS=FALSE" in put
    assert put.split("'")[1].endswith(".parquet")
    assert f"FROM @%{stage}/" in copy
    assert "FILE_FORMAT = (TYPE = 'PARQUET')" in copy and "MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE" in copy
    (insert,) = [s for s in sent if s.startswith('INSERT INTO "events"')]
    assert 'PARSE_JSON(s."properties")' in insert and "WHERE NOT EXISTS" in insert
    assert f"DROP TABLE IF EXISTS {stage}" in sent
    assert tables == ["events"], "the stage table is dropped after the load"
    # Before the load, the export's stale stages are looked for; the stage carries the export's mark.
    assert sent.index(
        "SELECT table_name, comment FROM information_schema.tables WHERE table_schema = CURRENT_SCHEMA() "
        "AND comment LIKE 'batchexports-stage %'"
    ) < sent.index(put)
    (create,) = [s for s in sent if s.startswith(f"CREATE OR REPLACE TRANSIENT TABLE {stage} (")]
    mark = json.loads(create.split(" COMMENT = 'batchexports-stage ", 1)[1].removesuffix("'"))
    assert mark["export"] == file_run(snowflake_config(), "Snowflake").batch_export_id
    assert abs(dt.datetime.fromisoformat(mark["created"]) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)


def test_persons_merge_keeps_the_newest_version_whatever_the_order(tmp_path, fake_snowflake):
    store = store_with(tmp_path, *two_interval_events())
    config = snowflake_config(table_name="persons")
    later = file_run(config, "Snowflake", model="persons", start=T0 + HOUR)
    earlier = file_run(config, "Snowflake", model="persons", start=T0)
    export(later, store)
    export(earlier, store)  # a backfill of the earlier hour after the later one
    people = {r["distinct_id"]: r for r in rows(fake_snowflake, 'SELECT * FROM "persons"')}
    assert set(people) == {"ada", "bob"}
    assert parse(people["ada"]["properties"]) == {"plan": "pro"}
    assert people["ada"]["person_version"] == 1
    assert parse(people["bob"]["properties"]) == {"plan": "free"}

    fake_snowflake.execute('DELETE FROM "persons"')
    export(earlier, store)
    export(later, store)  # in order: the newer version replaces the older
    people = {r["distinct_id"]: r for r in rows(fake_snowflake, 'SELECT * FROM "persons"')}
    assert parse(people["ada"]["properties"]) == {"plan": "pro"}
    assert len(people) == 2


def test_sessions_merge_on_session_id_with_urls_as_an_array(tmp_path, fake_snowflake):
    store = store_with(tmp_path, *two_interval_events())
    config = snowflake_config(table_name="sessions")
    export(file_run(config, "Snowflake", model="sessions", start=T0), store)
    export(file_run(config, "Snowflake", model="sessions", start=T0 + HOUR), store)
    export(file_run(config, "Snowflake", model="sessions", start=T0), store)  # an older aggregate: ignored
    sessions = {r["session_id"]: r for r in rows(fake_snowflake, 'SELECT * FROM "sessions"')}
    assert set(sessions) == {"s1", "s2"}
    assert parse(sessions["s1"]["urls"]) == ["https://ex.ample/1", "https://ex.ample/3"]
    assert sessions["s1"]["pageview_count"] == 2
    assert sessions["s1"]["session_duration"] == 3600
    assert parse(sessions["s2"]["urls"]) == ["https://ex.ample/2"]


def test_an_existing_table_gets_only_the_columns_it_has(tmp_path, fake_snowflake):
    fake_snowflake.execute(
        'CREATE TABLE "events" ("uuid" STRING, "event" STRING, "properties" VARIANT, "distinct_id" STRING, '
        '"timestamp" TIMESTAMP)'
    )
    source = known_events(10)
    export(file_run(snowflake_config(), "Snowflake"), store_with(tmp_path, source))
    loaded = rows(fake_snowflake, 'SELECT * FROM "events"')
    assert set(loaded[0]) == {"uuid", "event", "properties", "distinct_id", "timestamp"}
    assert {r["uuid"]: parse(r["properties"]) for r in loaded} == {
        u: json.loads(p) for u, p in zip(source.column("uuid").to_pylist(), source.column("properties").to_pylist(),
                                         strict=True)
    }  # fmt: skip


def test_a_column_of_the_wrong_type_fails_without_retry(tmp_path, fake_snowflake):
    fake_snowflake.execute('CREATE TABLE "events" ("uuid" STRING, "event" INTEGER, "properties" VARIANT)')
    with pytest.raises(NonRetryableError, match="did not fit a column of table 'events'") as caught:
        export(file_run(snowflake_config(), "Snowflake"), store_with(tmp_path, known_events(3)))
    assert PASSWORD not in str(caught.value) and USER not in str(caught.value)


def test_a_table_without_the_merge_key_fails_with_a_clear_message(tmp_path, fake_snowflake):
    fake_snowflake.execute('CREATE TABLE "events" ("event" STRING)')
    with pytest.raises(NonRetryableError, match='no column "uuid"'):
        export(file_run(snowflake_config(), "Snowflake"), store_with(tmp_path, known_events(3)))


@pytest.mark.parametrize(
    ("missing", "expected"),
    [
        # (fakesnow creates the schema on connect unless told not to, and fails doing so without the database)
        (
            {"create_database_on_connect": False, "create_schema_on_connect": False},
            "Database 'analytics' does not exist",
        ),
        ({"create_schema_on_connect": False}, "Schema 'posthog' does not exist in database 'analytics'"),
    ],
)
def test_a_missing_database_or_schema_is_not_retried(tmp_path, missing, expected):
    store = store_with(tmp_path, known_events(3))
    with fakesnow.patch(**missing), pytest.raises(NonRetryableError, match=expected):
        export(file_run(snowflake_config(), "Snowflake"), store)


def test_a_warehouse_snowflake_cannot_use_is_not_retried(tmp_path, monkeypatch):
    """fakesnow accepts any `USE WAREHOUSE`: its cursor is made to raise what Snowflake raises for a
    warehouse that does not exist (or that the role may not use)."""
    import fakesnow.cursor

    original = fakesnow.cursor.FakeSnowflakeCursor.execute

    def execute(self: Any, command: str, *args: Any, **kwargs: Any) -> Any:
        if command.startswith("USE WAREHOUSE"):
            raise connector_error(
                "ProgrammingError", "SQL compilation error:\nObject does not exist, or operation cannot be performed.",
                2043, "02000",
            )  # fmt: skip
        return original(self, command, *args, **kwargs)

    monkeypatch.setattr(fakesnow.cursor.FakeSnowflakeCursor, "execute", execute)
    with fakesnow.patch(), pytest.raises(NonRetryableError, match="cannot use warehouse 'loading_wh'") as caught:
        export(file_run(snowflake_config(), "Snowflake"), store_with(tmp_path, known_events(3)))
    assert PASSWORD not in str(caught.value) and USER not in str(caught.value)


def test_key_pair_authentication_hands_the_connector_the_decrypted_key(tmp_path, fake_snowflake):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"open sesame"),
    ).decode()
    config = snowflake_config(authentication_type="keypair", password=None, private_key=pem,
                              private_key_passphrase="open sesame")  # fmt: skip
    export(file_run(config, "Snowflake"), store_with(tmp_path, known_events(4)))
    assert rows(fake_snowflake, 'SELECT count(*) AS n FROM "events"') == [{"N": 4}]

    kwargs = snowflake_connector.connect.call_args_list[1].kwargs  # [0] is the fixture's own connection
    assert kwargs["authenticator"] == "SNOWFLAKE_JWT"
    assert "password" not in kwargs
    assert (kwargs["account"], kwargs["user"], kwargs["warehouse"]) == ("acme-analytics", USER, "loading_wh")
    der = serialization.load_der_private_key(kwargs["private_key"], password=None)
    assert der.private_numbers() == key.private_numbers()

    from batchexports.destinations.snowflake.sink import private_key_bytes

    with pytest.raises(NonRetryableError, match="private_key_passphrase") as caught:
        private_key_bytes(pem, "wrong passphrase")
    assert "wrong passphrase" not in str(caught.value)
    with pytest.raises(NonRetryableError, match="is encrypted: give its 'private_key_passphrase'"):
        private_key_bytes(pem, None)


def test_cancelling_leaves_the_table_untouched(tmp_path, fake_snowflake):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        export(file_run(snowflake_config(), "Snowflake"), store_with(tmp_path, known_events(5)), cancel=token)
    fake_snowflake.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'events'")
    assert fake_snowflake.fetchone() == (0,)
    from batchexports.destinations.snowflake.sink import classified

    with pytest.raises(Cancelled), classified(snowflake_config()):
        raise Cancelled("a cancellation between two statements is no Snowflake error")


def connector_error(kind: str, msg: str, errno: int, sqlstate: str | None = None) -> Exception:
    errors = snowflake_connector.errors
    return getattr(errors, kind)(msg=msg, errno=errno, sqlstate=sqlstate)


@pytest.mark.parametrize(
    ("error", "retryable", "message"),
    [
        (("DatabaseError", f"Failed to connect to DB: acme.snowflakecomputing.com:443. Incorrect username or "
          f"password was specified. user={USER} password={PASSWORD}", 250001, "08001"), False,
         "rejected the credentials: check 'user' and 'password'"),
        (("DatabaseError", "JWT token is invalid.", 390144, "08001"), False, "rejected the key pair"),
        (("ProgrammingError", "No active warehouse selected in the current session.  Select an active warehouse "
          "with the 'use warehouse' command.", 606, "57P03"), False, "no usable warehouse 'loading_wh'"),
        (("ProgrammingError", "SQL compilation error:\nDatabase 'ANALYTICS' does not exist or not authorized.", 2003,
          "02000"), False, "Database 'analytics' does not exist"),
        (("ProgrammingError", "SQL access control error:\nInsufficient privileges to operate on schema 'POSTHOG'",
          3001, "42501"), False, "lacks a privilege"),
        (("ProgrammingError", "Numeric value 'abc' is not recognized", 100038, "22018"), False,
         "did not fit a column"),
        (("OperationalError", "Failed to execute request: HTTPSConnectionPool: Read timed out.", 250003, None), True,
         "will retry"),
        (("ProgrammingError", "Statement reached its statement or warehouse timeout of 60 second(s) and was "
          "canceled.", 630, "57014"), True, "will retry"),
        (("ServiceUnavailableError", "503 Service Unavailable", 0, None), True, "unavailable"),
        (("TooManyRequests", "429 Too Many Requests", 0, None), True, "unavailable"),
    ],
)  # fmt: skip
def test_connector_errors_are_classified_with_an_actionable_message(error, retryable, message):
    """Connector exceptions built as Snowflake raises them: fakesnow neither checks passwords nor
    has warehouses, privileges or HTTP failures."""
    from batchexports.destinations.snowflake.sink import classify

    kind, msg, errno, sqlstate = error
    exc = connector_error(kind, msg, errno, sqlstate)
    if kind in ("ServiceUnavailableError", "TooManyRequests"):
        exc = getattr(snowflake_connector.errors, kind)()
    classified = classify(exc, snowflake_config())
    assert isinstance(classified, RetryableError if retryable else NonRetryableError)
    assert message.lower() in str(classified).lower()
    assert PASSWORD not in str(classified) and USER not in str(classified)


def test_destination_test_steps_pass_on_a_working_account(fake_snowflake):
    from batchexports.destinations import registry

    steps = registry.get("Snowflake").test_steps
    assert [s.name for s in steps] == ["Connect to Snowflake", "Create, load and drop a test table"]
    config = snowflake_config()
    for index in range(len(steps)):
        assert run_step(steps, index, config, {"password": PASSWORD})["result"] == {"status": "Passed", "message": None}
    fake_snowflake.execute("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'POSTHOG'")
    assert fake_snowflake.fetchone() == (0,), "the test table and its stage table are dropped"


def test_destination_test_step_explains_a_missing_database_without_secrets():
    from batchexports.destinations import registry

    steps = registry.get("Snowflake").test_steps
    with fakesnow.patch(create_database_on_connect=False, create_schema_on_connect=False):
        result = run_step(steps, 1, snowflake_config(), {"password": PASSWORD, "user": USER})["result"]
    assert result["status"] == "Failed"
    assert "Database 'analytics' does not exist" in result["message"]
    assert PASSWORD not in result["message"] and USER not in result["message"]


# --- stage tables a killed run left ------------------------------------------------------------


def leftover_stages(cursor: Any) -> dict[str, str]:
    """A killed run's stage of the export, a fresh one of a run in flight, another export's old one,
    all created as the sink creates them (`table_ddl(..., staged=True, mark=...)`), and a user's
    tables named like stages: one without a comment, one with a comment of its own."""
    from batchexports.destinations.snowflake import sink as snowflake_sink
    from batchexports.destinations.warehouse import staging

    export_id = file_run(snowflake_config(), "Snowflake").batch_export_id
    now = dt.datetime.now(dt.UTC)
    names = {
        "killed": snowflake_sink.stage_table_name(file_run(snowflake_config(), "Snowflake", start=T0 - 5 * HOUR)),
        "in_flight": snowflake_sink.stage_table_name(file_run(snowflake_config(), "Snowflake", start=T0 + HOUR)),
        "other_export": "BATCHEXPORTS_STAGE_0123456789ABCDEF0123",
        "user": "BATCHEXPORTS_STAGE_MINE",
        "user_commented": "BATCHEXPORTS_STAGE_NOTES",
    }
    schema = pa.schema([("uuid", pa.string())])
    for key, owner, age in [
        ("killed", export_id, dt.timedelta(hours=30)),
        ("in_flight", export_id, dt.timedelta(minutes=1)),
        ("other_export", "another-export", dt.timedelta(hours=30)),
    ]:
        cursor.execute(
            snowflake_sink.table_ddl(names[key], schema, staged=True, mark=staging.stage_mark(owner, now - age))
        )
    cursor.execute(f'CREATE TABLE "{names["user"]}" ("uuid" STRING)')
    cursor.execute(f"""CREATE TABLE "{names["user_commented"]}" ("uuid" STRING) COMMENT = 'batchexports-stage, mine'""")
    return names


def table_names(cursor: Any) -> set[str]:
    cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'POSTHOG'")
    return {row[0] for row in cursor.fetchall()}


def test_the_sweep_drops_only_the_exports_stale_stage_tables(fake_snowflake):
    from batchexports.destinations.snowflake.sink import SnowflakeSink

    names = leftover_stages(fake_snowflake)
    export_id = file_run(snowflake_config(), "Snowflake").batch_export_id
    dropped = SnowflakeSink(snowflake_config()).drop_stale_stages(export_id, dt.timedelta(hours=2))
    assert dropped == [f'"{names["killed"]}"']
    assert table_names(fake_snowflake) == {names[k] for k in ("in_flight", "other_export", "user", "user_commented")}


def test_the_next_run_drops_the_stage_a_killed_run_left_and_no_other_table(tmp_path, fake_snowflake):
    names = leftover_stages(fake_snowflake)
    result = export(file_run(snowflake_config(), "Snowflake"), store_with(tmp_path, known_events(20)))
    assert result.records_completed == 20
    kept = {names[k] for k in ("in_flight", "other_export", "user", "user_commented")}
    assert table_names(fake_snowflake) == kept | {"events"}
