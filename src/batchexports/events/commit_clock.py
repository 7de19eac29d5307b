"""The commit clock: the `_inserted_at` each live write takes, and the store's watermark.

A run exports the rows whose `_inserted_at` is in `[start, end)`. That is exactly once only if no
write can still commit with a time below `end` once the run has read: so each write takes its
time under the store's write lock, just before it commits, from a clock that never goes back
(`max(now, last + 1 µs)`), and the watermark says the time before which every write has
committed: the time of the write in flight, or else "now" (raised to the next write's least time,
which it then becomes). It knows nothing of tables or queries.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

TICK = dt.timedelta(microseconds=1)  # the stores keep microseconds


def wall_clock() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class CommitClock:
    def __init__(self, clock: Callable[[], dt.datetime] | None = None) -> None:
        self._clock = clock or (lambda: wall_clock())  # looked up at each call: tests replace it
        # Its own lock, not the write lock: the watermark answers while a write resolves persons.
        self._lock = threading.Lock()
        self._floor: dt.datetime | None = None  # the least time the next write may take
        self._in_flight: dt.datetime | None = None

    def _at_least_floor(self, moment: dt.datetime) -> dt.datetime:
        return moment if self._floor is None or moment >= self._floor else self._floor

    @contextmanager
    def committing(self) -> Iterator[dt.datetime]:
        """The time of one write, held "in flight" until the block (which commits it) ends.

        Callers hold the store's write lock, so at most one write is in flight."""
        with self._lock:
            moment = self._at_least_floor(self._clock().astimezone(dt.UTC))
            self._floor = moment + TICK
            self._in_flight = moment
        try:
            yield moment
        finally:
            with self._lock:
                self._in_flight = None

    def watermark(self) -> dt.datetime:
        """Every write with a time before this has committed, and none will take a time before it."""
        with self._lock:
            if self._in_flight is not None:
                return self._in_flight
            mark = self._at_least_floor(self._clock().astimezone(dt.UTC))
            self._floor = mark  # a write after this answer must not take a time below it
            return mark
