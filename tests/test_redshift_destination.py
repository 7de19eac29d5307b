"""Specification of the Redshift destination.

Redshift cannot run here, so the destination is specified in two halves:

- The SQL Redshift shares with PostgreSQL (the stage table, the multi-row INSERTs of `mode`
  INSERT, the delete-then-insert merges) runs on the real PostgreSQL server on 127.0.0.1:5432,
  in a throwaway database given three stand-ins for Redshift's types and functions: a `super`
  domain over `jsonb`, `JSON_PARSE(text)` and `JSON_EXTRACT_PATH_TEXT(text, text, boolean)`.
  Statements are recorded on the way by wrapping psycopg's connection.
- What only Redshift runs (`COPY … FROM 's3://…' IAM_ROLE | ACCESS_KEY_ID … FORMAT AS PARQUET
  MANIFEST`) goes to `FakeRedshift`, a fake connection that records the exact statements and, on
  the COPY, reads the manifest and the Parquet parts from a real moto S3 server over HTTP, as
  Redshift would. The files are staged by the sink's S3 object store against that server.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pyarrow.parquet as pq
import pytest
from botocore.config import Config
from moto.server import ThreadedMotoServer

from batchexports.core.errors import NonRetryableError
from batchexports.core.run import ExportRun
from batchexports.destinations import registry
from batchexports.destinations.redshift import sink as redshift_sink
from batchexports.destinations.redshift.sink import RedshiftSink, staging_store_config
from batchexports.destinations.s3.store import S3ObjectStore
from batchexports.destinations.warehouse import staging
from batchexports.destinations.warehouse.sql_kit.identifiers import literal
from batchexports.destinations.warehouse.sql_kit.stages import stage_table_name
from batchexports.events.duckdb_store import DuckDBEventsStore
from batchexports.pipeline.export import export
from tests import contract
from tests.conftest import prefix_for
from tests.exports_fixtures import HOUR, T0, TEAM, known_events
from tests.test_postgres_destination import (
    admin_connection,
    event_rows,
    identify,
    model_rows,
    rows_of,
    tables,
    uid,
)

STAGE_MARKS_QUERY = (
    "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class AS c JOIN pg_namespace AS n "
    "ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r' "
    "AND left(obj_description(c.oid, 'pg_class'), %s) = %s"
)
PASSWORD = contract.register_secret("redshift-password-that-must-never-show")
KEY_ID = contract.register_secret("AKIAREDSHIFTCOPY0001")
SECRET = contract.register_secret("redshift-copy-secret-that-must-never-show")
ROLE = "arn:aws:iam::123456789012:role/redshift-copy"
REGION = "eu-west-1"

EMULATION = """
CREATE DOMAIN super AS jsonb;
CREATE FUNCTION json_parse(text) RETURNS jsonb LANGUAGE sql IMMUTABLE AS 'SELECT $1::jsonb';
CREATE FUNCTION json_extract_path_text(text, text, boolean) RETURNS text LANGUAGE sql IMMUTABLE
    AS 'SELECT $1::json ->> $2';
"""


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    name = f"be_test_rs_{uuid.uuid4().hex[:12]}"
    with admin_connection() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    with admin_connection(name) as connection:
        connection.execute(EMULATION)
    yield name
    with admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg(database: str) -> Iterator[psycopg.Connection]:
    with admin_connection(database) as connection:
        connection.execute("SET TIME ZONE 'UTC'")
        yield connection
        for table in tables(connection):
            connection.execute(f'DROP TABLE "public"."{table}"')


def redshift(database: str, /, **overrides: Any) -> dict[str, Any]:
    config = {
        "host": "127.0.0.1",
        "port": 5432,
        "user": "postgres",
        "password": PASSWORD,
        "database": database,
        "schema": "public",
        "table_name": "events",
        "has_self_signed_cert": False,
        "properties_data_type": "varchar",
        "mode": "INSERT",
        "copy_inputs": None,
    }
    config.update(overrides)
    return config


def run_of(config: dict[str, Any], model: str = "events", start: dt.datetime = T0) -> ExportRun:
    return ExportRun(
        batch_export_id="00000000-0000-0000-0000-0000000000rs",
        team_id=TEAM,
        model=model,
        destination_type="Redshift",
        destination_config=config,
        data_interval_start=start,
        data_interval_end=start + HOUR,
    )


class Recorded:
    """A real psycopg connection (or cursor) whose executed statements are appended to `log`."""

    def __init__(self, inner: Any, log: list[tuple[str, Any]]):
        self._inner, self._log = inner, log

    def execute(self, query: str, params: Any = None) -> Any:
        self._log.append((query, params))
        return self._inner.execute(query, params)

    def cursor(self, *args: Any, **kwargs: Any) -> Recorded:
        return Recorded(self._inner.cursor(*args, **kwargs), self._log)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def recording_sink(config: dict[str, Any], log: list[tuple[str, Any]]) -> RedshiftSink:
    return RedshiftSink(config, connector=lambda **options: Recorded(psycopg.connect(**options), log))


def export_with(sink: RedshiftSink, run: ExportRun, store: DuckDBEventsStore, batch_rows: int = 10_000) -> Any:
    from batchexports.pipeline.export import model_query

    reader = store.read(model_query(run, batch_rows))
    return sink.export(run, (b for b in reader if b.num_rows), reader.schema, None, None)


@pytest.fixture
def store(tmp_path: Any) -> DuckDBEventsStore:
    store = DuckDBEventsStore(tmp_path / "events.duckdb")
    store.import_table(TEAM, known_events(300))
    store.import_table(
        TEAM,
        event_rows(
            {"uuid": uid(1), "properties": {"$ip": "10.1.2.3", "$set": {"plan": "pro"}}, "elements_chain": "a.b"},
        ),
    )
    return store


# -- INSERT mode, on PostgreSQL ---------------------------------------------------------------------


def test_insert_mode_loads_bounded_multi_row_inserts_then_deletes_and_inserts(pg, database, store, monkeypatch):
    monkeypatch.setattr(redshift_sink, "MAX_ROWS_PER_STATEMENT", 40)
    monkeypatch.setattr(redshift_sink, "MAX_STATEMENT_BYTES", 20_000)
    config, log = redshift(database), []
    run = run_of(config)
    result = export_with(recording_sink(config, log), run, store, batch_rows=100)
    assert result.records == 301
    stage = f'"public"."{stage_table_name(run, "events")}"'
    inserts = [(q, p) for q, p in log if q.startswith(f"INSERT INTO {stage}")]
    per_statement = [q.count("(%s,") for q, _ in inserts]
    assert sum(per_statement) == 301 and max(per_statement) <= 40
    assert all(sum(len(str(v)) for v in p) <= 20_000 for _, p in inserts), "statements stay under the bound"
    assert len(inserts) > 301 // 40, "the byte bound splits statements too"
    statements = [q for q, _ in log]
    assert f'DELETE FROM "public"."events" WHERE "uuid" IN (SELECT s."uuid" FROM {stage} AS s)' in statements
    assert f"DROP TABLE {stage}" in statements

    rows = {row["uuid"]: row for row in rows_of(pg, "events", "uuid")}
    expected = {row["uuid"]: row for row in model_rows(store, run)}
    assert set(rows) == set(expected)
    for key, want in expected.items():
        got = rows[key]
        assert json.loads(got["properties"]) == json.loads(want["properties"]), "JSON text in a VARCHAR"
        assert (got["event"], got["distinct_id"], got["timestamp"], got["team_id"]) == (
            want["event"], want["distinct_id"], want["timestamp"], TEAM,
        )  # fmt: skip
        assert got["elements"] == want["elements_chain"]
        assert got["person_properties"] is not None and json.loads(got["person_properties"]) == json.loads(
            want["person_properties"]
        )
    assert rows[uid(1)]["ip"] == "10.1.2.3" and json.loads(rows[uid(1)]["set"]) == {"plan": "pro"}
    types = dict(
        pg.execute(
            "SELECT column_name, format_type(atttypid, atttypmod) FROM information_schema.columns "
            "JOIN pg_attribute ON attrelid = 'public.events'::regclass AND attname = column_name "
            "WHERE table_name = 'events'"
        ).fetchall()
    )
    assert types["properties"] == "character varying(65535)" and types["uuid"] == "character varying(200)"
    assert tables(pg) == {"events"}

    before = rows_of(pg, "events", "uuid")
    export_with(recording_sink(config, []), run, store, batch_rows=64)
    assert rows_of(pg, "events", "uuid") == before, "a re-run leaves the table as if it ran once"


def test_super_columns_are_parsed_with_json_parse(pg, database, store):
    config, log = redshift(database, properties_data_type="super"), []
    run = run_of(config)
    export_with(recording_sink(config, log), run, store)
    domains = dict(
        pg.execute(
            "SELECT column_name, domain_name FROM information_schema.columns WHERE table_name = 'events'"
        ).fetchall()
    )
    assert {name for name, domain in domains.items() if domain == "super"} == {
        "properties", "set", "set_once", "person_properties",
    }  # fmt: skip
    (insert,) = [q for q, _ in log if q.startswith('INSERT INTO "public"."events" ')]
    assert 'JSON_PARSE(s."properties")' in insert and 'JSON_PARSE(s."person_properties")' in insert
    assert "NULLIF(JSON_EXTRACT_PATH_TEXT(s.\"properties\", '$ip', TRUE), '')" in insert
    rows = {row["uuid"]: row for row in rows_of(pg, "events", "uuid")}
    for want in model_rows(store, run):
        assert rows[want["uuid"]]["properties"] == json.loads(want["properties"]), "a parsed document"


def test_persons_merge_by_delete_then_insert_keeps_the_newest_version(pg, database, tmp_path):
    people = DuckDBEventsStore(tmp_path / "people.duckdb")
    people.import_table(TEAM, identify("ada", "free", T0 + dt.timedelta(minutes=10), 1))
    people.import_table(TEAM, identify("bob", "free", T0 + dt.timedelta(minutes=20), 2, session="s2"))
    people.import_table(TEAM, identify("ada", "pro", T0 + HOUR + dt.timedelta(minutes=10), 3))
    config, log = redshift(database, table_name="persons", properties_data_type="super"), []
    first, second = run_of(config, "persons", T0), run_of(config, "persons", T0 + HOUR)

    def plans() -> dict[str, tuple[str, int]]:
        return {r["distinct_id"]: (r["properties"]["plan"], r["person_version"]) for r in rows_of(pg, "persons", "1")}

    export_with(recording_sink(config, log), first, people)
    assert plans() == {"ada": ("free", 0), "bob": ("free", 0)}
    export_with(recording_sink(config, []), second, people)
    newest = plans()
    assert newest["ada"][0] == "pro" and newest["ada"][1] > 0
    export_with(recording_sink(config, []), first, people)
    assert plans() == newest, "the older version does not replace the newer"
    export_with(recording_sink(config, []), second, people)
    assert plans() == newest and len(rows_of(pg, "persons", "1")) == 2

    target, stage = '"public"."persons"', f'"public"."{stage_table_name(first, "persons")}"'
    key = f'{target}."team_id" = {stage}."team_id" AND {target}."distinct_id" = {stage}."distinct_id"'
    newer = " OR ".join(
        f'COALESCE({stage}."{v}" > {target}."{v}", {target}."{v}" IS NULL)'
        for v in ("person_version", "person_distinct_id_version")
    )
    merge = [q for q, _ in log if q.startswith(("DELETE", "INSERT INTO " + target, "DROP TABLE " + stage))]
    assert merge[:3] == [
        f"DELETE FROM {stage} USING {target} WHERE {key} AND NOT ({newer})",
        f"DELETE FROM {target} USING {stage} WHERE {key}",
        f'INSERT INTO {target} ("team_id", "distinct_id", "person_id", "properties", "person_version", '
        f'"person_distinct_id_version", "created_at", "is_deleted", "_inserted_at") SELECT s."team_id", '
        f's."distinct_id", s."person_id", JSON_PARSE(s."properties"), s."person_version", '
        f's."person_distinct_id_version", s."created_at", s."is_deleted", s."_inserted_at" FROM {stage} AS s',
    ]


@pytest.mark.parametrize("data_type", ["varchar", "super"])
def test_session_urls_are_stored_as_json(pg, database, tmp_path, data_type):
    people = DuckDBEventsStore(tmp_path / "people.duckdb")
    people.import_table(TEAM, identify("ada", "free", T0 + dt.timedelta(minutes=10), 1))
    people.import_table(TEAM, identify("ada", "pro", T0 + dt.timedelta(minutes=30), 2))
    config = redshift(database, table_name="sessions", properties_data_type=data_type)
    export_with(recording_sink(config, []), run_of(config, "sessions"), people)
    (row,) = rows_of(pg, "sessions", "session_id")
    urls = row["urls"] if data_type == "super" else json.loads(row["urls"])
    assert urls == ["https://ex.ample/1", "https://ex.ample/2"]
    assert (row["pageview_count"], row["session_duration"], row["is_bounce"]) == (0, 1200, False)


def test_a_value_over_65535_bytes_is_refused_naming_the_column(pg, database, tmp_path):
    big = DuckDBEventsStore(tmp_path / "big.duckdb")
    big.import_table(TEAM, known_events(20))
    big.import_table(TEAM, event_rows({"uuid": uid(7), "properties": {"blob": "x" * 70_000}}))
    config = redshift(database)
    with pytest.raises(NonRetryableError) as error:
        export_with(recording_sink(config, []), run_of(config), big)
    message = str(error.value)
    (stored,) = [row["properties"] for row in model_rows(big, run_of(config)) if row["uuid"] == uid(7)]
    size = len(stored.encode())
    assert size > 70_000
    assert f"The value of 'properties' is {size:,} bytes in the events row with uuid '{uid(7)}'" in message
    assert "over the 65,535 bytes a VARCHAR(65535) column of 'public.events' holds" in message
    assert pg.execute("SELECT count(*) FROM events").fetchone() == (0,)
    assert tables(pg) == {"events"}, "the stage table is dropped"


def test_a_narrower_varchar_column_is_checked_against_its_own_length(pg, database, store):
    pg.execute('CREATE TABLE events (uuid VARCHAR(200), event VARCHAR(10), "timestamp" TIMESTAMPTZ)')
    config = redshift(database)
    with pytest.raises(NonRetryableError) as error:
        export_with(recording_sink(config, []), run_of(config), store)
    assert "The value of 'event' is 19 bytes" in str(error.value)
    assert 'ALTER TABLE "public"."events" ALTER COLUMN "event" TYPE VARCHAR(65535)' in str(error.value)


# -- COPY mode: the exact statements, files staged in a real moto S3 --------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    yield f"http://localhost:{port}"
    server.stop()


@pytest.fixture
def bucket(moto: str) -> tuple[Any, str]:
    admin = boto3.client(
        "s3",
        endpoint_url=moto,
        region_name=REGION,
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
        config=Config(s3={"addressing_style": "path"}),
    )
    name = f"staging-{uuid.uuid4().hex[:8]}"
    admin.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return admin, name


class FakeRedshift:
    """A fake Redshift connection (Redshift cannot run here): it records every statement, answers
    the catalogue queries from the tables it created, and on COPY reads the manifest and the
    Parquet parts it names from S3 (the moto server), as Redshift does, keeping their rows.
    `copy_error` makes the COPY fail as Redshift does when it cannot read the bucket."""

    TYPES = {"BIGINT": "bigint", "TIMESTAMPTZ": "timestamp with time zone", "SUPER": "super", "BOOLEAN": "boolean"}

    def __init__(self, s3: Any, copy_error: str | None = None):
        self.s3, self.copy_error = s3, copy_error
        self.statements: list[str] = []
        self.options: list[dict[str, Any]] = []
        self.tables: dict[str, list[tuple[str, str, int | None]]] = {}
        self.loaded: list[dict[str, Any]] = []
        self.manifest: dict[str, Any] = {}
        self._result: list[tuple] = []

    def connect(self, **options: Any) -> FakeRedshift:
        self.options.append(options)
        return self

    def cursor(self) -> FakeRedshift:
        return self

    def execute(self, query: str, params: Any = None) -> FakeRedshift:
        self.statements.append(query)
        self._result = []
        if query.startswith("SELECT 1 FROM pg_namespace"):
            self._result = [(1,)]
        elif "information_schema.columns" in query:
            self._result = list(self.tables.get(params[1], []))
        elif match := re.match(r'CREATE TABLE IF NOT EXISTS "public"\."(\w+)" \((.*)\)$', query):
            columns = re.findall(r'"(\w+)" (VARCHAR\((\d+)\)|[A-Z]+)', match.group(2))
            self.tables[match.group(1)] = [
                (name, "character varying" if size else self.TYPES[kind], int(size) if size else None)
                for name, kind, size in columns
            ]
        elif query.startswith("COPY "):
            if self.copy_error:
                raise psycopg.errors.InternalError_(self.copy_error)
            self._copy(query)
        return self

    def _copy(self, query: str) -> None:
        bucket, key = re.search(r"FROM 's3://([^/]+)/([^']+)'", query).groups()
        self.manifest = json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        for entry in self.manifest["entries"]:
            part_bucket, part_key = entry["url"][len("s3://") :].split("/", 1)
            body = self.s3.get_object(Bucket=part_bucket, Key=part_key)["Body"].read()
            assert len(body) == entry["meta"]["content_length"], "Redshift checks the manifest's lengths"
            self.loaded.extend(pq.read_table(io.BytesIO(body)).to_pylist())

    def fetchall(self) -> list[tuple]:
        return self._result

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass


def copy_config(bucket: str, authorization: Any, **overrides: Any) -> dict[str, Any]:
    copy_inputs = {
        "s3_bucket": bucket,
        "region_name": REGION,
        "s3_key_prefix": "redshift/staging",
        "authorization": authorization,
        "bucket_credentials": {"aws_access_key_id": "admin", "aws_secret_access_key": "admin"},
    }
    return redshift("dev", mode="COPY", properties_data_type="super", copy_inputs=copy_inputs, **overrides)


def copy_sink(config: dict[str, Any], fake: FakeRedshift, moto: str) -> RedshiftSink:
    return RedshiftSink(
        config,
        connector=fake.connect,
        store_factory=lambda store_config: S3ObjectStore({**store_config, "endpoint_url": moto}),
        part_bytes=30_000,
    )


def test_copy_mode_stages_parquet_with_a_manifest_and_sends_these_statements(bucket, moto, store):
    s3, name = bucket
    config = copy_config(name, ROLE)
    fake = FakeRedshift(s3)
    run = run_of(config)
    result = export_with(copy_sink(config, fake, moto), run, store, batch_rows=50)
    stage = f'"public"."{stage_table_name(run, "events")}"'
    folder = f"s3://{name}/redshift/staging/batchexports/{stage_table_name(run, 'events')}"
    columns = [
        "uuid", "team_id", "timestamp", "_inserted_at", "created_at", "event", "properties", "distinct_id",
        "elements_chain", "person_id", "person_properties", "set", "set_once",
    ]  # fmt: skip
    stage_types = {"team_id": "BIGINT", "timestamp": "TIMESTAMPTZ", "_inserted_at": "TIMESTAMPTZ"}
    stage_types["created_at"] = "TIMESTAMPTZ"
    schema_query = (
        "SELECT column_name, COALESCE(domain_name, data_type), character_maximum_length FROM "
        "information_schema.columns WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position"
    )
    (comment,) = [q for q in fake.statements if q.startswith("COMMENT ON TABLE")]
    mark = json.loads(comment.removeprefix(f"COMMENT ON TABLE {stage} IS 'batchexports-stage ").removesuffix("'"))
    assert mark["export"] == run.batch_export_id
    assert abs(dt.datetime.fromisoformat(mark["created"]) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert fake.statements == [
        "SET TIME ZONE 'UTC'",
        "SET statement_timeout TO 3600000",
        "SELECT 1 FROM pg_namespace WHERE nspname = %s",
        schema_query,
        'CREATE TABLE IF NOT EXISTS "public"."events" ("uuid" VARCHAR(200), "event" VARCHAR(65535), '
        '"properties" SUPER, "elements" VARCHAR(65535), "set" SUPER, "set_once" SUPER, "distinct_id" '
        'VARCHAR(65535), "team_id" BIGINT, "ip" VARCHAR(200), "site_url" VARCHAR(200), "timestamp" TIMESTAMPTZ, '
        '"person_id" VARCHAR(200), "person_properties" SUPER, "created_at" TIMESTAMPTZ, "_inserted_at" TIMESTAMPTZ)',
        schema_query,
        STAGE_MARKS_QUERY,
        f"DROP TABLE IF EXISTS {stage}",
        f"CREATE TABLE {stage} (" + ", ".join(f'"{c}" {stage_types.get(c, "VARCHAR(65535)")}' for c in columns) + ")",
        comment,
        f"COPY {stage} (" + ", ".join(f'"{c}"' for c in columns) + f") FROM '{folder}/manifest.json' "
        f"IAM_ROLE '{ROLE}' FORMAT AS PARQUET MANIFEST",
        f'DELETE FROM "public"."events" WHERE "uuid" IN (SELECT s."uuid" FROM {stage} AS s)',
        'INSERT INTO "public"."events" ("uuid", "event", "properties", "elements", "set", "set_once", '
        '"distinct_id", "team_id", "ip", "timestamp", "person_id", "person_properties", "created_at", '
        '"_inserted_at") SELECT s."uuid", s."event", JSON_PARSE(s."properties"), s."elements_chain", '
        'JSON_PARSE(s."set"), JSON_PARSE(s."set_once"), s."distinct_id", s."team_id", '
        'NULLIF(JSON_EXTRACT_PATH_TEXT(s."properties", \'$ip\', TRUE), \'\'), s."timestamp", s."person_id", '
        'JSON_PARSE(s."person_properties"), s."created_at", s."_inserted_at" FROM ' + stage + " AS s",
        f"DROP TABLE {stage}",
    ]
    entries = fake.manifest["entries"]
    assert len(entries) >= 3, "parts roll over at part_bytes"
    assert [e["url"] for e in entries] == [f"{folder}/part-{n:05d}.parquet" for n in range(len(entries))]
    assert all(e["mandatory"] for e in entries)
    expected = model_rows(store, run)
    assert sorted(fake.loaded, key=lambda r: r["uuid"]) == sorted(expected, key=lambda r: r["uuid"])
    assert result.records == 301 and result.bytes_exported == sum(e["meta"]["content_length"] for e in entries)
    assert s3.list_objects_v2(Bucket=name).get("KeyCount") == 0, "the staged files are deleted"
    assert fake.options[0]["port"] == 5432 and fake.options[0]["prepare_threshold"] is None


def test_copy_mode_with_keys_never_shows_them_in_an_error_or_a_log(bucket, moto, store, caplog):
    s3, name = bucket
    authorization = {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}
    config = copy_config(name, authorization)
    fake = FakeRedshift(s3, copy_error=f"S3ServiceException:Access Denied for key {KEY_ID},Status 403")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(NonRetryableError) as error:
        export_with(copy_sink(config, fake, moto), run_of(config), store)
    (copy,) = [q for q in fake.statements if q.startswith("COPY ")]
    assert f"ACCESS_KEY_ID '{KEY_ID}' SECRET_ACCESS_KEY '{SECRET}' FORMAT AS PARQUET MANIFEST" in copy
    message = str(error.value)
    assert "check copy_inputs.authorization" in message and "Access Denied for key ***" in message
    for secret in (KEY_ID, SECRET, PASSWORD):
        assert secret not in message and secret not in caplog.text
    assert fake.statements[-1].startswith('DROP TABLE IF EXISTS "public"."events_stage_'), "the stage is dropped"
    assert s3.list_objects_v2(Bucket=name).get("KeyCount") == 0, "the staged files are deleted after a failure too"


def test_the_staging_bucket_uses_its_own_keys_or_else_the_copy_keys():
    keys = {"aws_access_key_id": KEY_ID, "aws_secret_access_key": SECRET}
    inputs = {"s3_bucket": "b", "region_name": REGION, "authorization": keys, "bucket_credentials": None}
    assert staging_store_config(inputs) == {"bucket_name": "b", "region": REGION, **keys}
    own = {"aws_access_key_id": "AKIAOWN", "aws_secret_access_key": "own"}
    assert staging_store_config({**inputs, "authorization": ROLE, "bucket_credentials": own})["aws_access_key_id"] == (
        "AKIAOWN"
    )
    assert staging_store_config({**inputs, "authorization": ROLE})["aws_access_key_id"] is None


# -- destination tests ------------------------------------------------------------------------------


def test_destination_test_steps_pass_on_the_shared_sql(api, project, database, pg):
    base = prefix_for("projects", project)
    described = api.get(f"{base}test/", {"destination": "Redshift"})
    assert [step["name"] for step in described.json()["steps"]] == [
        "Connect to the database",
        "Check the schema exists and permissions",
        "Create and drop a test table",
    ]
    payload = {"type": "Redshift", "config": redshift(database, properties_data_type="super", copy_inputs=None)}
    for step in range(3):
        response = api.post(f"{base}run_test_step_new/", {"step": step, "destination": payload}, format="json")
        assert response.json()["result"] == {"status": "Passed", "message": None}, response.json()
    assert tables(pg) == set()


def test_the_registry_wires_the_sink_and_the_steps():
    spec = registry.get("Redshift")
    assert len(spec.test_steps) == 3
    assert isinstance(spec.sink_factory(redshift("dev")), RedshiftSink)


def test_the_pipeline_exports_through_the_registry(pg, database, store):
    config = redshift(database)
    result = export(run_of(config), store)
    assert result.records_completed == 301
    assert pg.execute("SELECT count(*) FROM events").fetchone() == (301,)


# -- stage tables a killed run left, on PostgreSQL ------------------------------------------------


def leave_stage(pg: psycopg.Connection, name: str, export_id: str, age: dt.timedelta) -> None:
    """A stage table as the sink creates it (CREATE TABLE, then its mark as the comment), `age` old."""
    pg.execute(f'{redshift_sink.RedshiftDialect.stage_prefix} "public"."{name}" ("uuid" VARCHAR(200))')
    mark = staging.stage_mark(export_id, created=dt.datetime.now(dt.UTC) - age)
    pg.execute(f'COMMENT ON TABLE "public"."{name}" IS {literal(mark)}')


def leftover_stages(pg: psycopg.Connection, config: dict[str, Any]) -> dict[str, str]:
    """A killed run's stage of the export, a fresh one of a run in flight, another export's old one,
    and a user's tables named like stages (one without a comment, one with a comment of its own)."""
    names = {
        "killed": stage_table_name(run_of(config, start=T0 - 5 * HOUR), "events"),
        "in_flight": stage_table_name(run_of(config, start=T0 + HOUR), "events"),
        "other_export": "events_stage_0123456789ab",
        "user": "events_stage_mine",
        "user_commented": "events_stage_notes",
    }
    export_id = run_of(config).batch_export_id
    leave_stage(pg, names["killed"], export_id, dt.timedelta(hours=30))
    leave_stage(pg, names["in_flight"], export_id, dt.timedelta(minutes=1))
    leave_stage(pg, names["other_export"], "another-export", dt.timedelta(hours=30))
    pg.execute(f'CREATE TABLE "public"."{names["user"]}" ("uuid" VARCHAR(200))')
    pg.execute(f'CREATE TABLE "public"."{names["user_commented"]}" ("uuid" VARCHAR(200))')
    pg.execute(f"""COMMENT ON TABLE "public"."{names["user_commented"]}" IS 'batchexports-stage, says my note'""")
    return names


def test_the_sweep_drops_only_the_exports_stale_stage_tables(pg, database):
    config = redshift(database)
    names = leftover_stages(pg, config)
    dropped = RedshiftSink(config).drop_stale_stages(run_of(config).batch_export_id, dt.timedelta(hours=2))
    assert dropped == [f'"public"."{names["killed"]}"']
    assert tables(pg) == {names["in_flight"], names["other_export"], names["user"], names["user_commented"]}


def test_the_next_run_drops_the_stage_a_killed_run_left_and_no_other_table(pg, database, store):
    config = redshift(database)
    names = leftover_stages(pg, config)
    result = export_with(RedshiftSink(config), run_of(config), store)
    assert result.records == 301
    left = {"events", names["in_flight"], names["other_export"], names["user"], names["user_commented"]}
    assert tables(pg) == left, "the run's own stage is dropped after its merge, the killed run's at its start"
