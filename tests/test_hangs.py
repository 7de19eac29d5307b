"""Hangs are detected: a destination that stops answering fails the run retryably, within bounds.

The slow test runs a PostgreSQL cluster of its own (`tests/own_postgres.py`), stops the postmaster and
all its backends with SIGSTOP in the middle of an export, and checks that the no-progress watchdog
fails the export with its message; after SIGCONT a retry loads every row exactly once. The unit
tests drive `Watchdog` with a real thread and a real clock.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from batchexports.core import watchdog
from batchexports.core.errors import RetryableError
from batchexports.core.run import CancelToken, ExportRun, Progress
from batchexports.destinations.postgres.sink import PostgresSink
from batchexports.pipeline.export import export
from tests.exports_fixtures import HOUR, T0, TEAM, known_events, store_with
from tests.own_postgres import Cluster, own_cluster
from tests.test_bigquery_destination import service_account  # noqa: F401 - fixture

# -- the watchdog itself ----------------------------------------------------------------------------


def test_a_silent_export_is_interrupted_and_fails_with_the_no_progress_message():
    token = CancelToken()
    hooked = threading.Event()
    started = time.monotonic()
    with pytest.raises(watchdog.NoProgress) as failure, watchdog.watching(token, timeout=0.3, poll=0.02) as dog:
        assert dog is not None and watchdog.current() is dog
        dog.on_stall(hooked.set)
        # A sink blocked in a read that only the stall hook ends (as the PostgreSQL sink's sockets).
        assert hooked.wait(5)
        token.raise_if_cancelled()
    elapsed = time.monotonic() - started
    assert 0.3 <= elapsed < 2
    assert isinstance(failure.value, RetryableError) and failure.value.retryable
    message = str(failure.value)
    assert "made no progress for" in message and "was interrupted" in message
    assert watchdog.ENV_VAR in message
    assert watchdog.current() is None


def test_advancing_rows_or_bytes_keeps_the_export_alive_and_repeated_totals_do_not():
    token = CancelToken()
    with watchdog.watching(token, timeout=0.4, poll=0.02) as dog:
        assert dog is not None
        for step in range(1, 15):  # 1.4 s of work, always advancing
            time.sleep(0.1)
            dog.advanced(step * 10, step * 100)
        assert not dog.stalled and not token.cancelled
    with pytest.raises(watchdog.NoProgress), watchdog.watching(CancelToken(), timeout=0.4, poll=0.02) as dog:
        assert dog is not None
        for _ in range(15):
            time.sleep(0.1)
            dog.advanced(10, 100)  # the same totals again: not progress
        raise RuntimeError("the sink gave up")


def test_patience_allows_a_silent_phase_up_to_its_own_limit():
    with watchdog.watching(CancelToken(), timeout=0.2, poll=0.02) as dog:
        assert dog is not None
        with watchdog.patience(2.0):
            time.sleep(0.6)  # a merge statement, three times the no-progress limit
        assert not dog.stalled
    with pytest.raises(watchdog.NoProgress), watchdog.watching(CancelToken(), timeout=0.2, poll=0.02) as dog:
        assert dog is not None
        with watchdog.patience(0.4):
            time.sleep(1.0)
            assert dog.stalled
            raise OSError("the socket was shut down")  # what a sink's interrupted read raises


def test_the_timeout_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv(watchdog.ENV_VAR, "42")
    assert watchdog.no_progress_timeout() == 42
    monkeypatch.setenv(watchdog.ENV_VAR, "soon")
    assert watchdog.no_progress_timeout() == watchdog.DEFAULT_TIMEOUT
    monkeypatch.delenv(watchdog.ENV_VAR)
    assert watchdog.no_progress_timeout() == 300
    monkeypatch.setenv(watchdog.ENV_VAR, "0")
    with watchdog.watching(CancelToken()) as dog:
        assert dog is None  # disabled


def test_postgres_connections_have_keepalives_and_a_statement_timeout():
    options = PostgresSink({"host": "h", "database": "d", "user": "u", "table_name": "t"}).connection_options()
    assert options["keepalives"] == 1 and options["keepalives_idle"] <= 60
    assert options["keepalives_count"] * options["keepalives_interval"] <= 60
    assert 0 < options["tcp_user_timeout"] <= 120_000
    assert "statement_timeout=" in options["options"] and options["connect_timeout"] <= 30


# -- a PostgreSQL server under SIGSTOP ----------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    with own_cluster() as running:
        yield running


def _config(cluster: Cluster) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": cluster.port,
        "user": "postgres",
        "password": "",
        "database": "postgres",
        "schema": "public",
        "table_name": "hang_events",
        "has_self_signed_cert": False,
    }


@pytest.mark.slow
def test_a_server_under_sigstop_fails_the_run_retryably_and_a_retry_after_sigcont_loads_once(
    cluster, tmp_path, monkeypatch
):
    monkeypatch.setenv(watchdog.ENV_VAR, "3")
    events = known_events(40_000)
    store = store_with(tmp_path, events)
    config = _config(cluster)
    run = ExportRun(
        batch_export_id="00000000-0000-0000-0000-0000000hang01",
        team_id=TEAM,
        model="events",
        destination_type="Postgres",
        destination_config=config,
        data_interval_start=T0,
        data_interval_end=T0 + HOUR,
    )
    stopped_at: list[float] = []

    def stop_the_server(progress: Progress) -> None:
        if not stopped_at and progress.records_completed >= 2_000:
            cluster.signal(signal.SIGSTOP)
            stopped_at.append(time.monotonic())

    try:
        with pytest.raises(watchdog.NoProgress) as failure:
            export(run, store, progress=stop_the_server, batch_rows=500, count_total=False)
        failed_after = time.monotonic() - stopped_at[0]
    finally:
        cluster.signal(signal.SIGCONT)
    assert failure.value.retryable
    assert "made no progress for" in str(failure.value) and "was interrupted" in str(failure.value)
    assert failed_after < 3 + 15, f"the stall took {failed_after:.1f} s to be noticed"

    result = export(run, store, batch_rows=5_000, count_total=False)
    assert result.records_completed == events.num_rows
    with cluster.connect() as connection:
        exported = connection.execute("SELECT uuid::text FROM public.hang_events").fetchall()
        leftovers = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename LIKE %s",
            ("hang_events_stage%",),
        ).fetchall()
    assert sorted(row[0] for row in exported) == sorted(events.column("uuid").to_pylist())
    assert leftovers == []


def test_bigquery_rest_calls_are_bounded_even_when_the_client_asks_for_no_timeout(service_account):  # noqa: F811
    """A `requests` adapter records what the client's session sends: no network is involved."""
    requests = pytest.importorskip("requests")
    pytest.importorskip("google.cloud.bigquery")
    from batchexports.destinations.bigquery import sink as bigquery_sink
    from tests.test_bigquery_destination import bq_config

    seen: list[object] = []

    class Recording(requests.adapters.BaseAdapter):
        def send(self, request, timeout=None, **kwargs):
            seen.append(timeout)
            raise requests.exceptions.ConnectionError("refused by the test")

        def close(self):
            pass

    client = bigquery_sink.make_client(bq_config(service_account[0]), transport=Recording())
    client._http.credentials.token = "a-valid-token"  # no token exchange: straight to the REST call
    client._http.credentials.expiry = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(hours=1)
    with pytest.raises(Exception):  # noqa: B017 - any failure: only the timeout it was sent with matters
        client._http.request("GET", "https://bigquery.googleapis.com/bigquery/v2/projects/p/datasets", timeout=None)
    assert seen and all(t == bigquery_sink.REQUEST_TIMEOUT for t in seen)
