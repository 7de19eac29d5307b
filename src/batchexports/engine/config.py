"""How to reach Temporal: an external cluster (`TEMPORAL_ADDRESS`) or the embedded dev server."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from batchexports import datadir

TASK_QUEUE = os.environ.get("BATCHEXPORTS_TASK_QUEUE", "batch-exports")


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
