"""The web page with the real engine: a backfill started from the export page over imported past
events runs on the embedded Temporal server and an in-process worker, and the page follows it
without a reload until its progress bar reads 100% and every run is Completed; then a run's
logs tell what it exported."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils import timezone

from batchexports.exports.models import BatchExportBackfill, BatchExportRun
from tests import test_engine, web_support
from tests.conftest import prefix_for
from tests.exports_fixtures import known_events
from tests.web_support import expect

# Fixtures these tests use, from where they are defined: the embedded Temporal server and an in-process worker.
temporal_address, engine_on_temporal, worker = (
    test_engine.temporal_address,
    test_engine.engine_on_temporal,
    test_engine.worker,
)
export_dir, browser, ui = test_engine.export_dir, web_support.browser, web_support.ui

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

HOUR = dt.timedelta(hours=1)


def test_a_backfill_started_on_the_page_reaches_100_percent(ui, api, user, project, worker, events_store, export_dir):
    start = timezone.now().replace(minute=0, second=0, microsecond=0) - 3 * HOUR
    events_store.import_table(project.id, known_events(90, start=start, span=3 * HOUR))
    created = api.post(
        prefix_for("projects", project),
        {"name": "Hourly to a folder", "interval": "hour", "destination": {"type": "File", "config": {"path": "acme"}}},
        format="json",
    )
    assert created.status_code == 201, created.json()
    export_id = created.json()["id"]

    ui.sign_in()
    ui.goto(f"/projects/{project.id}/exports/{export_id}/")
    ui.page.get_by_label("Start").fill(start.strftime("%Y-%m-%dT%H:%M:%SZ"))
    ui.page.get_by_label("End").fill((start + 3 * HOUR).strftime("%Y-%m-%dT%H:%M:%SZ"))
    ui.page.get_by_role("button", name="Start backfill").click()

    backfill = ui.page.locator("#backfill-list .backfill").first
    expect(backfill).to_be_visible()
    expect(backfill.locator(".progress-text")).to_have_text("3 / 3 runs · 100%", timeout=60_000)
    expect(backfill.locator("progress")).to_have_attribute("value", "100")
    expect(backfill.locator(".badge")).to_have_text("Completed")
    runs = ui.page.locator("#runs-body tr")
    expect(runs).to_have_count(3)
    expect(runs.locator(".badge")).to_have_text(["Completed"] * 3)
    expect(ui.page.locator("#live-status")).to_have_text("Up to date.")
    # When everything has finished, the charts and logs are refreshed from the server too.
    expect(ui.page.locator("#chart-rows desc")).to_have_text("Rows: 90 over 30 days")
    expect(ui.page.locator("#log-results")).to_contain_text("Run completed: 30 rows")
    ui.shot("export-backfill-completed")

    assert BatchExportBackfill.objects.get(batch_export_id=export_id).status == "Completed"
    assert sorted(
        BatchExportRun.objects.filter(batch_export_id=export_id).values_list("records_completed", flat=True)
    ) == [30, 30, 30]
    assert sum(1 for _ in (export_dir / "acme").rglob("*.jsonl")) == 3

    ui.page.get_by_role("link", name=re.compile("^Logs of the run")).first.click()
    expect(ui.page.locator("#run-status")).to_have_text("Completed")
    expect(ui.page.locator("#log-results")).to_contain_text("Run completed: 30 rows")
    ui.shot("run-detail-completed")
