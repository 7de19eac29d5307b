"""Exactly once at the seam between intervals: a write commits into an interval not yet read.

Real: a DuckDB events store on disk, capture from several threads at once, reads through the
pipeline's model query and `store.read`, the pipeline's wait for the watermark. Faked: the
intervals, tiny (100 ms) and driven by the test instead of the schedule, and in the clock unit
tests a wall clock that goes backwards (monkeypatched `commit_clock.wall_clock`).
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections import Counter
from typing import Any

import pytest

from batchexports.core.errors import RetryableError
from batchexports.core.run import ExportRun
from batchexports.events import commit_clock
from batchexports.events.commit_clock import CommitClock
from batchexports.events.duckdb_store import DuckDBEventsStore
from batchexports.events.normalize import CapturedEvent
from batchexports.pipeline.export import model_query, wait_for_watermark

TEAM = 7
STEP = dt.timedelta(milliseconds=100)
BOUNDARIES = 25
WRITERS = 4


@pytest.fixture
def store(tmp_path: Any) -> DuckDBEventsStore:
    opened = DuckDBEventsStore(tmp_path / "events.duckdb")
    yield opened
    opened.close()


def events(count: int, when: dt.datetime | None = None) -> list[CapturedEvent]:
    when = when or dt.datetime.now(dt.UTC)
    return [
        CapturedEvent(str(uuid.uuid4()), "$pageview", {"n": i}, when, f"user-{i % 5}", None, None) for i in range(count)
    ]


def read_uuids(store: DuckDBEventsStore, start: dt.datetime, end: dt.datetime) -> list[str]:
    run = ExportRun("seam", TEAM, "events", "NoOp", {}, start, end)
    table = store.read(model_query(run)).read_all()
    return [str(value) for value in table.column("uuid").to_pylist()]


def inserted_at(store: DuckDBEventsStore) -> list[dt.datetime]:
    rows = store._cursor().execute("SELECT _inserted_at FROM events ORDER BY _inserted_at").fetchall()
    return [row[0] for row in rows]


def test_every_event_captured_across_boundaries_is_read_in_exactly_one_interval(store):
    written: list[str] = []
    written_lock = threading.Lock()
    stop = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        try:
            while not stop.is_set():
                batch = events(3)
                store.capture(TEAM, batch)
                with written_lock:
                    written.extend(e.uuid for e in batch)
        except BaseException as error:  # reported by the test, not lost in the thread
            failures.append(error)

    store.capture(TEAM, events(1, dt.datetime(2024, 1, 1, tzinfo=dt.UTC)), historical=True)  # warm up
    threads = [threading.Thread(target=write, name=f"writer-{i}") for i in range(WRITERS)]
    began = time.monotonic()
    start = store.watermark()
    for thread in threads:
        thread.start()
    read: list[str] = []
    try:
        boundary = start
        for _ in range(BOUNDARIES):
            end = boundary + STEP
            # Jitter 0: the read starts as soon as the wall clock reaches the boundary and the watermark passes it.
            while dt.datetime.now(dt.UTC) < end:
                time.sleep(0.001)
            wait_for_watermark(store, end, poll=0.001, limit=10)
            read.extend(read_uuids(store, boundary, end))
            boundary = end
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    assert not failures
    # The rest, once every writer stopped: the interval from the last boundary to the watermark.
    read.extend(read_uuids(store, boundary, store.watermark()))
    elapsed = time.monotonic() - began

    counts = Counter(read)
    doubled = [u for u, n in counts.items() if n > 1]
    missed = set(written) - set(counts)
    assert (len(missed), len(doubled)) == (0, 0), f"{len(missed)} missed, {len(doubled)} read twice"
    assert set(counts) == set(written)
    print(f"{len(written)} events in {elapsed:.1f} s over {BOUNDARIES} boundaries")
    assert len(written) > BOUNDARIES * WRITERS  # the load really ran across the boundaries
    assert elapsed < 30


def test_inserted_at_never_goes_back_when_the_wall_clock_does(store, monkeypatch):
    noon = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    readings = iter([noon, noon - dt.timedelta(minutes=5), noon - dt.timedelta(minutes=5), noon + dt.timedelta(0, 1)])
    monkeypatch.setattr(commit_clock, "wall_clock", lambda: next(readings))
    clocked = DuckDBEventsStore(store.path.with_name("clocked.duckdb"))
    try:
        for _ in range(4):
            clocked.capture(TEAM, events(2))
        times = sorted(set(inserted_at(clocked)))
    finally:
        clocked.close()
    tick = dt.timedelta(microseconds=1)
    assert times == [noon, noon + tick, noon + 2 * tick, noon + dt.timedelta(0, 1)]


def test_the_watermark_holds_the_next_write_above_it_when_the_clock_goes_back():
    noon = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    readings = iter([noon, noon - dt.timedelta(hours=1)])
    clock = CommitClock(lambda: next(readings))
    assert clock.watermark() == noon
    with clock.committing() as moment:
        assert moment == noon  # not before the watermark already answered
        assert clock.watermark() == noon  # in flight: not committed yet


def test_historical_rows_keep_their_own_inserted_at(store):
    past = dt.datetime(2024, 3, 1, 8, 30, tzinfo=dt.UTC)
    store.capture(TEAM, events(3, past), historical=True)
    assert inserted_at(store) == [past] * 3


def test_a_run_waits_for_a_write_in_flight_and_then_reads_it(store):
    holding = threading.Event()
    release = threading.Event()

    def slow_write() -> None:
        with store._commit_clock.committing():
            holding.set()
            release.wait(5)

    writer = threading.Thread(target=slow_write)
    writer.start()
    assert holding.wait(5)
    end = dt.datetime.now(dt.UTC) + dt.timedelta(milliseconds=1)
    try:
        with pytest.raises(RetryableError, match="has not committed every write before"):
            wait_for_watermark(store, end, poll=0.01, limit=0.1)
        threading.Timer(0.1, release.set).start()
        began = time.monotonic()
        wait_for_watermark(store, end, poll=0.01, limit=5)
        assert time.monotonic() - began >= 0.05  # it waited for the commit
    finally:
        release.set()
        writer.join(5)


def test_no_write_in_flight_means_no_wait(store):
    store.capture(TEAM, events(2))
    end = dt.datetime.now(dt.UTC)
    began = time.monotonic()
    wait_for_watermark(store, end, poll=5, limit=5)
    assert time.monotonic() - began < 0.05


def test_an_interval_not_over_yet_fails_at_once_and_retryably(store):
    end = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    began = time.monotonic()
    with pytest.raises(RetryableError, match="watermark is"):
        wait_for_watermark(store, end, poll=0.01, limit=5)
    assert time.monotonic() - began < 1
