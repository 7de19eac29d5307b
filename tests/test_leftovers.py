"""No leftovers: an interrupted run leaves no temporary file in a local folder, no incomplete S3 upload
and no stage table.

The local-folder test SIGKILLs a real process in the middle of writing a file; the S3 tests run
against moto's S3 server over HTTP (as tests/test_s3_destination.py), with uploads started and
left incomplete through boto3, as a killed run leaves them. The stage tables are created as the
sinks create them, on the real PostgreSQL (PostgreSQL, Redshift), on fakesnow (Snowflake) and on
the recording fakes of BigQuery's REST API and of a Databricks SQL warehouse; each sink's own
test module tests the exact statements and requests of its sweep.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batchexports.destinations.file.store import LocalFolderStore
from batchexports.destinations.files import keys, leftovers
from batchexports.destinations.files.exporter import FileSettings, export_files
from tests.exports_fixtures import HOUR, T0, file_run, known_events, store_with
from tests.test_bigquery_destination import service_account  # noqa: F401 - fixture
from tests.test_redshift_destination import database, pg  # noqa: F401 - fixtures
from tests.test_s3_destination import admin, bucket, moto, s3_config  # noqa: F401 - fixtures

WRITER = """
import sys, time
from pathlib import Path
from batchexports.destinations.file.store import LocalFolderStore
writer = LocalFolderStore(Path(sys.argv[1])).open(sys.argv[2])
writer.write(b"x" * (4 * 1024 * 1024))
print(writer.temporary, flush=True)
time.sleep(60)
"""


def _temporaries(root: Path) -> set[str]:
    return {p.name for p in root.rglob(".*.tmp")}


def _rows(tmp_path: Path):
    events = known_events(50)
    store = store_with(tmp_path, events)
    return store


def test_a_sigkilled_writer_leaves_a_temporary_file_that_the_next_run_of_the_interval_removes(tmp_path):
    root = tmp_path / "exports"
    root.mkdir()
    run = file_run({"path": "x"}, start=T0, end=T0 + HOUR)
    key = keys.join_key("events", keys.file_name(run, "JSONLines", None, None))
    killed = subprocess.Popen([sys.executable, "-c", WRITER, str(root), key], stdout=subprocess.PIPE, text=True)
    temporary = Path(killed.stdout.readline().strip())
    killed.send_signal(signal.SIGKILL)
    killed.wait(10)
    assert temporary.exists() and temporary.stat().st_size == 4 * 1024 * 1024  # what a crash leaves today

    # A live writer of another interval in the same folder: its file must survive every cleaning.
    other = file_run({"path": "x"}, start=T0 + HOUR, end=T0 + 2 * HOUR)
    alive = LocalFolderStore(root).open(keys.join_key("events", keys.file_name(other, "JSONLines", None, None)))
    alive.write(b"in flight")

    store = _rows(tmp_path)
    from batchexports.pipeline.export import model_query

    reader = store.read(model_query(run))
    written = export_files(
        LocalFolderStore(root), run, FileSettings("events", "JSONLines", None, None), reader, reader.schema
    )
    assert written.records == 50
    assert not temporary.exists()
    assert _temporaries(root) == {alive.temporary.name}
    assert sorted(p.name for p in (root / "events").iterdir() if not p.name.startswith(".")) == [Path(key).name]
    alive.abort()


def test_the_start_up_sweep_removes_dead_temporary_files_under_the_prefix_and_keeps_live_ones(tmp_path):
    root = tmp_path / "exports"
    root.mkdir()
    dead = []
    for hour in range(3):
        run = file_run({"path": "x"}, start=T0 + hour * HOUR, end=T0 + (hour + 1) * HOUR)
        key = f"acme/{hour:02d}/" + keys.file_name(run, "CSV", None, None)
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(root), key], stdout=subprocess.PIPE, text=True)
        dead.append(Path(child.stdout.readline().strip()))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    live = LocalFolderStore(root).open("acme/live.csv")
    foreign = root / "acme" / ".someone-elses.tmp"  # not a batchexports temporary name
    foreign.write_text("keep")
    removed = leftovers.sweep_files(LocalFolderStore(root), "acme/{hour}/", dt.timedelta(hours=1))
    assert len(removed) == 3 and not any(p.exists() for p in dead)
    assert live.temporary.exists() and foreign.exists()
    live.abort()


def _incomplete(client, bucket_name: str, key: str) -> str:
    upload = client.create_multipart_upload(Bucket=bucket_name, Key=key)
    client.upload_part(
        Bucket=bucket_name, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"p" * (5 * 1024 * 1024)
    )
    return upload["UploadId"]


def _uploads(client, bucket_name: str) -> set[str]:
    return {u["Key"] for u in client.list_multipart_uploads(Bucket=bucket_name).get("Uploads") or ()}


def test_the_next_run_of_the_interval_aborts_its_incomplete_uploads_and_no_other(moto, admin, bucket, tmp_path):  # noqa: F811
    from batchexports.destinations.s3.store import S3ObjectStore

    config = s3_config(moto, bucket, prefix="exports/")
    run = file_run(config, destination_type="S3", start=T0, end=T0 + HOUR)
    other = file_run(config, destination_type="S3", start=T0 + HOUR, end=T0 + 2 * HOUR)
    mine = "exports/" + keys.file_name(run, "JSONLines", None, 1)
    in_flight = "exports/" + keys.file_name(other, "JSONLines", None, None)
    _incomplete(admin, bucket, mine)
    _incomplete(admin, bucket, in_flight)
    assert _uploads(admin, bucket) == {mine, in_flight}

    store = _rows(tmp_path)
    from batchexports.pipeline.export import model_query

    reader = store.read(model_query(run))
    export_files(S3ObjectStore(config), run, FileSettings("exports/", "JSONLines", None, None), reader, reader.schema)
    assert _uploads(admin, bucket) == {in_flight}

    # At start-up, only uploads initiated before the cutoff go. moto reports every upload as initiated
    # at 2010-11-10T20:48:33Z (a fixed value of its own), so the cutoff is checked against that date.
    s3 = S3ObjectStore(config)
    assert s3.remove_leftovers("exports/", dt.datetime(2010, 11, 10, 20, 0, tzinfo=dt.UTC)) == []
    assert _uploads(admin, bucket) == {in_flight}
    assert leftovers.sweep_files(s3, "exports/", dt.timedelta(hours=1)) == [in_flight]
    assert _uploads(admin, bucket) == set()


@pytest.mark.parametrize("template, root", [("a/{year}/{table}/", "a/"), ("plain/", "plain/"), ("", "")])
def test_the_static_root_of_a_prefix_template(template, root):
    assert leftovers.static_root(template) == root


def test_stale_postgres_stage_tables_of_the_export_are_dropped_and_no_others():
    """Against the local PostgreSQL on 5432, in a throwaway database."""
    import json

    import psycopg

    from batchexports.destinations.postgres.sink import PostgresSink
    from batchexports.destinations.warehouse.sql_kit.sink import drop_stale_stages
    from batchexports.destinations.warehouse.sql_kit.stages import STAGE_COMMENT

    name = f"be_left_{os.getpid()}_{int(dt.datetime.now().timestamp())}"
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as admin_pg:
        admin_pg.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname=name, autocommit=True) as pg:
            now = dt.datetime.now(dt.UTC)
            for table, export_id, age in [
                ("ev_stage_old_0", "export-x", dt.timedelta(hours=30)),
                ("ev_stage_new_0", "export-x", dt.timedelta(minutes=1)),  # a run in flight
                ("ev_stage_other_0", "export-y", dt.timedelta(hours=30)),  # another export's
            ]:
                pg.execute(f"CREATE UNLOGGED TABLE {table} (uuid text)")
                comment = STAGE_COMMENT + json.dumps({"export": export_id, "created": (now - age).isoformat()})
                pg.execute(f"COMMENT ON TABLE {table} IS '{comment}'")
            pg.execute("CREATE TABLE ev_stage_user (uuid text)")  # no comment: not ours
            sink = PostgresSink({"host": "127.0.0.1", "user": "postgres", "database": name, "table_name": "ev"})
            assert drop_stale_stages(sink, "export-x", dt.timedelta(hours=1)) == ['"public"."ev_stage_old_0"']
            left = {r[0] for r in pg.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
            assert left == {"ev_stage_new_0", "ev_stage_other_0", "ev_stage_user"}
    finally:
        with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as admin_pg:
            admin_pg.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.django_db
def test_the_start_up_sweep_walks_every_live_export_and_removes_dead_temporary_files(project, tmp_path, monkeypatch):
    from batchexports.exports.models import BatchExport, BatchExportDestination
    from batchexports.exports.run_book import live_exports
    from batchexports.pipeline import startup_sweep as startup

    monkeypatch.setenv("BATCHEXPORTS_EXPORT_DIR", str(tmp_path / "exports"))
    folder = tmp_path / "exports" / "acme"
    folder.mkdir(parents=True)
    run = file_run({"path": "acme"}, start=T0, end=T0 + HOUR)
    key = keys.file_name(run, "JSONLines", None, None)
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(folder), key], stdout=subprocess.PIPE, text=True)
    dead = Path(child.stdout.readline().strip())
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    for deleted, path in [(False, "acme"), (True, "gone")]:
        destination = BatchExportDestination.objects.create(type="File", config={"path": path, "prefix": ""})
        BatchExport.objects.create(team=project, name=path, destination=destination, deleted=deleted)
    # One live export with an unreachable S3 destination: its failure must not stop the sweep.
    broken = BatchExportDestination.objects.create(
        type="S3", config={"bucket_name": "b", "region": "us-east-1", "endpoint_url": "http://127.0.0.1:9"}
    )
    BatchExport.objects.create(team=project, name="broken", destination=broken)
    assert dead.exists()
    assert startup.sweep(live_exports) == 1
    assert not dead.exists()


class _FrozenClock:
    """Stands in for `datetime` in `batchexports.destinations.files.leftovers`, which reads the time as
    `dt.datetime.now(dt.UTC)`: moto reports every upload as initiated at a fixed date of its own
    (2010-11-10T20:48:33Z), so the test moves the sweep's clock, not moto's dates."""

    UTC = dt.UTC
    timedelta = dt.timedelta

    def __init__(self, now: dt.datetime):
        clock = self

        class _DateTime(dt.datetime):
            @classmethod
            def now(cls, tz: Any = None) -> dt.datetime:  # type: ignore[override]
                return clock.now

        self.now = now
        self.datetime = _DateTime


def test_the_start_up_sweep_keeps_an_upload_younger_than_the_cutoff(moto, admin, bucket, monkeypatch):  # noqa: F811
    from batchexports.destinations.s3.store import S3ObjectStore

    key = "exports/" + keys.file_name(file_run({}, start=T0, end=T0 + HOUR), "JSONLines", None, None)
    _incomplete(admin, bucket, key)
    (upload,) = admin.list_multipart_uploads(Bucket=bucket)["Uploads"]
    initiated = upload["Initiated"]
    assert initiated == dt.datetime(2010, 11, 10, 20, 48, 33, tzinfo=dt.UTC), "moto's fixed date, as the clock assumes"
    s3 = S3ObjectStore(s3_config(moto, bucket, prefix="exports/"))

    clock = _FrozenClock(initiated + dt.timedelta(minutes=10))  # a run in flight for 10 minutes
    monkeypatch.setattr(leftovers, "dt", clock)
    assert leftovers.sweep_files(s3, "exports/", dt.timedelta(hours=1)) == []
    assert _uploads(admin, bucket) == {key}

    clock.now = initiated + dt.timedelta(hours=2)  # nobody's any more
    assert leftovers.sweep_files(s3, "exports/", dt.timedelta(hours=1)) == [key]
    assert _uploads(admin, bucket) == set()


@pytest.mark.django_db
@pytest.mark.filterwarnings("ignore:Arrow output on a DB-API result:UserWarning")  # fakesnow's own
def test_the_start_up_sweep_drops_stale_stage_tables_through_each_warehouses_sink(
    project,
    database,  # noqa: F811
    pg,  # noqa: F811
    service_account,  # noqa: F811
    monkeypatch,
):
    """Redshift on the real PostgreSQL (as tests/test_redshift_destination.py), Snowflake on fakesnow,
    BigQuery and Databricks on the fakes of their own test modules, which record the exact requests.
    Each export's stale stage goes; a fresh one, a user's table and another export's stage stay."""
    import functools

    import fakesnow
    import pyarrow as pa
    import snowflake.connector
    from google.cloud import bigquery

    from batchexports.destinations.bigquery import sink as bigquery_sink
    from batchexports.destinations.databricks import sink as databricks_sink
    from batchexports.destinations.snowflake import sink as snowflake_sink
    from batchexports.destinations.warehouse import staging
    from batchexports.destinations.warehouse.sql_kit.identifiers import literal
    from batchexports.exports.models import BatchExport, BatchExportDestination
    from batchexports.exports.run_book import live_exports
    from batchexports.pipeline import startup_sweep as startup
    from tests import test_bigquery_destination as bq
    from tests import test_databricks_destination as dbx
    from tests import test_redshift_destination as rs
    from tests import test_snowflake_destination as sf

    def export_to(kind: str, config: dict[str, Any]) -> str:
        destination = BatchExportDestination.objects.create(type=kind, config=config)
        return str(BatchExport.objects.create(team=project, name=kind, destination=destination).id)

    now = dt.datetime.now(dt.UTC)
    old, fresh = now - dt.timedelta(hours=30), now - dt.timedelta(minutes=1)  # an hourly export: 2 h run timeout

    redshift_id = export_to("Redshift", rs.redshift(database))
    for name, owner, created in [("ev_stage_old", redshift_id, old), ("ev_stage_new", redshift_id, fresh),
                                 ("ev_stage_other", "another-export", old)]:  # fmt: skip
        pg.execute(f'CREATE TABLE "public"."{name}" ("uuid" VARCHAR(200))')
        pg.execute(f'COMMENT ON TABLE "public"."{name}" IS {literal(staging.stage_mark(owner, created))}')
    pg.execute('CREATE TABLE "public"."ev_stage_user" ("uuid" VARCHAR(200))')

    snowflake_id = export_to("Snowflake", sf.snowflake_config())
    bq_config = bq.bq_config(service_account[0])
    bigquery_id = export_to("BigQuery", bq_config)
    fake_bq = bq.FakeBigQuery(public_key=service_account[1])
    monkeypatch.setattr(bigquery_sink, "make_client", functools.partial(bigquery_sink.make_client, transport=fake_bq))
    client = bigquery_sink.make_client(bq_config)
    databricks_id = export_to("Databricks", dbx.db_config())
    fake_dbx = dbx.FakeDatabricks()
    monkeypatch.setattr(dbx.dbsql, "connect", fake_dbx.connect)
    dbx_sink = databricks_sink.DatabricksSink(dbx.db_config())
    dbx_cursor = fake_dbx.connect().cursor()
    schema = pa.schema([("uuid", pa.string())])
    fields = [bigquery.SchemaField("uuid", "STRING")]

    with fakesnow.patch():
        cursor = snowflake.connector.connect(database="analytics", schema="posthog").cursor()
        cursor.execute("CREATE SCHEMA IF NOT EXISTS analytics.posthog")
        # Stage 0 is a killed run's, 1 a run's in flight, 2 another export's; each warehouse has them all.
        for n, (owners, created) in enumerate([("own", old), ("own", fresh), ("other", old)]):
            ids = {"Snowflake": snowflake_id, "BigQuery": bigquery_id, "Databricks": databricks_id}
            owner = {kind: (ident if owners == "own" else "another-export") for kind, ident in ids.items()}
            mark = staging.stage_mark(owner["Snowflake"], created)
            cursor.execute(snowflake_sink.table_ddl(f"BATCHEXPORTS_STAGE_{n}", schema, staged=True, mark=mark))
            sink = bigquery_sink.BigQuerySink(bq_config)
            sink.export_id = owner["BigQuery"]
            sink.create_stage(client, f"events_stage_{n}", fields, created)
            mark = staging.stage_mark(owner["Databricks"], created)
            dbx_cursor.execute(dbx_sink.table_ddl(dbx_sink.ref(f"batchexports_stage_{n}"), schema, True, mark))
        cursor.execute('CREATE TABLE "BATCHEXPORTS_STAGE_USER" ("uuid" STRING)')
        client.create_table(bigquery.Table(f"{bq.PROJECT}.{bq.DATASET}.events_stage_user", schema=fields))
        dbx_cursor.execute(f"CREATE TABLE {dbx_sink.ref('batchexports_stage_user')} (`uuid` STRING)")

        assert startup.sweep(live_exports) == 4
        assert sf.table_names(cursor) == {"BATCHEXPORTS_STAGE_1", "BATCHEXPORTS_STAGE_2", "BATCHEXPORTS_STAGE_USER"}
    assert rs.tables(pg) == {"ev_stage_new", "ev_stage_other", "ev_stage_user"}
    assert set(fake_bq.tables) == {"posthog.events_stage_1", "posthog.events_stage_2", "posthog.events_stage_user"}
    assert fake_dbx.tables() == {"batchexports_stage_1", "batchexports_stage_2", "batchexports_stage_user"}
