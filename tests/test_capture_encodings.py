"""Specification of the bodies capture reads: each encoding PostHog's SDKs send, and what it refuses.

Real: the lz-string payloads are made by the lz-string npm package itself (`LZ_STRING_VERSION`,
run with Node.js from node_modules; these tests skip without it, and fail in CI), the gzip is
Python's, and the sendBeacon bodies are built byte for byte as posthog-js 1.449.2 and browsers
build them (read from posthog-js's `dist/module.js` and the Beacon spec: a string is sent as
`text/plain;charset=UTF-8`, a Blob with its own type, FormData as multipart). The requests go
through Django's test client to the real views, and what is stored is read back from a fresh
DuckDB events store, content compared exactly (non-ASCII and astral characters included).
"""

from __future__ import annotations

import base64
import functools
import gzip
import importlib.metadata
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from django.test import Client
from lzstring import LZString

from batchexports.capture import views as capture
from tests.test_capture import rows

LZ_STRING = Path(__file__).resolve().parents[1] / "node_modules" / "lz-string"
LZ_STRING_VERSION = "1.5.0"  # package.json pins it; checked in `compress_to_base64`

# Text that exercises every width of UTF-8 and UTF-16: Latin-1, CJK, astral emoji (surrogate pairs
# in lz-string's UTF-16), a ZWJ family sequence, and a musical symbol outside the BMP.
TITLE = "Ünïcödé café — 日本語のテキスト 👩‍👩‍👧 𝄞 🎉"


@pytest.fixture
def http(db: Any) -> Client:
    return Client()


def compress_to_base64(text: str) -> str:
    """lz-string's own `compressToBase64` of `text`, run in Node.js."""
    missing = None
    if shutil.which("node") is None:
        missing = "Node.js is not installed: install it, then `make install` for lz-string"
    elif not (LZ_STRING / "package.json").exists():
        missing = f"lz-string is not installed ({LZ_STRING} is missing): run `make install`"
    if missing:
        if os.environ.get("CI"):
            pytest.fail(missing, pytrace=False)
        pytest.skip(missing)
    version = json.loads((LZ_STRING / "package.json").read_text())["version"]
    assert version == LZ_STRING_VERSION, f"node_modules holds lz-string {version}"
    script = (
        f"const lz = require({json.dumps(str(LZ_STRING))});"
        "let input = ''; process.stdin.setEncoding('utf8');"
        "process.stdin.on('data', c => input += c);"
        "process.stdin.on('end', () => process.stdout.write(lz.compressToBase64(JSON.parse(input))));"
    )
    # The text goes in as JSON so that JavaScript holds exactly its UTF-16 code units.
    done = subprocess.run(
        ["node", "-e", script], input=json.dumps(text), capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def batch(token: str) -> list[dict[str, Any]]:
    """Two events as posthog-js sends them (token in the properties), full of non-ASCII text."""
    return [
        {"event": "café ☕ 注文", "properties": {"token": token, "distinct_id": "user-😀", "title": TITLE, "n": 1}},
        {"event": "$pageview", "properties": {"token": token, "distinct_id": "user-😀", "$current_url": "/ü/𝄞"}},
    ]


# What the store must hold for `batch`: token and distinct_id are not kept as properties.
EXPECTED = [
    ("$pageview", "user-😀", {"$current_url": "/ü/𝄞"}),
    ("café ☕ 注文", "user-😀", {"title": TITLE, "n": 1}),
]


def stored(store: Any, team_id: int) -> list[tuple[str, str, dict[str, Any]]]:
    return sorted((r["event"], r["distinct_id"], json.loads(r["properties"])) for r in rows(store, team_id))


def as_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def form(**fields: str) -> str:
    """A urlencoded form as posthog-js writes it: `encodeURIComponent` of each value."""
    return "&".join(f"{key}={quote(value, safe='')}" for key, value in fields.items())


def post(http: Client, path: str, body: bytes | str, content_type: str, **extra: Any) -> Any:
    return http.post(
        path, data=body.encode("utf-8") if isinstance(body, str) else body, content_type=content_type, **extra
    )


# lz64 (lz-string), as older posthog-js sends it.


def test_lz64_raw_body_from_lz_string_is_stored_exactly(http, project, events_store):
    body = compress_to_base64(as_json(batch(project.api_token)))
    response = post(http, "/e/?compression=lz64", body, "text/plain")
    assert response.status_code == 200, response.content
    assert stored(events_store, project.id) == EXPECTED


@pytest.mark.parametrize("where", ["query", "form"])
def test_lz64_form_data_from_lz_string_is_stored_exactly(http, project, events_store, where):
    """posthog-js put `compression=lz64` in the URL; posthog-js-lite puts it in the form."""
    data = compress_to_base64(as_json(batch(project.api_token)))
    if where == "query":
        response = post(http, "/e/?compression=lz64", form(data=data), "application/x-www-form-urlencoded")
    else:
        response = post(http, "/e/", form(data=data, compression="lz64"), "application/x-www-form-urlencoded")
    assert response.status_code == 200, response.content
    assert stored(events_store, project.id) == EXPECTED


def test_lz64_form_data_whose_plus_signs_arrived_as_spaces_is_still_read(http, project, events_store):
    """A form value written without encodeURIComponent: its `+` arrives as a space."""
    event = {"event": "unencoded", "properties": {"distinct_id": "user-😀", "title": TITLE, "n": 1}}
    data = compress_to_base64(as_json([event]))  # token in the query: the sample stays the same
    assert "+" in data, f"lz-string {LZ_STRING_VERSION}'s output must hold a '+' for this test to mean anything"
    path = f"/e/?compression=lz64&token={project.api_token}"
    response = post(http, path, f"data={data}", "application/x-www-form-urlencoded")
    assert response.status_code == 200, response.content
    assert stored(events_store, project.id) == [("unencoded", "user-😀", {"title": TITLE, "n": 1})]


@functools.cache
def lz64_bomb() -> str:
    """lz-string of one event padded with a million copies of one letter: each code names the newest,
    longest dictionary entry, so the decoded size grows with the square of the input's (2 KB -> 1 MB)."""
    return compress_to_base64(json.dumps({"event": "bomb", "distinct_id": "u", "properties": {"pad": "A" * 1_000_000}}))


BOMB_BODY_LIMIT = 5_000  # decoded output is capped at 10x the body limit: 50,000 characters


def test_an_lz64_bomb_is_a_413_and_nothing_is_stored(http, project, events_store, monkeypatch):
    monkeypatch.setattr(capture, "MAX_BODY_BYTES", BOMB_BODY_LIMIT)
    assert len(lz64_bomb()) < BOMB_BODY_LIMIT, "the bomb itself passes the body limit"
    response = post(http, f"/e/?compression=lz64&token={project.api_token}", lz64_bomb(), "text/plain")
    assert response.status_code == 413, response.content
    assert response.json()["code"] == "payload_too_large"
    assert "lz64" in response.json()["detail"]
    assert stored(events_store, project.id) == []


def test_an_lz64_bomb_is_refused_before_its_text_is_built(http, project, events_store, monkeypatch):
    """The decoded size is counted on the bit stream: the decompressor never starts on a bomb."""
    monkeypatch.setattr(capture, "MAX_BODY_BYTES", BOMB_BODY_LIMIT)
    calls: list[int] = []
    real = LZString.decompressFromBase64

    def spy(text: str) -> Any:
        calls.append(len(text))
        return real(text)

    monkeypatch.setattr(LZString, "decompressFromBase64", staticmethod(spy))
    small = compress_to_base64(as_json(batch(project.api_token)))
    assert post(http, "/e/?compression=lz64", small, "text/plain").status_code == 200
    assert calls == [len(small)], "the spy sees what capture decompresses"
    response = post(http, f"/e/?compression=lz64&token={project.api_token}", lz64_bomb(), "text/plain")
    assert response.status_code == 413
    assert calls == [len(small)], "the bomb never reached the decompressor"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("////////", "does not start with a character"),  # lz-string's alphabet, not its stream
        ("A" * 40, "ends without its end marker"),
        ("N4Igh~~~", "not in lz-string's base64 alphabet"),
    ],
)
def test_garbage_lz64_is_a_400_naming_the_reason_and_nothing_is_stored(http, project, events_store, body, reason):
    response = post(http, f"/e/?compression=lz64&token={project.api_token}", body, "text/plain")
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_payload"
    assert "lz64" in response.json()["detail"] and reason in response.json()["detail"]
    assert stored(events_store, project.id) == []


def test_lz64_that_decodes_to_text_that_is_not_json_is_a_400(http, project, events_store):
    body = compress_to_base64("not json at all 😀")
    response = post(http, f"/e/?compression=lz64&token={project.api_token}", body, "text/plain")
    assert response.status_code == 400
    assert "after lz64 decoding" in response.json()["detail"]
    assert "not valid JSON" in response.json()["detail"]
    assert stored(events_store, project.id) == []


# base64 and plain form data.


def b64(text: str) -> str:
    """posthog-js's base64: btoa over the UTF-8 bytes of the JSON."""
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def test_base64_raw_body_with_compression_base64(http, project, events_store):
    response = post(http, "/e/?compression=base64", b64(as_json(batch(project.api_token))), "text/plain")
    assert response.status_code == 200, response.content
    assert stored(events_store, project.id) == EXPECTED


def test_base64_raw_body_without_a_marker_is_read_by_its_shape(http, project, events_store):
    response = post(http, "/e/", b64(as_json(batch(project.api_token))), "text/plain")
    assert response.status_code == 200, response.content
    assert stored(events_store, project.id) == EXPECTED


@pytest.mark.parametrize("where", ["query", "form"])
def test_urlencoded_form_with_base64_data(http, project, events_store, where):
    """posthog-js's `compression=base64` request: `data=<encodeURIComponent(base64)>`."""
    data = b64(as_json(batch(project.api_token)))
    assert "+" in data or "/" in data or "=" in data, "the sample must hold characters form-encoding escapes"
    if where == "query":
        response = post(http, "/e/?compression=base64", form(data=data), "application/x-www-form-urlencoded")
    else:
        response = post(http, "/e/", form(data=data, compression="base64"), "application/x-www-form-urlencoded")
    assert response.status_code == 200, response.content
    assert stored(events_store, project.id) == EXPECTED


def test_urlencoded_form_with_plain_json_data(http, project, events_store):
    response = post(http, "/e/", form(data=as_json(batch(project.api_token))), "application/x-www-form-urlencoded")
    assert response.status_code == 200, response.content
    assert stored(events_store, project.id) == EXPECTED


def test_a_form_without_a_data_field_is_a_400(http, project, events_store):
    response = post(
        http, "/e/", urlencode({"compression": "base64", "ver": "1.0"}), "application/x-www-form-urlencoded"
    )
    assert response.status_code == 400
    assert "no 'data' field" in response.json()["detail"]


@pytest.mark.parametrize(
    ("path", "body", "reason"),
    [
        ("/e/?compression=base64", "abcde", "not valid base64"),  # base64's alphabet, impossible length
        ("/e/?compression=base64", "!!not*base64!!", "not valid base64"),
        ("/e/", form(data="%%%", compression="base64"), "not valid base64"),
    ],
)
def test_garbage_base64_is_a_400_naming_the_reason_and_nothing_is_stored(
    http, project, events_store, path, body, reason
):
    content_type = "application/x-www-form-urlencoded" if body.startswith("data=") else "text/plain"
    response = post(http, f"{path}{'&' if '?' in path else '?'}token={project.api_token}", body, content_type)
    assert response.status_code == 400
    assert reason in response.json()["detail"], response.json()
    assert stored(events_store, project.id) == []


# gzip, as posthog-js sends it by default.


@pytest.mark.parametrize("path", ["/e/", "/i/v0/e/"])
@pytest.mark.parametrize("marker", ["?compression=gzip-js", ""])
def test_gzip_with_and_without_a_marker(http, project, events_store, path, marker):
    body = gzip.compress(as_json(batch(project.api_token)).encode("utf-8"))
    response = post(http, f"{path}{marker}", body, "text/plain")
    assert response.status_code == 200, response.content
    assert stored(events_store, project.id) == EXPECTED


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\x1f\x8b\x08\x00garbage-after-the-magic", "not valid gzip"),
        (gzip.compress(b'[{"event": "a", "distinct_id": "b"}]')[:-12], "truncated"),
    ],
)
def test_garbage_gzip_without_a_marker_is_a_400_naming_the_reason(http, project, events_store, body, reason):
    response = post(http, f"/i/v0/e/?token={project.api_token}", body, "text/plain")
    assert response.status_code == 400
    assert "gzip" in response.json()["detail"] and reason in response.json()["detail"]
    assert stored(events_store, project.id) == []


def test_gzip_that_holds_no_json_is_a_400(http, project, events_store):
    response = post(http, f"/e/?token={project.api_token}", gzip.compress(b"ceci n'est pas du JSON"), "text/plain")
    assert response.status_code == 400
    assert "after gzip decoding" in response.json()["detail"]


def test_an_unknown_compression_that_hides_the_json_is_a_400_naming_it(http, project, events_store):
    body = bytes(range(256))  # e.g. brotli or zstd output: not gzip, not text
    response = post(http, f"/e/?compression=br&token={project.api_token}", body, "text/plain")
    assert response.status_code == 400
    assert "compression 'br' is not one" in response.json()["detail"]
    assert stored(events_store, project.id) == []


def test_an_unknown_compression_over_plain_json_is_read_as_plain_json(http, project, events_store):
    """As PostHog's capture: an unsupported hint is no error when the body is readable as it is."""
    response = post(http, "/e/?compression=zstd", as_json(batch(project.api_token)), "text/plain")
    assert response.status_code == 200, response.content
    assert stored(events_store, project.id) == EXPECTED


# navigator.sendBeacon.

BEACON_QUERY = "?ip=0&_=1764763200000&ver=1.449.2"


def test_posthog_js_send_beacon_body_is_stored(http, project, events_store):
    """posthog-js 1.449.2 forces base64 for sendBeacon: a Blob typed as a urlencoded form, `compression=base64`."""
    body = form(data=b64(as_json(batch(project.api_token))))
    response = post(http, f"/e/{BEACON_QUERY}&compression=base64", body, "application/x-www-form-urlencoded")
    assert response.status_code == 200, response.content
    assert stored(events_store, project.id) == EXPECTED


def test_send_beacon_of_a_string_is_text_plain_utf8_json(http, project, events_store):
    response = post(http, f"/e/{BEACON_QUERY}", as_json(batch(project.api_token)), "text/plain;charset=UTF-8")
    assert response.status_code == 200, response.content
    assert stored(events_store, project.id) == EXPECTED


def test_send_beacon_of_a_gzip_blob_typed_text_plain(http, project, events_store):
    """Older posthog-js sent its gzip Blob by beacon too; sendBeacon sends the Blob's own type."""
    body = gzip.compress(as_json(batch(project.api_token)).encode("utf-8"))
    response = post(http, f"/e/{BEACON_QUERY}&compression=gzip-js", body, "text/plain;charset=UTF-8")
    assert response.status_code == 200, response.content
    assert stored(events_store, project.id) == EXPECTED


@pytest.mark.parametrize("data", ["base64", "json"])
def test_send_beacon_of_form_data_is_multipart(http, project, events_store, data):
    """sendBeacon(url, formData) posts multipart/form-data; its `data` field carries the payload."""
    payload = as_json(batch(project.api_token))
    fields = {"data": b64(payload), "compression": "base64"} if data == "base64" else {"data": payload}
    response = http.post(f"/e/{BEACON_QUERY}", data=fields)  # the test client's default: multipart
    assert response.status_code == 200, response.content
    assert stored(events_store, project.id) == EXPECTED


def test_beacon_1_is_answered_204_with_no_body_and_cors(http, project, events_store):
    """PostHog's capture answers `beacon=1` with 204 No Content on success (nobody reads a beacon's answer)."""
    body = form(data=b64(as_json(batch(project.api_token))))
    response = post(
        http,
        f"/e/{BEACON_QUERY}&compression=base64&beacon=1",
        body,
        "application/x-www-form-urlencoded",
        HTTP_ORIGIN="https://shop.example",
    )
    assert response.status_code == 204
    assert response.content == b""
    assert response["Access-Control-Allow-Origin"] == "https://shop.example"
    assert stored(events_store, project.id) == EXPECTED


def test_beacon_0_is_answered_as_any_capture(http, project, events_store):
    response = post(http, f"/e/{BEACON_QUERY}&beacon=0", as_json(batch(project.api_token)), "text/plain;charset=UTF-8")
    assert response.status_code == 200
    assert response.json() == {"status": 1}


def test_a_failed_beacon_is_still_an_error(http, project, events_store):
    """204 is for success only: a beacon whose body is unreadable still gets its 400."""
    response = post(
        http, f"/e/{BEACON_QUERY}&beacon=1&token={project.api_token}", "{broken", "text/plain;charset=UTF-8"
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]
    assert stored(events_store, project.id) == []


# The official Python SDK, batching in its consumer thread, with and without gzip.
# (tests/test_persons.py drives it in sync mode without gzip; its sync-mode shutdown() fails in 6.9.)

SDK_VERSION = importlib.metadata.version("posthog")


@pytest.mark.parametrize("gzip_on", [True, False], ids=["gzip", "plain"])
def test_the_python_sdk_batches_reach_the_store_with_and_without_gzip(live_server, project, events_store, gzip_on):
    from posthog import Posthog

    errors: list[Any] = []
    client = Posthog(
        project.api_token,
        host=live_server.url,
        gzip=gzip_on,
        max_retries=0,
        on_error=lambda error, batch: errors.append(error),
    )
    try:
        client.capture("café ☕ 注文", distinct_id="user-😀", properties={"title": TITLE, "n": 1})
        client.capture("$pageview", distinct_id="user-😀", properties={"$current_url": "/ü/𝄞"})
        client.flush()  # waits until the consumer has posted the queue to /batch/
    finally:
        client.shutdown()
    assert errors == [], f"posthog {SDK_VERSION} reported {errors}"
    events = stored(events_store, project.id)
    assert [(name, distinct_id) for name, distinct_id, _ in events] == [(n, d) for n, d, _ in EXPECTED]
    for (_, _, properties), (_, _, expected) in zip(events, EXPECTED, strict=True):
        assert properties.items() >= expected.items()
        assert properties["$lib"] == "posthog-python" and properties["$lib_version"] == SDK_VERSION
