"""No leftovers: an interrupted run leaves no temporary file in a local folder and no incomplete S3 upload.

The local-folder test SIGKILLs a real process in the middle of writing a file; the S3 tests run
against moto's S3 server over HTTP (as tests/test_s3_destination.py), with uploads started and
left incomplete through boto3, as a killed run leaves them.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from batchexports.destinations.local_folder import LocalFolderStore
from batchexports.pipeline import keys, leftovers
from batchexports.pipeline.files import FileSettings, export_files
from tests.exports_fixtures import HOUR, T0, file_run, known_events, store_with
from tests.test_s3_destination import admin, bucket, moto, s3_config  # noqa: F401 - fixtures

WRITER = """
import sys, time
from pathlib import Path
from batchexports.destinations.local_folder import LocalFolderStore
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
    from batchexports.destinations.s3_store import S3ObjectStore

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

    from batchexports.destinations.postgres_sink import STAGE_COMMENT, PostgresSink, drop_stale_stages

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
    from batchexports.engine import leftovers as startup
    from batchexports.exports.models import BatchExport, BatchExportDestination

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
    assert startup.sweep() == 1
    assert not dead.exists()
