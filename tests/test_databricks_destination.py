"""The Databricks destination, against a FAKE SQL warehouse.

Databricks cannot run here, and its connector speaks Thrift over HTTPS to a real workspace, so
`databricks.sql.connect` is replaced by `FakeDatabricks.connect`: a fake connection whose cursor
records the exact SQL and PUT commands the sink sends and answers them as a warehouse would.
For plausible answers it keeps Unity Catalog's tables in DuckDB: `PUT` reads the local file
(only from the connector's `staging_allowed_local_path`, as the connector enforces) into a
volume, `COPY INTO` loads a volume folder's Parquet files by column name, `DESCRIBE TABLE`
answers in Databricks' type names, a table's `COMMENT` is kept beside DuckDB and answered from
`<catalog>.information_schema.tables` (only for the exact query the sink sends), and other
statements run after translation from the Databricks dialect with sqlglot (`MERGE WITH SCHEMA
EVOLUTION` adds the missing columns first).
The OAuth token exchange is tested on its own against a stub HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from batchexports.core.errors import NonRetryableError, RetryableError
from batchexports.destinations.databricks import sink as databricks_sink
from batchexports.destinations.testing import run_step
from batchexports.pipeline.export import export
from tests.exports_fixtures import HOUR, T0, expected_rows, file_run, known_events, store_with
from tests.test_http_destination import StubServer
from tests.test_snowflake_destination import two_interval_events

dbsql = pytest.importorskip("databricks.sql")
duckdb = pytest.importorskip("duckdb")
sqlglot = pytest.importorskip("sqlglot")

HOST = "dbc-a1b2c3d4-e5f6.cloud.databricks.com"
CLIENT_ID = "6f0c1e2d-sp-client-id"
CLIENT_SECRET = "dose-secret-that-must-not-leak"
CATALOG, SCHEMA = "analytics", "posthog"

_DATABRICKS_TYPES = {
    "VARCHAR": "string", "BIGINT": "bigint", "INTEGER": "int", "DOUBLE": "double", "BOOLEAN": "boolean",
    "TIMESTAMP WITH TIME ZONE": "timestamp", "TIMESTAMP": "timestamp_ntz", "VARIANT": "variant",
    "VARCHAR[]": "array<string>", "DATE": "date", "JSON": "string",
}  # fmt: skip


def server_error(message: str) -> Exception:
    return dbsql.exc.ServerOperationError(message, {"operation-id": "fake"})


class FakeDatabricks:
    """A fake SQL warehouse with Unity Catalog (see the module docstring)."""

    def __init__(self, schemas: tuple[str, ...] = (SCHEMA,)):
        self.db = duckdb.connect()
        self.run("SET TimeZone = 'UTC'")
        self.run(f"ATTACH ':memory:' AS \"{CATALOG}\"")
        for schema in schemas:
            self.run(f'CREATE SCHEMA "{CATALOG}"."{schema}"')
        self.statements: list[str] = []
        self.connections: list[dict[str, Any]] = []
        self.volumes: dict[str, dict[str, bytes]] = {}
        self.failures: list[tuple[str, Exception]] = []  # (regex on the statement, what to raise)
        self.comments: dict[tuple[str, str, str], str] = {}  # (catalog, schema, table) -> COMMENT

    def run(self, sql: str) -> list[tuple]:
        cursor = self.db.execute(sql)
        return cursor.fetchall() if cursor.description else []

    def connect(self, **kwargs: Any) -> FakeConnection:
        self.connections.append(kwargs)
        return FakeConnection(self, kwargs)

    def rows(self, table: str) -> list[dict[str, Any]]:
        cursor = self.db.execute(f'SELECT * FROM "{CATALOG}"."{SCHEMA}"."{table}"')
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def tables(self) -> set[str]:
        return {r[0] for r in self.run(f"SELECT table_name FROM duckdb_tables() WHERE database_name = '{CATALOG}'")}

    def sent(self, prefix: str) -> list[str]:
        return [s for s in self.statements if s.startswith(prefix)]


def _ident(text: str) -> list[str]:
    return [part.strip("`") for part in re.findall(r"`(?:[^`]|``)+`", text)]


class FakeConnection:
    def __init__(self, fake: FakeDatabricks, kwargs: dict[str, Any]):
        self.fake = fake
        self.kwargs = kwargs
        self.closed = False

    def cursor(self) -> FakeCursor:
        return FakeCursor(self)

    def close(self) -> None:
        self.closed = True


class FakeCursor:
    def __init__(self, connection: FakeConnection):
        self.connection = connection
        self.fake = connection.fake
        self.result: list[tuple] = []

    def fetchall(self) -> list[tuple]:
        return self.result

    def close(self) -> None:
        pass

    def execute(self, sql: str) -> FakeCursor:
        fake = self.fake
        fake.statements.append(sql)
        for pattern, error in fake.failures:
            if re.search(pattern, sql):
                raise error
        self.result = []
        if match := re.fullmatch(r"PUT '([^']+)' INTO '(/Volumes/[^']+)' OVERWRITE", sql):
            self.put(Path(match.group(1)), match.group(2))
        elif match := re.fullmatch(r"CREATE VOLUME IF NOT EXISTS (.+)", sql):
            catalog, schema, volume = _ident(match.group(1))
            self.require_schema(schema)
            fake.volumes.setdefault(f"/Volumes/{catalog}/{schema}/{volume}/", {})
        elif match := re.fullmatch(r"DROP VOLUME IF EXISTS (.+)", sql):
            catalog, schema, volume = _ident(match.group(1))
            fake.volumes.pop(f"/Volumes/{catalog}/{schema}/{volume}/", None)
        elif match := re.match(r"COPY INTO (\S+) FROM '(/Volumes/[^']+)' FILEFORMAT = PARQUET", sql):
            catalog, schema, table = _ident(match.group(1))
            for data in fake.volumes.get(match.group(2), {}).values():
                fake.db.register("upload", pq.read_table(io.BytesIO(data)))
                try:
                    self.duck(f'INSERT INTO "{catalog}"."{schema}"."{table}" BY NAME SELECT * FROM upload')
                finally:
                    fake.db.unregister("upload")
        elif match := re.fullmatch(r"(CREATE OR REPLACE TABLE (`[^(]+`) \(.*\))(?: COMMENT '((?:[^'\\]|\\.)*)')?", sql):
            name = tuple(_ident(match.group(2)))
            self.duck(sqlglot.transpile(match.group(1), read="databricks", write="duckdb")[0])
            fake.comments.pop(name, None)
            if match.group(3) is not None:
                fake.comments[name] = re.sub(r"\\(.)", r"\1", match.group(3))
        elif match := re.fullmatch(
            r"SELECT table_name, comment FROM `(\w+)`\.information_schema\.tables "
            r"WHERE table_schema = '(\w+)' AND comment LIKE 'batchexports-stage %'",
            sql,
        ):
            existing = {(CATALOG, schema, table) for schema, table in fake.run(
                f"SELECT schema_name, table_name FROM duckdb_tables() WHERE database_name = '{CATALOG}'")}  # fmt: skip
            self.result = [
                (table, comment)
                for (catalog, schema, table), comment in sorted(fake.comments.items())
                if (catalog, schema) == match.groups()
                and (catalog, schema, table) in existing
                and comment.startswith("batchexports-stage ")
            ]
        elif match := re.fullmatch(r"DESCRIBE SCHEMA (.+)", sql):
            self.require_schema(_ident(match.group(1))[1])
        elif match := re.fullmatch(r"DESCRIBE TABLE (.+)", sql):
            catalog, schema, table = _ident(match.group(1))
            described = self.duck(f'DESCRIBE "{catalog}"."{schema}"."{table}"')
            self.result = [(name, _DATABRICKS_TYPES[kind], None) for name, kind, *_ in described]
        elif sql.startswith("MERGE "):
            if sql.startswith("MERGE WITH SCHEMA EVOLUTION INTO "):
                sql = "MERGE INTO " + sql.removeprefix("MERGE WITH SCHEMA EVOLUTION INTO ")
                self.evolve(sql)
            translated = sqlglot.transpile(sql, read="databricks", write="duckdb")[0]
            # Databricks matches `UPDATE SET *` and `INSERT *` columns by name; DuckDB says it so.
            translated = translated.replace("THEN UPDATE SET *", "THEN UPDATE BY NAME")
            self.result = self.duck(translated.replace("THEN INSERT *", "THEN INSERT BY NAME"))
        else:
            self.result = self.duck(sqlglot.transpile(sql, read="databricks", write="duckdb")[0])
        return self

    def require_schema(self, schema: str) -> None:
        found = self.fake.run(
            f"SELECT 1 FROM duckdb_schemas() WHERE database_name = '{CATALOG}' AND schema_name = '{schema}'"
        )
        if not found:
            raise server_error(f"[SCHEMA_NOT_FOUND] The schema `{CATALOG}`.`{schema}` cannot be found. SQLSTATE: 42704")

    def put(self, local: Path, target: str) -> None:
        allowed = self.connection.kwargs.get("staging_allowed_local_path")
        if not allowed or not local.resolve().is_relative_to(Path(allowed).resolve()):
            raise dbsql.exc.ProgrammingError("Local file operations are restricted to paths within the configured "
                                             "staging_allowed_local_path")  # fmt: skip
        folder, _, name = target.rpartition("/")
        if folder + "/" not in self.fake.volumes:
            raise server_error(f"[UC_VOLUME_NOT_FOUND] Volume `{folder}` does not exist. SQLSTATE: 42704")
        self.fake.volumes[folder + "/"][name] = local.read_bytes()

    def evolve(self, merge: str) -> None:
        """What schema evolution does before the merge: add the source's columns the target lacks."""
        target = _ident(merge.split(" AS t ")[0])
        source_table = _ident(merge.split(" FROM ")[1].split(" AS s)")[0])
        have = {r[0] for r in self.duck('DESCRIBE "{}"."{}"."{}"'.format(*target))}
        for name, kind, *_ in self.duck('DESCRIBE "{}"."{}"."{}"'.format(*source_table)):
            if name not in have:
                kind = "VARIANT" if f"PARSE_JSON(s.`{name}`)" in merge else kind
                self.duck('ALTER TABLE "{}"."{}"."{}" ADD COLUMN "{}" {}'.format(*target, name, kind))

    def duck(self, sql: str) -> list[tuple]:
        try:
            return self.fake.run(sql)
        except duckdb.ConversionException as error:
            raise server_error(f"[CAST_INVALID_INPUT] {error} SQLSTATE: 22018") from None
        except duckdb.CatalogException as error:
            text = str(error)
            kind = "SCHEMA_NOT_FOUND" if "Schema" in text else "TABLE_OR_VIEW_NOT_FOUND"
            raise server_error(f"[{kind}] {text} SQLSTATE: 42P01") from None
        except duckdb.Error as error:
            raise server_error(f"[INTERNAL_ERROR] {error}") from None


def db_config(**overrides: Any) -> dict[str, Any]:
    config = {
        "server_hostname": HOST,
        "http_path": "/sql/1.0/warehouses/abc123",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "catalog": CATALOG,
        "schema": SCHEMA,
        "table_name": "events",
        "use_variant_type": True,
        "use_automatic_schema_evolution": True,
    }
    config.update(overrides)
    return config


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeDatabricks:
    fake = FakeDatabricks()
    monkeypatch.setattr(dbsql, "connect", fake.connect)
    return fake


def test_events_go_through_a_volume_and_a_stage_table_into_the_destination(tmp_path, fake):
    source = known_events(150)
    result = export(file_run(db_config(), "Databricks"), store_with(tmp_path, source))
    assert result.records_completed == 150

    (kwargs,) = fake.connections
    assert (kwargs["server_hostname"], kwargs["http_path"]) == (HOST, "/sql/1.0/warehouses/abc123")
    provider = kwargs["credentials_provider"]
    assert isinstance(provider, databricks_sink.OAuthM2M)
    assert provider.token_url == f"https://{HOST}/oidc/v1/token" and provider.auth_type() == "oauth-m2m"
    assert "access_token" not in kwargs and CLIENT_SECRET not in repr(kwargs)

    stage = databricks_sink.stage_name(file_run(db_config(), "Databricks"))
    volume = f"/Volumes/analytics/posthog/{stage}/"
    assert fake.statements[0].startswith(
        "CREATE TABLE IF NOT EXISTS `analytics`.`posthog`.`events` (`uuid` STRING, `team_id` BIGINT, "
        "`timestamp` TIMESTAMP, `_inserted_at` TIMESTAMP, `created_at` TIMESTAMP, `event` STRING, "
        "`properties` VARIANT, "
    )
    assert fake.statements[1:3] == [
        "DESCRIBE TABLE `analytics`.`posthog`.`events`",
        "SELECT table_name, comment FROM `analytics`.information_schema.tables WHERE table_schema = 'posthog' "
        "AND comment LIKE 'batchexports-stage %'",
    ]
    # The stage table, commented with its mark, is created before the volume it is loaded from.
    assert fake.statements[3].startswith(f"CREATE OR REPLACE TABLE `analytics`.`posthog`.`{stage}` (`uuid` STRING,")
    mark = json.loads(re.fullmatch(r".*\) COMMENT 'batchexports-stage (\{[^']*\})'", fake.statements[3]).group(1))
    assert mark["export"] == file_run(db_config(), "Databricks").batch_export_id
    assert abs(dt.datetime.fromisoformat(mark["created"]) - dt.datetime.now(dt.UTC)) < dt.timedelta(minutes=1)
    assert fake.statements[4] == f"CREATE VOLUME IF NOT EXISTS `analytics`.`posthog`.`{stage}`"
    (put,) = fake.sent("PUT ")
    assert re.fullmatch(rf"PUT '{re.escape(kwargs['staging_allowed_local_path'])}/part-0\.parquet' "
                        rf"INTO '{volume}part-0\.parquet' OVERWRITE", put)  # fmt: skip
    assert (
        fake.sent("CREATE OR REPLACE TABLE")[0].startswith(
            f"CREATE OR REPLACE TABLE `analytics`.`posthog`.`{stage}` (`uuid` STRING,"
        )
        and "`properties` STRING" in fake.sent("CREATE OR REPLACE TABLE")[0]
    )
    assert fake.sent("COPY INTO") == [
        f"COPY INTO `analytics`.`posthog`.`{stage}` FROM '{volume}' FILEFORMAT = PARQUET "
        "FORMAT_OPTIONS ('mergeSchema' = 'false') COPY_OPTIONS ('force' = 'true', 'mergeSchema' = 'false')"
    ]
    (merge,) = fake.sent("MERGE")
    assert merge.startswith("MERGE WITH SCHEMA EVOLUTION INTO `analytics`.`posthog`.`events` AS t USING (SELECT ")
    assert "PARSE_JSON(s.`properties`) AS `properties`" in merge
    assert merge.endswith(f"FROM `analytics`.`posthog`.`{stage}` AS s) AS s ON t.`uuid` = s.`uuid` "
                          "WHEN NOT MATCHED THEN INSERT *")  # fmt: skip
    assert fake.statements[-2:] == [
        f"DROP TABLE IF EXISTS `analytics`.`posthog`.`{stage}`",
        f"DROP VOLUME IF EXISTS `analytics`.`posthog`.`{stage}`",
    ]
    assert fake.volumes == {} and fake.tables() == {"events"}

    rows = fake.rows("events")
    got = {r["uuid"]: (r["event"], r["distinct_id"], r["properties"], r["elements_chain"]) for r in rows}
    assert got == expected_rows(source), "VARIANT columns hold the JSON documents"
    assert len(rows) == 150


def test_reruns_and_overlapping_backfills_add_no_duplicates(tmp_path, fake):
    store = store_with(tmp_path, known_events(40))
    export(file_run(db_config(), "Databricks"), store)
    export(file_run(db_config(), "Databricks"), store)
    export(file_run(db_config(), "Databricks", start=T0 - HOUR, end=T0 + 2 * HOUR), store)
    rows = fake.rows("events")
    assert len(rows) == 40 and len({r["uuid"] for r in rows}) == 40


def test_without_variant_json_columns_are_strings(tmp_path, fake):
    source = known_events(5)
    export(file_run(db_config(use_variant_type=False), "Databricks"), store_with(tmp_path, source))
    assert "`properties` STRING" in fake.statements[0]
    assert "PARSE_JSON" not in fake.sent("MERGE")[0]
    rows = sorted(fake.rows("events"), key=lambda r: r["uuid"])
    assert [json.loads(r["properties"]) for r in rows] == [
        json.loads(p) for p in source.column("properties").to_pylist()
    ]


def test_persons_merge_keeps_the_newest_version(tmp_path, fake):
    store = store_with(tmp_path, *two_interval_events())
    config = db_config(table_name="persons", use_automatic_schema_evolution=False)
    export(file_run(config, "Databricks", model="persons", start=T0 + HOUR), store)
    export(file_run(config, "Databricks", model="persons", start=T0), store)
    people = {r["distinct_id"]: r for r in fake.rows("persons")}
    assert people["ada"]["properties"] == {"plan": "pro"} and people["ada"]["person_version"] == 1
    assert people["bob"]["properties"] == {"plan": "free"}
    merge = fake.sent("MERGE")[-1]
    assert merge.startswith("MERGE INTO `analytics`.`posthog`.`persons` AS t")
    assert "ON t.`team_id` = s.`team_id` AND t.`distinct_id` = s.`distinct_id` WHEN MATCHED AND (" in merge
    assert "t.`person_version` < s.`person_version`" in merge
    assert "THEN UPDATE SET `person_id` = s.`person_id`, `properties` = s.`properties`," in merge
    assert merge.endswith("s.`is_deleted`, s.`_inserted_at`)")


def test_sessions_merge_with_schema_evolution(tmp_path, fake):
    store = store_with(tmp_path, *two_interval_events())
    config = db_config(table_name="sessions")
    for start in (T0, T0 + HOUR, T0):
        export(file_run(config, "Databricks", model="sessions", start=start), store)
    sessions = {r["session_id"]: r for r in fake.rows("sessions")}
    assert sessions["s1"]["urls"] == ["https://ex.ample/1", "https://ex.ample/3"]
    assert sessions["s1"]["session_duration"] == 3600 and sessions["s2"]["pageview_count"] == 1
    assert "`urls` ARRAY<STRING>" in fake.statements[0]
    # The sessions' versions of core.model_rules: PostHog's end_timestamp, and _inserted_at.
    assert "WHEN MATCHED AND (t.`_inserted_at` IS NULL OR t.`_inserted_at` < s.`_inserted_at` OR " \
           "t.`end_timestamp` IS NULL OR t.`end_timestamp` < s.`end_timestamp`) THEN UPDATE SET * " \
           "WHEN NOT MATCHED THEN INSERT *" in fake.sent("MERGE")[0]  # fmt: skip


def test_schema_evolution_adds_new_columns_and_its_absence_writes_only_existing_ones(tmp_path, fake):
    fake.run(f'CREATE TABLE "{CATALOG}"."{SCHEMA}"."events" ("uuid" VARCHAR, "event" VARCHAR)')
    store = store_with(tmp_path, known_events(3))
    export(file_run(db_config(use_automatic_schema_evolution=False), "Databricks"), store)
    assert set(fake.rows("events")[0]) == {"uuid", "event"}
    assert fake.sent("MERGE")[0].endswith("WHEN NOT MATCHED THEN INSERT (`uuid`, `event`) VALUES (s.`uuid`, s.`event`)")

    fake.run(f'DELETE FROM "{CATALOG}"."{SCHEMA}"."events"')
    export(file_run(db_config(), "Databricks"), store)
    row = fake.rows("events")[0]
    assert {"uuid", "event", "properties", "timestamp", "set_once"} <= set(row)
    assert isinstance(row["properties"], dict), "the evolved JSON column is VARIANT"


def test_a_missing_schema_and_a_type_mismatch_are_not_retried(tmp_path, fake):
    store = store_with(tmp_path, known_events(3))
    with pytest.raises(NonRetryableError, match="Schema 'nope' does not exist in catalog 'analytics'") as caught:
        export(file_run(db_config(schema="nope"), "Databricks"), store)
    assert CLIENT_SECRET not in str(caught.value) and CLIENT_ID not in str(caught.value)

    fake.run(f'CREATE TABLE "{CATALOG}"."{SCHEMA}"."events" ("uuid" VARCHAR, "event" BIGINT)')
    with pytest.raises(NonRetryableError, match="did not fit a column of table 'events'"):
        export(file_run(db_config(use_automatic_schema_evolution=False), "Databricks"), store)


@pytest.mark.parametrize(
    ("error", "retryable", "message"),
    [
        (dbsql.exc.RequestError("Error during request to server", {"http-code": 401}), False,
         "rejected the service principal's token"),
        (dbsql.exc.RequestError("Error during request to server", {"http-code": 403}), False,
         "may not use the SQL warehouse"),
        (dbsql.exc.RequestError("Error during request to server", {"http-code": 404}), False,
         "no SQL warehouse at 'http_path'"),
        (server_error("[CATALOG_NOT_FOUND] The catalog `nope` cannot be found."), False,
         "Catalog 'analytics' does not exist"),
        (server_error("[INSUFFICIENT_PERMISSIONS] Insufficient privileges: User does not have CREATE VOLUME on "
                      "Schema 'main.posthog'."), False, "lacks a privilege"),
        (server_error("[DELTA_CONCURRENT_APPEND] ConcurrentAppendException: Files were added"), True, "will retry"),
        (dbsql.exc.MaxRetryDurationError("Retry request would exceed Retry policy max retry duration"), True,
         "will retry"),
        (dbsql.exc.RequestError("Error during request to server: Connection reset", {"http-code": 503}), True,
         "will retry"),
    ],
)  # fmt: skip
def test_connector_errors_are_classified(error, retryable, message):
    """Connector exceptions built as the connector raises them (the fake warehouse has no HTTP layer)."""
    classified = databricks_sink.classify(error, db_config())
    assert isinstance(classified, RetryableError if retryable else NonRetryableError)
    assert message in str(classified)
    assert CLIENT_SECRET not in str(classified) and CLIENT_ID not in str(classified)


def test_a_cancellation_is_not_mistaken_for_a_databricks_error():
    from batchexports.core.run import Cancelled

    with pytest.raises(Cancelled), databricks_sink.classified(db_config()):
        raise Cancelled("cancelled between two statements")


def test_a_token_error_raised_inside_the_connector_keeps_its_classification():
    inner = NonRetryableError("Databricks rejected the service principal's OAuth credentials")
    wrapped = dbsql.exc.RequestError("Error during request to server", {"original-exception": inner})
    assert databricks_sink.classify(wrapped, db_config()) is inner


@pytest.fixture
def token_server() -> Iterator[Any]:
    servers: list[StubServer] = []

    def start(*script: tuple[int, dict[str, str], bytes]) -> StubServer:
        server = StubServer(list(script))
        server.thread.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.server.shutdown()
        server.server.server_close()


def test_oauth_m2m_uses_the_client_credentials_grant_and_caches_the_token(token_server):
    """Against a stub token endpoint on 127.0.0.1 (a stub: Databricks' /oidc/v1/token is not reachable here)."""
    import base64

    answer = b'{"access_token": "eyJ.fake.token", "token_type": "Bearer", "expires_in": 3600}'
    server = token_server((200, {"Content-Type": "application/json"}, answer))
    provider = databricks_sink.OAuthM2M(HOST, CLIENT_ID, CLIENT_SECRET, token_url=server.url)
    headers = provider()
    assert headers() == {"Authorization": "Bearer eyJ.fake.token"}
    assert headers() == {"Authorization": "Bearer eyJ.fake.token"}
    (request,) = server.requests
    assert request["body"].decode() == "grant_type=client_credentials&scope=all-apis"
    basic = base64.b64decode(request["headers"]["Authorization"].removeprefix("Basic ")).decode()
    assert basic == f"{CLIENT_ID}:{CLIENT_SECRET}"


def test_oauth_m2m_failures_are_classified_without_the_secret(token_server):
    answer = b'{"error": "invalid_client", "error_description": "Client authentication failed"}'
    rejected = token_server((401, {"Content-Type": "application/json"}, answer))
    with pytest.raises(NonRetryableError, match="check 'client_id' and 'client_secret'") as caught:
        databricks_sink.OAuthM2M(HOST, CLIENT_ID, CLIENT_SECRET, token_url=rejected.url).token()
    assert "Client authentication failed" in str(caught.value)
    assert CLIENT_SECRET not in str(caught.value)
    busy = token_server((503, {}, b"unavailable"))
    with pytest.raises(RetryableError):
        databricks_sink.OAuthM2M(HOST, CLIENT_ID, CLIENT_SECRET, token_url=busy.url).token()


def test_destination_test_steps(fake):
    from batchexports.destinations import registry

    steps = registry.get("Databricks").test_steps
    secrets = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}
    assert [run_step(steps, i, db_config(), secrets)["result"]["status"] for i in range(2)] == ["Passed"] * 2
    assert fake.tables() == set() and fake.volumes == {}, "the test table and volume are dropped"
    assert any(s.startswith("PUT ") for s in fake.statements)

    result = run_step(steps, 0, db_config(schema="nope"), secrets)["result"]
    assert result["status"] == "Failed" and "Schema 'nope' does not exist" in result["message"]

    fake.failures.append(
        ("^CREATE VOLUME", server_error("[INSUFFICIENT_PERMISSIONS] User does not have CREATE VOLUME"))
    )
    result = run_step(steps, 1, db_config(), secrets)["result"]
    assert result["status"] == "Failed" and "lacks a privilege" in result["message"]
    assert fake.tables() == set(), "the test table is dropped even when the load fails"


def test_the_stage_name_is_stable_per_interval():
    run = file_run({}, "Databricks", start=T0)
    assert databricks_sink.stage_name(run) == databricks_sink.stage_name(run)
    assert databricks_sink.stage_name(run) != databricks_sink.stage_name(file_run({}, "Databricks", start=T0 + HOUR))
    assert re.fullmatch(r"batchexports_stage_[0-9a-f]{16}", databricks_sink.stage_name(run))
    assert dt.timedelta(hours=1) == HOUR


# --- stage tables a killed run left ----------------------------------------------------------


def leftover_stages(fake: FakeDatabricks) -> dict[str, str]:
    """A killed run's stage of the export (its table and its volume with a file), a fresh one of a
    run in flight, another export's old one, all created with the sink's own statements, and a
    user's tables named like stages: one without a comment, one with a comment of its own."""
    import pyarrow as pa

    from batchexports.destinations.warehouse import staging

    export_id = file_run(db_config(), "Databricks").batch_export_id
    now = dt.datetime.now(dt.UTC)
    names = {
        "killed": databricks_sink.stage_name(file_run(db_config(), "Databricks", start=T0 - 5 * HOUR)),
        "in_flight": databricks_sink.stage_name(file_run(db_config(), "Databricks", start=T0 + HOUR)),
        "other_export": "batchexports_stage_0123456789abcdef",
        "user": "batchexports_stage_mine",
        "user_commented": "batchexports_stage_notes",
    }
    sink = databricks_sink.DatabricksSink(db_config())
    cursor = fake.connect().cursor()
    schema = pa.schema([("uuid", pa.string())])
    for key, owner, age in [
        ("killed", export_id, dt.timedelta(hours=30)),
        ("in_flight", export_id, dt.timedelta(minutes=1)),
        ("other_export", "another-export", dt.timedelta(hours=30)),
    ]:
        mark = staging.stage_mark(owner, now - age)
        cursor.execute(sink.table_ddl(sink.ref(names[key]), schema, staged=True, mark=mark))
        cursor.execute(f"CREATE VOLUME IF NOT EXISTS {sink.ref(names[key])}")
        fake.volumes[sink.volume_path(names[key])]["part-0.parquet"] = b"PAR1"
    cursor.execute(f"CREATE TABLE {sink.ref(names['user'])} (`uuid` STRING)")
    cursor.execute(f"CREATE OR REPLACE TABLE {sink.ref(names['user_commented'])} (`uuid` STRING) COMMENT 'mine'")
    fake.statements.clear()
    return names


def test_the_sweep_drops_only_the_exports_stale_stage_tables_and_their_volumes(fake):
    names = leftover_stages(fake)
    export_id = file_run(db_config(), "Databricks").batch_export_id
    dropped = databricks_sink.DatabricksSink(db_config()).drop_stale_stages(export_id, dt.timedelta(hours=2))
    assert dropped == [names["killed"]]
    assert fake.statements == [
        "SELECT table_name, comment FROM `analytics`.information_schema.tables WHERE table_schema = 'posthog' "
        "AND comment LIKE 'batchexports-stage %'",
        f"DROP TABLE IF EXISTS `analytics`.`posthog`.`{names['killed']}`",
        f"DROP VOLUME IF EXISTS `analytics`.`posthog`.`{names['killed']}`",
    ]
    assert fake.tables() == {names[k] for k in ("in_flight", "other_export", "user", "user_commented")}
    assert set(fake.volumes) == {f"/Volumes/analytics/posthog/{names[k]}/" for k in ("in_flight", "other_export")}


def test_the_next_run_drops_the_stage_a_killed_run_left_and_no_other_table(tmp_path, fake):
    names = leftover_stages(fake)
    result = export(file_run(db_config(), "Databricks"), store_with(tmp_path, known_events(20)))
    assert result.records_completed == 20
    assert fake.tables() == {names[k] for k in ("in_flight", "other_export", "user", "user_commented")} | {"events"}
    assert set(fake.volumes) == {f"/Volumes/analytics/posthog/{names[k]}/" for k in ("in_flight", "other_export")}


def test_a_run_whose_stale_stage_lookup_fails_still_exports(tmp_path, fake):
    fake.failures.append(("information_schema", server_error("[INSUFFICIENT_PERMISSIONS] Insufficient privileges")))
    result = export(file_run(db_config(), "Databricks"), store_with(tmp_path, known_events(20)))
    assert result.records_completed == 20, "cleaning never fails a run: the start-up sweep tries again"
    assert len(fake.rows("events")) == 20
