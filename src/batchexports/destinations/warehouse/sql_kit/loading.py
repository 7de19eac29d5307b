"""Loading a stage in parallel: loader threads, each with its own connection (`LoadSession`), fed
through a bounded queue (peak memory is a few batches). Knows no SQL and no server.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

import pyarrow as pa

QUEUE_BATCHES_PER_CONNECTION = 2


class LoadSession(ABC):
    """One loader thread's connection to the stage table."""

    @abstractmethod
    def send(self, batch: pa.RecordBatch) -> int:
        """Load the rows of `batch`; return the bytes sent."""

    @abstractmethod
    def finish(self) -> None:
        """Commit what was sent."""

    @abstractmethod
    def abort(self) -> None:
        """Discard what was sent (best effort; never raises)."""


_DONE, _ABORT = object(), object()


class ParallelLoader:
    """Loader threads taking batches from a bounded queue, each through its own `LoadSession`.

    A thread opens its session when it receives its first batch, so a run of one batch uses
    one connection. The first error of any thread stops the others and is raised in the
    calling thread by the next `put` or by `close`.
    """

    def __init__(self, open_session: Callable[[], LoadSession], workers: int, depth: int | None = None):
        self._open_session = open_session
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth or workers * QUEUE_BATCHES_PER_CONNECTION)
        self._failed = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self.rows = 0
        self.bytes = 0
        self._threads = [
            threading.Thread(target=self._work, name=f"batchexports-load-{n}", daemon=True) for n in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def _raise_if_failed(self) -> None:
        if self._failed.is_set() and self._error is not None:
            raise self._error

    def _put(self, item: Any) -> None:
        while True:
            self._raise_if_failed()
            try:
                self._queue.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def put(self, batch: pa.RecordBatch) -> None:
        self._put(batch)

    def progress(self) -> tuple[int, int]:
        with self._lock:
            return self.rows, self.bytes

    def close(self) -> None:
        """Wait for every batch to be loaded and committed; raise the first error."""
        for _ in self._threads:
            self._put(_DONE)
        for thread in self._threads:
            thread.join()
        self._raise_if_failed()

    def abort(self) -> None:
        self._failed.set()
        with contextlib.suppress(queue.Empty):
            while True:
                self._queue.get_nowait()
        for _ in self._threads:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(_ABORT)
        for thread in self._threads:
            thread.join(timeout=30)

    def _work(self) -> None:
        session: LoadSession | None = None
        finished = False
        try:
            while True:
                item = self._queue.get()
                if item is _ABORT or self._failed.is_set():
                    return
                if item is _DONE:
                    if session is not None:
                        session.finish()
                    finished = True
                    return
                if session is None:
                    session = self._open_session()
                sent = session.send(item)
                with self._lock:
                    self.rows += item.num_rows
                    self.bytes += sent
        except BaseException as error:  # handed to the calling thread
            with self._lock:
                if self._error is None:
                    self._error = error
            self._failed.set()
        finally:
            if session is not None and not finished:
                session.abort()
