"""The web page's server side, through Django's test client (no browser): access, forms built
from the destinations' serializers, every validation message beside its field, secrets that
never reach a page, logs filters, static files, and `batchexports set-password`."""

from __future__ import annotations

import datetime as dt
import io
import re
from typing import Any

import pytest
from django.contrib.auth import authenticate
from django.test import Client
from django.utils import timezone

from batchexports import cli
from batchexports.accounts.models import User
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportLogEntry, BatchExportRun
from tests import contract
from tests.conftest import export_payload, prefix_for

pytestmark = pytest.mark.django_db

S3_SECRET = contract.register_secret("web-page-secret-that-must-never-render-7f3a")


@pytest.fixture
def web(client: Any, user: User) -> Any:
    """The test client, signed in as `user` with a session (as the page is used)."""
    client.force_login(user)
    return client


def file_form(**overrides: str) -> dict[str, str]:
    form = {
        "destination_type": "File",
        "name": "Hourly to a folder",
        "model": "events",
        "interval": "hour",
        "timezone": "UTC",
        "config.path": "acme/events",
        "config.prefix": "",
        "config.file_format": "JSONLines",
        "config.compression": "",
        "config.max_file_size_mb": "",
        "config.include_events": "",
        "config.exclude_events": "",
        "hogql_query": "",
        "filters": "",
    }
    form.update(overrides)
    return form


def errors_beside(html: str, field: str) -> list[str]:
    """The messages in the errors box of `field` (`name`, `config.path`, ...)."""
    match = re.search(rf'data-errors-for="{re.escape(field)}"[^>]*>(.*?)</div>', html, re.S)
    assert match, f"no errors box for {field}"
    return [re.sub(r"<[^>]+>", "", m).strip() for m in re.findall(r"<p>(.*?)</p>", match.group(1), re.S)]


def s3_export(api: Any, project: Any) -> dict[str, Any]:
    payload = export_payload(name="Events to S3")
    payload["destination"]["config"]["aws_secret_access_key"] = S3_SECRET
    response = api.post(prefix_for("projects", project), payload, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


# Access


def test_pages_ask_to_sign_in_first(client, project):
    for path in (f"/projects/{project.id}/", "/", f"/projects/{project.id}/exports/new/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"].startswith("/login/"), path
    page = client.get("/login/")
    assert page.status_code == 200 and b'name="password"' in page.content
    assert "default-src 'self'" in page["Content-Security-Policy"]


def test_signing_in_leads_to_the_exports_of_the_first_project(client, user, project):
    response = client.post("/login/", {"username": "ada@example.com", "password": "wrong"})
    assert response.status_code == 200 and b"Please enter a correct" in response.content
    response = client.post("/login/", {"username": "ada@example.com", "password": "correct horse"})
    assert response.status_code == 302
    home = client.get(response["Location"])
    assert home.status_code == 302 and home["Location"] == f"/projects/{project.id}/"
    assert b"No batch exports yet" in client.get(home["Location"]).content
    assert client.post("/logout/").status_code == 302
    assert client.get(f"/projects/{project.id}/").status_code == 302


def test_a_user_sees_only_the_projects_of_their_organizations(web, project, sibling_project, other_organization):
    _, other_project, _ = other_organization
    html = web.get(f"/projects/{project.id}/").content.decode()
    assert "Web" in html and "Mobile" in html and "Globex" not in html
    assert web.get(f"/projects/{other_project.id}/").status_code == 403
    assert web.get(f"/switch/?project={other_project.id}").status_code == 403
    assert web.get("/projects/999999/").status_code == 404
    switched = web.get(f"/switch/?project={sibling_project.id}")
    assert switched["Location"] == f"/projects/{sibling_project.id}/"
    assert web.get("/")["Location"] == f"/projects/{sibling_project.id}/"  # remembered


def test_an_export_of_another_project_is_not_found_through_this_one(web, api, project, sibling_project):
    export_id = s3_export(api, sibling_project)["id"]
    assert web.get(f"/projects/{project.id}/exports/{export_id}/").status_code == 404
    assert web.get(f"/projects/{sibling_project.id}/exports/{export_id}/").status_code == 200
    assert web.get(f"/projects/{project.id}/exports/not-a-uuid/").status_code == 404


def test_the_api_health_admin_and_capture_routes_come_before_the_page(web, project):
    assert web.get("/_health").status_code in (200, 503)
    assert web.get(f"/api/projects/{project.id}/batch_exports/").status_code == 200
    assert web.get("/admin/login/").status_code == 200
    assert web.post("/batch/", {}, format="json").status_code in (400, 401)


def test_static_files_are_served_without_a_separate_web_server(settings):
    settings.DEBUG = False
    client = Client()
    response = client.get("/static/web/app.js")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/javascript")
    assert b"initExportPage" in b"".join(response.streaming_content)
    assert client.get("/static/web/app.css").status_code == 200
    assert client.get("/static/web/missing.css").status_code == 404
    assert client.get("/static/../settings.py").status_code == 404


# The list


def test_the_list_shows_each_export_with_its_target_and_latest_runs(web, api, project):
    export = s3_export(api, project)
    start = timezone.now().replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=3)
    for i, status in enumerate(["Completed", "Failed", "Running"]):
        BatchExportRun.objects.create(
            batch_export_id=export["id"],
            status=status,
            records_completed=100 * i,
            data_interval_start=start + dt.timedelta(hours=i),
            data_interval_end=start + dt.timedelta(hours=i + 1),
        )
    html = web.get(f"/projects/{project.id}/").content.decode()
    assert "Events to S3" in html and "s3://analytics/posthog/{year}/{month}" in html
    squares = re.findall(r'<li class="square status-(\w+)" title="([^"]+)"', html)
    assert [css for css, _ in squares] == ["ok", "bad", "active"]
    assert "Failed · 100 rows" in squares[1][1]
    assert 'role="switch" aria-checked="true"' in html
    assert S3_SECRET not in html


# Create and edit


def test_the_form_of_a_destination_is_built_from_its_config_serializer(web, project):
    html = web.get(f"/projects/{project.id}/exports/new/?type=S3").content.decode()
    assert 'name="config.bucket_name"' in html and 'name="config.region"' in html
    # required fields are marked, choices are selects with the default chosen, booleans are checkboxes
    assert re.search(r'for="config-bucket-name">Bucket name <span class="req"', html)
    assert re.search(r'<option value="Parquet"[^>]*>Parquet</option>', html)
    assert re.search(r'<option value="JSONLines" selected>JSONLines</option>', html)
    assert 'type="checkbox" id="config-use-virtual-style-addressing"' in html
    # secrets are password inputs, "not set" on create
    assert re.search(r'type="password" id="config-aws-secret-access-key"', html)
    assert "not set" in html
    assert "Create the folder" not in html  # S3 has its own test steps
    redshift = web.get(f"/projects/{project.id}/exports/new/?type=Redshift").content.decode()
    assert re.search(r'<textarea id="config-copy-inputs"[^>]*data-kind="json"', redshift)
    assert "authorization.aws_secret_access_key" in redshift
    chooser = web.get(f"/projects/{project.id}/exports/new/").content.decode()
    assert "Local folder" in chooser and "?type=File" in chooser
    assert web.get(f"/projects/{project.id}/exports/new/?type=Nope").status_code == 404


def test_creating_a_file_export_through_the_form(web, project, engine):
    response = web.post(f"/projects/{project.id}/exports/new/", file_form(**{"config.include_events": "a, b"}))
    assert response.status_code == 302, errors_beside(response.content.decode(), "config.path")
    export = BatchExport.objects.get(team=project)
    assert response["Location"] == f"/projects/{project.id}/exports/{export.id}/"
    assert export.destination.config["path"] == "acme/events"
    assert export.destination.config["include_events"] == ["a", "b"]
    assert export.destination.config["compression"] is None
    assert [call.name for call in engine.calls] == ["sync_batch_export"]
    assert "Created the batch export" in web.get(response["Location"]).content.decode()


def test_every_validation_message_is_shown_beside_its_field(web, project):
    response = web.post(
        f"/projects/{project.id}/exports/new/",
        file_form(name=" ", timezone="Mars/Olympus", **{"config.path": "/etc", "config.max_file_size_mb": "0"}),
    )
    assert response.status_code == 200
    html = response.content.decode()
    assert errors_beside(html, "name") == ["This field may not be blank."]
    assert "not a known IANA timezone" in errors_beside(html, "timezone")[0]
    assert errors_beside(html, "config.path") == [
        "&#x27;/etc&#x27; is an absolute path; give a path relative to the export directory."
    ]
    assert "greater than or equal to 1" in errors_beside(html, "config.max_file_size_mb")[0]
    assert 'value="/etc"' in html  # what was typed is kept
    assert not BatchExport.objects.exists()

    bad_json = web.post(f"/projects/{project.id}/exports/new/", file_form(filters="[oops"))
    assert errors_beside(bad_json.content.decode(), "filters")[0].startswith("Enter valid JSON")
    compression = web.post(
        f"/projects/{project.id}/exports/new/", file_form(**{"config.compression": "snappy"})
    ).content.decode()
    assert "not supported for file format" in errors_beside(compression, "config.compression")[0]
    offset = web.post(f"/projects/{project.id}/exports/new/", file_form(offset_hour="3")).content.decode()
    assert "only applies to daily and weekly" in errors_beside(offset, "offset_hour")[0]


def test_a_secret_never_reaches_a_page_and_an_empty_input_keeps_it(web, api, project):
    export = s3_export(api, project)
    base = f"/projects/{project.id}/exports/{export['id']}/"
    pages = [f"/projects/{project.id}/", base, f"{base}edit/"]
    for path in pages:
        html = web.get(path).content.decode()
        assert S3_SECRET not in html and "AKIATESTACCESSKEY01" not in html, path
    edit = web.get(f"{base}edit/").content.decode()
    assert re.search(r'id="config-aws-secret-access-key-state">set<', edit)

    form = {
        "destination_type": "S3",
        "name": "Renamed",
        "model": "events",
        "interval": "hour",
        "timezone": "UTC",
        "config.bucket_name": "analytics",
        "config.region": "eu-west-1",
        "config.prefix": "p",
        "config.file_format": "Parquet",
        "config.compression": "zstd",
        "config.aws_access_key_id": "",
        "config.aws_secret_access_key": "",
    }
    response = web.post(f"{base}edit/", form)
    assert response.status_code == 302, response.content.decode()[:2000]
    stored = BatchExport.objects.get(id=export["id"])
    assert stored.name == "Renamed" and stored.destination.config["prefix"] == "p"
    assert stored.destination.full_config()["aws_secret_access_key"] == S3_SECRET

    replaced = contract.register_secret("a-replacement-secret-value-9c1d")
    web.post(f"{base}edit/", {**form, "config.aws_secret_access_key": replaced})
    assert BatchExport.objects.get(id=export["id"]).destination.full_config()["aws_secret_access_key"] == replaced

    # A failed save shows the errors, still without any secret.
    failed = web.post(f"{base}edit/", {**form, "config.bucket_name": "", "config.aws_secret_access_key": replaced})
    html = failed.content.decode()
    assert failed.status_code == 200 and errors_beside(html, "config.bucket_name") == ["This field may not be blank."]
    assert replaced not in html and S3_SECRET not in html

    cleared = web.post(
        f"{base}edit/", {**form, "config.aws_access_key_id.clear": "on", "config.aws_secret_access_key.clear": "on"}
    )
    assert cleared.status_code == 302
    assert BatchExport.objects.get(id=export["id"]).destination.secrets() in (
        {},
        {"aws_access_key_id": None, "aws_secret_access_key": None},
    )


def test_editing_shows_the_stored_values(web, api, project):
    export = s3_export(api, project)
    api.patch(f"{prefix_for('projects', project)}{export['id']}/", {"interval": "day", "offset_hour": 5}, format="json")
    html = web.get(f"/projects/{project.id}/exports/{export['id']}/edit/").content.decode()
    assert 'value="analytics"' in html and '<option value="day" selected>' in html
    assert '<option value="5" selected>05:00</option>' in html
    assert '<option value="zstd"' not in html  # compression is free text, not a select
    assert 'value="zstd"' in html
    assert f'data-test-url="/api/projects/{project.id}/batch_exports/{export["id"]}/run_test_step/"' in html


# The export page


def test_the_export_page_shows_runs_backfills_charts_and_filtered_logs(web, api, project):
    export = s3_export(api, project)
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    done = BatchExportRun.objects.create(
        batch_export_id=export["id"],
        status="Completed",
        records_completed=1234,
        bytes_exported=4096,
        data_interval_start=now - dt.timedelta(hours=2),
        data_interval_end=now - dt.timedelta(hours=1),
        finished_at=timezone.now(),
    )
    failed = BatchExportRun.objects.create(
        batch_export_id=export["id"],
        status="Failed",
        latest_error="Access denied to the bucket 'analytics'",
        data_interval_start=now - dt.timedelta(hours=1),
        data_interval_end=now,
    )
    for run, level, message in ((done, "INFO", "Run completed: 1234 rows"), (failed, "ERROR", "Access denied")):
        BatchExportLogEntry.objects.create(
            team_id=project.id, batch_export_id=export["id"], run_id=run.id, level=level, message=message,
            timestamp=timezone.now(),
        )  # fmt: skip
    base = f"/projects/{project.id}/exports/{export['id']}/"
    html = web.get(base).content.decode()
    assert "1,234" in html and "4.0 KB" in html and "Access denied to the bucket" in html
    assert 'data-action="retry-run"' in html
    assert '<svg class="chart" id="chart-runs"' in html and '<svg class="chart" id="chart-rows"' in html
    assert "Successes: 1, Failures: 1" in html and "Rows: 1.2k" in html
    assert "Run completed: 1234 rows" in html and "Access denied</td>" in html
    errors_only = web.get(f"{base}?level=ERROR").content.decode()
    assert "Run completed: 1234 rows" not in errors_only and "Access denied</td>" in errors_only
    searched = web.get(f"{base}?search=completed").content.decode()
    assert "Run completed: 1234 rows" in searched and "Access denied</td>" not in searched
    by_run = web.get(f"{base}?run={failed.id}").content.decode()
    assert "Run completed: 1234 rows" not in by_run
    run_page = web.get(f"{base}runs/{done.id}/").content.decode()
    assert "Run completed: 1234 rows" in run_page and "Access denied</td>" not in run_page
    assert web.get(f"{base}runs/{dt.datetime.now().isoformat()}/").status_code == 404


def test_the_export_page_shows_each_execution_of_an_interval_and_backfill_counts(web, api, project):
    export = s3_export(api, project)
    start = timezone.now().replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=3)
    backfill = BatchExportBackfill.objects.create(
        team_id=project.id, batch_export_id=export["id"], status="Running", start_at=start - dt.timedelta(days=9),
        end_at=start + dt.timedelta(hours=1), adjusted_start_at=start, total_runs=1, total_records_count=4321,
    )  # fmt: skip
    for status, latest_error, from_backfill in (("Failed", "Access denied", False), ("Completed", None, True)):
        BatchExportRun.objects.create(
            batch_export_id=export["id"], status=status, latest_error=latest_error, data_interval_start=start,
            data_interval_end=start + dt.timedelta(hours=1), backfill=backfill if from_backfill else None,
        )  # fmt: skip
    html = web.get(f"/projects/{project.id}/exports/{export['id']}/").content.decode()
    rows = re.findall(r'<tr data-run-id="[^"]+" data-status="(\w+)">(.*?)</tr>', html, re.S)
    assert [status for status, _ in rows] == ["Completed", "Failed"]  # both executions of the interval
    assert "attempt 2" in rows[0][1] and "attempt" not in rows[1][1]
    assert "about 4,321 records to export" in html
    assert f"from the earliest data, {start:%Y-%m-%d %H:%M} UTC" in html
    BatchExportBackfill.objects.filter(id=backfill.id).update(status="Cancelled", total_records_count=12)
    html = web.get(f"/projects/{project.id}/exports/{export['id']}/").content.decode()
    assert "ended cancelled" in html and "12 records exported" in html


def test_a_failed_backfill_shows_red_with_the_count_of_its_failed_runs(web, api, project):
    export = s3_export(api, project)
    start = timezone.now().replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=3)
    backfill = BatchExportBackfill.objects.create(
        team_id=project.id, batch_export_id=export["id"], status="Failed", start_at=start,
        end_at=start + dt.timedelta(hours=3), total_runs=3,
    )  # fmt: skip
    for hour, status in enumerate(("Failed", "Completed", "Failed")):
        BatchExportRun.objects.create(
            batch_export_id=export["id"], status=status, backfill=backfill,
            data_interval_start=start + dt.timedelta(hours=hour),
            data_interval_end=start + dt.timedelta(hours=hour + 1),
        )  # fmt: skip
    html = web.get(f"/projects/{project.id}/exports/{export['id']}/").content.decode()
    item = re.search(rf'<li class="backfill" data-backfill-id="{backfill.id}".*?</li>', html, re.S).group(0)
    assert '<span class="badge status-bad">Failed</span>' in item
    assert '<span class="badge status-bad failed-runs">2 failed runs</span>' in item
    assert "Completed" not in item


def test_backfill_defaults_follow_the_interval(web, api, project):
    export = s3_export(api, project)
    html = web.get(f"/projects/{project.id}/exports/{export['id']}/").content.decode()
    assert re.search(r'id="backfill-start" name="start_at" value="\d{4}-\d\d-\d\dT\d\d:00:00Z"', html)
    api.patch(f"{prefix_for('projects', project)}{export['id']}/", {"interval": "day"}, format="json")
    html = web.get(f"/projects/{project.id}/exports/{export['id']}/").content.decode()
    assert re.search(r'id="backfill-start" name="start_at" value="\d{4}-\d\d-\d\d"', html)


# set-password


def test_set_password_changes_the_password_from_stdin(user, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("a new passphrase\n"))
    assert cli.main(["set-password", "--email", "ADA@example.com", "--password-stdin"]) == 0
    assert "password of ada@example.com changed" in capsys.readouterr().out
    assert authenticate(username="ada@example.com", password="a new passphrase") is not None
    assert cli.main(["set-password", "--email", "nobody@example.com", "--password-stdin"]) == 2


def test_set_password_prompts_twice(user, monkeypatch):
    answers = iter(["first", "second"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    assert cli.main(["set-password", "--email", "ada@example.com"]) == 2
    answers = iter(["same one", "same one"])
    assert cli.main(["set-password", "--email", "ada@example.com"]) == 0
    assert authenticate(username="ada@example.com", password="same one") is not None


def test_the_config_form_takes_its_inputs_from_the_serializers_field_styles():
    """A secret rendered as a text area is one whose field style says so (DRF's `base_template`),
    not one whose name looks like a key: the PEM keys are multi-line, their ids and passphrases not."""
    from batchexports.destinations import registry
    from batchexports.web.forms import config_fields

    kinds = {
        (spec.type, field.name): field.kind
        for spec in registry.all_specs()
        for field in config_fields(spec)
        if field.kind in ("secret", "secret_text")
    }
    assert {key for key, kind in kinds.items() if kind == "secret_text"} == {
        ("BigQuery", "private_key"),
        ("Snowflake", "private_key"),
    }
    assert kinds[("Snowflake", "private_key_passphrase")] == "secret"
    assert kinds[("BigQuery", "private_key_id")] == "secret"
