"""An engine that only records what it was asked: the API's engine until the Temporal engine
is configured, and the tests' witness that the API calls the engine when it should."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportRun

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineCall:
    name: str
    target_id: str
    details: dict[str, Any] = field(default_factory=dict)


class RecordingEngine:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[EngineCall] = []

    def _record(self, name: str, target_id: object, **details: Any) -> None:
        call = EngineCall(name, str(target_id), details)
        with self._lock:
            self.calls.append(call)
        logger.info("engine call %s %s %s", name, target_id, details or "")

    def clear(self) -> None:
        with self._lock:
            self.calls.clear()

    def sync_batch_export(self, batch_export: BatchExport, created: bool) -> None:
        self._record("sync_batch_export", batch_export.id, created=created, paused=batch_export.paused)

    def pause(self, batch_export: BatchExport) -> None:
        self._record("pause", batch_export.id)

    def unpause(self, batch_export: BatchExport, backfill_from: datetime | None) -> None:
        self._record("unpause", batch_export.id, backfill_from=backfill_from)

    def delete(self, batch_export: BatchExport) -> None:
        self._record("delete", batch_export.id)

    def start_backfill(self, backfill: BatchExportBackfill) -> None:
        self._record(
            "start_backfill",
            backfill.id,
            batch_export_id=str(backfill.batch_export_id),
            start_at=backfill.start_at,
            end_at=backfill.end_at,
        )

    def cancel_backfill(self, backfill: BatchExportBackfill) -> None:
        self._record("cancel_backfill", backfill.id)

    def cancel_run(self, run: BatchExportRun) -> None:
        self._record("cancel_run", run.id)
