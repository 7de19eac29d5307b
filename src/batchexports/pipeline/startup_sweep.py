"""The start-up sweep: what runs interrupted before this start left in their destinations.

`start_sweep(live_exports)` (called by the composition root once the worker reconciles, with the
run book's `live_exports`) walks every live export in a thread of its own,
so a slow or unreachable destination never delays the worker, and removes, under each export's
prefix, temporary files of dead writers (local folder) and multipart uploads older than the
export's run timeout (S3), and the stage tables the export created longer ago than that in a
warehouse (every sink with a `drop_stale_stages(export_id, older_than)` method: PostgreSQL,
Redshift, Snowflake, BigQuery, Databricks): no attempt of any interval lives longer, so none of
them is in flight. It never names a destination: its spec opens the file store or builds the sink.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from batchexports.core.intervals import run_timeout
from batchexports.core.run import LiveExport
from batchexports.destinations import registry
from batchexports.destinations.files.leftovers import sweep_files

logger = logging.getLogger(__name__)


def _file_store(destination_type: str, config: Mapping[str, Any]) -> Any:
    """The store where the destination's interrupted runs leave files or uploads, else None."""
    try:
        open_store = registry.get(destination_type).leftover_store
    except KeyError:
        return None
    return open_store(config) if open_store is not None else None


def _stage_sweeper(destination_type: str, config: Mapping[str, Any]) -> Any:
    """The sink's `drop_stale_stages` when the destination stages tables, else None."""
    try:
        factory = registry.get(destination_type).sink_factory
    except KeyError:
        return None
    return getattr(factory(config), "drop_stale_stages", None)


def sweep(live_exports: Callable[[], list[LiveExport]]) -> int:
    """Sweep every live export's destination; the number of leftovers removed."""
    removed = 0
    for export in live_exports():
        config, older_than = export.destination_config, run_timeout(export.interval)
        try:
            drop_stale_stages = _stage_sweeper(export.destination_type, config)
            if drop_stale_stages is not None:
                removed += len(drop_stale_stages(export.batch_export_id, older_than))
                continue
            store = _file_store(export.destination_type, config)
            if store is not None:
                removed += len(sweep_files(store, str(config.get("prefix") or ""), older_than))
        except Exception as error:  # one export's destination must not stop the sweep of the others
            logger.warning(
                "leftover sweep of export %s failed: %s: %s", export.batch_export_id, type(error).__name__, error
            )
    logger.info("leftover sweep: %d removed", removed)
    return removed


def _sweep_in_thread(live_exports: Callable[[], list[LiveExport]]) -> None:
    try:
        sweep(live_exports)
    except Exception as error:
        logger.warning("leftover sweep failed: %s: %s", type(error).__name__, error)


def start_sweep(live_exports: Callable[[], list[LiveExport]]) -> threading.Thread:
    thread = threading.Thread(target=_sweep_in_thread, args=(live_exports,), name="leftover-sweep", daemon=True)
    thread.start()
    return thread
