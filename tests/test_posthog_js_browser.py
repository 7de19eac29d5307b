"""posthog-js, as it is shipped, on a web page in a real browser, pointed at the live service.

What is real: `batchexports up` in its own process (tests/service_process.py: embedded Temporal,
worker, DuckDB store), posthog-js's browser bundle from node_modules (`dist/array.full.js`, the
version in node_modules/posthog-js/package.json, 1.449.2 when written), served by a threaded
`http.server` on loopback from another origin than the service (so CORS is exercised), Debian's
Chromium (/usr/bin/chromium, headless) driven by Playwright, `navigator.sendBeacon` itself, the
batch export created and backfilled through the REST API, and the files the File destination wrote.

Nothing is faked. The only page option that differs from a site's is `opt_out_useragent_filter`:
headless Chromium's user agent is otherwise taken for a bot and nothing is sent. posthog-js's events
are live events (stored with `_inserted_at` = now), so the export waits for the current 5-minute
interval to end, once for the module (`export_live_events`).
"""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.service_process import Service, export_live_events, now_utc, properties_of, running_service
from tests.web_support import CHROMIUM, CHROMIUM_ARGS  # skips the module without playwright, as the web tests

pytestmark = pytest.mark.slow

POSTHOG_JS = Path(__file__).resolve().parents[1] / "node_modules" / "posthog-js"
BUNDLE = POSTHOG_JS / "dist" / "array.full.js"  # posthog-js with every extension: nothing lazy-loaded
GZIP_MAGIC = b"\x1f\x8b"
PAGE_EVENTS = {"$pageview", "$identify", "custom"}
BEACON_EVENTS = {"beaconed", "beacon_string", "beacon_blob", "beacon_form"}
USER = "user-42"

for missing, reason in (
    (not BUNDLE.is_file(), "posthog-js is not installed in node_modules (npm ci)"),
    (not CHROMIUM.is_file(), f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"),
):
    if missing and os.environ.get("CI"):
        raise RuntimeError(f"{reason} (required in CI)")
    if missing:
        pytest.skip(reason, allow_module_level=True)


def posthog_js_version() -> str:
    return json.loads((POSTHOG_JS / "package.json").read_text())["version"]


# -- the page --------------------------------------------------------------------------------------


def page_html(api_host: str, token: str) -> str:
    """A site's page: posthog-js as a script tag, init, identify, a custom event, then beacons.

    The beacons are sent twice over: by posthog-js itself (`transport: 'sendBeacon'`) and by hand,
    with the three body kinds `navigator.sendBeacon` takes (a string, a Blob of gzip, FormData), each
    carrying what posthog-js would send.
    """
    config = {"api_host": api_host, "opt_out_useragent_filter": True}
    return f"""<!doctype html>
<html>
<head>
<meta charset="utf-8">
<link rel="icon" href="data:,">
<title>posthog-js against batchexports</title>
<script src="/posthog.js"></script>
<script>
posthog.init({json.dumps(token)}, {json.dumps(config)});
window.anonymousId = posthog.get_distinct_id();
posthog.identify({json.dumps(USER)}, {{email: "someone@example.com"}});
posthog.capture("custom", {{plan: "pro", seats: 3, nested: {{ok: true}}}});
posthog.capture("beaconed", {{via: "posthog"}}, {{transport: "sendBeacon"}});

const beaconUrl = {json.dumps(api_host)} + "/e/?beacon=1";
const payload = (name) => JSON.stringify({{
  api_key: {json.dumps(token)},
  batch: [{{event: name, distinct_id: {json.dumps(USER)}, properties: {{via: name}}}}],
}});
window.beacons = (async () => {{
  const queued = [navigator.sendBeacon(beaconUrl, payload("beacon_string"))];
  const gzipped = new Blob([payload("beacon_blob")]).stream().pipeThrough(new CompressionStream("gzip"));
  const blob = new Blob([await new Response(gzipped).arrayBuffer()], {{type: "text/plain"}});
  queued.push(navigator.sendBeacon(beaconUrl, blob));
  const form = new FormData();
  form.append("data", btoa(payload("beacon_form")));
  queued.push(navigator.sendBeacon(beaconUrl + "&compression=base64", form));
  return queued;
}})();
</script>
</head>
<body><h1>Hello</h1></body>
</html>
"""


class _PageServer(ThreadingHTTPServer):
    daemon_threads = True
    html = b""


class _PageHandler(BaseHTTPRequestHandler):
    """`/` is the page, `/posthog.js` the bundle from node_modules; anything else a 404 (counted as failed)."""

    server: _PageServer

    def do_GET(self) -> None:
        if self.path == "/":
            body, kind = self.server.html, "text/html; charset=utf-8"
        elif self.path == "/posthog.js":
            body, kind = BUNDLE.read_bytes(), "application/javascript"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    with running_service(tmp_path_factory.mktemp("posthog-js") / "data") as running:
        yield running


@pytest.fixture(scope="module")
def page_url(service: Service) -> Iterator[str]:
    server = _PageServer(("127.0.0.1", 0), _PageHandler)
    server.html = page_html(service.url, str(service.project_api_key)).encode()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()
    thread.join(10)


# -- one visit of the page, everything it did recorded -------------------------------------------


@dataclass
class SentRequest:
    method: str
    url: str
    headers: dict[str, str]
    body: bytes | None  # a Blob beacon's is not handed to Playwright
    resource_type: str
    status: int | None = None

    @property
    def path(self) -> str:
        return urlsplit(self.url).path

    @property
    def query(self) -> dict[str, list[str]]:
        return parse_qs(urlsplit(self.url).query)

    def event_names(self) -> set[str]:
        """The events in a posthog-js body (gzip of a JSON array, or of `{"batch": [...]}`)."""
        if not self.body or not self.body.startswith(GZIP_MAGIC):
            return set()
        decoded = json.loads(gzip.decompress(self.body))
        events = decoded.get("batch", []) if isinstance(decoded, dict) else decoded
        return {event["event"] for event in events}


@dataclass
class Visit:
    started: dt.datetime
    ended: dt.datetime = field(init=False)
    anonymous_id: str = ""
    beacons_queued: list[bool] = field(default_factory=list)
    sent: list[SentRequest] = field(default_factory=list)  # to the service
    failed: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)

    def summary(self) -> list[tuple[str, str, int | None, str, int, set[str]]]:
        return [(r.method, r.url, r.status, r.resource_type, len(r.body or b""), r.event_names()) for r in self.sent]

    def to(self, path: str) -> list[SentRequest]:
        return [request for request in self.sent if request.path == path]

    def answered(self) -> list[SentRequest]:
        return [request for request in self.sent if request.status is not None]

    def events_sent_by_fetch(self) -> set[str]:
        return {name for request in self.to("/e/") for name in request.event_names()}


def wait_in_page(page: Any, check: Any, timeout: float, what: str, seen: Any) -> None:
    """Poll `check` while Playwright dispatches the page's events (a plain sleep would not)."""
    deadline = dt.datetime.now() + dt.timedelta(seconds=timeout)
    while not check():
        if dt.datetime.now() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; seen: {seen()!r}")
        page.wait_for_timeout(100)


@pytest.fixture(scope="module")
def visit(service: Service, page_url: str) -> Visit:
    """Open the page once in headless Chromium and wait until everything posthog-js sends is answered."""
    record = Visit(started=now_utc())
    by_request: dict[Any, SentRequest] = {}

    def on_request(request: Any) -> None:
        if request.url.startswith(service.url):
            sent = SentRequest(
                request.method, request.url, dict(request.headers), request.post_data_buffer, request.resource_type
            )
            by_request[request] = sent
            record.sent.append(sent)

    def on_response(response: Any) -> None:
        if response.request in by_request:
            by_request[response.request].status = response.status

    def on_console(message: Any) -> None:
        if message.type == "error":
            record.console_errors.append(f"{message.text} ({message.location})")

    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("request", on_request)
            page.on("response", on_response)
            page.on("requestfailed", lambda request: record.failed.append(f"{request.url}: {request.failure}"))
            page.on("console", on_console)
            page.on("pageerror", lambda error: record.console_errors.append(f"uncaught: {error}"))
            page.goto(page_url)
            record.anonymous_id = page.evaluate("window.anonymousId")
            record.beacons_queued = page.evaluate("window.beacons")

            def all_sent() -> bool:
                beacons = [r for r in record.to("/e/") if r.resource_type == "ping" and r.status is not None]
                return (
                    record.events_sent_by_fetch() >= PAGE_EVENTS
                    and len(beacons) >= len(BEACON_EVENTS)  # posthog-js's own beacon and our three
                    and len(record.answered()) == len(record.sent)
                )

            wait_in_page(
                page,
                lambda: all_sent() or bool(record.failed),
                30,
                "posthog-js's requests to be answered",
                seen=lambda: (record.summary(), record.failed, record.console_errors),
            )
            page.close()
        finally:
            browser.close()
    record.ended = now_utc()
    return record


# -- what posthog-js sent, and how it was answered -----------------------------------------------


def test_posthog_js_runs_on_the_page_with_no_failed_request_and_no_console_error(visit: Visit) -> None:
    assert posthog_js_version() == "1.449.2", "the version this suite was written against (package.json)"
    assert visit.failed == []
    assert [(r.method, r.url, r.status) for r in visit.sent if (r.status or 0) >= 400] == []
    assert visit.console_errors == []
    # What it calls at start-up answered: the flags (v2) and the remote config script.
    flags = visit.to("/flags/")
    assert flags and {r.status for r in flags} == {200}
    assert {tuple(r.query.get("v", [])) for r in flags} == {("2",)}
    config = [r for r in visit.sent if r.path.startswith("/array/")]
    assert config and {r.status for r in config} == {200}
    assert visit.beacons_queued == [True, True, True]


def test_its_default_requests_are_gzip_sent_as_text_plain_with_no_marker(visit: Visit) -> None:
    """The shape the gzip magic-byte detection exists for: were it gone, these would be 400s."""
    by_fetch = [r for r in visit.to("/e/") if r.resource_type == "fetch"]
    assert by_fetch, "posthog-js sent no event by fetch"
    for request in by_fetch:
        assert request.body is not None and request.body.startswith(GZIP_MAGIC), request.body[:16]
        assert request.headers.get("content-type") == "text/plain", request.headers
        assert "content-encoding" not in request.headers, request.headers
        assert "compression" not in request.query, request.url
        assert request.status == 200
    assert visit.events_sent_by_fetch() >= PAGE_EVENTS
    beacons = [r for r in visit.to("/e/") if r.resource_type == "ping"]
    assert {r.status for r in beacons if "beacon" in r.query} == {204}  # nobody reads a beacon's answer


# -- what was exported ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(service: Service, visit: Visit) -> list[dict[str, Any]]:
    """Every row a File export over the visit's intervals wrote (created and backfilled through the REST API)."""
    return export_live_events(service, "posthog-js", visit.started, visit.ended)


def only(rows: list[dict[str, Any]], event: str) -> dict[str, Any]:
    matching = [row for row in rows if row["event"] == event]
    assert len(matching) == 1, f"{event!r} exported {len(matching)} times; exported: {[r['event'] for r in rows]}"
    return matching[0]


def test_pageview_identify_and_custom_event_are_exported(visit: Visit, exported: list[dict[str, Any]]) -> None:
    pageview, identify, custom = (only(exported, name) for name in ("$pageview", "$identify", "custom"))
    assert visit.anonymous_id and visit.anonymous_id != USER
    # posthog-js defers the first $pageview past the page's script, so it already carries the user;
    # the device id is still the anonymous one.
    assert pageview["distinct_id"] == USER
    assert properties_of(pageview)["$device_id"] == visit.anonymous_id
    assert properties_of(pageview)["$current_url"].startswith("http://127.0.0.1:")
    assert identify["distinct_id"] == USER
    assert properties_of(identify)["$anon_distinct_id"] == visit.anonymous_id
    assert custom["distinct_id"] == USER
    sent = properties_of(custom)
    assert (sent["plan"], sent["seats"], sent["nested"]) == ("pro", 3, {"ok": True})
    for row in (pageview, identify, custom):
        assert properties_of(row)["$lib"] == "web"
        assert properties_of(row)["$lib_version"] == posthog_js_version()


def test_events_sent_by_send_beacon_are_exported(exported: list[dict[str, Any]]) -> None:
    """posthog-js's own `transport: 'sendBeacon'` and the string, Blob (gzip) and FormData beacons."""
    by_posthog = only(exported, "beaconed")
    assert (by_posthog["distinct_id"], properties_of(by_posthog)["via"]) == (USER, "posthog")
    for name in ("beacon_string", "beacon_blob", "beacon_form"):
        row = only(exported, name)
        assert (row["distinct_id"], properties_of(row)["via"]) == (USER, name)
