"""Specification of the S3 destination, against a real moto S3 server over HTTP on loopback.

Every export is read back from the server and compared row by row with the events imported
into a DuckDB events store. The server (`moto.server.ThreadedMotoServer`) runs once for the
module; each test gets its own bucket.

Where moto cannot produce an error S3 produces (a KMS key S3 refuses, throttling, 5xx, a
session token), the classification function is specified on a botocore `ClientError` built
here with S3's error code; each such test says so.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError
from moto.server import ThreadedMotoServer

from batchexports.core.errors import NonRetryableError, RetryableError
from batchexports.core.run import ExportResult, ExportRun
from batchexports.destinations import registry
from batchexports.destinations.files.formats import FILE_FORMATS
from batchexports.destinations.s3 import store as s3_store
from batchexports.destinations.s3.store import MIN_PART_SIZE, S3ObjectStore, classify
from batchexports.events.duckdb_store import EVENTS_SCHEMA, DuckDBEventsStore
from batchexports.pipeline.export import export
from tests import contract
from tests.conftest import prefix_for, s3_destination

REGION = "eu-west-1"
TEAM = 7
T0 = dt.datetime(2024, 5, 1, 10, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)
# Hours of the module's events store, one per data set.
MIXED, MANY, BIG, EMPTY = T0, T0 + HOUR, T0 + 2 * HOUR, T0 + 5 * HOUR
BASE = {  # PostHog's names: isoformat() of both bounds
    MIXED: "2024-05-01T10:00:00+00:00-2024-05-01T11:00:00+00:00",
    MANY: "2024-05-01T11:00:00+00:00-2024-05-01T12:00:00+00:00",
}
KEY_ID, SECRET = "AKIAMOTOTESTKEY00001", "moto-secret-key-that-must-never-show"


# -- the server, the buckets, the events ---------------------------------------------------------


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    """The endpoint of a moto S3 server on loopback (a free port)."""
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    yield f"http://localhost:{port}"
    server.stop()


@pytest.fixture(scope="module")
def admin(moto: str) -> Any:
    """A client of the test itself, to create buckets and read what the exporter wrote."""
    return boto3.client(
        "s3",
        endpoint_url=moto,
        region_name=REGION,
        aws_access_key_id="admin",
        aws_secret_access_key="admin",
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture
def bucket(admin: Any) -> str:
    name = f"exports-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    return name


def s3_config(endpoint: str, bucket: str, **overrides: Any) -> dict[str, Any]:
    """A config as the API validates it (defaults filled in)."""
    raw = {
        "bucket_name": bucket,
        "region": REGION,
        "endpoint_url": endpoint,
        "aws_access_key_id": KEY_ID,
        "aws_secret_access_key": SECRET,
        **overrides,
    }
    return registry.get("S3").validate_config(raw)


def run_of(config: dict[str, Any], start: dt.datetime = MIXED, **kw: Any) -> ExportRun:
    return ExportRun(
        batch_export_id="b1",
        team_id=TEAM,
        model="events",
        destination_type="S3",
        destination_config=config,
        data_interval_start=start,
        data_interval_end=start + HOUR,
        **kw,
    )


def events_table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.table(
        {
            "uuid": [r["uuid"] for r in rows],
            "event": [r["event"] for r in rows],
            "properties": [json.dumps(r["properties"]) for r in rows],
            "timestamp": pa.array([r["timestamp"] for r in rows], pa.timestamp("us", tz="UTC")),
            "distinct_id": [r["distinct_id"] for r in rows],
            "elements_chain": [None for _ in rows],
        },
        schema=EVENTS_SCHEMA,
    )


def make_rows(count: int, start: dt.datetime, padding: int = 0, tricky: bool = False) -> list[dict[str, Any]]:
    rows = []
    for i in range(count):
        properties: dict[str, Any] = {"$current_url": f"https://example.com/{i}", "i": i, "pad": "x" * padding}
        if tricky:  # what breaks naive CSV/JSON writers
            properties |= {
                "quote": 'say "hi", ok',
                "newline": "a\nb\r\nc",
                "unicode": "ünïcödé ✓ 🚀",
                "nested": {"k": [1, 2.5, None, True]},
            }
        rows.append(
            {
                "uuid": str(uuid.UUID(int=start.hour << 64 | i)),
                "event": ["$pageview", "signed up", "comma, event", 'quote "event"'][i % 4],
                "distinct_id": ["user-1", "42", "ünï", 'd,"x"'][i % 4],
                "properties": properties,
                "timestamp": start + dt.timedelta(seconds=i % 3600, microseconds=i),
            }
        )
    return rows


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DuckDBEventsStore, dict[dt.datetime, list]]]:
    """The events store and, per hour, the rows imported into that hour."""
    store = DuckDBEventsStore(tmp_path_factory.mktemp("events") / "events.duckdb")
    data = {
        MIXED: make_rows(40, MIXED, tricky=True),
        MANY: make_rows(4000, MANY, padding=700),  # ~3 MB of JSONLines
        BIG: make_rows(9000, BIG, padding=1300),  # ~13 MB of JSONLines: three parts of 5 MiB
    }
    for rows in data.values():
        store.import_table(TEAM, events_table(rows))
    yield store, data
    store.close()


# -- reading objects back ------------------------------------------------------------------------


def object_keys(admin: Any, bucket: str) -> list[str]:
    pages = admin.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))


def body(admin: Any, bucket: str, key: str) -> bytes:
    return admin.get_object(Bucket=bucket, Key=key)["Body"].read()


def decode(data: bytes, file_format: str, compression: str | None) -> list[dict[str, Any]]:
    """The rows of one exported file, with `properties` parsed, whatever the format."""
    if file_format == "Parquet":
        rows = pq.read_table(pa.BufferReader(data)).to_pylist()
        return [{**r, "properties": json.loads(r["properties"])} for r in rows]
    text = pa.input_stream(pa.BufferReader(data), compression=compression).read().decode()
    if file_format == "JSONLines":
        assert text.endswith("\n") or not text
        return [json.loads(line) for line in text.splitlines()]
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    return [{**r, "properties": json.loads(r["properties"])} for r in rows]


def as_datetime(value: Any) -> dt.datetime:
    return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)


def assert_same_rows(exported: list[dict[str, Any]], source_rows: list[dict[str, Any]]) -> None:
    """Every source row exactly once, field by field."""
    by_uuid = {row["uuid"]: row for row in exported}
    assert len(by_uuid) == len(exported), "a row was exported twice"
    assert set(by_uuid) == {row["uuid"] for row in source_rows}
    for expected in source_rows:
        got = by_uuid[expected["uuid"]]
        assert (got["event"], got["distinct_id"]) == (expected["event"], expected["distinct_id"])
        assert got["properties"] == expected["properties"]
        assert as_datetime(got["timestamp"]) == expected["timestamp"]


def exported_rows(admin: Any, bucket: str, keys: list[str], file_format: str, compression: str | None) -> list:
    return [row for key in keys for row in decode(body(admin, bucket, key), file_format, compression)]


def keys_of(result: ExportResult, bucket: str) -> list[str]:
    prefix = f"s3://{bucket}/"
    assert all(url.startswith(prefix) for url in result.files)
    return [url[len(prefix) :] for url in result.files]


# -- formats and compressions ----------------------------------------------------------------------

FORMAT_CASES = [(fmt, codec) for fmt, codecs in FILE_FORMATS.items() for codec in (None, *codecs)]
STREAM_MAGIC = {"gzip": b"\x1f\x8b", "zstd": b"\x28\xb5\x2f\xfd"}


@pytest.mark.parametrize(("file_format", "compression"), FORMAT_CASES, ids=[f"{f}-{c}" for f, c in FORMAT_CASES])
def test_every_format_and_compression_round_trips_row_by_row(source, moto, admin, bucket, file_format, compression):
    store, data = source
    config = s3_config(
        moto, bucket, prefix="events/{table}/{year}/{month}/{day}", file_format=file_format, compression=compression
    )
    result = export(run_of(config), store)

    extension = {"Parquet": "parquet", "JSONLines": "jsonl", "CSV": "csv"}[file_format]
    suffix = (
        ""
        if file_format == "Parquet" or compression is None
        else "." + {"gzip": "gz", "brotli": "br", "zstd": "zst"}[compression]
    )
    key = f"events/events/2024/05/01/{BASE[MIXED]}.{extension}{suffix}"
    assert object_keys(admin, bucket) == [key]
    assert result.files == (f"s3://{bucket}/{key}",)
    assert result.records_completed == 40
    raw = body(admin, bucket, key)
    assert result.bytes_exported == len(raw)
    assert_same_rows(decode(raw, file_format, compression), data[MIXED])

    if file_format == "Parquet":
        codec = pq.ParquetFile(pa.BufferReader(raw)).metadata.row_group(0).column(0).compression
        assert codec.upper().startswith((compression or "uncompressed").upper())
    elif compression in STREAM_MAGIC:
        assert raw.startswith(STREAM_MAGIC[compression])
    elif compression == "brotli":
        assert b"$pageview" not in raw  # compressed: the plain text is not there
    else:
        assert b"$pageview" in raw


def test_jsonlines_nests_json_columns_and_csv_keeps_them_as_text(source, moto, admin, bucket):
    store, data = source
    export(run_of(s3_config(moto, bucket, prefix="j", file_format="JSONLines")), store)
    export(run_of(s3_config(moto, bucket, prefix="c", file_format="CSV")), store)
    first = data[MIXED][0]
    (line,) = [
        r
        for r in decode(body(admin, bucket, f"j/{BASE[MIXED]}.jsonl"), "JSONLines", None)
        if r["uuid"] == first["uuid"]
    ]
    assert isinstance(line["properties"], dict) and line["properties"]["nested"] == {"k": [1, 2.5, None, True]}
    text = body(admin, bucket, f"c/{BASE[MIXED]}.csv").decode()
    (row,) = [r for r in csv.DictReader(io.StringIO(text, newline="")) if r["uuid"] == first["uuid"]]
    assert isinstance(row["properties"], str) and json.loads(row["properties"]) == first["properties"]


# -- keys, parts, manifests, re-runs --------------------------------------------------------------


def test_prefix_templates_render_into_keys(source, moto, admin, bucket):
    store, _ = source
    prefix = "posthog/{table}/{year}-{month}-{day}/{hour}h{minute}/{data_interval_start}_{data_interval_end}"
    export(run_of(s3_config(moto, bucket, prefix=prefix, file_format="Parquet")), store)
    assert object_keys(admin, bucket) == [
        f"posthog/events/2024-05-01/11h00/2024-05-01T10:00:00+00:00_2024-05-01T11:00:00+00:00/{BASE[MIXED]}.parquet"
    ]


def split_export(source, moto, bucket, max_mb: int | None, **kw: Any) -> ExportResult:
    store, _ = source
    config = s3_config(moto, bucket, prefix="split", file_format="JSONLines", max_file_size_mb=max_mb, **kw)
    return export(run_of(config, MANY), store, batch_rows=250)


def manifest_files(admin: Any, bucket: str) -> list[str]:
    return json.loads(body(admin, bucket, f"split/{BASE[MANY]}_manifest.json"))["files"]


def test_max_file_size_splits_into_parts_and_a_manifest_listing_them(source, moto, admin, bucket):
    result = split_export(source, moto, bucket, 1)
    parts = keys_of(result, bucket)
    assert len(parts) >= 3
    assert parts == [f"split/{BASE[MANY]}-{n}.jsonl" for n in range(len(parts))]
    assert manifest_files(admin, bucket) == parts
    assert object_keys(admin, bucket) == sorted([*parts, f"split/{BASE[MANY]}_manifest.json"])
    for key in parts[:-1]:  # every part but the last reached the limit
        assert admin.head_object(Bucket=bucket, Key=key)["ContentLength"] >= 1024 * 1024
    assert_same_rows(exported_rows(admin, bucket, parts, "JSONLines", None), source[1][MANY])


def test_rerunning_an_interval_replaces_the_same_keys_and_removes_extra_parts(source, moto, admin, bucket):
    many = source[1][MANY]
    first = keys_of(split_export(source, moto, bucket, 1), bucket)
    again = keys_of(split_export(source, moto, bucket, 1), bucket)
    assert again == first
    assert_same_rows(exported_rows(admin, bucket, object_keys(admin, bucket)[:-1], "JSONLines", None), many)

    fewer = keys_of(split_export(source, moto, bucket, 2), bucket)  # an earlier run wrote MORE parts
    assert 1 <= len(fewer) < len(first)
    assert manifest_files(admin, bucket) == fewer
    assert object_keys(admin, bucket) == sorted([*fewer, f"split/{BASE[MANY]}_manifest.json"])
    assert_same_rows(exported_rows(admin, bucket, fewer, "JSONLines", None), many)

    whole = keys_of(split_export(source, moto, bucket, None), bucket)  # no splitting: parts and manifest go
    assert whole == [f"split/{BASE[MANY]}.jsonl"]
    assert object_keys(admin, bucket) == whole
    assert_same_rows(exported_rows(admin, bucket, whole, "JSONLines", None), many)


def test_a_rerun_leaves_other_formats_and_other_intervals_alone(source, moto, admin, bucket):
    store, _ = source
    export(run_of(s3_config(moto, bucket, prefix="split", file_format="Parquet"), MANY), store)
    admin.put_object(Bucket=bucket, Key=f"split/{BASE[MIXED]}.jsonl", Body=b"another interval\n")
    split_export(source, moto, bucket, 1)
    split_export(source, moto, bucket, None)
    assert f"split/{BASE[MANY]}.parquet" in object_keys(admin, bucket)
    assert body(admin, bucket, f"split/{BASE[MIXED]}.jsonl") == b"another interval\n"


def test_an_interval_without_rows_writes_nothing(source, moto, admin, bucket):
    store, _ = source
    result = export(run_of(s3_config(moto, bucket, prefix="empty", max_file_size_mb=1), EMPTY), store)
    assert (result.records_completed, result.files) == (0, ())
    assert object_keys(admin, bucket) == []


def test_include_and_exclude_events_filter_the_exported_rows(source, moto, admin, bucket):
    store, data = source
    config = s3_config(
        moto, bucket, prefix="f", include_events=["$pageview", "signed up"], exclude_events=["signed up"]
    )
    export(run_of(config), store)
    rows = decode(body(admin, bucket, f"f/{BASE[MIXED]}.jsonl"), "JSONLines", None)
    assert_same_rows(rows, [r for r in data[MIXED] if r["event"] == "$pageview"])


# -- multipart uploads ----------------------------------------------------------------------------


def test_a_large_export_is_a_multipart_upload_of_5_mib_parts_that_reassembles_exactly(
    source, moto, admin, bucket, monkeypatch
):
    store, data = source
    monkeypatch.setattr(s3_store, "DEFAULT_PART_SIZE", MIN_PART_SIZE)
    result = export(run_of(s3_config(moto, bucket, prefix="big"), BIG), store)
    (key,) = keys_of(result, bucket)
    head = admin.head_object(Bucket=bucket, Key=key)
    assert result.bytes_exported == head["ContentLength"] > 2 * MIN_PART_SIZE
    parts = -(-head["ContentLength"] // MIN_PART_SIZE)
    assert head["ETag"].strip('"').endswith(f"-{parts}")  # S3's ETag of a multipart object names its parts
    assert_same_rows(decode(body(admin, bucket, key), "JSONLines", None), data[BIG])
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def payload(size: int) -> bytes:
    return bytes(range(256)) * (size // 256) + bytes(range(size % 256))


class UploadSpy:
    """Wraps a client's `upload_part`, recording part sizes and the most parts uploading at once."""

    def __init__(self, client: Any, delay: float = 0.05):
        self._upload_part, self.delay = client.upload_part, delay
        self.sizes: dict[int, int] = {}
        self.in_flight = self.most_in_flight = 0
        self.lock = threading.Lock()
        client.upload_part = self

    def __call__(self, **kwargs: Any) -> Any:
        with self.lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(self.delay)
            return self._upload_part(**kwargs)
        finally:
            with self.lock:
                self.in_flight -= 1
                self.sizes[kwargs["PartNumber"]] = len(kwargs["Body"])


def test_the_writer_uploads_parts_concurrently_with_at_most_n_in_flight(moto, admin, bucket):
    store = S3ObjectStore(s3_config(moto, bucket), part_size=MIN_PART_SIZE, max_in_flight=2)
    spy = UploadSpy(store.client)
    data = payload(6 * MIN_PART_SIZE + 12345)
    writer = store.open("direct/object.bin")
    view, position = memoryview(data), 0
    for size in [1, 100, MIN_PART_SIZE - 101, 3 * MIN_PART_SIZE + 7, 999, 65536]:  # uneven writes
        writer.write(view[position : position + size])
        position += size
    writer.write(bytearray(view[position:]))
    writer.commit()

    assert body(admin, bucket, "direct/object.bin") == data
    assert spy.sizes == {**{n: MIN_PART_SIZE for n in range(1, 7)}, 7: 12345}
    assert spy.most_in_flight == 2  # concurrent, and bounded
    assert admin.head_object(Bucket=bucket, Key="direct/object.bin")["ETag"].strip('"').endswith("-7")


def test_an_object_smaller_than_a_part_is_one_put_and_the_part_size_is_never_below_5_mib(moto, admin, bucket):
    store = S3ObjectStore(s3_config(moto, bucket), part_size=1024)
    assert store.part_size == MIN_PART_SIZE
    spy = UploadSpy(store.client, delay=0)
    writer = store.open("small.txt")
    writer.write(b"hello ")
    writer.write(memoryview(b"world"))
    writer.commit()
    assert body(admin, bucket, "small.txt") == b"hello world"
    assert spy.sizes == {}
    assert "-" not in admin.head_object(Bucket=bucket, Key="small.txt")["ETag"]


def test_abort_discards_the_upload_and_leaves_no_object(moto, admin, bucket):
    admin.put_object(Bucket=bucket, Key="kept.bin", Body=b"the previous run's file")
    store = S3ObjectStore(s3_config(moto, bucket), part_size=MIN_PART_SIZE)
    writer = store.open("kept.bin")
    writer.write(payload(2 * MIN_PART_SIZE + 1))
    assert [u["Key"] for u in admin.list_multipart_uploads(Bucket=bucket).get("Uploads", [])] == ["kept.bin"]
    writer.abort()
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert body(admin, bucket, "kept.bin") == b"the previous run's file"


def test_a_part_retried_after_a_lost_response_is_not_duplicated(moto, admin, bucket):
    """Part 2 reaches the server, then its response is lost (a dropped connection, simulated in
    botocore's `before-send` hook); botocore sends it again under the same part number."""
    store = S3ObjectStore(s3_config(moto, bucket), part_size=MIN_PART_SIZE, max_in_flight=1)
    sent: list[int] = []

    def lose_first_response_of_part_2(request: Any, **_: Any) -> None:
        number = int(re.search(r"partNumber=(\d+)", request.url).group(1))
        sent.append(number)
        if number == 2 and sent.count(2) == 1:
            delivered = requests.put(request.url, data=request.body, headers=dict(request.headers), timeout=30)
            assert delivered.status_code == 200
            raise ConnectionClosedError(endpoint_url=request.url)

    store.client.meta.events.register("before-send.s3.UploadPart", lose_first_response_of_part_2)
    data = payload(3 * MIN_PART_SIZE + 10)
    writer = store.open("retried.bin")
    writer.write(data)
    writer.commit()
    assert sorted(sent) == [1, 2, 2, 3, 4]
    assert body(admin, bucket, "retried.bin") == data


def test_a_run_failing_mid_upload_keeps_the_previous_object_and_leaves_no_upload(
    source, moto, admin, bucket, monkeypatch
):
    """S3 throttles the second part (a `SlowDown` built here: moto never throttles)."""
    monkeypatch.setattr(s3_store, "DEFAULT_PART_SIZE", MIN_PART_SIZE)
    key = "big/2024-05-01T12:00:00-2024-05-01T13:00:00.jsonl"
    admin.put_object(Bucket=bucket, Key=key, Body=b"the previous run's file\n")
    make_client = s3_store.make_client

    def throttled_client(*args: Any, **kwargs: Any) -> Any:
        client = make_client(*args, **kwargs)
        upload_part = client.upload_part

        def throttle_part_2(**params: Any) -> Any:
            if params["PartNumber"] == 2:
                raise client_error("SlowDown", 503, "Please reduce your request rate.", "UploadPart")
            return upload_part(**params)

        client.upload_part = throttle_part_2
        return client

    monkeypatch.setattr(s3_store, "make_client", throttled_client)
    with pytest.raises(RetryableError, match="SlowDown"):
        export(run_of(s3_config(moto, bucket, prefix="big"), BIG), source[0])
    assert object_keys(admin, bucket) == [key]
    assert body(admin, bucket, key) == b"the previous run's file\n"
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_a_failed_part_fails_the_object_and_aborts_the_upload(moto, admin, bucket):
    store = S3ObjectStore(s3_config(moto, bucket), part_size=MIN_PART_SIZE)

    def deny(**_: Any) -> Any:
        raise ClientError({"Error": {"Code": "AccessDenied", "Message": "Access Denied"}}, "UploadPart")

    store.client.upload_part = deny
    writer = store.open("denied.bin")
    with pytest.raises(NonRetryableError, match="denied"):
        writer.write(payload(MIN_PART_SIZE))
        writer.write(b"more")
        writer.commit()
    writer.abort()
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert object_keys(admin, bucket) == []


# -- encryption and addressing -------------------------------------------------------------------


@pytest.fixture(scope="module")
def kms_key(moto: str) -> str:
    kms = boto3.client("kms", endpoint_url=moto, region_name=REGION, aws_access_key_id="a", aws_secret_access_key="b")
    return kms.create_key(Description="batchexports tests")["KeyMetadata"]["KeyId"]


@pytest.mark.parametrize("encryption", ["AES256", "aws:kms"])
def test_server_side_encryption_applies_to_files_manifests_and_multipart_objects(
    source, moto, admin, bucket, kms_key, encryption
):
    kms = {"kms_key_id": kms_key} if encryption == "aws:kms" else {}
    config = s3_config(moto, bucket, prefix="split", encryption=encryption, max_file_size_mb=1, **kms)
    export(run_of(config, MANY), source[0], batch_rows=250)
    writer = S3ObjectStore(config, part_size=MIN_PART_SIZE).open("multipart.bin")
    writer.write(payload(MIN_PART_SIZE + 1))
    writer.commit()

    keys = object_keys(admin, bucket)
    assert f"split/{BASE[MANY]}_manifest.json" in keys and "multipart.bin" in keys and len(keys) >= 4
    for key in keys:
        head = admin.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == encryption, key
        assert head.get("SSEKMSKeyId") == (kms_key if kms else None), key


def test_path_style_addressing_puts_the_bucket_in_the_path(source, moto, admin, bucket, monkeypatch):
    urls = record_request_urls(monkeypatch)
    export(run_of(s3_config(moto, bucket, prefix="p")), source[0])
    assert urls and all(url.startswith((f"{moto}/{bucket}/", f"{moto}/{bucket}?")) for url in urls), urls
    assert_same_rows(decode(body(admin, bucket, f"p/{BASE[MIXED]}.jsonl"), "JSONLines", None), source[1][MIXED])


def test_virtual_host_addressing_puts_the_bucket_in_the_host_name(source, moto, admin, bucket, monkeypatch):
    """`<bucket>.localhost` does not resolve here, so the test resolves `*.localhost` to 127.0.0.1
    (a shim of `socket.getaddrinfo`, the only fake); moto then finds the bucket in the Host header."""
    resolve = socket.getaddrinfo

    def loopback(host: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return resolve(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", loopback)
    urls = record_request_urls(monkeypatch)
    export(run_of(s3_config(moto, bucket, prefix="v", use_virtual_style_addressing=True)), source[0])
    host = moto.replace("http://", f"http://{bucket}.")
    assert urls and all(url.startswith((f"{host}/v/", f"{host}/?")) for url in urls), urls
    assert_same_rows(decode(body(admin, bucket, f"v/{BASE[MIXED]}.jsonl"), "JSONLines", None), source[1][MIXED])


def record_request_urls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """URLs of every request of the clients the sink builds from now on."""
    urls: list[str] = []
    make_client = s3_store.make_client

    def recording(*args: Any, **kwargs: Any) -> Any:
        client = make_client(*args, **kwargs)
        client.meta.events.register("before-send.s3.*", lambda request, **_: urls.append(request.url))
        return client

    monkeypatch.setattr(s3_store, "make_client", recording)
    return urls


# -- errors ---------------------------------------------------------------------------------------


def test_a_missing_bucket_is_non_retryable_and_named(source, moto):
    with pytest.raises(NonRetryableError) as raised:
        export(run_of(s3_config(moto, "no-such-bucket-here")), source[0])
    assert "bucket 'no-such-bucket-here' does not exist in region 'eu-west-1'" in str(raised.value)
    assert SECRET not in str(raised.value) and KEY_ID not in str(raised.value)
    with pytest.raises(NonRetryableError, match="'no-such-bucket-here' does not exist"):
        S3ObjectStore(s3_config(moto, "no-such-bucket-here")).head_bucket()


@pytest.fixture
def iam_auth(moto: str, bucket: str) -> Iterator[tuple[str, str]]:
    """Switches moto's IAM authentication on for one test (after its bucket is made); yields
    (key id, secret) of a user who may use S3.

    moto checks signatures and access keys only while authentication is on, and it is a global
    of the server, so it is switched off again whatever the test does."""
    iam = boto3.client(
        "iam", endpoint_url=moto, region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b"
    )
    name = f"exporter-{uuid.uuid4().hex[:8]}"
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
    iam.put_user_policy(UserName=name, PolicyName="s3", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    contract.register_secret(key["SecretAccessKey"])
    requests.post(f"{moto}/moto-api/reset-auth", data=b"0", timeout=10).raise_for_status()
    try:
        yield key["AccessKeyId"], key["SecretAccessKey"]
    finally:
        requests.post(f"{moto}/moto-api/reset-auth", data=b"inf", timeout=10).raise_for_status()


def test_the_right_credentials_export(source, moto, admin, bucket, iam_auth):
    key_id, secret = iam_auth
    config = s3_config(moto, bucket, prefix="auth", aws_access_key_id=key_id, aws_secret_access_key=secret)
    export(run_of(config), source[0])
    with pytest.raises(ClientError):  # authentication is really on: the admin's made-up key is refused
        admin.list_objects_v2(Bucket=bucket)
    reader = S3ObjectStore(config)
    assert reader.list_keys("auth/") == [f"auth/{BASE[MIXED]}.jsonl"]
    assert_same_rows(decode(reader.get(f"auth/{BASE[MIXED]}.jsonl"), "JSONLines", None), source[1][MIXED])


@pytest.mark.parametrize(
    ("wrong", "expected"),
    [
        ("secret", r"SignatureDoesNotMatch.*aws_secret_access_key"),
        ("key id", r"InvalidAccessKeyId.*aws_access_key_id"),
    ],
)
def test_wrong_credentials_are_non_retryable_and_never_shown(source, moto, bucket, iam_auth, wrong, expected):
    key_id, secret = iam_auth
    bad_secret, bad_key_id = "wrong-secret-value-0123456789", "AKIAWRONGKEYID000000"
    if wrong == "secret":
        config = s3_config(moto, bucket, aws_access_key_id=key_id, aws_secret_access_key=bad_secret)
    else:
        config = s3_config(moto, bucket, aws_access_key_id=bad_key_id, aws_secret_access_key=secret)
    with pytest.raises(NonRetryableError) as raised:
        export(run_of(config), source[0])
    assert re.search(expected, str(raised.value))
    with pytest.raises(NonRetryableError) as head:
        S3ObjectStore(config).head_bucket()  # HEAD has no error body: S3 only says 403
    assert "denied" in str(head.value) and "aws_secret_access_key" in str(head.value)
    for message in (str(raised.value), str(head.value)):
        for value in (secret, bad_secret, key_id, bad_key_id):
            assert value not in message


def test_without_keys_the_default_credential_chain_is_used(source, moto, admin, bucket, iam_auth, monkeypatch):
    key_id, secret = iam_auth
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key_id)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    config = s3_config(moto, bucket, prefix="env", aws_access_key_id=None, aws_secret_access_key=None)
    assert config["aws_access_key_id"] is None
    export(run_of(config), source[0])
    rows = decode(S3ObjectStore(config).get(f"env/{BASE[MIXED]}.jsonl"), "JSONLines", None)
    assert_same_rows(rows, source[1][MIXED])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(NonRetryableError, match="SignatureDoesNotMatch"):
        export(run_of(config), source[0])


def test_an_unreachable_endpoint_is_retryable_after_botocores_retries(source, monkeypatch):
    """A closed loopback port; botocore's own retries are cut to one attempt to keep the test fast."""
    monkeypatch.setattr(s3_store, "MAX_ATTEMPTS", 1)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(RetryableError, match="Could not connect to the S3-compatible endpoint") as raised:
        export(run_of(s3_config(f"http://127.0.0.1:{port}", "exports")), source[0])
    assert isinstance(raised.value.__cause__, EndpointConnectionError)
    assert SECRET not in str(raised.value)


def client_error(
    code: str, status: int, message: str = "", operation: str = "PutObject", **headers: str
) -> ClientError:
    return ClientError(
        {
            "Error": {"Code": code, "Message": message},
            "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": headers},
        },
        operation,
    )


CLASSIFIED = [
    # (error S3 answers, retryable?, words the message must contain)
    (client_error("AccessDenied", 403, "Access Denied"), False, ["denied", "'analytics'", "s3:PutObject"]),
    (client_error("InvalidToken", 400, "The provided token is malformed"), False, ["InvalidToken", "credentials"]),
    (client_error("ExpiredToken", 400, "The provided token has expired"), False, ["expired"]),
    (client_error("KMS.NotFoundException", 400, "Invalid keyId k-1"), False, ["KMS key 'k-1'", "kms_key_id"]),
    (client_error("KMS.DisabledException", 400, "k-1 is disabled"), False, ["KMS key 'k-1'"]),
    (client_error("AccessDenied", 403, "not authorized to perform kms:GenerateDataKey on key"), False, ["KMS key"]),
    (
        client_error("PermanentRedirect", 301, "", **{"x-amz-bucket-region": "us-west-2"}),
        False,
        ["'us-west-2'", "region"],
    ),
    (client_error("SlowDown", 503, "Please reduce your request rate."), True, ["SlowDown", "retrying"]),
    (client_error("InternalError", 500, "We encountered an internal error."), True, ["InternalError"]),
    (client_error("ServiceUnavailable", 503), True, ["ServiceUnavailable"]),
    (client_error("KMS.ThrottlingException", 400), True, ["KMS"]),
    (client_error("InvalidArgument", 400, "Bad header"), False, ["InvalidArgument"]),
]


@pytest.mark.parametrize(
    ("error", "retryable", "words"), CLASSIFIED, ids=[e.response["Error"]["Code"] for e, *_ in CLASSIFIED]
)
def test_errors_moto_cannot_produce_are_classified_by_their_s3_code(error, retryable, words):
    """moto accepts any KMS key id and never throttles, fails or checks session tokens: these are
    botocore ClientErrors built here with the codes S3 answers."""
    config = s3_config("http://localhost:1", "analytics", encryption="aws:kms", kms_key_id="k-1")
    classified = classify(error, config, "uploading 'x.parquet'")
    assert isinstance(classified, RetryableError if retryable else NonRetryableError)
    for word in words:
        assert word in str(classified)
    assert SECRET not in str(classified) and KEY_ID not in str(classified)


def test_a_message_quoting_a_key_is_scrubbed():
    config = s3_config("http://localhost:1", "analytics")
    error = client_error("WeirdError", 400, f"credential {KEY_ID}/{SECRET} rejected")
    message = str(classify(error, config, "testing"))
    assert SECRET not in message and KEY_ID not in message and "***" in message


# -- destination tests through the API -----------------------------------------------------------


@pytest.fixture
def base(project: Any) -> str:
    return prefix_for("projects", project)


def test_the_api_lists_the_s3_test_steps(api, base):
    response = api.get(f"{base}test/", {"destination": "S3"})
    assert response.status_code == 200
    steps = response.json()["steps"]
    assert [step["name"] for step in steps] == ["Connect to the bucket", "Write and delete a test object"]
    assert all(step["description"] for step in steps)


def test_both_steps_pass_against_the_bucket_and_leave_it_empty(api, base, moto, admin, bucket, monkeypatch):
    urls = record_request_urls(monkeypatch)
    destination = s3_destination(
        bucket_name=bucket, endpoint_url=moto, prefix="posthog/{year}/{month}", encryption="AES256"
    )
    for step, name in enumerate(["Connect to the bucket", "Write and delete a test object"]):
        response = api.post(f"{base}run_test_step_new/", {"step": step, "destination": destination}, format="json")
        assert response.status_code == 200, response.json()
        assert response.json()["name"] == name
        assert response.json()["result"] == {"status": "Passed", "message": None}
    now = dt.datetime.now(dt.UTC)
    test_object = rf"{moto}/{bucket}/posthog/{now:%Y}/{now:%m}/\.batchexports-test-[0-9a-f]{{32}}"
    assert re.fullmatch(f"{moto}/{bucket}", urls[0])  # HeadBucket
    assert re.fullmatch(test_object, urls[1]) and urls[2] == urls[1]  # PutObject, GetObject
    assert object_keys(admin, bucket) == []


def test_steps_fail_with_a_clear_message_for_a_missing_bucket(api, base, moto):
    destination = s3_destination(bucket_name="missing-bucket-xyz", endpoint_url=moto)
    for step in (0, 1):
        response = api.post(f"{base}run_test_step_new/", {"step": step, "destination": destination}, format="json")
        assert response.status_code == 200
        result = response.json()["result"]
        assert result["status"] == "Failed"
        assert "The bucket 'missing-bucket-xyz' does not exist in region 'eu-west-1'" in result["message"]


def test_steps_fail_without_showing_a_secret_for_wrong_credentials(api, base, moto, bucket, iam_auth):
    key_id, _ = iam_auth
    # the CheckedAPIClient fails the test if a registered secret appears in any response
    destination = s3_destination(
        bucket_name=bucket, endpoint_url=moto, aws_access_key_id=contract.register_secret(key_id)
    )
    first = api.post(f"{base}run_test_step_new/", {"step": 0, "destination": destination}, format="json").json()
    second = api.post(f"{base}run_test_step_new/", {"step": 1, "destination": destination}, format="json").json()
    assert first["result"]["status"] == second["result"]["status"] == "Failed"
    assert "denied" in first["result"]["message"]
    assert "SignatureDoesNotMatch" in second["result"]["message"]
    assert "aws_secret_access_key" in second["result"]["message"]


def test_run_test_step_of_a_saved_s3_export_uses_its_stored_secrets(api, base, moto, bucket, iam_auth, engine):
    key_id, secret = iam_auth
    destination = s3_destination(
        bucket_name=bucket,
        endpoint_url=moto,
        aws_access_key_id=contract.register_secret(key_id),
        aws_secret_access_key=secret,
    )
    created = api.post(base, {"name": "To moto", "interval": "hour", "destination": destination}, format="json")
    assert created.status_code == 201, created.json()
    for step in (0, 1):
        response = api.post(f"{base}{created.json()['id']}/run_test_step/", {"step": step}, format="json")
        assert response.json()["result"] == {"status": "Passed", "message": None}


# -- PostHog's current types through the API: AwsS3, S3Compatible, NoOp --------------------------


def family_destination(destination_type: str, moto: str, bucket: str, **config: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "bucket_name": bucket,
        "region": REGION,
        "prefix": "posthog/{table}",
        "aws_access_key_id": contract.register_secret(KEY_ID),
        "aws_secret_access_key": contract.register_secret(SECRET),
        "file_format": "Parquet",
        "compression": "zstd",
    }
    if destination_type in ("S3Compatible", "S3"):
        base["endpoint_url"] = moto
    return {"type": destination_type, "config": {**base, **config}}


def export_stored(batch_export_id: str, store: DuckDBEventsStore, start: dt.datetime = MIXED) -> ExportResult:
    """Export one interval of a saved export as the worker does: a run row, the run book's
    `ExportRun` of it (the stored config with its secrets), the pipeline. Only the Temporal
    schedule is left out, and the module's events belong to team TEAM, so the run reads that team."""
    import dataclasses

    from batchexports.exports.models import BatchExport, BatchExportRun
    from batchexports.exports.run_book import DjangoRunBook

    run = BatchExportRun.objects.create(
        batch_export=BatchExport.objects.get(id=batch_export_id),
        status="Running",
        data_interval_start=start,
        data_interval_end=start + HOUR,
    )
    return export(dataclasses.replace(DjangoRunBook().load_run(str(run.id)), team_id=TEAM), store)


@pytest.fixture
def aws_endpoint(moto: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """AwsS3 has no endpoint field (as in PostHog): boto3's own `AWS_ENDPOINT_URL_S3` points the
    service at moto, as it would at any AWS-compatible test endpoint."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto)
    return moto


@pytest.mark.parametrize("destination_type", ["AwsS3", "S3Compatible", "S3"])
def test_each_s3_type_is_created_read_updated_and_exported_through_the_api(
    api, base, engine, source, moto, admin, bucket, aws_endpoint, destination_type
):
    store, data = source
    created = api.post(
        base,
        {
            "name": destination_type,
            "interval": "hour",
            "destination": family_destination(destination_type, moto, bucket),
        },
        format="json",
    )
    assert created.status_code == 201, created.json()
    export_id = created.json()["id"]
    config = api.get(f"{base}{export_id}/").json()["destination"]["config"]
    assert created.json()["destination"]["type"] == destination_type
    assert config["bucket_name"] == bucket and config["legacy_parquet_extension"] is False
    assert "aws_access_key_id" not in config and "aws_secret_access_key" not in config

    patched = api.patch(
        f"{base}{export_id}/",
        {"destination": {"type": destination_type, "config": {"prefix": "moved/{table}/{hour}"}}},
        format="json",
    )
    assert patched.status_code == 200, patched.json()
    assert patched.json()["destination"]["config"]["prefix"] == "moved/{table}/{hour}"

    result = export_stored(export_id, store)  # the secrets kept through the PATCH sign the requests
    key = f"moved/events/11/{BASE[MIXED]}.parquet"
    assert object_keys(admin, bucket) == [key]
    assert result.records_completed == 40
    assert_same_rows(decode(body(admin, bucket, key), "Parquet", "zstd"), data[MIXED])


def test_a_legacy_s3_export_saved_before_the_split_is_read_and_updated(api, base, engine, moto, bucket):
    created = api.post(
        base, {"name": "old", "interval": "hour", "destination": s3_destination(endpoint_url=moto)}, format="json"
    )
    assert created.status_code == 201, created.json()
    patched = api.patch(
        f"{base}{created.json()['id']}/", {"destination": {"config": {"bucket_name": bucket}}}, format="json"
    )
    assert patched.status_code == 200, patched.json()
    assert patched.json()["destination"]["type"] == "S3"
    assert patched.json()["destination"]["config"]["bucket_name"] == bucket


@pytest.mark.parametrize(
    ("destination_type", "change", "attr"),
    [
        ("S3Compatible", {"endpoint_url": ...}, "destination__config__endpoint_url"),
        ("S3Compatible", {"endpoint_url": "minio:9000"}, "destination__config__endpoint_url"),
        ("AwsS3", {"endpoint_url": "http://localhost:9000"}, "destination__config__endpoint_url"),
        ("AwsS3", {"prefix": ""}, "destination__config__prefix"),
        ("AwsS3", {"prefix": ...}, "destination__config__prefix"),
        ("S3Compatible", {"region": ...}, "destination__config__region"),
        ("AwsS3", {"aws_secret_access_key": ...}, "destination__config__aws_secret_access_key"),
    ],
)
def test_invalid_configs_of_the_new_types_are_400_naming_the_field(
    api, base, engine, moto, destination_type, change, attr
):
    destination = family_destination(destination_type, moto, "b")
    for name, value in change.items():
        if value is ...:
            destination["config"].pop(name)
        else:
            destination["config"][name] = value
    response = api.post(base, {"name": "x", "interval": "hour", "destination": destination}, format="json")
    assert response.status_code == 400
    assert response.json()["type"] == "validation_error"
    assert response.json()["attr"] == attr, response.json()


def test_legacy_parquet_extension_keeps_the_codec_and_cannot_be_turned_back_on(
    api, base, engine, source, moto, admin, bucket
):
    store, _ = source
    on = family_destination("S3Compatible", moto, bucket, prefix="on", legacy_parquet_extension=True)
    created = api.post(base, {"name": "on", "interval": "hour", "destination": on}, format="json")
    assert created.status_code == 201, created.json()
    assert created.json()["destination"]["config"]["legacy_parquet_extension"] is True
    export_stored(created.json()["id"], store)
    assert object_keys(admin, bucket) == [f"on/{BASE[MIXED]}.parquet.zst"]

    off = api.post(
        base,
        {"name": "off", "interval": "hour", "destination": family_destination("S3Compatible", moto, bucket)},
        format="json",
    ).json()
    again = api.patch(
        f"{base}{off['id']}/",
        {"destination": {"type": "S3Compatible", "config": {"legacy_parquet_extension": True}}},
        format="json",
    )
    assert again.status_code == 400
    assert again.json()["attr"] == "destination__config__legacy_parquet_extension"
    kept_on = api.patch(
        f"{base}{created.json()['id']}/",
        {"destination": {"type": "S3Compatible", "config": {"legacy_parquet_extension": True}}},
        format="json",
    )
    assert kept_on.status_code == 200, kept_on.json()


class UnreadableStore:
    """A stand-in events store (a fake, on purpose) that fails the test if anything reads it."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"NoOp read the events store ({name})")


def test_noop_accepts_any_config_and_its_runs_complete_without_reading_or_exporting(api, base, engine, source):
    destination = {"type": "NoOp", "config": {"arg": "hi", "whatever": {"nested": [1, 2]}}}
    created = api.post(base, {"name": "noop", "interval": "hour", "destination": destination}, format="json")
    assert created.status_code == 201, created.json()
    export_id = created.json()["id"]
    assert api.get(f"{base}{export_id}/").json()["destination"] == {**destination, "integration": None}
    patched = api.patch(f"{base}{export_id}/", {"destination": {"config": {"arg": "bye"}}}, format="json")
    assert patched.status_code == 200, patched.json()
    assert patched.json()["destination"]["config"] == {"arg": "bye", "whatever": {"nested": [1, 2]}}
    result = export_stored(export_id, UnreadableStore())  # type: ignore[arg-type]
    assert (result.records_completed, result.bytes_exported, result.files, result.records_total_count) == (
        0,
        0,
        (),
        0,
    )
    assert api.get(f"{base}test/", {"destination": "NoOp"}).status_code == 404  # no steps, as in PostHog


@pytest.mark.parametrize("destination_type", ["AwsS3", "S3Compatible"])
def test_the_test_steps_know_the_new_types_and_pass_against_moto(
    api, base, moto, admin, bucket, aws_endpoint, destination_type
):
    steps = api.get(f"{base}test/", {"destination": destination_type})
    assert steps.status_code == 200
    assert [s["name"] for s in steps.json()["steps"]] == ["Connect to the bucket", "Write and delete a test object"]
    destination = family_destination(destination_type, moto, bucket)
    for step in (0, 1):
        response = api.post(f"{base}run_test_step_new/", {"step": step, "destination": destination}, format="json")
        assert response.status_code == 200, response.json()
        assert response.json()["result"] == {"status": "Passed", "message": None}
    missing = family_destination(destination_type, moto, "missing-bucket-xyz")
    failed = api.post(f"{base}run_test_step_new/", {"step": 0, "destination": missing}, format="json").json()
    assert failed["result"]["status"] == "Failed" and "missing-bucket-xyz" in failed["result"]["message"]


def test_the_openapi_schema_describes_the_new_types(api):
    document = json.loads(api.get("/api/schema/", {"format": "json"}).content)
    schemas = document["components"]["schemas"]
    mapping = schemas["BatchExportDestination"]["discriminator"]["mapping"]
    assert {"AwsS3", "S3Compatible", "NoOp", "S3"} <= set(mapping)

    def config_of(destination_type: str) -> dict[str, Any]:
        variant = schemas[mapping[destination_type].removeprefix("#/components/schemas/")]
        config = variant["properties"]["config"]
        return schemas[config["$ref"].removeprefix("#/components/schemas/")] if "$ref" in config else config

    compatible, aws = config_of("S3Compatible"), config_of("AwsS3")
    assert {"bucket_name", "region", "prefix", "endpoint_url"} <= set(compatible["required"])
    assert {"use_virtual_style_addressing", "legacy_parquet_extension"} <= set(compatible["properties"])
    assert {"encryption", "kms_key_id", "legacy_parquet_extension"} <= set(aws["properties"])
    assert "endpoint_url" not in aws["properties"]
    assert "arg" in config_of("NoOp")["properties"]
