"""Specification of the Azure Blob destination, against Azurite (the Azure Blob emulator) on loopback.

Each export reads its rows from a DuckDB events store, writes them through the real sink and
object store into Azurite, and every blob is read back and compared row by row with the rows
the store returns for the interval.
"""

from __future__ import annotations

import base64
import datetime as dt
import http.server
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from azure.storage.blob import (
    AccountSasPermissions,
    BlobServiceClient,
    ResourceTypes,
    generate_account_sas,
)

from batchexports.core.errors import NonRetryableError, RetryableError
from batchexports.core.model_rules import JSON_COLUMNS
from batchexports.core.run import ExportResult, ExportRun
from batchexports.destinations.azure_blob import checks as azure_checks
from batchexports.destinations.azure_blob import store as azure_store
from batchexports.destinations.azure_blob.config import SPEC
from batchexports.destinations.files.formats import FILE_FORMATS
from batchexports.destinations.testing import DestinationCheckFailed
from batchexports.events.duckdb_store import EVENTS_SCHEMA, DuckDBEventsStore
from batchexports.events.store import ModelQuery
from batchexports.pipeline.export import export
from tests import contract
from tests.azurite import ACCOUNT_KEY, Azurite, connection_string, free_port, require_binary
from tests.conftest import prefix_for

require_binary()  # skips the module without Azurite (fails it in CI)

TEAM = 7
HOUR = dt.timedelta(hours=1)
SMALL = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)  # a few dozen varied rows
BIG = dt.datetime(2024, 5, 2, 10, 0, tzinfo=dt.UTC)  # ~3 MB of JSONLines, for parts and blocks
EMPTY = dt.datetime(2024, 5, 3, 10, 0, tzinfo=dt.UTC)  # no rows
SMALL_BASE = "2024-05-01T10:00:00+00:00-2024-05-01T11:00:00+00:00"  # PostHog's names
BIG_BASE = "2024-05-02T10:00:00+00:00-2024-05-02T11:00:00+00:00"
WRONG_KEY = base64.b64encode(b"not-the-account-key-" * 3 + b"1234").decode()

FORMAT_CASES = [(fmt, codec) for fmt, codecs in FILE_FORMATS.items() for codec in (None, *codecs)]
CONTENT_TYPES = {"Parquet": "application/vnd.apache.parquet", "JSONLines": "application/x-ndjson", "CSV": "text/csv"}
CODEC_CONTENT_TYPES = {"gzip": "application/gzip", "zstd": "application/zstd", "brotli": "application/octet-stream"}


# Fixtures


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    emulator = Azurite(tmp_path_factory.mktemp("azurite")).start()
    contract.register_secret(ACCOUNT_KEY)
    contract.register_secret(emulator.connection_string)
    try:
        yield emulator
    finally:
        emulator.stop()


@pytest.fixture(scope="module")
def service(azurite: Azurite) -> Iterator[BlobServiceClient]:
    client = BlobServiceClient.from_connection_string(azurite.connection_string)
    yield client
    client.close()


@pytest.fixture
def container(service: BlobServiceClient) -> str:
    """A fresh, empty container for the test."""
    name = f"exports-{uuid.uuid4().hex[:12]}"
    service.create_container(name)
    return name


def past_events(specs: list[tuple[str, str, dt.datetime, dict[str, Any]]]) -> pa.Table:
    """Events as `import` takes them: (event, distinct_id, timestamp, properties)."""
    return pa.table(
        {
            "uuid": [str(uuid.uuid4()) for _ in specs],
            "event": [s[0] for s in specs],
            "properties": [json.dumps(s[3]) for s in specs],
            "timestamp": pa.array([s[2] for s in specs], pa.timestamp("us", tz="UTC")),
            "distinct_id": [s[1] for s in specs],
            "elements_chain": [None if i % 3 else f"a.nav:nth-child({i})" for i in range(len(specs))],
        },
        schema=EVENTS_SCHEMA,
    )


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDBEventsStore]:
    """An events store with the SMALL and BIG intervals filled and EMPTY left empty."""
    store = DuckDBEventsStore(tmp_path_factory.mktemp("events") / "events.duckdb")
    awkward = ["plain", 'quote " and comma ,', "new\nline", "ünïcødé ✓", "", "tab\there"]
    small = [
        (
            "$pageview" if i % 4 else "$identify",
            f"user-{i % 5}",
            SMALL + dt.timedelta(minutes=i, microseconds=i * 7),
            {"$current_url": f"https://example.com/{i}", "text": awkward[i % len(awkward)], "n": i, "ok": i % 2 == 0}
            | ({"$set": {"plan": "pro", "seats": i}} if i % 4 == 0 else {}),
        )
        for i in range(48)
    ]
    big = [
        ("$pageview", f"user-{i % 10}", BIG + dt.timedelta(seconds=i), {"i": i, "blob": f"{i:06d}" + "x" * 600})
        for i in range(2600)
    ]
    store.import_table(TEAM, past_events(small))
    store.import_table(TEAM, past_events(big))
    yield store
    store.close()


# Helpers


def azure_config(azurite: Azurite, container: str, **overrides: Any) -> dict[str, Any]:
    return SPEC.validate_config(
        {"connection_string": azurite.connection_string, "container_name": container, **overrides}
    )


def run_export(
    config: dict[str, Any], start: dt.datetime, store: DuckDBEventsStore, batch_rows: int = 10_000
) -> ExportResult:
    run = ExportRun(
        batch_export_id="azure-export",
        team_id=TEAM,
        model="events",
        destination_type="AzureBlob",
        destination_config=config,
        data_interval_start=start,
        data_interval_end=start + HOUR,
    )
    return export(run, store, batch_rows=batch_rows)


def source_rows(store: DuckDBEventsStore, start: dt.datetime) -> list[dict[str, Any]]:
    rows = store.read(ModelQuery("events", TEAM, start, start + HOUR)).read_all().to_pylist()
    return sorted(rows, key=lambda row: row["uuid"])


def source_schema(store: DuckDBEventsStore) -> pa.Schema:
    return store.read(ModelQuery("events", TEAM, SMALL, SMALL + HOUR)).schema


def blobs(service: BlobServiceClient, container: str) -> dict[str, bytes]:
    client = service.get_container_client(container)
    return {blob.name: client.download_blob(blob.name).readall() for blob in client.list_blobs()}


def decode(data: bytes, file_format: str, compression: str | None, schema: pa.Schema) -> list[dict[str, Any]]:
    """The rows of one exported file."""
    if file_format == "Parquet":
        return pq.read_table(pa.BufferReader(data)).to_pylist()
    text = pa.input_stream(pa.BufferReader(data), compression=compression).read()
    if file_format == "JSONLines":
        return [json.loads(line) for line in text.decode().splitlines()]
    options = pacsv.ConvertOptions(column_types=schema, strings_can_be_null=True, quoted_strings_can_be_null=False)
    return pacsv.read_csv(pa.BufferReader(text), convert_options=options).to_pylist()


def as_exported(row: dict[str, Any], file_format: str) -> dict[str, Any]:
    """A source row as the format represents it: JSONLines nests JSON columns and writes ISO timestamps."""
    if file_format != "JSONLines":
        return row
    exported = {}
    for name, value in row.items():
        if name in JSON_COLUMNS and value is not None:
            value = json.loads(value)
        elif isinstance(value, dt.datetime):
            value = value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        exported[name] = value
    return exported


def assert_same_rows(exported: list[dict[str, Any]], source: list[dict[str, Any]], file_format: str) -> None:
    expected = [as_exported(row, file_format) for row in source]
    got = sorted(exported, key=lambda row: row["uuid"])
    assert len(got) == len(expected)
    for got_row, expected_row in zip(got, expected, strict=True):
        assert got_row == expected_row


def url_of(azurite: Azurite, container: str, key: str) -> str:
    return f"{azurite.endpoint}/{container}/{key}"


def read_only_sas_connection_string(azurite: Azurite) -> str:
    sas = generate_account_sas(
        "devstoreaccount1",
        ACCOUNT_KEY,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, list=True),
        expiry=dt.datetime.now(dt.UTC) + HOUR,
    )
    return contract.register_secret(f"BlobEndpoint={azurite.endpoint};SharedAccessSignature={sas}")


def sas_connection_string(azurite: Azurite) -> str:
    sas = generate_account_sas(
        "devstoreaccount1",
        ACCOUNT_KEY,
        ResourceTypes(service=True, container=True, object=True),
        AccountSasPermissions(read=True, write=True, list=True, delete=True),
        expiry=dt.datetime.now(dt.UTC) + HOUR,
    )
    contract.register_secret(sas)
    return contract.register_secret(f"BlobEndpoint={azurite.endpoint};SharedAccessSignature={sas}")


# Formats, compressions and names


def test_the_events_of_each_interval_are_the_ones_imported(events):
    assert len(source_rows(events, SMALL)) == 48
    assert len(source_rows(events, BIG)) == 2600
    assert source_rows(events, EMPTY) == []


@pytest.mark.parametrize(("file_format", "compression"), FORMAT_CASES, ids=[f"{f}-{c}" for f, c in FORMAT_CASES])
def test_each_format_and_compression_round_trips_row_by_row(
    azurite, service, container, events, file_format, compression
):
    config = azure_config(azurite, container, file_format=file_format, compression=compression)
    result = run_export(config, SMALL, events)

    extension = {"Parquet": "parquet", "JSONLines": "jsonl", "CSV": "csv"}[file_format]
    suffix = {"gzip": ".gz", "brotli": ".br", "zstd": ".zst"}.get(compression or "", "")
    key = f"{SMALL_BASE}.{extension}" + ("" if file_format == "Parquet" else suffix)
    stored = blobs(service, container)
    assert list(stored) == [key]
    data = stored[key]
    assert result.records_completed == 48
    assert result.bytes_exported == len(data)
    assert result.files == (url_of(azurite, container, key),)
    assert_same_rows(
        decode(data, file_format, compression, source_schema(events)), source_rows(events, SMALL), file_format
    )

    if file_format == "Parquet":
        codec = pq.ParquetFile(pa.BufferReader(data)).metadata.row_group(0).column(0).compression
        assert codec == (compression or "uncompressed").upper()
    elif compression:
        assert pa.input_stream(pa.BufferReader(data), compression=compression).read() != data
    properties = service.get_blob_client(container, key).get_blob_properties()
    expected_type = (
        CODEC_CONTENT_TYPES[compression] if suffix and file_format != "Parquet" else CONTENT_TYPES[file_format]
    )
    assert properties.content_settings.content_type == expected_type


@pytest.mark.parametrize(
    ("prefix", "folder"),
    [
        ("posthog/{table}/{year}/{month}/{day}/{hour}{minute}", "posthog/events/2024/05/01/1100"),  # the end
        (
            "by-interval/{data_interval_start}_{data_interval_end}/",
            "by-interval/2024-05-01T10:00:00+00:00_2024-05-01T11:00:00+00:00",
        ),
        ("flat", "flat"),
    ],
)
def test_the_prefix_template_is_rendered_from_the_interval(azurite, service, container, events, prefix, folder):
    result = run_export(azure_config(azurite, container, prefix=prefix), SMALL, events)
    key = f"{folder}/{SMALL_BASE}.jsonl"
    stored = blobs(service, container)
    assert list(stored) == [key]
    assert_same_rows(
        decode(stored[key], "JSONLines", None, source_schema(events)), source_rows(events, SMALL), "JSONLines"
    )
    (url,) = result.files
    assert "?" not in url
    assert unquote(url) == url_of(azurite, container, key)


def test_an_interval_without_rows_writes_nothing(azurite, service, container, events):
    result = run_export(azure_config(azurite, container, max_file_size_mb=1), EMPTY, events)
    assert (result.records_completed, result.bytes_exported, result.files) == (0, 0, ())
    assert blobs(service, container) == {}


# Parts, manifests and re-runs


def exported_parts(service: BlobServiceClient, container: str) -> tuple[list[str], dict[str, bytes]]:
    stored = blobs(service, container)
    manifest = json.loads(stored.pop(f"{BIG_BASE}_manifest.json"))["files"]
    return manifest, stored


def test_max_file_size_splits_the_file_into_parts_listed_by_a_manifest(azurite, service, container, events):
    result = run_export(azure_config(azurite, container, max_file_size_mb=1), BIG, events, batch_rows=200)

    manifest, parts = exported_parts(service, container)
    assert len(manifest) >= 3
    assert manifest == [f"{BIG_BASE}-{n}.jsonl" for n in range(len(manifest))]
    assert sorted(parts) == sorted(manifest)
    assert result.files == tuple(url_of(azurite, container, key) for key in manifest)
    assert all(len(parts[key]) >= 1024 * 1024 for key in manifest[:-1])
    assert result.bytes_exported == sum(len(data) for data in parts.values())
    rows = [row for key in manifest for row in decode(parts[key], "JSONLines", None, source_schema(events))]
    assert_same_rows(rows, source_rows(events, BIG), "JSONLines")


def test_a_rerun_replaces_the_same_blobs_and_removes_the_parts_of_a_longer_earlier_run(
    azurite, service, container, events
):
    client = service.get_container_client(container)
    client.upload_blob(f"{BIG_BASE}.parquet", b"another export's file")  # another format: left alone
    client.upload_blob("notes.txt", b"not ours")
    source = source_rows(events, BIG)
    schema = source_schema(events)

    run_export(azure_config(azurite, container, max_file_size_mb=1), BIG, events, batch_rows=200)
    first_manifest, _ = exported_parts(service, container)

    config = azure_config(azurite, container, max_file_size_mb=2)
    run_export(config, BIG, events, batch_rows=200)
    manifest, stored = exported_parts(service, container)
    assert 1 < len(manifest) < len(first_manifest)
    assert sorted(stored) == sorted([*manifest, f"{BIG_BASE}.parquet", "notes.txt"])
    assert_same_rows(
        [r for key in manifest for r in decode(stored[key], "JSONLines", None, schema)], source, "JSONLines"
    )

    etags = {key: client.get_blob_client(key).get_blob_properties().etag for key in manifest}
    run_export(config, BIG, events, batch_rows=200)
    again, stored = exported_parts(service, container)
    assert again == manifest
    assert all(client.get_blob_client(key).get_blob_properties().etag != etags[key] for key in manifest)
    assert_same_rows([r for key in again for r in decode(stored[key], "JSONLines", None, schema)], source, "JSONLines")

    run_export(azure_config(azurite, container), BIG, events)  # one file: every part and the manifest go
    stored = blobs(service, container)
    assert sorted(stored) == [f"{BIG_BASE}.jsonl", f"{BIG_BASE}.parquet", "notes.txt"]
    assert stored["notes.txt"] == b"not ours"
    assert_same_rows(decode(stored[f"{BIG_BASE}.jsonl"], "JSONLines", None, schema), source, "JSONLines")


def test_a_sas_connection_string_exports_and_cleans_up_without_the_token_in_urls(azurite, service, container, events):
    config = SPEC.validate_config(
        {"connection_string": sas_connection_string(azurite), "container_name": container, "max_file_size_mb": 1}
    )
    run_export(config, BIG, events, batch_rows=200)
    result = run_export({**config, "max_file_size_mb": None}, BIG, events)
    assert result.files == (url_of(azurite, container, f"{BIG_BASE}.jsonl"),)
    stored = blobs(service, container)
    assert list(stored) == [f"{BIG_BASE}.jsonl"]
    assert_same_rows(
        decode(stored[f"{BIG_BASE}.jsonl"], "JSONLines", None, source_schema(events)),
        source_rows(events, BIG),
        "JSONLines",
    )


# Blocks


def test_a_blob_larger_than_one_block_is_staged_in_blocks_and_reassembles_exactly(
    azurite, service, container, events, monkeypatch
):
    block = 64 * 1024
    monkeypatch.setattr(azure_store, "BLOCK_SIZE", block)
    result = run_export(azure_config(azurite, container), BIG, events, batch_rows=500)

    key = f"{BIG_BASE}.jsonl"
    data = blobs(service, container)[key]
    committed, uncommitted = service.get_blob_client(container, key).get_block_list("all")
    count = -(-len(data) // block)
    assert count > 10
    assert [b.id for b in committed] == [azure_store.BLOCK_ID_FORMAT.format(i) for i in range(count)]
    assert [b.size for b in committed] == [block] * (count - 1) + [len(data) - block * (count - 1)]
    assert uncommitted == []
    assert result.bytes_exported == len(data)
    assert_same_rows(decode(data, "JSONLines", None, source_schema(events)), source_rows(events, BIG), "JSONLines")


def test_a_blob_appears_only_on_commit_and_replaces_the_older_one(azurite, service, container, monkeypatch):
    monkeypatch.setattr(azure_store, "BLOCK_SIZE", 1000)
    client = service.get_container_client(container)
    client.upload_blob("data.bin", b"the older version")
    payload = bytes(range(256)) * 50 + b"tail"
    store = azure_store.AzureBlobObjectStore(azure_config(azurite, container))
    writer = store.open("data.bin")
    for start, size in ((0, 1), (1, 999), (1000, 2500), (3500, 7), (3507, len(payload))):
        assert writer.write(memoryview(payload)[start : start + size]) == len(payload[start : start + size])
    assert client.download_blob("data.bin").readall() == b"the older version"
    assert store.list_keys("") == ["data.bin"]
    writer.commit()
    assert client.download_blob("data.bin").readall() == payload
    assert len(writer.block_ids) == 13


def test_an_aborted_blob_leaves_nothing_visible(azurite, service, container, monkeypatch):
    monkeypatch.setattr(azure_store, "BLOCK_SIZE", 1000)
    client = service.get_container_client(container)
    client.upload_blob("kept.bin", b"the older version")
    store = azure_store.AzureBlobObjectStore(azure_config(azurite, container))
    for key in ("kept.bin", "new.bin"):
        writer = store.open(key)
        writer.write(b"x" * 5500)  # five blocks staged, some still in flight
        writer.abort()
    assert sorted(blobs(service, container).items()) == [("kept.bin", b"the older version")]


def test_put_list_delete_and_url(azurite, service, container):
    store = azure_store.AzureBlobObjectStore(azure_config(azurite, container))
    keys = [f"a/{n:03d}.json" for n in range(260)]  # more than one delete batch
    for key in keys:
        store.put(key, key.encode())
    store.put("b/other.json", b"{}")
    assert store.list_keys("a/") == keys
    assert store.url("a/001.json") == url_of(azurite, container, "a/001.json")
    store.delete([*keys[:-1], "a/never-existed.json"])
    assert blobs(service, container) == {"a/259.json": b"a/259.json", "b/other.json": b"{}"}


# Errors


@pytest.mark.parametrize("block_size", [azure_store.BLOCK_SIZE, 4096], ids=["one-request", "staged-blocks"])
def test_a_missing_container_is_a_non_retryable_error_naming_it(azurite, events, monkeypatch, block_size):
    monkeypatch.setattr(azure_store, "BLOCK_SIZE", block_size)
    with pytest.raises(NonRetryableError) as raised:
        run_export(azure_config(azurite, "no-such-container"), SMALL, events)
    message = str(raised.value)
    assert "The container 'no-such-container' does not exist in the storage account 'devstoreaccount1'" in message
    assert "container_name" in message


@pytest.mark.parametrize(
    ("connection", "expected"),
    [
        ("wrong-key", "rejected the credentials of the connection string"),
        ("key-not-base64", "is not a valid key"),
        ("malformed", "connection string of the storage account is malformed"),
    ],
)
def test_bad_credentials_are_non_retryable_and_never_echoed(azurite, container, events, connection, expected):
    connection_strings = {
        "wrong-key": connection_string(azurite.port, WRONG_KEY),
        "key-not-base64": connection_string(azurite.port, WRONG_KEY[:-3] + "!"),
        "malformed": f"AccountKey={WRONG_KEY}",
    }
    config = {**azure_config(azurite, container), "connection_string": connection_strings[connection]}
    with pytest.raises(NonRetryableError) as raised:
        run_export(config, SMALL, events)
    message = str(raised.value)
    assert expected in message
    for secret in (WRONG_KEY, WRONG_KEY[:20], ACCOUNT_KEY, connection_strings[connection]):
        assert secret not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_an_unreachable_endpoint_is_retryable(container, events, monkeypatch):
    monkeypatch.setattr(azure_store, "RETRY_TOTAL", 0)
    port = free_port()  # nothing listens there
    config = SPEC.validate_config({"connection_string": connection_string(port), "container_name": container})
    with pytest.raises(RetryableError) as raised:
        run_export(config, SMALL, events)
    assert f"Could not connect to Azure Blob Storage at 127.0.0.1:{port}" in str(raised.value)
    assert ACCOUNT_KEY not in str(raised.value)


class StubAzure(http.server.BaseHTTPRequestHandler):
    """A fake Blob endpoint (Azurite never throttles nor fails): answers every request with `reply`."""

    reply: tuple[int, str] | None = None  # None: never answer

    def _answer(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.reply is None:
            threading.Event().wait(3)
            return
        status, code = self.reply
        body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{code}</Message></Error>'
        self.send_response(status)
        self.send_header("x-ms-error-code", code)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.mark.parametrize(
    ("reply", "expected"),
    [((503, "ServerBusy"), "HTTP 503 ServerBusy"), ((500, "InternalError"), "HTTP 500"), (None, "timed out")],
    ids=["server-busy", "internal-error", "read-timeout"],
)
def test_throttling_server_errors_and_timeouts_are_retryable(monkeypatch, reply, expected):
    """Against a stub HTTP server (a fake: Azurite cannot be made to throttle, fail or hang)."""
    monkeypatch.setattr(azure_store, "RETRY_TOTAL", 0)
    monkeypatch.setattr(azure_store, "READ_TIMEOUT", 0.5)
    handler = type("Handler", (StubAzure,), {"reply": reply})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        store = azure_store.AzureBlobObjectStore(
            {"connection_string": connection_string(port), "container_name": "exports"}
        )
        with pytest.raises(RetryableError) as raised:
            store.put("a.jsonl", b"{}\n")
    finally:
        server.shutdown()
        server.server_close()
    assert expected in str(raised.value)
    assert "'exports'" in str(raised.value)
    assert ACCOUNT_KEY not in str(raised.value)


# Destination test steps, directly and through the API


def test_the_write_step_uses_the_rendered_prefix_and_rejects_unknown_placeholders():
    now = dt.datetime(2024, 5, 1, 10, 30, tzinfo=dt.UTC)
    key = azure_checks.probe_blob_key({"prefix": "exports/{year}/{month}/"}, now)
    assert key.startswith("exports/2024/05/.batchexports-test-")
    with pytest.raises(DestinationCheckFailed, match=r"Unknown placeholder\(s\) \{nope\}"):
        azure_checks.probe_blob_key({"prefix": "exports/{nope}"}, now)


def azure_destination(azurite: Azurite, container: str, **config: Any) -> dict[str, Any]:
    return {
        "type": "AzureBlob",
        "config": {
            "connection_string": azurite.connection_string,
            "container_name": container,
            "prefix": "tests/{year}/",
            **config,
        },
    }


def run_step(api: Any, project: Any, step: int, destination: dict[str, Any]) -> dict[str, Any]:
    response = api.post(
        f"{prefix_for('projects', project)}run_test_step_new/",
        {"step": step, "destination": destination},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_the_api_lists_the_azure_blob_test_steps(api, project):
    response = api.get(f"{prefix_for('projects', project)}test/", {"destination": "AzureBlob"})
    assert response.status_code == 200
    steps = response.json()["steps"]
    assert [step["name"] for step in steps] == ["Connect to the container", "Write and delete a test blob"]
    assert all(step["description"] for step in steps)


def test_both_steps_pass_against_azurite_and_leave_no_blob(api, project, azurite, service, container):
    destination = azure_destination(azurite, container)
    first = run_step(api, project, 0, destination)
    assert first["name"] == "Connect to the container"
    assert first["result"] == {"status": "Passed", "message": None}
    second = run_step(api, project, 1, destination)
    assert second["name"] == "Write and delete a test blob"
    assert second["result"] == {"status": "Passed", "message": None}
    assert blobs(service, container) == {}


def test_step_0_fails_clearly_for_a_missing_container(api, project, azurite):
    result = run_step(api, project, 0, azure_destination(azurite, "no-such-container"))["result"]
    assert result["status"] == "Failed"
    assert "The container 'no-such-container' does not exist" in result["message"]
    assert "container_name" in result["message"]


def test_step_0_fails_for_a_wrong_key_without_echoing_it(api, project, azurite, container):
    destination = azure_destination(
        azurite, container, connection_string=contract.register_secret(connection_string(azurite.port, WRONG_KEY))
    )
    contract.register_secret(WRONG_KEY)
    result = run_step(api, project, 0, destination)["result"]
    assert result["status"] == "Failed"
    assert "rejected the credentials of the connection string" in result["message"]


def test_a_read_only_sas_passes_step_0_and_fails_the_write_step_naming_the_permission(
    api, project, azurite, service, container
):
    destination = azure_destination(azurite, container, connection_string=read_only_sas_connection_string(azurite))
    assert run_step(api, project, 0, destination)["result"]["status"] == "Passed"
    result = run_step(api, project, 1, destination)["result"]
    assert result["status"] == "Failed"
    assert "may not write the blob 'tests/" in result["message"]
    assert "write" in result["message"] and "permission" in result["message"]
    assert blobs(service, container) == {}
