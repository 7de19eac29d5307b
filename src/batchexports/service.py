"""The processes of batchexports: `up` (everything in one), `api`, and `worker`.

`up` starts the embedded Temporal dev server unless TEMPORAL_ADDRESS is set, runs the worker on
the engine's event loop thread, and serves the API in the main thread; Ctrl-C (or SIGTERM)
stops the API, then the worker (letting activities finish briefly), then the Temporal server.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Callable

logger = logging.getLogger("batchexports.service")


def start_embedded_temporal() -> object | None:
    """The embedded dev server, started (or adopted) unless an external Temporal is configured."""
    from batchexports.engine.config import embedded_state_dir, temporal_settings
    from batchexports.engine.server import EmbeddedTemporalServer

    if not temporal_settings().embedded:
        return None
    server = EmbeddedTemporalServer(embedded_state_dir())
    server.start()
    return server


class BackgroundWorker:
    """The worker on the engine loop thread, stoppable from the main thread."""

    def __init__(self) -> None:
        from batchexports.engine import client as temporal

        self._temporal = temporal
        self._stop: asyncio.Event | None = None
        self._done = None

    def start(self, ready_timeout: float = 60) -> None:
        """Start the worker and return once it polls (or raise what stopped it)."""
        from batchexports.engine.worker import run_worker

        ready = threading.Event()

        async def main() -> None:
            self._stop = asyncio.Event()
            await run_worker(await self._temporal._shared_client(), self._stop, ready)

        self._done = self._temporal.engine_loop().submit(main())
        deadline = time.monotonic() + ready_timeout
        while not ready.wait(0.1):
            if self._done.done():
                self._done.result()  # raises what stopped it
                raise RuntimeError("the worker stopped before it started polling")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker did not start polling within {ready_timeout:.0f} s")

    def stop(self, timeout: float = 30) -> None:
        if self._done is None:
            return
        loop = self._temporal.engine_loop().loop
        if self._stop is not None:
            loop.call_soon_threadsafe(self._stop.set)
        try:
            self._done.result(timeout)
        except Exception as error:
            logger.warning("worker stopped with %s: %s", type(error).__name__, error)

    def raise_if_failed(self) -> None:
        if self._done is not None and self._done.done():
            self._done.result()


def run_worker_forever() -> None:
    """`batchexports worker`: work until SIGINT or SIGTERM."""
    worker = BackgroundWorker()
    worker.start()
    stopping = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stopping.set())
    while not stopping.wait(1):
        worker.raise_if_failed()
    worker.stop()


def run_up(serve: Callable[[], None], after_start: Callable[[], None] | None = None) -> None:
    server = start_embedded_temporal()
    worker = BackgroundWorker()
    try:
        worker.start()
        if after_start:
            after_start()
        serve()
    finally:
        worker.stop()
        if server is not None:
            server.stop()  # type: ignore[attr-defined]
