"""How to reach Temporal: an external cluster (`TEMPORAL_ADDRESS`) or the embedded dev server."""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from batchexports import datadir

TASK_QUEUE = os.environ.get("BATCHEXPORTS_TASK_QUEUE", "batch-exports")
DEFAULT_SHUTDOWN_GRACE_SECONDS = 20.0


@dataclass(frozen=True)
class TemporalSettings:
    address: str | None  # None: the embedded dev server, launched by `batchexports up`
    namespace: str
    tls: bool
    client_cert: Path | None
    client_key: Path | None
    server_root_ca: Path | None
    api_key: str | None

    @property
    def embedded(self) -> bool:
        return self.address is None


def _path(name: str) -> Path | None:
    value = os.environ.get(name)
    return Path(value) if value else None


def temporal_settings() -> TemporalSettings:
    address = os.environ.get("TEMPORAL_ADDRESS") or None
    cert, key, ca = _path("TEMPORAL_TLS_CLIENT_CERT"), _path("TEMPORAL_TLS_CLIENT_KEY"), _path("TEMPORAL_TLS_SERVER_CA")
    tls = os.environ.get("TEMPORAL_TLS", "").lower() in ("1", "true", "yes") or bool(cert or ca)
    return TemporalSettings(
        address=address,
        namespace=os.environ.get("TEMPORAL_NAMESPACE", "default"),
        tls=tls,
        client_cert=cert,
        client_key=key,
        server_root_ca=ca,
        api_key=os.environ.get("TEMPORAL_API_KEY") or None,
    )


def embedded_state_dir() -> Path:
    return datadir.data_dir() / "temporal"


def shutdown_grace() -> float:
    """Seconds running exports get to finish after SIGTERM/SIGINT before they are cancelled
    (`BATCHEXPORTS_SHUTDOWN_GRACE_SECONDS`; Temporal's worker graceful shutdown timeout)."""
    raw = os.environ.get("BATCHEXPORTS_SHUTDOWN_GRACE_SECONDS", "").strip()
    if not raw:
        return DEFAULT_SHUTDOWN_GRACE_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 3600:
        raise ValueError(
            f"BATCHEXPORTS_SHUTDOWN_GRACE_SECONDS={raw!r} is not a number of seconds between 0 and 3600 "
            f"(default {DEFAULT_SHUTDOWN_GRACE_SECONDS:.0f})"
        )
    return value


def worker_identity() -> str:
    """The Temporal identity of this process's worker: unique per start (a restarted container has
    the same pid and host name), so that the next holder of the data dir can tell this worker's
    activity attempts from any other's (see engine/takeover.py)."""
    return f"{os.getpid()}@{socket.gethostname()}-{secrets.token_hex(3)}"
