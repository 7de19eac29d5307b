"""Specification of custom export schemas (HogQL) and property filters, from the API to the files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchexports.pipeline.export import export
from tests.conftest import export_payload, prefix_for
from tests.exports_fixtures import file_run, known_events, store_with


@pytest.fixture
def url(project: Any) -> str:
    return prefix_for("projects", project)


QUERY = "SELECT uuid, event AS name, properties.$current_url AS url, toInt(properties.i) * 10 AS tens FROM events"


def test_the_api_derives_the_schema_of_a_hogql_query(api, url, engine):
    response = api.post(url, export_payload(hogql_query=QUERY), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["hogql_query"] == QUERY
    assert response.json()["schema"] == {
        "fields": [
            {"expression": "uuid", "alias": "uuid"},
            {"expression": "event", "alias": "name"},
            {"expression": "properties.$current_url", "alias": "url"},
            {"expression": "toInt(properties.i) * 10", "alias": "tens"},
        ],
        "hogql_query": QUERY,
    }
    export_id = response.json()["id"]
    cleared = api.patch(f"{url}{export_id}/", {"hogql_query": ""}, format="json")
    assert cleared.json()["schema"] is None


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("SELECT * FROM events", "list the fields"),
        ("SELECT uuid FROM persons", "FROM events"),
        ("SELECT uuid FROM events JOIN x ON 1", "JOIN is not supported"),
        ("SELECT uuid FROM events UNION ALL SELECT uuid FROM events", "UNION is not supported"),
        ("WITH a AS (SELECT 1) SELECT uuid FROM events", "WITH"),
        ("SELECT (SELECT 1) AS x FROM events", "Subqueries"),
        ("SELECT secret FROM events", "Unknown field 'secret'"),
        ("SELECT count() FROM events", "Aggregate function"),
        ("SELECT uuid FROM events ORDER BY uuid", "ORDER BY"),
        ("SELECT evil(uuid) FROM events", "Unsupported function 'evil'"),
        ("SELECT uuid, event AS uuid FROM events", "Two fields are named 'uuid'"),
        ("SELEC uuid", "SELECT"),
    ],
)
def test_each_hogql_rule_has_its_message(api, url, engine, query, message):
    response = api.post(url, export_payload(hogql_query=query), format="json")
    assert response.status_code == 400
    body = response.json()
    assert (body["type"], body["attr"]) == ("validation_error", "hogql_query")
    assert message in body["detail"]


def test_a_hogql_query_only_applies_to_events(api, url, engine):
    response = api.post(url, export_payload(model="persons", hogql_query="SELECT uuid FROM events"), format="json")
    assert response.status_code == 400
    assert response.json()["attr"] == "hogql_query"


def test_invalid_filters_are_a_400_naming_the_filter(api, url, engine):
    filters = [{"key": "$browser", "operator": "exact", "value": "x"}, {"key": "p", "operator": "nope", "value": 1}]
    response = api.post(url, export_payload(filters=filters), format="json")
    assert response.status_code == 400
    assert response.json()["attr"] == "filters"
    assert response.json()["detail"].startswith("filter 1: operator 'nope'")


def test_valid_filters_are_stored_as_given(api, url, engine):
    filters = [{"key": "$browser", "operator": "icontains", "value": ["fox"], "type": "event"}]
    response = api.post(url, export_payload(filters=filters), format="json")
    assert response.status_code == 201
    assert response.json()["filters"] == filters


@pytest.mark.parametrize("file_format", ["JSONLines", "Parquet", "CSV"])
def test_a_hogql_export_writes_exactly_its_aliased_columns(tmp_path, monkeypatch, file_format):
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    monkeypatch.setenv("BATCHEXPORTS_EXPORT_DIR", str(tmp_path / "exports"))
    source = known_events(20)
    store = store_with(tmp_path, source)
    run = file_run({"path": "p", "file_format": file_format})
    run = type(run)(**{**run.__dict__, "hogql_query": QUERY})
    result = export(run, store)
    (written,) = [p for p in Path(tmp_path / "exports").rglob("*") if p.is_file()]
    if file_format == "Parquet":
        rows = pq.read_table(written).to_pylist()
    elif file_format == "CSV":
        rows = pacsv.read_csv(written).to_pylist()
    else:
        rows = [json.loads(line) for line in written.read_text().splitlines()]
    assert result.records_completed == 20
    assert list(rows[0]) == ["uuid", "name", "url", "tens"]
    expected = {r["uuid"]: (r["event"], json.loads(r["properties"])) for r in source.to_pylist()}
    for row in rows:
        event, properties = expected[row["uuid"]]
        assert (row["name"], row["url"], row["tens"]) == (event, properties["$current_url"], properties["i"] * 10)


def test_filters_narrow_what_is_exported(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHEXPORTS_EXPORT_DIR", str(tmp_path / "exports"))
    store = store_with(tmp_path, known_events(30))
    run = file_run({"path": "p"})
    filters = ({"key": "i", "operator": "lt", "value": 5, "type": "event"},)
    run = type(run)(**{**run.__dict__, "filters": filters})
    result = export(run, store)
    (written,) = [p for p in Path(tmp_path / "exports").rglob("*") if p.is_file()]
    rows = [json.loads(line) for line in written.read_text().splitlines()]
    assert sorted(r["properties"]["i"] for r in rows) == [0, 1, 2, 3, 4]
    assert result.records_total_count == 5
