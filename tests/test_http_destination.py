"""The HTTP destination: events POSTed in PostHog's `/batch/` format.

The main tests send to batchexports' own capture endpoint, served by pytest-django's
`live_server`: events exported from one project's store arrive in another project, identical.
Retries and fail-fast are tested against a stub HTTP server on 127.0.0.1 (a stub: it answers
with scripted statuses, so that 5xx, 429 and 4xx can be produced on demand).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from batchexports.core.errors import NonRetryableError, RetryableError
from batchexports.core.run import Progress
from batchexports.destinations.http import sink as http_sink
from batchexports.destinations.http.sink import HttpSink, batch_bodies
from batchexports.destinations.testing import run_step
from batchexports.events.store import ModelQuery
from batchexports.pipeline.export import export, model_query
from tests.exports_fixtures import HOUR, T0, file_run, known_events, store_with

TOKEN = "phc_receiver_token_that_must_not_leak"
FAR = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


def received(store: Any, team_id: int) -> dict[str, tuple]:
    """uuid -> (event, distinct_id, timestamp, properties, elements_chain) of what the model exports."""
    table = store.read(ModelQuery("events", team_id, None, FAR)).read_all()
    return {
        r["uuid"]: (r["event"], r["distinct_id"], r["timestamp"], json.loads(r["properties"]), r["elements_chain"])
        for r in table.to_pylist()
    }


def sent_rows(source: Any) -> dict[str, tuple]:
    return {
        r["uuid"]: (r["event"], r["distinct_id"], r["timestamp"], json.loads(r["properties"]), r["elements_chain"])
        for r in source.to_pylist()
    }


@pytest.fixture
def source_store(tmp_path: Any) -> Any:
    folder = tmp_path / "source"
    folder.mkdir()
    return store_with(folder, known_events(300))


def test_events_exported_from_one_project_arrive_in_another_identical(
    live_server, project, sibling_project, events_store, source_store
):
    config = {"url": f"{live_server.url}/batch/", "token": sibling_project.api_token}
    result = export(file_run(config, "HTTP"), source_store)
    assert result.records_completed == 300
    assert result.bytes_exported > 0
    expected = sent_rows(known_events(300))
    assert received(events_store, sibling_project.id) == expected
    assert received(events_store, project.id) == {}, "nothing lands in another project"

    # Re-sending the interval (a retry, a backfill) does not duplicate what the events model exports.
    export(file_run(config, "HTTP"), source_store)
    assert events_store.count(ModelQuery("events", sibling_project.id, None, FAR)) == 300
    assert received(events_store, sibling_project.id) == expected


def test_large_intervals_are_split_into_bounded_gzipped_requests(
    live_server, sibling_project, events_store, source_store, monkeypatch
):
    bodies: list[tuple[int, str | None]] = []
    original = HttpSink.post

    def counting(self: HttpSink, client: Any, body: bytes, cancel: Any = None) -> int:
        sent = original(self, client, body, cancel)
        bodies.append((len(body), "gzip" if sent < len(body) else None))
        return sent

    monkeypatch.setattr(HttpSink, "post", counting)
    monkeypatch.setattr(http_sink, "MAX_EVENTS", 120)
    monkeypatch.setattr(http_sink, "GZIP_ABOVE", 1024)
    progress: list[int] = []
    config = {"url": f"{live_server.url}/batch/", "token": sibling_project.api_token}
    result = export(file_run(config, "HTTP"), source_store, progress=lambda p: progress.append(p.records_completed))
    assert len(bodies) == 3, "300 events at most 120 per request"
    assert all(encoding == "gzip" for _, encoding in bodies)
    assert progress == [120, 240, 300]
    assert result.bytes_exported < sum(size for size, _ in bodies), "gzip made the requests smaller"
    assert received(events_store, sibling_project.id) == sent_rows(known_events(300))


def test_batch_bodies_respect_the_byte_and_event_limits():
    events = [json.dumps({"uuid": str(i), "pad": "x" * 100}).encode() for i in range(50)]
    bodies = list(batch_bodies(events, TOKEN, max_body_bytes=1000, max_events=7))
    decoded = [json.loads(body) for body, _ in bodies]
    assert all(len(body) <= 1000 for body, _ in bodies)
    assert all(len(d["batch"]) <= 7 for d in decoded)
    assert [e["uuid"] for d in decoded for e in d["batch"]] == [str(i) for i in range(50)]
    assert [count for _, count in bodies] == [len(d["batch"]) for d in decoded]
    assert decoded[0]["api_key"] == TOKEN and decoded[0]["historical_migration"] is True
    huge = [b'{"uuid":"big","pad":"' + b"y" * 5000 + b'"}']
    (alone,) = list(batch_bodies(huge, TOKEN, max_body_bytes=1000))
    assert json.loads(alone[0])["batch"][0]["uuid"] == "big", "an event larger than the limit goes alone"


def test_an_event_carries_its_set_properties_and_elements_chain():
    row = {
        "uuid": "0190f7a4-0000-7000-8000-000000000001",
        "event": "$autocapture",
        "distinct_id": "ada",
        "timestamp": dt.datetime(2024, 5, 1, 10, 0, 1, 250000, tzinfo=dt.UTC),
        "properties": json.dumps({"$set": {"plan": "pro"}, "$set_once": {"first": "x"}, "a": 1}),
        "elements_chain": 'button:text="Buy"',
        "team_id": 3,
        "person_properties": "{}",
    }
    assert http_sink.capture_event(row) == {
        "uuid": row["uuid"],
        "event": "$autocapture",
        "distinct_id": "ada",
        "timestamp": "2024-05-01T10:00:01.250000Z",
        "properties": {"$set": {"plan": "pro"}, "$set_once": {"first": "x"}, "a": 1,
                       "$elements_chain": 'button:text="Buy"'},
    }  # fmt: skip


class StubServer:
    """A stub capture endpoint on 127.0.0.1: answers each request with the next scripted
    (status, headers, body), records what it received, and stops after the test."""

    def __init__(self, script: list[tuple[int, dict[str, str], bytes]]):
        self.script = list(script)
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                stub.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, headers, answer = stub.script.pop(0) if stub.script else (500, {}, b"script exhausted")
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/batch/"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def events(self, index: int) -> list[dict[str, Any]]:
        request = self.requests[index]
        body = request["body"]
        if request["headers"].get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        return json.loads(body)["batch"]


@pytest.fixture
def stub() -> Iterator[Any]:
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


def run_sink(tmp_path: Any, url: str, count: int = 10, **options: Any) -> tuple[Any, list[Progress]]:
    store = store_with(tmp_path, known_events(count))
    run = file_run({"url": url, "token": TOKEN}, "HTTP")
    reader = store.read(model_query(run))
    sink = HttpSink(run.destination_config, backoff_seconds=0.01, **options)
    progress: list[Progress] = []
    return sink.export(run, reader, reader.schema, progress.append, None), progress


OK = (200, {"Content-Type": "application/json"}, b'{"status": 1}')


def test_5xx_and_429_are_retried_with_backoff_then_succeed(tmp_path, stub):
    server = stub((503, {}, b"busy"), (502, {}, b"bad gateway"), (429, {"Retry-After": "0"}, b"slow down"), OK)
    result, _ = run_sink(tmp_path, server.url)
    assert result.records == 10
    assert len(server.requests) == 4
    assert len({r["body"] for r in server.requests}) == 1, "every attempt sends the same body"
    assert [e["uuid"] for e in server.events(3)] == known_events(10).column("uuid").to_pylist()
    first = json.loads(server.requests[0]["body"])
    assert first["api_key"] == TOKEN and first["historical_migration"] is True


def test_a_server_that_keeps_failing_gives_a_retryable_error_after_bounded_attempts(tmp_path, stub):
    server = stub(*[(500, {}, f"oops {TOKEN}".encode())] * 10)
    with pytest.raises(RetryableError, match="failed 3 times") as caught:
        run_sink(tmp_path, server.url, max_attempts=3)
    assert len(server.requests) == 3
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (400, b'{"type": "validation_error", "detail": "Invalid event: event 0 has no distinct_id."}',
         "rejected the events with 400: Invalid event: event 0 has no distinct_id."),
        (401, b'{"detail": "Project API key invalid."}', "the token is not a valid project API key"),
        (404, b"not found", "there is no capture endpoint at this URL; check 'url'"),
    ],
)  # fmt: skip
def test_other_4xx_fail_at_once_without_retry(tmp_path, stub, status, body, message):
    server = stub((status, {"Content-Type": "application/json"}, body), OK)
    with pytest.raises(NonRetryableError, match=message) as caught:
        run_sink(tmp_path, server.url)
    assert len(server.requests) == 1, "a 4xx is not retried"
    assert TOKEN not in str(caught.value)


def test_an_unreachable_endpoint_is_retryable(tmp_path, stub):
    server = stub()
    url = server.url
    server.server.shutdown()
    server.server.server_close()
    with pytest.raises(RetryableError, match="ConnectError"):
        run_sink(tmp_path, url, max_attempts=2)


def test_destination_test_steps_against_the_capture_endpoint(live_server, sibling_project, events_store):
    from batchexports.destinations import registry

    steps = registry.get("HTTP").test_steps
    good = {"url": f"{live_server.url}/batch/", "token": sibling_project.api_token}
    for index in range(len(steps)):
        assert run_step(steps, index, good, {"token": good["token"]})["result"]["status"] == "Passed"
    assert events_store.count(ModelQuery("events", sibling_project.id, None, FAR)) == 0, "the test sends no event"

    bad = {**good, "token": TOKEN}
    result = run_step(steps, 1, bad, {"token": TOKEN})["result"]
    assert result["status"] == "Failed"
    assert "the token is not a valid project API key" in result["message"]
    assert TOKEN not in result["message"]

    nowhere = {**good, "url": f"{live_server.url}/no-such-endpoint/"}
    result = run_step(steps, 0, nowhere, {"token": good["token"]})["result"]
    assert result["status"] == "Failed" and "no capture endpoint" in result["message"]


def test_the_test_request_accepts_an_endpoint_that_refuses_empty_batches(stub):
    """A stub answering as PostHog's capture does to a batch without events."""
    from batchexports.destinations import registry

    steps = registry.get("HTTP").test_steps
    server = stub((400, {"Content-Type": "application/json"}, b'{"detail": "Empty batch"}'), (503, {}, b"down"))
    config = {"url": server.url, "token": TOKEN}
    assert run_step(steps, 1, config, {"token": TOKEN})["result"]["status"] == "Passed"
    assert json.loads(server.requests[0]["body"]) == {"api_key": TOKEN, "historical_migration": True, "batch": []}
    result = run_step(steps, 1, config, {"token": TOKEN})["result"]
    assert result["status"] == "Failed" and "answered 503" in result["message"] and TOKEN not in result["message"]


def test_only_the_events_model_can_be_sent(tmp_path):
    sink = HttpSink({"url": "http://127.0.0.1:9/batch/", "token": TOKEN})
    run = file_run({"url": "x", "token": TOKEN}, "HTTP", model="persons", start=T0, end=T0 + HOUR)
    with pytest.raises(NonRetryableError, match="only the events model"):
        sink.export(run, [], None, None, None)  # type: ignore[arg-type]
