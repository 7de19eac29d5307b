"""The web page in a real browser (headless Chromium through Playwright) against the live server,
with the recording engine: signing in, the project switcher, creating a File export through the
form and testing its destination, validation messages beside their fields, pausing, the export
and run pages, secrets that never reach a page, and phone widths. Every test fails on a console
error it did not provoke. Screenshots land in test-artifacts/screenshots/."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from django.utils import timezone

from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportLogEntry, BatchExportRun
from tests import contract, test_engine, web_support
from tests.conftest import export_payload, prefix_for
from tests.web_support import PHONE, expect

# Fixtures these tests use, from where they are defined.
browser, ui, export_dir = web_support.browser, web_support.ui, test_engine.export_dir

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

SECRET = contract.register_secret("browser-visible-secret-must-not-appear-41b2")
API_400 = r"status of 400"  # Chromium logs a failed fetch as a console error


def s3_export(api: Any, project: Any, name: str = "Events to S3") -> dict[str, Any]:
    payload = export_payload(name=name)
    payload["destination"]["config"]["aws_secret_access_key"] = SECRET
    response = api.post(prefix_for("projects", project), payload, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def with_runs_and_logs(export_id: str, project: Any) -> tuple[BatchExportRun, BatchExportRun]:
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    done = BatchExportRun.objects.create(
        batch_export_id=export_id,
        status="Completed",
        records_completed=1234,
        bytes_exported=56_789,
        data_interval_start=now - dt.timedelta(hours=2),
        data_interval_end=now - dt.timedelta(hours=1),
        finished_at=timezone.now(),
    )
    failed = BatchExportRun.objects.create(
        batch_export_id=export_id,
        status="Failed",
        latest_error="AccessDenied: the key may not write to bucket 'analytics'",
        data_interval_start=now - dt.timedelta(hours=1),
        data_interval_end=now,
        finished_at=timezone.now(),
    )
    stamp = timezone.now()
    for run, level, message in (
        (done, "INFO", "Run starting"),
        (done, "INFO", "Run completed: 1234 rows"),
        (failed, "INFO", "Run starting"),
        (failed, "ERROR", "Run failed: AccessDenied"),
    ):
        stamp += dt.timedelta(seconds=1)
        BatchExportLogEntry.objects.create(
            team_id=project.id, batch_export_id=export_id, run_id=run.id, level=level, message=message, timestamp=stamp
        )
    return done, failed


def test_signing_in_and_switching_projects(ui, user, project, sibling_project, other_organization):
    ui.page.goto(ui.base_url + "/")
    expect(ui.page).to_have_url(re.compile(r"/login/\?next=/$"))
    ui.shot("login")
    ui.page.get_by_label("Email").fill("ada@example.com")
    ui.page.get_by_label("Password").fill("not it")
    ui.page.get_by_role("button", name="Sign in").click()
    expect(ui.page.get_by_role("alert")).to_contain_text("correct email")
    ui.sign_in()
    expect(ui.page.get_by_role("heading", name="Batch exports", exact=True)).to_be_visible()
    expect(ui.page.get_by_text("No batch exports yet")).to_be_visible()
    switcher = ui.page.get_by_label("Project")
    options = switcher.locator("option").all_inner_texts()
    assert sorted(options) == ["Mobile", "Web"]  # not Globex's project
    switcher.select_option(label="Mobile")
    ui.page.get_by_role("button", name="Switch").click()
    expect(ui.page).to_have_url(re.compile(rf"/projects/{sibling_project.id}/$"))
    ui.shot("exports-empty")
    ui.page.get_by_role("button", name="Sign out").click()
    expect(ui.page).to_have_url(re.compile(r"/login/$"))


def test_creating_a_file_export_and_testing_its_destination(ui, user, project, export_dir, engine):
    ui.sign_in()
    ui.page.get_by_role("link", name="New batch export").click()
    ui.shot("new-choose-destination")
    ui.page.get_by_role("link", name=re.compile("Local folder")).click()
    ui.page.get_by_role("textbox", name="Name (required)", exact=True).fill("Hourly events to a folder")
    ui.page.get_by_label("Path").fill("acme/events")
    ui.page.get_by_label("File format").select_option("Parquet")
    ui.page.get_by_label("Compression").fill("zstd")
    ui.page.get_by_role("button", name="Test destination").click()
    steps = ui.page.locator("#test-steps [data-step-status]")
    expect(steps).to_have_text(["Passed", "Passed"])
    expect(ui.page.locator("#tests-summary")).to_have_text("Every check passed.")
    assert (export_dir / "acme" / "events").is_dir()
    assert not BatchExport.objects.exists()  # testing saves nothing
    ui.shot("new-file-export-tested")
    ui.page.get_by_role("button", name="Create batch export").click()
    expect(ui.page.get_by_role("heading", name="Hourly events to a folder")).to_be_visible()
    expect(ui.page.get_by_role("status").first).to_contain_text("Created the batch export")
    export = BatchExport.objects.get()
    assert export.destination.type == "File" and export.destination.config["file_format"] == "Parquet"
    assert export.destination.config["compression"] == "zstd"
    assert [c.name for c in engine.calls] == ["sync_batch_export"]


def test_validation_messages_show_beside_their_fields(ui, user, project, export_dir):
    ui.allow(API_400)
    ui.sign_in()
    ui.goto(f"/projects/{project.id}/exports/new/?type=File")
    ui.page.get_by_label("Path").fill("/etc")
    # The destination test reports the API's error beside the field it names.
    ui.page.get_by_role("button", name="Test destination").click()
    path_errors = ui.page.locator('[data-errors-for="config.path"]')
    expect(path_errors).to_contain_text("'/etc' is an absolute path")
    expect(ui.page.locator("#test-steps [data-step-status]")).to_have_text(["Failed", "Skipped"])
    # Saving shows every message of the serializer at once, each beside its field.
    ui.page.get_by_label("Max file size MB").fill("0")
    ui.page.get_by_role("button", name="Create batch export").click()
    expect(ui.page.get_by_role("alert").first).to_contain_text("was not saved")
    expect(ui.page.locator('[data-errors-for="name"]')).to_have_text("This field may not be blank.")
    expect(path_errors).to_have_text("'/etc' is an absolute path; give a path relative to the export directory.")
    expect(ui.page.locator('[data-errors-for="config.max_file_size_mb"]')).to_contain_text("greater than or equal to 1")
    expect(ui.page.get_by_label("Path")).to_have_attribute("aria-invalid", "true")
    expect(ui.page.get_by_label("Path")).to_have_value("/etc")
    ui.shot("new-file-export-errors")
    assert not BatchExport.objects.exists()


def test_pausing_and_unpausing_from_the_list(ui, api, user, project, engine):
    export = s3_export(api, project)
    engine.clear()
    ui.sign_in()
    switch = ui.page.get_by_role("switch", name="Active: Events to S3")
    expect(switch).to_have_attribute("aria-checked", "true")
    switch.click()
    expect(switch).to_have_attribute("aria-checked", "false")
    expect(switch).to_have_text("Paused")
    assert BatchExport.objects.get(id=export["id"]).paused
    ui.shot("exports-paused")
    switch.focus()
    ui.page.keyboard.press("Space")  # keyboard reachable: a real button
    expect(switch).to_have_attribute("aria-checked", "true")
    expect(switch).to_have_text("Active")
    assert not BatchExport.objects.get(id=export["id"]).paused
    assert [c.name for c in engine.calls] == ["pause", "unpause"]


def test_the_export_page_runs_logs_and_retry(ui, api, user, project, engine):
    export = s3_export(api, project)
    _, failed = with_runs_and_logs(export["id"], project)
    ui.sign_in()
    ui.page.get_by_role("link", name="Events to S3").click()
    rows = ui.page.locator("#runs-body tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("Failed")
    expect(rows.nth(0)).to_contain_text("AccessDenied")
    expect(rows.nth(1)).to_contain_text("1,234")
    expect(rows.nth(1)).to_contain_text("55.5 KB")
    expect(ui.page.locator("#chart-runs")).to_be_visible()
    expect(ui.page.locator("#chart-rows title").first).to_contain_text("Rows exported per day")
    # Logs: level filter and search.
    logs = ui.page.locator("#log-results tbody tr")
    expect(logs).to_have_count(4)
    ui.page.get_by_label("Level").select_option(label="Errors")
    ui.page.get_by_role("button", name="Filter").click()
    expect(logs).to_have_count(1)
    expect(logs.first).to_contain_text("Run failed: AccessDenied")
    ui.page.get_by_role("link", name="Clear").click()
    ui.page.get_by_label("Search").fill("completed")
    ui.page.get_by_label("Search").press("Enter")
    expect(logs).to_have_count(1)
    ui.shot("export-detail")
    # Retry the failed run: a backfill of its interval appears without a reload, polled while it starts.
    rows.nth(0).get_by_role("button", name="Retry").click()
    expect(ui.page.locator("#toast")).to_contain_text("Retrying")
    expect(ui.page.locator("#backfill-list .backfill")).to_have_count(1)
    expect(ui.page.locator("#backfill-list .backfill .badge")).to_have_text("Starting")
    expect(ui.page.locator("#live-status")).to_have_text("Updating every 2 s…")
    backfill = BatchExportBackfill.objects.get()
    assert (backfill.start_at, backfill.end_at) == (failed.data_interval_start, failed.data_interval_end)
    assert "start_backfill" in [c.name for c in engine.calls]
    # A run's own page and logs.
    ui.page.get_by_role("link", name=re.compile("^Logs of the run")).nth(1).click()
    expect(ui.page.get_by_role("heading", name=re.compile("Run of"))).to_be_visible()
    run_logs = ui.page.locator("#log-results tbody tr")
    expect(run_logs).to_have_count(2)
    expect(run_logs.first).to_contain_text("Run completed: 1234 rows")
    ui.shot("run-detail")


def test_cancelling_a_running_run(ui, api, user, project, engine):
    export = s3_export(api, project)
    now = timezone.now().replace(minute=0, second=0, microsecond=0)
    running = BatchExportRun.objects.create(
        batch_export_id=export["id"], status="Running", data_interval_start=now - dt.timedelta(hours=1),
        data_interval_end=now,
    )  # fmt: skip
    ui.sign_in()
    ui.goto(f"/projects/{project.id}/exports/{export['id']}/")
    expect(ui.page.locator("#live-status")).to_have_text("Updating every 2 s…")
    ui.page.locator("#runs-body").get_by_role("button", name="Cancel").click()
    expect(ui.page.locator("#runs-body .badge")).to_have_text("Cancelled")
    expect(ui.page.locator("#live-status")).to_have_text("Up to date.")
    running.refresh_from_db()
    assert running.status == "Cancelled" and "cancel_run" in [c.name for c in engine.calls]


def test_the_backfill_form_shows_the_api_messages(ui, api, user, project, engine):
    ui.allow(API_400)
    export = s3_export(api, project)
    ui.sign_in()
    ui.goto(f"/projects/{project.id}/exports/{export['id']}/")
    future = (timezone.now() + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:00:00Z")
    ui.page.get_by_label("End").fill(future)
    ui.page.get_by_role("button", name="Start backfill").click()
    expect(ui.page.locator('[data-errors-for="end_at"]')).to_contain_text("is too far into the future")
    ui.page.get_by_label("Start").fill("2026-01-01")
    ui.page.get_by_label("End").fill("2026-01-02T00:00:00Z")
    ui.page.get_by_role("button", name="Start backfill").click()
    expect(ui.page.locator('[data-errors-for="start_at"]')).to_contain_text("must be a datetime with a timezone offset")
    expect(ui.page.locator('[data-errors-for="end_at"]')).to_be_empty()
    ui.shot("export-backfill-errors")
    assert not BatchExportBackfill.objects.exists()


def test_a_secret_never_reaches_any_page(ui, api, user, project):
    export = s3_export(api, project)
    ui.sign_in()
    base = f"/projects/{project.id}/exports/{export['id']}/"
    for path in (f"/projects/{project.id}/", base, f"{base}edit/"):
        ui.goto(path)
        html = ui.page.content()
        assert SECRET not in html and "AKIATESTACCESSKEY01" not in html, path
    expect(ui.page.locator("#config-aws-secret-access-key-state")).to_have_text("set")
    expect(ui.page.get_by_label(re.compile("^AWS secret access key"))).to_have_value("")
    ui.shot("edit-s3-export")
    # Saving an edit with the secret input left empty keeps the stored secret.
    ui.page.get_by_role("textbox", name="Name (required)", exact=True).fill("Renamed export")
    ui.page.get_by_role("button", name="Save changes").click()
    expect(ui.page.get_by_role("heading", name="Renamed export")).to_be_visible()
    assert SECRET not in ui.page.content()
    assert BatchExport.objects.get(id=export["id"]).destination.full_config()["aws_secret_access_key"] == SECRET


def test_pages_fit_a_phone(ui, api, user, project):
    export = s3_export(api, project, name="A batch export with a rather long name to wrap on small screens")
    done, _ = with_runs_and_logs(export["id"], project)
    ui.page.set_viewport_size(PHONE)
    ui.goto("/login/")
    assert ui.horizontal_overflow() <= 0, "the sign-in page is wider than a 375 px phone"
    ui.shot("phone-login")
    ui.sign_in()
    base = f"/projects/{project.id}/exports/{export['id']}/"
    pages = {
        "exports": f"/projects/{project.id}/",
        "export-detail": base,
        "edit": f"{base}edit/",
        "run-detail": f"{base}runs/{done.id}/",
        "new-s3": f"/projects/{project.id}/exports/new/?type=S3",
    }
    for name, path in pages.items():
        ui.goto(path)
        assert ui.horizontal_overflow() <= 0, f"{name} is wider than a 375 px phone"
        ui.shot(f"phone-{name}")
