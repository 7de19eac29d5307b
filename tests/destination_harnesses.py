"""One harness per registered destination type, for the cross-destination suite
(`test_every_destination.py`): a config pointing at a real or emulated service, and readers of
what the service then holds.

What each harness talks to, reusing the destination test modules' services and fakes:

- File: a real folder (`BATCHEXPORTS_EXPORT_DIR` under the test's tmp_path).
- S3, S3Compatible, AwsS3: a real moto S3 server over HTTP on loopback (one per module, a bucket per
  test; AwsS3 reaches it through boto3's `AWS_ENDPOINT_URL_S3`). Its failing config is a wrong
  secret key with moto's IAM authentication switched on, as `test_s3_destination.py` does.
- AzureBlob: Azurite (`tests/azurite.py`), a container per test; failing: a wrong account key.
- Postgres: the real PostgreSQL on 127.0.0.1:5432, a throwaway database; failing: the
  password-refusing fake server of `test_postgres_destination.py` (the local server trusts
  127.0.0.1 and checks no password).
- Redshift: the same PostgreSQL, given the stand-ins for Redshift's types and functions of
  `test_redshift_destination.py` (INSERT mode; COPY needs Redshift itself); failing: as Postgres.
- Snowflake: fakesnow. fakesnow checks no password, so the failing config meets a fake
  `snowflake.connector.connect` that refuses the login with a message quoting the user and
  password it was given: the worst a service can do, which the sink must scrub.
- BigQuery: the recording fake `FakeBigQuery` of `test_bigquery_destination.py`, mounted as the
  `requests` transport of every session; failing: its token endpoint refuses the JWT with a
  message quoting the service account's secrets.
- Databricks: the fake SQL warehouse `FakeDatabricks` of `test_databricks_destination.py` in
  place of `databricks.sql.connect`; failing: the warehouse refuses the connection with a
  message quoting the client id and secret.
- HTTP: batchexports' own capture endpoint (`live_server`), whose events model de-duplicates by
  uuid, read back from the receiving project; failing: a stub answering 401 with the token quoted.
- NoOp: nothing (it reads and exports nothing).

A destination type without a harness here makes the suite fail, so a new destination joins it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchexports.destinations import registry
from tests.exports_fixtures import decode_rows

# A row as every harness reads it back: uuid, event, distinct_id and properties (parsed).
Row = dict[str, Any]
ContextConfig = Callable[[], contextlib.AbstractContextManager[dict[str, Any]]]


@dataclass
class Harness:
    destination_type: str
    config: dict[str, Any]
    read_back: Callable[[], list[Row]]
    # What a run may leave besides the exported rows: stage tables, volumes, unfinished uploads,
    # temporary objects. Empty when the destination is clean.
    leftovers: Callable[[], list[str]]
    # A config with secret values that fails as soon as the destination is contacted (None: the
    # type has no secret fields).
    failing: ContextConfig | None = None
    # How many requests or connections the service has seen, where the harness can count them.
    contacts: Callable[[], int] | None = None
    exports_rows: bool = True


def validated(destination_type: str, raw: dict[str, Any]) -> dict[str, Any]:
    return registry.get(destination_type).validate_config(raw)


def parsed(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def row_of(record: dict[str, Any]) -> Row:
    return {key: record[key] for key in ("uuid", "event", "distinct_id")} | {"properties": parsed(record["properties"])}


# -- File ------------------------------------------------------------------------------------------


@pytest.fixture
def file_harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Harness:
    folder = tmp_path / "exports"
    monkeypatch.setenv("BATCHEXPORTS_EXPORT_DIR", str(folder))

    def files() -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []

    def read_back() -> list[Row]:
        exported = [p for p in files() if p.suffix == ".jsonl"]
        return [row_of(r) for p in exported for r in decode_rows(p.read_bytes(), "JSONLines", None)]

    return Harness(
        "File",
        validated("File", {"path": "acme", "file_format": "JSONLines"}),
        read_back,
        leftovers=lambda: [str(p) for p in files() if p.suffix != ".jsonl"],
        contacts=lambda: len(files()) + folder.exists(),  # the sink makes the folder when it writes
    )


# -- S3, S3Compatible, AwsS3 (moto) ------------------------------------------------------------------

S3_REGION = "eu-west-1"
S3_KEY_ID, S3_SECRET = "AKIACROSSDESTKEY0001", "cross-destination-s3-secret-never-shown"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    yield f"http://localhost:{port}"
    server.stop()


def s3_harness(destination_type: str, endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Harness:
    import boto3
    import requests
    from botocore.config import Config

    admin = boto3.client(
        "s3", endpoint_url=endpoint, region_name=S3_REGION, aws_access_key_id="admin",
        aws_secret_access_key="admin", config=Config(s3={"addressing_style": "path"}),
    )  # fmt: skip
    bucket = f"cross-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": S3_REGION})
    raw = {"bucket_name": bucket, "region": S3_REGION, "aws_access_key_id": S3_KEY_ID,
           "aws_secret_access_key": S3_SECRET, "prefix": "cross/{table}", "file_format": "JSONLines"}  # fmt: skip
    if destination_type == "AwsS3":  # no endpoint field, as in PostHog: boto3's own setting points at moto
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", endpoint)
    else:
        raw["endpoint_url"] = endpoint

    def keys() -> list[str]:
        pages = admin.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))

    def read_back() -> list[Row]:
        rows = []
        for key in keys():
            if key.endswith(".jsonl"):
                data = admin.get_object(Bucket=bucket, Key=key)["Body"].read()
                rows += [row_of(r) for r in decode_rows(data, "JSONLines", None)]
        return rows

    def leftovers() -> list[str]:
        uploads = admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
        return [f"upload of {u['Key']}" for u in uploads] + [k for k in keys() if not k.endswith(".jsonl")]

    @contextlib.contextmanager
    def failing() -> Iterator[dict[str, Any]]:
        """moto checks signatures only while its IAM authentication is on (a server global)."""
        iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1",
                           aws_access_key_id="a", aws_secret_access_key="b")  # fmt: skip
        name = f"exporter-{uuid.uuid4().hex[:8]}"
        iam.create_user(UserName=name)
        key = iam.create_access_key(UserName=name)["AccessKey"]
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
        try:
            yield validated(destination_type, {**raw, "aws_access_key_id": key["AccessKeyId"]})
        finally:
            requests.post(f"{endpoint}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()

    return Harness(destination_type, validated(destination_type, raw), read_back, leftovers, failing)


@pytest.fixture
def s3_legacy_harness(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Harness:
    return s3_harness("S3", moto_endpoint, monkeypatch)


@pytest.fixture
def s3_compatible_harness(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Harness:
    return s3_harness("S3Compatible", moto_endpoint, monkeypatch)


@pytest.fixture
def aws_s3_harness(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Harness:
    return s3_harness("AwsS3", moto_endpoint, monkeypatch)


# -- AzureBlob (Azurite) ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def azurite_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from tests.azurite import Azurite

    emulator = Azurite(tmp_path_factory.mktemp("azurite")).start()
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture
def azure_harness(azurite_service: Any) -> Iterator[Harness]:
    import base64

    from azure.storage.blob import BlobServiceClient

    from tests.azurite import connection_string

    service = BlobServiceClient.from_connection_string(azurite_service.connection_string)
    container = f"cross-{uuid.uuid4().hex[:12]}"
    service.create_container(container)
    client = service.get_container_client(container)
    raw = {"connection_string": azurite_service.connection_string, "container_name": container,
           "prefix": "cross/{table}", "file_format": "JSONLines"}  # fmt: skip

    def read_back() -> list[Row]:
        rows = []
        for blob in client.list_blobs():
            if blob.name.endswith(".jsonl"):
                rows += [row_of(r) for r in decode_rows(client.download_blob(blob.name).readall(), "JSONLines", None)]
        return rows

    def leftovers() -> list[str]:
        every = client.list_blobs(include=["uncommittedblobs"])
        return [b.name for b in every if not b.name.endswith(".jsonl") or not b.size]

    @contextlib.contextmanager
    def failing() -> Iterator[dict[str, Any]]:
        wrong = base64.b64encode(b"cross-destination-wrong-account-key-0123456789").decode()
        yield validated("AzureBlob", {**raw, "connection_string": connection_string(azurite_service.port, wrong)})

    yield Harness("AzureBlob", validated("AzureBlob", raw), read_back, leftovers, failing)
    service.close()


# -- Postgres and Redshift (the local PostgreSQL) -----------------------------------------------------

PG_PASSWORD = "cross-destination-pg-password-never-shown"
PG_USER_SECRET = "cross-destination-pg-user"


def _database(setup: str = "") -> Iterator[str]:
    from tests.test_postgres_destination import admin_connection

    name = f"be_test_cross_{uuid.uuid4().hex[:12]}"
    with admin_connection() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    if setup:
        with admin_connection(name) as connection:
            connection.execute(setup)
    yield name
    with admin_connection() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    yield from _database()


@pytest.fixture(scope="module")
def redshift_database() -> Iterator[str]:
    from tests.test_redshift_destination import EMULATION

    yield from _database(EMULATION)


def sql_harness(destination_type: str, database: str) -> Iterator[Harness]:
    from tests.test_postgres_destination import RefusingServer, admin_connection, tables

    raw = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "password": PG_PASSWORD, "database": database,
           "schema": "public", "table_name": "events", "has_self_signed_cert": False}  # fmt: skip
    if destination_type == "Redshift":
        raw |= {"properties_data_type": "varchar", "mode": "INSERT", "copy_inputs": None}
    connection = admin_connection(database)

    def read_back() -> list[Row]:
        if "events" not in tables(connection):
            return []
        cursor = connection.cursor()
        cursor.execute('SELECT "uuid", "event", "distinct_id", "properties" FROM "public"."events"')
        return [row_of(dict(zip(("uuid", "event", "distinct_id", "properties"), r, strict=True))) for r in cursor]

    @contextlib.contextmanager
    def failing() -> Iterator[dict[str, Any]]:
        server = RefusingServer()
        try:
            yield validated(destination_type, {**raw, "port": server.port, "user": PG_USER_SECRET})
        finally:
            server.close()

    yield Harness(
        destination_type,
        validated(destination_type, raw),
        read_back,
        leftovers=lambda: sorted(tables(connection) - {"events"}),
        failing=failing,
    )
    for table in tables(connection):
        connection.execute(f'DROP TABLE "public"."{table}"')
    connection.close()


@pytest.fixture
def postgres_harness(postgres_database: str) -> Iterator[Harness]:
    yield from sql_harness("Postgres", postgres_database)


@pytest.fixture
def redshift_harness(redshift_database: str) -> Iterator[Harness]:
    yield from sql_harness("Redshift", redshift_database)


# -- Snowflake (fakesnow) ----------------------------------------------------------------------------

SF_PASSWORD, SF_USER = "cross-destination-sf-password", "cross_destination_loader"


@pytest.fixture
def snowflake_harness() -> Iterator[Harness]:
    fakesnow = pytest.importorskip("fakesnow")
    import snowflake.connector

    from tests.test_snowflake_destination import snowflake_config

    raw = snowflake_config(user=SF_USER, password=SF_PASSWORD)
    # The counting wrapper is undone inside fakesnow's patch, which then restores the connector.
    with fakesnow.patch(), pytest.MonkeyPatch.context() as monkeypatch:
        reader = snowflake.connector.connect(database="analytics", schema="posthog").cursor()
        connect, connections = snowflake.connector.connect, []

        def counting(*args: Any, **kwargs: Any) -> Any:
            connections.append(kwargs)
            return connect(*args, **kwargs)

        monkeypatch.setattr(snowflake.connector, "connect", counting)

        def table_names() -> set[str]:
            reader.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = 'POSTHOG'")
            return {row[0] for row in reader.fetchall()}

        def read_back() -> list[Row]:
            if "events" not in table_names():
                return []
            reader.execute('SELECT "uuid", "event", "distinct_id", "properties" FROM "events"')
            names = ("uuid", "event", "distinct_id", "properties")
            return [row_of(dict(zip(names, r, strict=True))) for r in reader.fetchall()]

        @contextlib.contextmanager
        def failing() -> Iterator[dict[str, Any]]:
            def refusing(**kwargs: Any) -> Any:
                connections.append(kwargs)
                raise snowflake.connector.errors.DatabaseError(
                    msg=f"Failed to connect to DB: {kwargs.get('account')}.snowflakecomputing.com:443. Incorrect "
                    f"username or password was specified. user={kwargs.get('user')} password={kwargs.get('password')}",
                    errno=250001, sqlstate="08001",
                )  # fmt: skip

            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(snowflake.connector, "connect", refusing)
                yield validated("Snowflake", raw)

        yield Harness(
            "Snowflake",
            validated("Snowflake", raw),
            read_back,
            leftovers=lambda: sorted(table_names() - {"events"}),
            failing=failing,
            contacts=lambda: len(connections),
        )
        reader.close()


# -- BigQuery (FakeBigQuery) ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bigquery_key_pair() -> tuple[str, bytes]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture
def bigquery_harness(bigquery_key_pair: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch) -> Harness:
    requests = pytest.importorskip("requests")
    from tests.test_bigquery_destination import DATASET, FakeBigQuery, bq_config

    fake = FakeBigQuery(public_key=bigquery_key_pair[1])
    # Every `requests` session (Google's token exchange and the BigQuery client) talks to the fake.
    monkeypatch.setattr(requests.Session, "get_adapter", lambda self, url: fake)
    raw = bq_config(bigquery_key_pair[0])

    def read_back() -> list[Row]:
        return [row_of(r) for r in fake.rows("events")] if f"{DATASET}.events" in fake.tables else []

    @contextlib.contextmanager
    def failing() -> Iterator[dict[str, Any]]:
        fake.token_error = f"Invalid JWT Signature for {raw['client_email']} (key {raw['private_key_id']})."
        try:
            yield validated("BigQuery", raw)
        finally:
            fake.token_error = None

    return Harness(
        "BigQuery",
        validated("BigQuery", raw),
        read_back,
        leftovers=lambda: sorted(set(fake.tables) - {f"{DATASET}.events"}),
        failing=failing,
        contacts=lambda: len(fake.log),
    )


# -- Databricks (FakeDatabricks) ---------------------------------------------------------------------


@pytest.fixture
def databricks_harness(monkeypatch: pytest.MonkeyPatch) -> Harness:
    dbsql = pytest.importorskip("databricks.sql")
    from tests.test_databricks_destination import FakeDatabricks, db_config, server_error

    fake = FakeDatabricks()
    monkeypatch.setattr(dbsql, "connect", fake.connect)
    raw = db_config(use_variant_type=False)

    def read_back() -> list[Row]:
        return [row_of(r) for r in fake.rows("events")] if "events" in fake.tables() else []

    @contextlib.contextmanager
    def failing() -> Iterator[dict[str, Any]]:
        def refusing(**kwargs: Any) -> Any:
            fake.connections.append(kwargs)
            raise server_error(
                f"[INVALID_CREDENTIALS] client_id={raw['client_id']} client_secret={raw['client_secret']} refused"
            )

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(dbsql, "connect", refusing)
            yield validated("Databricks", raw)

    return Harness(
        "Databricks",
        validated("Databricks", raw),
        read_back,
        leftovers=lambda: sorted(fake.tables() - {"events"}) + sorted(fake.volumes),
        failing=failing,
        contacts=lambda: len(fake.connections) + len(fake.statements),
    )


# -- HTTP (batchexports' own capture endpoint) ----------------------------------------------------------

HTTP_TOKEN = "phc_cross_destination_token_never_shown"


@pytest.fixture
def http_harness(live_server: Any, sibling_project: Any, events_store: Any) -> Iterator[Harness]:
    import datetime as dt

    from batchexports.events.store import ModelQuery
    from tests.test_http_destination import StubServer

    far = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)
    stubs: list[StubServer] = []

    def read_back() -> list[Row]:
        table = events_store.read(ModelQuery("events", sibling_project.id, None, far)).read_all()
        return [row_of(r) for r in table.to_pylist()]

    @contextlib.contextmanager
    def failing() -> Iterator[dict[str, Any]]:
        body = json.dumps({"detail": f"Project API key invalid: {HTTP_TOKEN}"}).encode()
        stub = StubServer([(401, {"Content-Type": "application/json"}, body)])
        stub.thread.start()
        stubs.append(stub)
        yield validated("HTTP", {"url": stub.url, "token": HTTP_TOKEN})

    yield Harness(
        "HTTP",
        validated("HTTP", {"url": f"{live_server.url}/batch/", "token": sibling_project.api_token}),
        read_back,
        leftovers=lambda: [],
        failing=failing,
        contacts=lambda: sum(len(stub.requests) for stub in stubs),
    )
    for stub in stubs:
        stub.server.shutdown()
        stub.server.server_close()


# -- NoOp ----------------------------------------------------------------------------------------------


@pytest.fixture
def noop_harness() -> Harness:
    return Harness("NoOp", validated("NoOp", {"arg": "x"}), lambda: [], lambda: [], exports_rows=False)


# The fixture giving each destination type's harness.
HARNESSES: dict[str, str] = {
    "File": "file_harness",
    "S3": "s3_legacy_harness",
    "S3Compatible": "s3_compatible_harness",
    "AwsS3": "aws_s3_harness",
    "AzureBlob": "azure_harness",
    "Postgres": "postgres_harness",
    "Redshift": "redshift_harness",
    "Snowflake": "snowflake_harness",
    "BigQuery": "bigquery_harness",
    "Databricks": "databricks_harness",
    "HTTP": "http_harness",
    "NoOp": "noop_harness",
}
