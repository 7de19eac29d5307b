"""The processes of batchexports: `up` (everything in one), `api` and `worker`, and how they stop.

`up` starts the embedded Temporal dev server unless TEMPORAL_ADDRESS is set, runs the worker on
the engine's event loop thread and serves the API from a thread of its own, while the main thread
waits for SIGINT or SIGTERM. Either one is a graceful stop, whether it reaches the main process
only (`docker stop`) or the whole process group (systemd, Ctrl-C): the API stops taking requests,
running exports get the grace period (BATCHEXPORTS_SHUTDOWN_GRACE_SECONDS, default 20 s) to finish
and are cancelled after it (Temporal retries those attempts at the next start), then the worker
and the Temporal server stop and the process exits 0, within the grace period plus about 8 s.
Should anything hang past that, a watchdog stops the Temporal server and ends the process (1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

logger = logging.getLogger("batchexports.service")

API_GRACE = 5  # seconds in-flight API requests get once the listening socket is closed
WORKER_MARGIN = 5.0  # beyond the grace period: cancelled activities report back, the worker stops
WATCHDOG_MARGIN = 9.5  # beyond the grace period: the whole stop, Temporal server included


class StopRequest:
    """SIGINT and SIGTERM, caught in the main thread as a request to stop gracefully."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None
        self.repeated = 0

    def install(self) -> StopRequest:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: object) -> None:
        # Only flags here: printing from a signal handler can collide with the main thread's output.
        if self._event.is_set():
            self.repeated += 1
            return
        self.signal_name = signal.Signals(signum).name
        self._event.set()

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


def start_embedded_temporal() -> Any | None:
    """The embedded dev server, started (or adopted) unless an external Temporal is configured."""
    from batchexports.engine.config import embedded_state_dir, temporal_settings
    from batchexports.engine.server import EmbeddedTemporalServer

    if not temporal_settings().embedded:
        return None
    server = EmbeddedTemporalServer(embedded_state_dir())
    server.start()
    return server


def wire_activities() -> Any:
    """The composition of the engine's activities: Django's run book and the configured events store."""
    from django.conf import settings

    from batchexports.engine.activities import Activities
    from batchexports.events.stores import get_store
    from batchexports.exports.run_book import DjangoRunBook

    return Activities(DjangoRunBook(), get_store, lambda: settings.BATCHEXPORTS_RETRY_WINDOW_SECONDS)


class BackgroundWorker:
    """The worker on the engine loop thread, stoppable from the main thread."""

    def __init__(self, identity: str | None = None, dead_identity: str | None = None) -> None:
        from batchexports.engine import client as temporal

        self._temporal = temporal
        self._identity = identity
        self._dead_identity = dead_identity
        self._stop: asyncio.Event | None = None
        self._done: Future[None] | None = None

    def start(self, ready_timeout: float = 60) -> None:
        """Start the worker and return once it polls (or raise what stopped it)."""
        from batchexports.engine.worker import run_worker

        ready = threading.Event()

        activities = wire_activities()

        async def main() -> None:
            self._stop = asyncio.Event()
            client = await self._temporal.shared_client()
            await run_worker(client, activities, self._stop, ready, self._identity, self._dead_identity)

        self._done = self._temporal.engine_loop().submit(main())
        deadline = time.monotonic() + ready_timeout
        while not ready.wait(0.1):
            if self._done.done():
                self._done.result()  # raises what stopped it
                raise RuntimeError("the worker stopped before it started polling")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the worker did not start polling within {ready_timeout:.0f} s")
        from batchexports.exports.run_book import live_exports
        from batchexports.pipeline.startup_sweep import start_sweep

        # Reconciled and polling: remove what runs interrupted before this start left, in the background.
        start_sweep(live_exports)

    def request_stop(self) -> None:
        """Stop polling now; running activities get the grace period (Temporal's shutdown)."""
        if self._done is None:
            return
        stop = self._stop
        if stop is not None:
            self._temporal.engine_loop().loop.call_soon_threadsafe(stop.set)
        else:  # still connecting: nothing runs yet
            self._done.cancel()

    def wait(self, timeout: float) -> bool:
        """Whether the worker stopped within `timeout` seconds (its activity threads included)."""
        if self._done is None:
            return True
        try:
            self._done.result(timeout)
        except TimeoutError:
            return False
        except BaseException as error:  # it stopped, badly: say so, the process stops anyway
            logger.warning("worker stopped with %s: %s", type(error).__name__, error)
        return True

    def stop(self, timeout: float = 30) -> bool:
        self.request_stop()
        return self.wait(timeout)

    def raise_if_failed(self) -> None:
        if self._done is not None and self._done.done():
            self._done.result()
            raise RuntimeError("the worker stopped by itself")


class ApiServer:
    """uvicorn serving the ASGI app on a socket bound beforehand, in a thread of its own (so that
    signals stay with the main thread: uvicorn re-raises them after its own stop, which is how
    SIGTERM used to end the process with 143 before the worker and Temporal server stopped)."""

    def __init__(self, listener: socket.socket) -> None:
        import uvicorn

        config = uvicorn.Config(
            "batchexports.asgi:application", log_level="info", lifespan="off", timeout_graceful_shutdown=API_GRACE
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [listener]}, name="api", daemon=True
        )

    def start(self, timeout: float = 30) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the API server stopped while starting (see the lines above)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the API server did not start within {timeout:.0f} s")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def request_stop(self) -> None:
        self._server.should_exit = True  # closes the listening socket at once, then drains

    def wait(self, timeout: float) -> bool:
        if self._thread.ident is not None:
            self._thread.join(timeout)
        return not self._thread.is_alive()


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) but not listening yet (connections are refused until the
    API serves): binding first tells at once, before anything starts, that the port is taken."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


def _exit_now(code: int) -> None:
    """End the process without waiting for threads that did not stop (an activity that ignores its
    cancellation would keep the interpreter from exiting); the OS releases the data dir's lock."""
    logging.shutdown()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _start_watchdog(limit: float, server: Any | None) -> threading.Timer:
    def expire() -> None:
        logger.error("the stop took longer than %.0f s: stopping the Temporal server and exiting", limit)
        if server is not None:
            with contextlib.suppress(Exception):
                server.stop()
        _exit_now(1)

    timer = threading.Timer(limit, expire)
    timer.daemon = True
    timer.start()
    return timer


def _close_store() -> None:
    """Close the events store (DuckDB checkpoints its WAL) once nothing uses it any more."""
    from batchexports.events.stores import reset_store

    try:
        reset_store()
    except Exception as error:
        logger.warning("closing the events store failed: %s: %s", type(error).__name__, error)


def _stop_all(
    stop: StopRequest, api: ApiServer | None, worker: BackgroundWorker, server: Any | None, grace: float
) -> bool:
    """The graceful stop, in order; whether every part stopped (else threads may remain)."""
    began = time.monotonic()
    watchdog = _start_watchdog(grace + WATCHDOG_MARGIN, server)
    why = f"received {stop.signal_name}" if stop.signal_name else "stopping"
    logger.info(
        "%s: the API stops taking requests; running exports get up to %.0f s to finish, then are cancelled "
        "and resume at the next start",
        why,
        grace,
    )
    if api is not None:
        api.request_stop()
    worker.request_stop()  # at the same time: the API's drain and the exports' grace overlap
    api_stopped = api.wait(API_GRACE + 1) if api is not None else True
    worker_stopped = worker.wait(grace + WORKER_MARGIN)
    if not worker_stopped:
        logger.error("an export did not stop within %.0f s of its cancellation; it resumes at the next start", grace)
    if worker_stopped and api_stopped:
        _close_store()
    if server is not None:
        server.stop()
    watchdog.cancel()
    logger.info("stopped in %.1f s", time.monotonic() - began)
    return worker_stopped and api_stopped


def run_up(
    listener: socket.socket,
    stop: StopRequest,
    after_start: Callable[[], None] | None = None,
    identity: str | None = None,
    dead_identity: str | None = None,
) -> int:
    """`batchexports up` once the data dir is locked and the port bound: until SIGINT/SIGTERM."""
    from batchexports.engine.config import shutdown_grace

    grace = shutdown_grace()
    server = None
    api: ApiServer | None = None
    worker = BackgroundWorker(identity, dead_identity)
    code = 0
    try:
        if not stop.requested:
            server = start_embedded_temporal()
        if not stop.requested:
            worker.start()
        if after_start and not stop.requested:
            after_start()
        if not stop.requested:
            api = ApiServer(listener)
            api.start()
        while not stop.wait(0.5):
            if not api.alive():  # type: ignore[union-attr]
                raise RuntimeError("the API server stopped by itself (see the lines above)")
            worker.raise_if_failed()
    except Exception as error:
        logger.error("stopping after an error: %s: %s", type(error).__name__, error)
        code = 1
    finally:
        clean = _stop_all(stop, api, worker, server, grace)
    if not clean:
        _exit_now(1)
    return code


def run_api(listener: socket.socket, stop: StopRequest) -> int:
    """`batchexports api`: serve until SIGINT/SIGTERM, letting in-flight requests finish."""
    api = ApiServer(listener)
    api.start()
    while not stop.wait(0.5):
        if not api.alive():
            logger.error("the API server stopped by itself (see the lines above)")
            return 1
    api.request_stop()
    if not api.wait(API_GRACE + 1):
        _exit_now(1)
    _close_store()
    return 0


def run_worker_forever(stop: StopRequest, identity: str | None = None, dead_identity: str | None = None) -> int:
    """`batchexports worker`: work until SIGINT or SIGTERM, then stop as `up` does."""
    from batchexports.engine.config import shutdown_grace

    grace = shutdown_grace()
    worker = BackgroundWorker(identity, dead_identity)
    code = 0
    try:
        worker.start()
        while not stop.wait(1):
            worker.raise_if_failed()
    except Exception as error:
        logger.error("stopping after an error: %s: %s", type(error).__name__, error)
        code = 1
    finally:
        clean = _stop_all(stop, None, worker, None, grace)
    if not clean:
        _exit_now(1)
    return code
