"""The BigQuery destination, through the official `google-cloud-bigquery` client, against a FAKE.

BigQuery cannot run here, so every test gives the real client (and the real service-account
credentials, which sign a real JWT) a fake `requests` transport, `FakeBigQuery`: it records the
exact REST requests the client sends (token exchange, datasets/tables get/list/insert/delete, load
jobs as multipart or resumable uploads, query jobs, getQueryResults) and answers them as
BigQuery's REST API documents. To make its answers plausible, the fake keeps the tables in
DuckDB: a load job reads the uploaded Parquet into the table, and a query job runs the
sink's SQL after translating it from BigQuery's dialect with sqlglot. So the tests assert both
the requests (job configurations, SQL text, table schema and partitioning, JSON vs STRING) and
the rows a real load would leave.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import json
import re
import uuid
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batchexports.core.errors import NonRetryableError, RetryableError
from batchexports.destinations.bigquery import sink as bigquery_sink
from batchexports.destinations.testing import run_step
from batchexports.pipeline.export import export
from tests.exports_fixtures import HOUR, T0, expected_rows, file_run, known_events, store_with
from tests.test_snowflake_destination import two_interval_events

requests = pytest.importorskip("requests")
pytest.importorskip("google.cloud.bigquery")
duckdb = pytest.importorskip("duckdb")
sqlglot = pytest.importorskip("sqlglot")

PROJECT = "acme-analytics"
DATASET = "posthog"
TOKEN_URI = "https://oauth2.googleapis.com/token"
ACCESS_TOKEN = "ya29.fake-access-token"
BQ = "https://bigquery.googleapis.com"

_DUCK_TYPES = {
    "STRING": "VARCHAR", "INTEGER": "BIGINT", "INT64": "BIGINT", "FLOAT": "DOUBLE", "FLOAT64": "DOUBLE",
    "BOOLEAN": "BOOLEAN", "BOOL": "BOOLEAN", "TIMESTAMP": "TIMESTAMPTZ", "DATE": "DATE", "JSON": "JSON",
}  # fmt: skip
_LEGACY_NAMES = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN"}  # how BigQuery answers types


def api_error(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    status = {400: "INVALID_ARGUMENT", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "ALREADY_EXISTS"}
    return code, {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": "global", "reason": reason}],
            "status": status.get(code, "UNKNOWN"),
        }
    }


class FakeBigQuery(requests.adapters.BaseAdapter):
    """A fake of Google's token endpoint and BigQuery's REST API v2 (see the module docstring)."""

    def __init__(self, datasets: tuple[str, ...] = (DATASET,), public_key: bytes | None = None):
        super().__init__()
        self.log: list[dict[str, Any]] = []
        self.datasets = set(datasets)
        self.tables: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.uploads: dict[str, dict[str, Any]] = {}
        self.public_key = public_key
        self.forbidden: set[str] = set()  # paths answered 403 accessDenied
        self.token_error: str | None = None
        self.db = duckdb.connect()
        self.run("SET TimeZone = 'UTC'")
        self.run(f"ATTACH ':memory:' AS \"{PROJECT}\"")
        for name in self.datasets:
            self.run(f'CREATE SCHEMA "{PROJECT}"."{name}"')

    def run(self, sql: str) -> list[tuple]:
        """Run SQL on the fake's DuckDB and fetch the whole result (DuckDB wants every result consumed)."""
        cursor = self.db.execute(sql)
        return cursor.fetchall() if cursor.description else []

    # -- requests' adapter interface ------------------------------------------------------------

    def send(self, request: Any, **kwargs: Any) -> Any:
        url = urlsplit(request.url)
        body = request.body or b""
        body = body.encode() if isinstance(body, str) else body
        entry = {
            "method": request.method, "path": url.path, "query": parse_qs(url.query),
            "headers": requests.structures.CaseInsensitiveDict(request.headers),
            "body": body,
        }  # fmt: skip
        self.log.append(entry)
        status, payload, headers = self.route(entry)
        response = requests.Response()
        response.status_code = status
        response._content = json.dumps(payload).encode() if payload is not None else b""
        response.headers = requests.structures.CaseInsensitiveDict(
            {"Content-Type": "application/json; charset=UTF-8", **headers}
        )
        response.url = request.url
        response.request = request
        response.encoding = "utf-8"
        response.reason = {200: "OK", 204: "No Content"}.get(status, "Error")
        return response

    def close(self) -> None:
        pass

    # -- what the tests read --------------------------------------------------------------------

    def calls(self, method: str, pattern: str) -> list[dict[str, Any]]:
        return [e for e in self.log if e["method"] == method and re.search(pattern, e["path"])]

    def json_of(self, entry: dict[str, Any]) -> Any:
        return json.loads(entry["body"])

    def rows(self, table: str, order: str | None = None) -> list[dict[str, Any]]:
        sql = f'SELECT * FROM "{PROJECT}"."{DATASET}"."{table}"' + (f' ORDER BY "{order}"' if order else "")
        cursor = self.db.execute(sql)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]

    def queries(self) -> list[str]:
        return [
            self.json_of(e)["configuration"]["query"]["query"]
            for e in self.calls("POST", r"^/bigquery/v2/projects/[^/]+/jobs$")
        ]

    # -- routing --------------------------------------------------------------------------------

    def route(self, entry: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        method, path = entry["method"], entry["path"]
        if entry["method"] == "POST" and path == urlsplit(TOKEN_URI).path:
            return (*self.token(entry), {})
        if path in self.forbidden:
            return (*api_error(403, "accessDenied", f"Access Denied: {path}: Permission bigquery.tables.get denied"),
                    {})  # fmt: skip
        if entry["headers"].get("Authorization") != f"Bearer {ACCESS_TOKEN}":
            return (*api_error(401, "unauthorized", "Request is missing required authentication credential."), {})
        routes = [
            ("GET", rf"^/bigquery/v2/projects/{PROJECT}/datasets/([^/]+)$", self.get_dataset),
            ("GET", rf"^/bigquery/v2/projects/{PROJECT}/datasets/([^/]+)/tables$", self.list_tables),
            ("GET", rf"^/bigquery/v2/projects/{PROJECT}/datasets/([^/]+)/tables/([^/]+)$", self.get_table),
            ("POST", rf"^/bigquery/v2/projects/{PROJECT}/datasets/([^/]+)/tables$", self.insert_table),
            ("DELETE", rf"^/bigquery/v2/projects/{PROJECT}/datasets/([^/]+)/tables/([^/]+)$", self.delete_table),
            ("POST", rf"^/upload/bigquery/v2/projects/{PROJECT}/jobs$", self.upload),
            ("PUT", rf"^/upload/bigquery/v2/projects/{PROJECT}/jobs$", self.upload_chunk),
            ("POST", rf"^/bigquery/v2/projects/{PROJECT}/jobs$", self.insert_query_job),
            ("GET", rf"^/bigquery/v2/projects/{PROJECT}/jobs/([^/]+)$", self.get_job),
            ("GET", rf"^/bigquery/v2/projects/{PROJECT}/queries/([^/]+)$", self.query_results),
        ]
        for verb, pattern, handler in routes:
            match = re.match(pattern, path)
            if verb == method and match:
                answer = handler(entry, *match.groups())
                return answer if len(answer) == 3 else (*answer, {})
        return (*api_error(400, "invalid", f"the fake does not know {method} {path}"), {})

    def token(self, entry: dict[str, Any]) -> tuple[int, Any]:
        form = parse_qs(entry["body"].decode())
        assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
        if self.public_key is not None:
            from google.auth import jwt

            claims = jwt.decode(form["assertion"][0], certs=self.public_key, audience=TOKEN_URI)
            entry["claims"] = claims
            entry["jwt_header"] = jwt.decode_header(form["assertion"][0])
        if self.token_error:
            return 400, {"error": "invalid_grant", "error_description": self.token_error}
        return 200, {"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"}

    def get_dataset(self, entry: dict[str, Any], dataset: str) -> tuple[int, Any]:
        if dataset not in self.datasets:
            return api_error(404, "notFound", f"Not found: Dataset {PROJECT}:{dataset}")
        return 200, {
            "kind": "bigquery#dataset", "id": f"{PROJECT}:{dataset}", "location": "EU",
            "datasetReference": {"projectId": PROJECT, "datasetId": dataset},
        }  # fmt: skip

    def _table_resource(self, dataset: str, table: str) -> dict[str, Any]:
        resource = json.loads(json.dumps(self.tables[f"{dataset}.{table}"]))
        for field in resource["schema"]["fields"]:
            field["type"] = _LEGACY_NAMES.get(field["type"], field["type"])
        ((count,),) = self.run(f'SELECT count(*) FROM "{PROJECT}"."{dataset}"."{table}"')
        resource.update({"numRows": str(count), "kind": "bigquery#table", "type": "TABLE",
                         "id": f"{PROJECT}:{dataset}.{table}", "creationTime": "1714557600000"})  # fmt: skip
        return resource

    def get_table(self, entry: dict[str, Any], dataset: str, table: str) -> tuple[int, Any]:
        if f"{dataset}.{table}" not in self.tables:
            return api_error(404, "notFound", f"Not found: Table {PROJECT}:{dataset}.{table}")
        return 200, self._table_resource(dataset, table)

    def list_tables(self, entry: dict[str, Any], dataset: str) -> tuple[int, Any]:
        """tables.list: a partial projection of each table, labels and creationTime included, in pages
        of `maxResults` (two per page unless asked, so that the client's paging is exercised)."""
        if dataset not in self.datasets:
            return api_error(404, "notFound", f"Not found: Dataset {PROJECT}:{dataset}")
        names = sorted(key.split(".", 1)[1] for key in self.tables if key.startswith(f"{dataset}."))
        start = int((entry["query"].get("pageToken") or ["0"])[0])
        size = int((entry["query"].get("maxResults") or ["2"])[0])
        page = []
        for table in names[start : start + size]:
            resource = self.tables[f"{dataset}.{table}"]
            page.append({
                "kind": "bigquery#table", "id": f"{PROJECT}:{dataset}.{table}", "type": "TABLE",
                "tableReference": resource["tableReference"], "creationTime": "1714557600000",
                **({"labels": resource["labels"]} if resource.get("labels") else {}),
            })  # fmt: skip
        answer: dict[str, Any] = {"kind": "bigquery#tableList", "tables": page, "totalItems": len(names)}
        if start + size < len(names):
            answer["nextPageToken"] = str(start + size)
        return 200, answer

    def create(self, dataset: str, table: str, resource: dict[str, Any]) -> None:
        resource["tableReference"] = {"projectId": PROJECT, "datasetId": dataset, "tableId": table}
        for field in resource["schema"]["fields"]:
            field.setdefault("mode", "NULLABLE")
        columns = []
        for field in resource["schema"]["fields"]:
            kind = _DUCK_TYPES[field["type"]]
            columns.append(f'"{field["name"]}" {kind}{"[]" if field.get("mode") == "REPEATED" else ""}')
        self.run(f'CREATE TABLE "{PROJECT}"."{dataset}"."{table}" ({", ".join(columns)})')
        self.tables[f"{dataset}.{table}"] = resource

    def insert_table(self, entry: dict[str, Any], dataset: str) -> tuple[int, Any]:
        resource = self.json_of(entry)
        table = resource["tableReference"]["tableId"]
        if dataset not in self.datasets:
            return api_error(404, "notFound", f"Not found: Dataset {PROJECT}:{dataset}")
        if f"{dataset}.{table}" in self.tables:
            return api_error(409, "duplicate", f"Already Exists: Table {PROJECT}:{dataset}.{table}")
        self.create(dataset, table, resource)
        return 200, self._table_resource(dataset, table)

    def delete_table(self, entry: dict[str, Any], dataset: str, table: str) -> tuple[int, Any]:
        if self.tables.pop(f"{dataset}.{table}", None) is None:
            return api_error(404, "notFound", f"Not found: Table {PROJECT}:{dataset}.{table}")
        self.run(f'DROP TABLE "{PROJECT}"."{dataset}"."{table}"')
        return 204, None

    # -- jobs -----------------------------------------------------------------------------------

    def _done(self, resource: dict[str, Any], error: str | None = None, **statistics: Any) -> dict[str, Any]:
        reference = dict(resource.get("jobReference") or {})
        reference.setdefault("jobId", f"job_{uuid.uuid4().hex}")
        reference.setdefault("projectId", PROJECT)
        reference["location"] = "EU"
        job = {
            "kind": "bigquery#job",
            "id": f"{PROJECT}:EU.{reference['jobId']}",
            "jobReference": reference,
            "configuration": resource["configuration"],
            "status": {"state": "DONE"},
            "statistics": {"creationTime": "1714557600000", "startTime": "1714557600100",
                           "endTime": "1714557600200", **statistics},
        }  # fmt: skip
        if error:
            job["status"]["errorResult"] = {"reason": "invalidQuery", "message": error, "location": "query"}
            job["status"]["errors"] = [job["status"]["errorResult"]]
        self.jobs[reference["jobId"]] = job
        return job

    def _load(self, metadata: dict[str, Any], data: bytes) -> dict[str, Any]:
        load = metadata["configuration"]["load"]
        destination = load["destinationTable"]
        key = f"{destination['datasetId']}.{destination['tableId']}"
        if key not in self.tables:
            return self._done(metadata, error=f"Not found: Table {PROJECT}:{key}")
        assert load["sourceFormat"] == "PARQUET"
        table = pq.read_table(io.BytesIO(data))
        self.db.register("upload", table)
        try:
            self.run(
                f'INSERT INTO "{PROJECT}"."{destination["datasetId"]}"."{destination["tableId"]}" BY NAME '
                "SELECT * FROM upload"
            )
        finally:
            self.db.unregister("upload")
        return self._done(metadata, load={"outputRows": str(table.num_rows), "inputFiles": "1"})

    def upload(self, entry: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        kind = entry["query"]["uploadType"][0]
        if kind == "resumable":
            upload_id = uuid.uuid4().hex
            self.uploads[upload_id] = {"metadata": self.json_of(entry), "data": b""}
            location = f"{BQ}/upload/bigquery/v2/projects/{PROJECT}/jobs?uploadType=resumable&upload_id={upload_id}"
            return 200, None, {"Location": location}
        assert kind == "multipart"
        content_type = entry["headers"]["content-type"]
        content_type = content_type.decode() if isinstance(content_type, bytes) else content_type
        boundary = re.search(r'boundary="?([^";]+)"?', content_type).group(1).encode()
        parts = entry["body"].split(b"--" + boundary)
        metadata = json.loads(parts[1].split(b"\r\n\r\n", 1)[1].strip())
        data = parts[2].split(b"\r\n\r\n", 1)[1][: -len(b"\r\n")]
        entry["upload"] = {"metadata": metadata, "data": data}
        return 200, self._load(metadata, data), {}

    def upload_chunk(self, entry: dict[str, Any]) -> tuple[int, Any, dict[str, str]]:
        upload = self.uploads[entry["query"]["upload_id"][0]]
        upload["data"] += entry["body"]
        content_range = entry["headers"]["content-range"]
        content_range = content_range.decode() if isinstance(content_range, bytes) else content_range
        total = content_range.rsplit("/", 1)[1]
        if total == "*":
            return 308, None, {"Range": f"bytes=0-{len(upload['data']) - 1}"}
        entry["upload"] = upload
        return 200, self._load(upload["metadata"], upload["data"]), {}

    def insert_query_job(self, entry: dict[str, Any]) -> tuple[int, Any]:
        resource = self.json_of(entry)
        sql = resource["configuration"]["query"]["query"]
        try:
            translated = sqlglot.transpile(sql, read="bigquery", write="duckdb")[0]
            affected = self.run(translated)
        except duckdb.Error as error:
            return 200, self._done(resource, error=f"Query error: {error}")
        count = affected[0][0] if affected and affected[0] else 0
        return 200, self._done(resource, query={"numDmlAffectedRows": str(count), "statementType": sql.split()[0]})

    def get_job(self, entry: dict[str, Any], job_id: str) -> tuple[int, Any]:
        return 200, self.jobs[job_id]

    def query_results(self, entry: dict[str, Any], job_id: str) -> tuple[int, Any]:
        job = self.jobs[job_id]
        return 200, {
            "kind": "bigquery#getQueryResultsResponse", "jobReference": job["jobReference"], "jobComplete": True,
            "totalRows": "0", "rows": [], "schema": {"fields": []},
            "numDmlAffectedRows": job["statistics"].get("query", {}).get("numDmlAffectedRows", "0"),
        }  # fmt: skip


@pytest.fixture(scope="module")
def service_account() -> tuple[str, bytes]:
    """A real RSA key pair: the credentials sign real JWTs, which the fake verifies."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


def bq_config(private_key: str, **overrides: Any) -> dict[str, Any]:
    config = {
        "project_id": PROJECT,
        "dataset_id": DATASET,
        "table_id": "events",
        "private_key": private_key,
        "private_key_id": "a1b2c3d4e5f6-key-id",
        "token_uri": TOKEN_URI,
        "client_email": f"exporter@{PROJECT}.iam.gserviceaccount.com",
        "use_json_type": False,
    }
    config.update(overrides)
    return config


@pytest.fixture
def fake(service_account: tuple[str, bytes], monkeypatch: pytest.MonkeyPatch) -> FakeBigQuery:
    fake = FakeBigQuery(public_key=service_account[1])
    monkeypatch.setattr(bigquery_sink, "make_client", functools.partial(bigquery_sink.make_client, transport=fake))
    return fake


def test_events_are_loaded_through_a_stage_table_with_the_requests_bigquery_expects(tmp_path, fake, service_account):
    source = known_events(200)
    config = bq_config(service_account[0])
    result = export(file_run(config, "BigQuery"), store_with(tmp_path, source))
    assert result.records_completed == 200

    # The service account signed a JWT for the token endpoint; BigQuery calls carry the token.
    (token,) = fake.calls("POST", r"^/token$")
    assert token["claims"]["iss"] == config["client_email"]
    assert token["claims"]["scope"] == "https://www.googleapis.com/auth/bigquery"
    assert token["jwt_header"]["kid"] == config["private_key_id"]

    # The destination table: created with the events schema, day-partitioned on timestamp.
    assert fake.calls("GET", rf"/datasets/{DATASET}$")
    (create,) = [e for e in fake.calls("POST", r"/tables$") if fake.json_of(e)["tableReference"]["tableId"] == "events"]
    table = fake.json_of(create)
    assert table["tableReference"] == {"projectId": PROJECT, "datasetId": DATASET, "tableId": "events"}
    assert table["timePartitioning"] == {"type": "DAY", "field": "timestamp"}
    types = {f["name"]: (f["type"], f["mode"]) for f in table["schema"]["fields"]}
    assert types["uuid"] == ("STRING", "NULLABLE")
    assert types["timestamp"] == ("TIMESTAMP", "NULLABLE")
    assert types["team_id"] == ("INT64", "NULLABLE")
    assert types["properties"] == ("STRING", "NULLABLE"), "use_json_type is off: JSON as STRING"

    # One Parquet load job into the stage table, which expires, holding exactly the exported rows.
    (upload,) = fake.calls("POST", r"^/upload/")
    assert upload["query"]["uploadType"] == ["multipart"]
    load = upload["upload"]["metadata"]["configuration"]["load"]
    stage = load["destinationTable"]["tableId"]
    assert stage.startswith("events_stage_")
    assert load["sourceFormat"] == "PARQUET"
    assert load["writeDisposition"] == "WRITE_APPEND"
    assert load["parquetOptions"] == {"enableListInference": True}
    staged = pq.read_table(io.BytesIO(upload["upload"]["data"])).to_pylist()
    assert {r["uuid"]: (r["event"], r["distinct_id"], json.loads(r["properties"]), r["elements_chain"])
            for r in staged} == expected_rows(source)  # fmt: skip
    (stage_create,) = [
        e for e in fake.calls("POST", r"/tables$") if fake.json_of(e)["tableReference"]["tableId"] == stage
    ]
    assert "expirationTime" in fake.json_of(stage_create)
    labels = fake.json_of(stage_create)["labels"]
    assert labels["batchexports_stage"] == file_run(config, "BigQuery").batch_export_id
    assert abs(int(labels["batchexports_created"]) - dt.datetime.now(dt.UTC).timestamp()) < 60
    # Before it, the dataset's tables were listed for stale stages of the export.
    assert fake.calls("GET", rf"/datasets/{DATASET}/tables$")

    # A query job inserts the uuids the table lacks; then the stage table is deleted.
    (sql,) = fake.queries()
    assert sql == (
        f"INSERT INTO `{PROJECT}`.`{DATASET}`.`events` (`uuid`, `team_id`, `timestamp`, `_inserted_at`, "
        "`created_at`, `event`, `properties`, `distinct_id`, `elements_chain`, `person_id`, `person_properties`, "
        "`set`, `set_once`) SELECT s.`uuid` AS `uuid`, s.`team_id` AS `team_id`, s.`timestamp` AS `timestamp`, "
        "s.`_inserted_at` AS `_inserted_at`, s.`created_at` AS `created_at`, s.`event` AS `event`, "
        "s.`properties` AS `properties`, s.`distinct_id` AS `distinct_id`, s.`elements_chain` AS `elements_chain`, "
        "s.`person_id` AS `person_id`, s.`person_properties` AS `person_properties`, s.`set` AS `set`, "
        f"s.`set_once` AS `set_once` FROM `{PROJECT}`.`{DATASET}`.`{stage}` AS s "
        f"WHERE NOT EXISTS (SELECT 1 FROM `{PROJECT}`.`{DATASET}`.`events` AS t WHERE t.`uuid` = s.`uuid`)"
    )
    assert fake.calls("DELETE", rf"/tables/{stage}$")
    assert set(fake.tables) == {f"{DATASET}.events"}
    assert all(e["headers"].get("Authorization") == f"Bearer {ACCESS_TOKEN}" for e in fake.log if e is not token)

    # What the fake's tables hold after the load: the source rows, once.
    rows = fake.rows("events")
    assert {r["uuid"]: (r["event"], r["distinct_id"], json.loads(r["properties"]), r["elements_chain"])
            for r in rows} == expected_rows(source)  # fmt: skip
    assert len(rows) == 200


def test_a_rerun_and_an_overlapping_backfill_add_no_duplicates(tmp_path, fake, service_account):
    store = store_with(tmp_path, known_events(50))
    config = bq_config(service_account[0])
    export(file_run(config, "BigQuery"), store)
    export(file_run(config, "BigQuery"), store)
    export(file_run(config, "BigQuery", start=T0 - HOUR, end=T0 + 2 * HOUR), store)
    rows = fake.rows("events")
    assert len(rows) == 50 and len({r["uuid"] for r in rows}) == 50
    assert len(fake.calls("POST", r"/tables$")) == 1 + 3, "the table is created once, a stage table per run"


@pytest.mark.parametrize("use_json_type", [True, False])
def test_use_json_type_types_json_columns_as_json_or_string(tmp_path, fake, service_account, use_json_type):
    config = bq_config(service_account[0], use_json_type=use_json_type)
    export(file_run(config, "BigQuery"), store_with(tmp_path, known_events(5)))
    create, stage_create = fake.calls("POST", r"/tables$")
    kind = "JSON" if use_json_type else "STRING"
    fields = {f["name"]: f["type"] for f in fake.json_of(create)["schema"]["fields"]}
    assert [fields[c] for c in ("properties", "person_properties", "set", "set_once")] == [kind] * 4
    assert fields["elements_chain"] == "STRING"
    staged = {f["name"]: f["type"] for f in fake.json_of(stage_create)["schema"]["fields"]}
    assert staged["properties"] == "STRING", "JSON travels as text in the stage table"
    (sql,) = fake.queries()
    assert ("PARSE_JSON(s.`properties`) AS `properties`" in sql) is use_json_type
    rows = fake.rows("events", order="uuid")
    assert [json.loads(r["properties"])["i"] for r in rows] == list(range(5))


def test_persons_merge_on_their_key_keeping_the_newest_version(tmp_path, fake, service_account):
    store = store_with(tmp_path, *two_interval_events())
    config = bq_config(service_account[0], table_id="persons", use_json_type=True)
    export(file_run(config, "BigQuery", model="persons", start=T0 + HOUR), store)
    export(file_run(config, "BigQuery", model="persons", start=T0), store)  # older, after the newer
    people = {r["distinct_id"]: r for r in fake.rows("persons")}
    assert json.loads(people["ada"]["properties"]) == {"plan": "pro"} and people["ada"]["person_version"] == 1
    assert json.loads(people["bob"]["properties"]) == {"plan": "free"}
    sql = fake.queries()[0]
    assert sql.startswith(f"MERGE INTO `{PROJECT}`.`{DATASET}`.`persons` AS t USING (SELECT ")
    assert "ON t.`team_id` = s.`team_id` AND t.`distinct_id` = s.`distinct_id`" in sql
    assert ("WHEN MATCHED AND (t.`person_version` IS NULL OR t.`person_version` < s.`person_version` OR "
            "t.`person_distinct_id_version` IS NULL OR t.`person_distinct_id_version` < "
            "s.`person_distinct_id_version`) THEN UPDATE SET") in sql  # fmt: skip
    (create,) = [
        e for e in fake.calls("POST", r"/tables$") if fake.json_of(e)["tableReference"]["tableId"] == "persons"
    ]
    assert "timePartitioning" not in fake.json_of(create)


def test_sessions_merge_with_urls_as_a_repeated_column(tmp_path, fake, service_account):
    store = store_with(tmp_path, *two_interval_events())
    config = bq_config(service_account[0], table_id="sessions")
    for start in (T0, T0 + HOUR, T0):
        export(file_run(config, "BigQuery", model="sessions", start=start), store)
    sessions = {r["session_id"]: r for r in fake.rows("sessions")}
    assert sessions["s1"]["urls"] == ["https://ex.ample/1", "https://ex.ample/3"]
    assert sessions["s1"]["pageview_count"] == 2 and sessions["s2"]["urls"] == ["https://ex.ample/2"]
    (create,) = [
        e for e in fake.calls("POST", r"/tables$") if fake.json_of(e)["tableReference"]["tableId"] == "sessions"
    ]
    urls = next(f for f in fake.json_of(create)["schema"]["fields"] if f["name"] == "urls")
    assert (urls["type"], urls["mode"]) == ("STRING", "REPEATED")


def test_large_files_go_through_a_resumable_upload(tmp_path, fake, service_account, monkeypatch):
    import google.cloud.bigquery.client

    monkeypatch.setattr(google.cloud.bigquery.client, "_MAX_MULTIPART_SIZE", 1)  # every file counts as large
    source = known_events(40)
    export(file_run(bq_config(service_account[0]), "BigQuery"), store_with(tmp_path, source))
    (start,) = fake.calls("POST", r"^/upload/")
    assert start["query"]["uploadType"] == ["resumable"]
    assert fake.json_of(start)["configuration"]["load"]["sourceFormat"] == "PARQUET"
    (chunk,) = fake.calls("PUT", r"^/upload/")
    assert pq.read_table(io.BytesIO(chunk["upload"]["data"])).num_rows == 40
    assert {r["uuid"] for r in fake.rows("events")} == set(source.column("uuid").to_pylist())


def test_an_existing_table_keeps_its_schema_and_gets_only_its_columns(tmp_path, fake, service_account):
    fake.create(DATASET, "events", {"tableReference": {"tableId": "events"}, "schema": {"fields": [
        {"name": "uuid", "type": "STRING", "mode": "NULLABLE"}, {"name": "event", "type": "STRING"},
        {"name": "properties", "type": "JSON"}, {"name": "timestamp", "type": "TIMESTAMP"},
    ]}})  # fmt: skip
    export(file_run(bq_config(service_account[0]), "BigQuery"), store_with(tmp_path, known_events(3)))
    (sql,) = fake.queries()
    assert sql.startswith(f"INSERT INTO `{PROJECT}`.`{DATASET}`.`events` (`uuid`, `timestamp`, `event`, `properties`)")
    assert "PARSE_JSON(s.`properties`)" in sql, "the existing column is JSON"
    assert [set(r) for r in fake.rows("events")] == [{"uuid", "event", "properties", "timestamp"}] * 3


def test_a_missing_dataset_fails_without_retry_and_without_the_key(tmp_path, fake, service_account):
    config = bq_config(service_account[0], dataset_id="nope")
    with pytest.raises(NonRetryableError, match="Dataset 'nope' does not exist in project 'acme-analytics'") as caught:
        export(file_run(config, "BigQuery"), store_with(tmp_path, known_events(3)))
    assert "PRIVATE KEY" not in str(caught.value)
    assert not fake.calls("POST", r"^/upload/"), "nothing is loaded"


def test_denied_access_and_rejected_credentials_are_not_retried(tmp_path, fake, service_account):
    store = store_with(tmp_path, known_events(3))
    fake.forbidden.add(f"/bigquery/v2/projects/{PROJECT}/datasets/{DATASET}")
    with pytest.raises(NonRetryableError, match="lacks a BigQuery permission"):
        export(file_run(bq_config(service_account[0]), "BigQuery"), store)
    fake.forbidden.clear()
    fake.token_error = "Invalid JWT Signature."
    with pytest.raises(NonRetryableError, match="rejected the service account's credentials") as caught:
        export(file_run(bq_config(service_account[0]), "BigQuery"), store)
    assert "PRIVATE KEY" not in str(caught.value)


def test_a_value_that_does_not_fit_the_column_type_is_not_retried(tmp_path, fake, service_account):
    fake.create(DATASET, "events", {"tableReference": {"tableId": "events"}, "schema": {"fields": [
        {"name": "uuid", "type": "STRING"}, {"name": "event", "type": "INT64"},
    ]}})  # fmt: skip
    with pytest.raises(NonRetryableError, match="does not fit the exported data"):
        export(file_run(bq_config(service_account[0]), "BigQuery"), store_with(tmp_path, known_events(3)))


def test_an_unreadable_private_key_is_not_retried():
    with pytest.raises(NonRetryableError, match="service account key cannot be read") as caught:
        bigquery_sink.make_client(bq_config("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n"))
    assert "not a key" not in str(caught.value)


@pytest.mark.parametrize(
    ("exception", "args", "retryable"),
    [
        ("TooManyRequests", ("Exceeded rate limits",), True),
        ("ServiceUnavailable", ("Backend unavailable",), True),
        ("InternalServerError", ("An internal error occurred",), True),
        ("Forbidden", ("Quota exceeded: too many table update operations",), True),
        ("BadRequest", ("Query error: Cannot parse JSON",), False),
        ("Unauthorized", ("Request had invalid authentication credentials.",), False),
    ],
)
def test_client_exceptions_are_classified(exception, args, retryable, service_account):
    """Exceptions built as the client raises them: the fake would need minutes of the client's own
    retries to surface a 5xx."""
    from google.api_core import exceptions

    error = getattr(exceptions, exception)(*args)
    if exception == "Forbidden":
        error = exceptions.Forbidden(args[0], errors=[{"reason": "quotaExceeded", "message": args[0]}])
    classified = bigquery_sink.classify(error, bq_config(service_account[0]))
    assert isinstance(classified, RetryableError if retryable else NonRetryableError)
    assert args[0] in str(classified)
    assert "PRIVATE KEY" not in str(classified)
    assert isinstance(bigquery_sink.classify(requests.ConnectionError("reset"), {}), RetryableError)
    from batchexports.core.run import Cancelled

    with pytest.raises(Cancelled), bigquery_sink.classified({}):
        raise Cancelled("a cancellation is no BigQuery error")


def test_destination_test_steps(fake, service_account):
    from batchexports.destinations import registry

    steps = registry.get("BigQuery").test_steps
    config = bq_config(service_account[0])
    secrets = {"private_key": config["private_key"], "private_key_id": config["private_key_id"]}
    assert [run_step(steps, i, config, secrets)["result"]["status"] for i in range(len(steps))] == ["Passed"] * 2
    assert fake.tables == {}, "the test table is deleted"
    (upload,) = fake.calls("POST", r"^/upload/")
    assert upload["upload"]["metadata"]["configuration"]["load"]["destinationTable"]["tableId"].startswith(
        "batchexports_test_"
    )

    missing = {**config, "dataset_id": "nope"}
    result = run_step(steps, 0, missing, secrets)["result"]
    assert result["status"] == "Failed" and "Dataset 'nope' does not exist" in result["message"]
    assert config["private_key_id"] not in result["message"]


def test_the_stage_table_name_is_stable_per_interval():
    a = file_run({}, "BigQuery", start=T0)
    assert bigquery_sink.stage_table_id(a, "events") == bigquery_sink.stage_table_id(a, "events")
    assert bigquery_sink.stage_table_id(a, "events") != bigquery_sink.stage_table_id(
        file_run({}, "BigQuery", start=T0 + HOUR), "events"
    )
    assert re.fullmatch(r"events_stage_[0-9a-f]{16}", bigquery_sink.stage_table_id(a, "events"))
    assert dt.timedelta(days=1) == bigquery_sink.STAGE_EXPIRY
    assert pa is not None


# -- stage tables a killed run left -----------------------------------------------------------------


def leftover_stages(config: dict[str, Any]) -> dict[str, str]:
    """A killed run's stage of the export, a fresh one of a run in flight, another export's old one,
    all created by the sink's `create_stage` (labels and all), and a user's tables named like stages:
    one without labels, one with a `batchexports_stage` label but no creation label."""
    from google.cloud import bigquery

    export_id = file_run(config, "BigQuery").batch_export_id
    now = dt.datetime.now(dt.UTC)
    names = {
        "killed": bigquery_sink.stage_table_id(file_run(config, "BigQuery", start=T0 - 5 * HOUR), "events"),
        "in_flight": bigquery_sink.stage_table_id(file_run(config, "BigQuery", start=T0 + HOUR), "events"),
        "other_export": "events_stage_0123456789abcdef",
        "user": "events_stage_mine",
        "user_labelled": "events_stage_labelled",
    }
    fields = [bigquery.SchemaField("uuid", "STRING")]
    client = bigquery_sink.make_client(config)
    for key, owner, age in [
        ("killed", export_id, dt.timedelta(hours=30)),
        ("in_flight", export_id, dt.timedelta(minutes=1)),
        ("other_export", "another-export", dt.timedelta(hours=30)),
    ]:
        sink = bigquery_sink.BigQuerySink(config)
        sink.export_id = owner
        sink.create_stage(client, names[key], fields, created=now - age)
    client.create_table(bigquery.Table(f"{PROJECT}.{DATASET}.{names['user']}", schema=fields))
    labelled = bigquery.Table(f"{PROJECT}.{DATASET}.{names['user_labelled']}", schema=fields)
    labelled.labels = {"batchexports_stage": bigquery_sink.label_value(export_id)}
    client.create_table(labelled)
    return names


def test_the_sweep_deletes_only_the_exports_stale_stage_tables(fake, service_account):
    config = bq_config(service_account[0])
    names = leftover_stages(config)
    (create,) = [
        e for e in fake.calls("POST", r"/tables$") if fake.json_of(e)["tableReference"]["tableId"] == names["killed"]
    ]
    labels = fake.json_of(create)["labels"]
    assert set(labels) == {"batchexports_stage", "batchexports_created"}
    assert labels["batchexports_stage"] == "00000000-0000-0000-0000-00000000beef"
    thirty_hours_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=30)).timestamp()
    assert abs(int(labels["batchexports_created"]) - thirty_hours_ago) < 60
    export_id = file_run(config, "BigQuery").batch_export_id
    dropped = bigquery_sink.BigQuerySink(config).drop_stale_stages(export_id, dt.timedelta(hours=2))
    assert dropped == [names["killed"]]
    assert len(fake.calls("GET", rf"/datasets/{DATASET}/tables$")) == 3, "five tables, in pages of two"
    assert [e["path"] for e in fake.calls("DELETE", r"/tables/")] == [
        f"/bigquery/v2/projects/{PROJECT}/datasets/{DATASET}/tables/{names['killed']}"
    ]
    kept = {f"{DATASET}.{names[k]}" for k in ("in_flight", "other_export", "user", "user_labelled")}
    assert set(fake.tables) == kept


def test_the_next_run_deletes_the_stage_a_killed_run_left_and_no_other_table(tmp_path, fake, service_account):
    config = bq_config(service_account[0])
    names = leftover_stages(config)
    result = export(file_run(config, "BigQuery"), store_with(tmp_path, known_events(20)))
    assert result.records_completed == 20
    kept = {f"{DATASET}.{names[k]}" for k in ("in_flight", "other_export", "user", "user_labelled")}
    assert set(fake.tables) == kept | {f"{DATASET}.events"}
