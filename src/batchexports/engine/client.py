"""The Temporal client, usable from synchronous code (the API's views) through one event loop thread.

Django views are synchronous and the Temporal SDK is asyncio: the process keeps one loop in a
daemon thread, where the client lives, and `call()` runs a coroutine there and waits for it.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

from temporalio.client import Client
from temporalio.service import TLSConfig

from batchexports.engine.config import embedded_state_dir, temporal_settings

T = TypeVar("T")
CALL_TIMEOUT = 30.0


class EngineLoop:
    """An asyncio loop running in a daemon thread, shared by the client and an in-process worker."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="temporal-loop", daemon=True)
        self._thread.start()

    def submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop)

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
        return self.submit(coroutine).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


_lock = threading.Lock()
_loop: EngineLoop | None = None
_client: Client | None = None


def engine_loop() -> EngineLoop:
    global _loop
    with _lock:
        if _loop is None:
            _loop = EngineLoop()
        return _loop


def address() -> str:
    """The configured address, or the embedded server's (written by `batchexports up`)."""
    settings = temporal_settings()
    if settings.address:
        return settings.address
    info = embedded_state_dir() / "server.json"
    try:
        return str(json.loads(info.read_text())["address"])
    except (OSError, ValueError, KeyError):
        raise ConnectionError(
            "No Temporal server: set TEMPORAL_ADDRESS, or run `batchexports up` (which starts one)."
        ) from None


async def connect() -> Client:
    settings = temporal_settings()
    tls: bool | TLSConfig = False
    if settings.tls:
        tls = TLSConfig(
            server_root_ca_cert=settings.server_root_ca.read_bytes() if settings.server_root_ca else None,
            client_cert=settings.client_cert.read_bytes() if settings.client_cert else None,
            client_private_key=settings.client_key.read_bytes() if settings.client_key else None,
        )
    return await Client.connect(address(), namespace=settings.namespace, tls=tls, api_key=settings.api_key)


async def shared_client() -> Client:
    """The process's client, connected on first use; call it on the engine's loop."""
    global _client
    if _client is None:
        _client = await connect()
    return _client


def client() -> Client:
    """The process's client, connected on first use (from any thread but the loop's own)."""
    return engine_loop().call(shared_client())


def call(coroutine: Coroutine[Any, Any, T], timeout: float = CALL_TIMEOUT) -> T:
    return engine_loop().call(coroutine, timeout)


def reset() -> None:
    """Forget the client (tests, and after the embedded server moved)."""
    global _client
    _client = None
