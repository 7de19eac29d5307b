"""The no-progress watchdog: a run whose export stops advancing fails retryably, saying so.

A destination that accepts a connection and then stops answering (a server under SIGSTOP, a
half-open connection through a NAT) blocks a sink in a socket read that no server-side timeout
ends and that TCP keepalives do not notice (the stopped server's kernel still acknowledges them).
The export activity heartbeats from its own thread, so Temporal sees a live worker and the run
would stay Running until the run's timeout (30 minutes to 24 hours).

`watching()` guards one export: every source batch read and every advance of the rows or bytes
the sink reports counts as progress. When nothing advanced for `BATCHEXPORTS_NO_PROGRESS_TIMEOUT`
seconds (default 300), a monitor thread marks the run stalled, sets the run's cancel token (the
pipeline stops at the next batch) and calls the hooks sinks registered with `on_stall()` (the
PostgreSQL sink shuts its sockets down, so a blocked read returns at once). Whatever the export
raises then, `watching()` raises `NoProgress`, a `RetryableError` whose message says how long
nothing moved. A phase in which the destination legitimately works without reporting progress
(a long merge statement, a load job) runs inside `patience(seconds)`, which bounds it by its own,
longer, limit instead.

Sinks find the watchdog of the run with `current()` (a context variable, set in the thread that
calls the sink; loader threads get it from their sink).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from batchexports.core.errors import RetryableError
from batchexports.core.run import CancelToken, Progress, ProgressCallback

logger = logging.getLogger(__name__)

ENV_VAR = "BATCHEXPORTS_NO_PROGRESS_TIMEOUT"
DEFAULT_TIMEOUT = 300.0
T = TypeVar("T")

_current: contextvars.ContextVar[Watchdog | None] = contextvars.ContextVar("batchexports_watchdog", default=None)


def no_progress_timeout() -> float:
    """Seconds without progress before a run fails: `BATCHEXPORTS_NO_PROGRESS_TIMEOUT`, 0 to disable."""
    raw = os.environ.get(ENV_VAR, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        logger.warning("%s=%r is not a number of seconds; using %s", ENV_VAR, raw, DEFAULT_TIMEOUT)
        return DEFAULT_TIMEOUT
    return max(value, 0.0)


class NoProgress(RetryableError):
    """The export made no progress for the watchdog's timeout."""


def _seconds(value: float) -> str:
    return f"{value:g} s" if value < 120 else f"{value / 60:g} min"


class Watchdog:
    """Tracks the progress of one export and fires once when it stops; see the module docstring."""

    def __init__(self, timeout: float, cancel: CancelToken | None = None, clock: Callable[[], float] = time.monotonic):
        self.timeout = timeout
        self._cancel = cancel
        self._clock = clock
        self._lock = threading.Lock()
        self._last = clock()
        self._seen = (0, 0)
        self._patience: list[float] = []  # limits of the phases under way (nested)
        self._hooks: dict[int, Callable[[], None]] = {}
        self._next_hook = 0
        self.stalled_for: float | None = None  # set when the watchdog fired

    # progress

    def touch(self) -> None:
        """Something moved (a source batch was read, a file was uploaded)."""
        with self._lock:
            self._last = self._clock()

    def advanced(self, records: int, bytes_exported: int) -> None:
        """The sink's totals: progress only when rows or bytes grew."""
        with self._lock:
            if records > self._seen[0] or bytes_exported > self._seen[1]:
                self._seen = (max(records, self._seen[0]), max(bytes_exported, self._seen[1]))
                self._last = self._clock()

    @contextlib.contextmanager
    def patience(self, seconds: float) -> Iterator[None]:
        """Allow up to `seconds` of silence while the destination works on its own (a merge, a load job)."""
        with self._lock:
            self._patience.append(seconds)
            self._last = self._clock()
        try:
            yield
        finally:
            with self._lock:
                self._patience.remove(seconds)
                self._last = self._clock()

    # what to do when it fires

    def on_stall(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Call `hook` (from the monitor thread) if the run stalls; returns the function that unregisters it."""
        with self._lock:
            key = self._next_hook
            self._next_hook += 1
            self._hooks[key] = hook

        def remove() -> None:
            with self._lock:
                self._hooks.pop(key, None)

        return remove

    @property
    def stalled(self) -> bool:
        return self.stalled_for is not None

    def limit(self) -> float:
        with self._lock:
            return max([self.timeout, *self._patience])

    def check(self) -> bool:
        """Fire if the export has been silent for longer than its limit; True once it has fired."""
        if self.stalled:
            return True
        with self._lock:
            silent = self._clock() - self._last
            limit = max([self.timeout, *self._patience])
            if silent < limit:
                return False
            self.stalled_for = silent
            hooks = list(self._hooks.values())
        logger.warning("export made no progress for %.1f s: interrupting it", silent)
        if self._cancel is not None:
            self._cancel.cancel()
        for hook in hooks:
            try:
                hook()
            except Exception as error:  # one hook failing must not keep the others from running
                logger.warning("a no-progress hook failed: %s: %s", type(error).__name__, error)
        return True

    def message(self) -> str:
        silent = self.stalled_for or self.timeout
        return (
            f"The export made no progress for {_seconds(silent)} (no rows or bytes reached the destination; "
            f"limit {_seconds(self.limit())}, {ENV_VAR}): the destination stopped answering, so the run was "
            "interrupted (the run says whether and when it is retried). If this repeats, check that the "
            "destination is up and reachable."
        )

    # wiring

    def progress_callback(self, progress: ProgressCallback | None) -> ProgressCallback:
        def on_progress(state: Progress) -> None:
            self.advanced(state.records_completed, state.bytes_exported)
            if progress is not None:
                progress(state)

        return on_progress

    def batches(self, batches: Iterable[T]) -> Iterator[T]:
        for batch in batches:
            self.touch()
            yield batch


def current() -> Watchdog | None:
    """The watchdog of the export running in this thread, if any."""
    return _current.get()


@contextlib.contextmanager
def patience(seconds: float, watchdog: Watchdog | None = None) -> Iterator[None]:
    """`Watchdog.patience` of the given or current watchdog; nothing without one."""
    dog = watchdog or current()
    if dog is None:
        yield
        return
    with dog.patience(seconds):
        yield


def touch(watchdog: Watchdog | None = None) -> None:
    dog = watchdog or current()
    if dog is not None:
        dog.touch()


@contextlib.contextmanager
def watching(
    cancel: CancelToken | None, timeout: float | None = None, poll: float | None = None
) -> Iterator[Watchdog | None]:
    """Guard the export inside; raises `NoProgress` if it stalled, whatever it raised then."""
    limit = no_progress_timeout() if timeout is None else timeout
    if limit <= 0:
        yield None
        return
    dog = Watchdog(limit, cancel)
    stop = threading.Event()
    every = poll if poll is not None else min(5.0, max(limit / 10, 0.05))

    def monitor() -> None:
        while not stop.wait(every):
            if dog.check():
                return

    thread = threading.Thread(target=monitor, name="no-progress-watchdog", daemon=True)
    token = _current.set(dog)
    thread.start()
    try:
        yield dog
    except BaseException as error:
        if dog.stalled:
            raise NoProgress(dog.message()) from error
        raise
    else:
        if dog.stalled:  # it fired as the export finished: what was written is complete
            logger.info("the export completed as the no-progress watchdog fired")
    finally:
        stop.set()
        _current.reset(token)
        thread.join(timeout=5)
