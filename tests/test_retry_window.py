"""The export retry policy: capped backoff, attempts until the retry window is over, then a failure that says so."""

from __future__ import annotations

import datetime as dt
import socket
from typing import Any

import pytest

from batchexports.engine import retry_window
from batchexports.exports.models import BatchExportBackfill, BatchExportLogEntry, BatchExportRun
from tests.conftest import prefix_for
from tests.exports_fixtures import known_events
from tests.test_engine import HOUR, engine_on_temporal, export_dir, past_hours, temporal_address, wait_for, worker

__all__ = ["engine_on_temporal", "export_dir", "temporal_address", "worker"]  # fixtures used below

NOW = dt.datetime(2026, 12, 3, 12, 0, tzinfo=dt.UTC)


def test_waits_double_from_ten_seconds_and_never_exceed_five_minutes():
    waits = [retry_window.wait_after(attempt).total_seconds() for attempt in range(1, 10)]
    assert waits == [10, 20, 40, 80, 160, 300, 300, 300, 300]


def test_attempts_go_on_while_the_next_one_starts_inside_the_window():
    window = dt.timedelta(hours=24)
    first = NOW - dt.timedelta(hours=23, minutes=50)
    upcoming = retry_window.after_failure(40, NOW, first, window)
    assert upcoming.at == NOW + dt.timedelta(minutes=5)
    assert upcoming.window_ends == first + window
    # Ten minutes of window are left, then five: the attempt after the next would start outside it.
    assert retry_window.after_failure(41, NOW + dt.timedelta(minutes=6), first, window).at is None


def test_a_run_from_before_the_window_keeps_six_attempts():
    assert retry_window.after_failure(5, NOW, NOW, None).at is not None
    assert retry_window.after_failure(6, NOW, NOW, None).at is None
    assert retry_window.policy(dt.timedelta(0), []).maximum_attempts == 6
    unlimited = retry_window.policy(dt.timedelta(hours=24), ["NonRetryableError"])
    assert unlimited.maximum_attempts == 0 and unlimited.maximum_interval == dt.timedelta(minutes=5)


def test_describe_reads_as_a_person_would():
    assert retry_window.describe(dt.timedelta(hours=24)) == "24 h"
    assert retry_window.describe(dt.timedelta(seconds=90)) == "1 min 30 s"


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_an_outage_longer_than_the_window_retries_then_fails_and_its_backfill_is_failed(
    api: Any, project: Any, worker: Any, events_store: Any, settings: Any
) -> None:
    """A destination that refuses connections (a closed loopback port) for longer than the window."""
    # The sink tries 5 times within an attempt (~10 s); the engine's next attempt follows 10 s later,
    # inside the window, and the one after that (20 s after the second) would start outside it.
    settings.BATCHEXPORTS_RETRY_WINDOW_SECONDS = 40
    start = past_hours(2)
    events_store.import_table(project.id, known_events(10, start=start))
    config = {"url": f"http://127.0.0.1:{closed_port()}/batch/", "token": "phc_receiver"}
    payload = {"name": "Down", "interval": "hour", "destination": {"type": "HTTP", "config": config}}
    export_id = api.post(prefix_for("projects", project), payload, format="json").json()["id"]
    url = f"{prefix_for('projects', project)}{export_id}/backfills/"
    body = {"start_at": start.isoformat(), "end_at": (start + HOUR).isoformat()}
    backfill_id = api.post(url, body, format="json").json()["backfill_id"]

    # While the window lasts: FailedRetryable, saying when the next attempt is and until when.
    retrying = wait_for(
        lambda: BatchExportRun.objects.filter(batch_export_id=export_id, status="FailedRetryable").first(),
        timeout=30, what="a retrying run",
    )  # fmt: skip
    assert "retrying at" in retrying.latest_error and "retries go on until" in retrying.latest_error

    wait_for(lambda: api.get(f"{url}{backfill_id}/").json()["status"] != "Running", timeout=90, what="the backfill")
    (run,) = BatchExportRun.objects.filter(batch_export_id=export_id)
    assert run.status == "Failed"
    assert "gave up after 2 attempts: the retry window of 40 s is over" in run.latest_error
    assert "retrying at" not in run.latest_error
    backfill = BatchExportBackfill.objects.get(id=backfill_id)
    assert backfill.status == "Failed"
    assert api.get(f"{url}{backfill_id}/").json()["status"] == "Failed"
    messages = list(BatchExportLogEntry.objects.filter(batch_export_id=export_id).values_list("message", flat=True))
    assert any("Backfill failed: 1 of 1 runs failed" in m for m in messages)
    # Only the first failure said "retrying": the second, after which none followed, did not.
    assert sum("retrying at" in m for m in messages) == 1
