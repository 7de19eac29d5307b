"""The seam between the API and the engine that schedules and runs exports.

The API changes the metadata database first, then tells the engine through this interface;
the engine makes its schedules and workflows follow. An implementation is chosen by the
`BATCHEXPORTS_ENGINE` setting (a dotted path), so swapping the recording engine for the
Temporal one needs no change to the API code.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import TYPE_CHECKING, Protocol

from django.conf import settings
from django.utils.module_loading import import_string

if TYPE_CHECKING:
    from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportRun


class Engine(Protocol):
    def sync_batch_export(self, batch_export: BatchExport, created: bool) -> None:
        """Create or update the schedule of `batch_export` to match its row."""

    def pause(self, batch_export: BatchExport) -> None: ...

    def unpause(self, batch_export: BatchExport, backfill_from: datetime | None) -> None:
        """Resume the schedule; with `backfill_from`, also run the intervals missed since then."""

    def delete(self, batch_export: BatchExport) -> None: ...

    def start_backfill(self, backfill: BatchExportBackfill) -> None: ...

    def cancel_backfill(self, backfill: BatchExportBackfill) -> None: ...

    def cancel_run(self, run: BatchExportRun) -> None: ...


@cache
def _engine(path: str) -> Engine:
    return import_string(path)()


def get_engine() -> Engine:
    return _engine(settings.BATCHEXPORTS_ENGINE)
