"""Specification of the PostHog-compatible capture endpoints: formats, tokens, errors, persons."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
from typing import Any

import pytest
from django.test import Client

from batchexports.events.store import ModelQuery

NOW_WINDOW = dt.timedelta(minutes=5)


@pytest.fixture
def http(db: Any) -> Client:
    return Client()


def rows(store: Any, team_id: int, model: str = "events", start: dt.datetime | None = None, **kw: Any) -> list[dict]:
    now = dt.datetime.now(dt.UTC)
    query = ModelQuery(model, team_id, start or now - NOW_WINDOW, now + NOW_WINDOW, **kw)
    return store.read(query).read_all().to_pylist()


def event(name: str = "$pageview", distinct_id: str = "user-1", **properties: Any) -> dict[str, Any]:
    return {"event": name, "distinct_id": distinct_id, "properties": properties}


def post_json(http: Client, path: str, body: Any, **extra: Any) -> Any:
    return http.post(path, data=json.dumps(body), content_type="application/json", **extra)


def test_batch_stores_every_event_and_answers_status_1(http, project, events_store):
    body = {"api_key": project.api_token, "batch": [event(path="/a"), event("signed_up", "user-2", plan="pro")]}
    response = post_json(http, "/batch/", body)
    assert response.status_code == 200
    assert response.json() == {"status": 1}
    stored = sorted(rows(events_store, project.id), key=lambda r: r["event"])
    assert [(r["event"], r["distinct_id"]) for r in stored] == [("$pageview", "user-1"), ("signed_up", "user-2")]
    assert json.loads(stored[1]["properties"]) == {"plan": "pro"}
    assert all(r["team_id"] == project.id for r in stored)


@pytest.mark.parametrize("path", ["/capture/", "/e/", "/i/v0/e/", "/track/", "/capture", "/e"])
def test_single_event_with_token_in_properties_on_every_route(http, project, events_store, path):
    single = {"event": "clicked", "properties": {"distinct_id": "d-1", "token": project.api_token, "x": 1}}
    response = post_json(http, path, single)
    assert response.status_code == 200, response.content
    (stored,) = rows(events_store, project.id)
    assert (stored["event"], stored["distinct_id"]) == ("clicked", "d-1")
    assert json.loads(stored["properties"]) == {"x": 1}, "token and distinct_id are not kept as properties"


def test_a_list_of_events_with_the_token_in_the_query(http, project, events_store):
    response = post_json(http, f"/e/?token={project.api_token}", [event(), event("other")])
    assert response.status_code == 200
    assert len(rows(events_store, project.id)) == 2


def test_gzip_content_encoding(http, project, events_store):
    body = gzip.compress(json.dumps({"api_key": project.api_token, "batch": [event()]}).encode())
    response = http.post("/batch/", data=body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200
    assert len(rows(events_store, project.id)) == 1


def test_gzip_js_compression_parameter(http, project, events_store):
    body = gzip.compress(json.dumps([{**event(), "properties": {"token": project.api_token}}]).encode())
    response = http.post("/e/?compression=gzip-js", data=body, content_type="text/plain")
    assert response.status_code == 200
    assert len(rows(events_store, project.id)) == 1


def test_form_encoded_base64_data(http, project, events_store):
    payload = base64.b64encode(json.dumps({**event(), "api_key": project.api_token}).encode()).decode()
    response = http.post("/e/", data={"data": payload})
    assert response.status_code == 200
    assert len(rows(events_store, project.id)) == 1


def test_get_with_base64_data_parameter(http, project, events_store):
    payload = base64.urlsafe_b64encode(json.dumps({**event(), "api_key": project.api_token}).encode()).decode()
    response = http.get("/e/", {"data": payload.rstrip("=")})
    assert response.status_code == 200
    assert len(rows(events_store, project.id)) == 1


def test_live_events_arrive_now_and_their_time_is_corrected_for_clock_skew(http, project, events_store):
    client_clock = dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)  # a client two hours ahead
    body = {
        "api_key": project.api_token,
        "sent_at": client_clock.isoformat(),
        "batch": [{**event(), "timestamp": (client_clock - dt.timedelta(minutes=1)).isoformat()}],
    }
    before = dt.datetime.now(dt.UTC)
    assert post_json(http, "/batch/", body).status_code == 200
    (stored,) = rows(events_store, project.id)
    assert before - dt.timedelta(seconds=1) <= stored["_inserted_at"] <= dt.datetime.now(dt.UTC)
    assert abs(stored["timestamp"] - (before - dt.timedelta(minutes=1))) < dt.timedelta(seconds=5)


def test_historical_migration_arrives_at_its_own_time(http, project, events_store):
    past = dt.datetime(2024, 3, 1, 12, 30, tzinfo=dt.UTC)
    body = {
        "api_key": project.api_token,
        "historical_migration": True,
        "sent_at": dt.datetime.now(dt.UTC).isoformat(),
        "batch": [{**event(), "timestamp": past.isoformat()}],
    }
    assert post_json(http, "/batch/", body).status_code == 200
    (stored,) = rows(events_store, project.id, start=past - dt.timedelta(hours=1))
    assert stored["timestamp"] == past
    assert stored["_inserted_at"] == past
    assert rows(events_store, project.id) == [], "past data is not in the current interval"


@pytest.mark.parametrize(
    ("token", "code"),
    [("phc_unknown", "invalid_api_key"), (None, "missing_api_key")],
)
def test_unknown_or_missing_token_is_a_401(http, project, events_store, token, code):
    body = {"batch": [event()]} if token is None else {"api_key": token, "batch": [event()]}
    response = post_json(http, "/batch/", body)
    assert response.status_code == 401
    assert response.json()["code"] == code
    assert rows(events_store, project.id) == []


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"{not json", "application/json", "not valid JSON"),
        (b"", "application/json", "empty"),
        (b"\x1f\x8bgarbage", "application/json", "gzip"),
        (b'{"hello": "world"}', "application/json", "no event"),
        (b'{"api_key": "x", "batch": {"event": "a"}}', "application/json", "'batch' must be a list"),
    ],
)
def test_malformed_bodies_are_a_400_with_a_reason(http, project, events_store, body, content_type, reason):
    extra = {"HTTP_CONTENT_ENCODING": "gzip"} if body.startswith(b"\x1f\x8b") else {}
    response = http.post("/batch/", data=body, content_type=content_type, **extra)
    assert response.status_code == 400
    assert response.json()["type"] == "validation_error"
    assert reason in response.json()["detail"]


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"distinct_id": "x"}, "no 'event' name"),
        ({"event": "a"}, "no distinct_id"),
        ({"event": "a", "distinct_id": "x", "uuid": "not-a-uuid"}, "not a UUID"),
        ({"event": "a", "distinct_id": "x", "timestamp": "yesterday"}, "not an ISO 8601"),
        ({"event": "a", "distinct_id": "x", "properties": [1]}, "must be a JSON object"),
    ],
)
def test_one_invalid_event_rejects_the_whole_batch(http, project, events_store, bad, reason):
    response = post_json(http, "/batch/", {"api_key": project.api_token, "batch": [event(), bad]})
    assert response.status_code == 400
    assert reason in response.json()["detail"]
    assert "event 1" in response.json()["detail"]
    assert rows(events_store, project.id) == [], "nothing half-written"


def test_an_oversized_body_is_a_413(http, project, events_store, monkeypatch):
    from batchexports.capture import views as capture

    monkeypatch.setattr(capture, "MAX_BODY_BYTES", 1000)
    body = {"api_key": project.api_token, "batch": [event(padding="x" * 2000)]}
    response = post_json(http, "/batch/", body)
    assert response.status_code == 413
    assert rows(events_store, project.id) == []


def test_a_gzip_bomb_is_a_413(http, project, events_store, monkeypatch):
    from batchexports.capture import views as capture

    monkeypatch.setattr(capture, "MAX_BODY_BYTES", 10_000)
    body = gzip.compress(json.dumps({"api_key": project.api_token, "batch": [event(pad="0" * 500_000)]}).encode())
    assert len(body) < 10_000
    response = http.post("/batch/", data=body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 413


def test_gzip_is_read_by_its_magic_bytes_with_text_plain_and_no_marker(http, project, events_store):
    """posthog-js's default request: gzip, `Content-Type: text/plain`, no Content-Encoding, no `compression=`."""
    body = gzip.compress(json.dumps([{**event(), "properties": {"token": project.api_token}}]).encode())
    response = http.post("/e/", data=body, content_type="text/plain")
    assert response.status_code == 200, response.content
    assert [r["event"] for r in rows(events_store, project.id)] == ["$pageview"]


def test_lz64_that_is_not_lz_string_data_is_a_400_and_stores_nothing(http, project, events_store):
    response = http.post("/e/?compression=lz64", data=b"abc!", content_type="text/plain")
    assert response.status_code == 400
    assert "lz64" in response.json()["detail"]
    assert rows(events_store, project.id) == []


def test_cors_preflight_and_headers(http, project, events_store):
    preflight = http.options("/e/", HTTP_ORIGIN="https://shop.example")
    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == "https://shop.example"
    assert "POST" in preflight["Access-Control-Allow-Methods"]


def test_duplicate_uuids_are_exported_once(http, project, events_store):
    one = {**event(), "uuid": "0190f7c2-6c1e-7000-8000-000000000001"}
    post_json(http, "/batch/", {"api_key": project.api_token, "batch": [one]})
    post_json(http, "/batch/", {"api_key": project.api_token, "batch": [one, event("other")]})
    stored = rows(events_store, project.id)
    assert sorted(r["event"] for r in stored) == ["$pageview", "other"]


def test_elements_are_stored_as_an_elements_chain(http, project, events_store):
    elements = [{"tag_name": "button", "attr__class": "btn primary", "$el_text": "Buy", "nth_child": 2}]
    body = {"api_key": project.api_token, "batch": [event("$autocapture", **{"$elements": elements})]}
    post_json(http, "/batch/", body)
    (stored,) = rows(events_store, project.id)
    assert stored["elements_chain"] == 'button.btn.primary:text="Buy"nth-child="2"'
    assert "$elements" not in json.loads(stored["properties"])
