"""The start-up sweep: what runs interrupted before this start left in their destinations.

`start_sweep()` (called once the worker reconciles) walks every live export in a thread of its own,
so a slow or unreachable destination never delays the worker, and removes, under each export's
prefix, temporary files of dead writers (local folder) and multipart uploads older than the
export's run timeout (S3), and the stage tables the export created longer ago than that in a
warehouse (every sink with a `drop_stale_stages(export_id, older_than)` method: PostgreSQL,
Redshift, Snowflake, BigQuery, Databricks): no attempt of any interval lives longer, so none of
them is in flight. It never names a warehouse: the registry builds the sink.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from django.db import connection

from batchexports.core.intervals import run_timeout
from batchexports.destinations import registry
from batchexports.exports.models import BatchExport
from batchexports.pipeline.leftovers import sweep_files

logger = logging.getLogger(__name__)

_S3_TYPES = frozenset({"S3", "AwsS3", "S3Compatible"})


def _file_store(destination_type: str, config: Mapping[str, Any]) -> Any:
    if destination_type == "File":
        from batchexports.destinations import file_checks
        from batchexports.destinations.local_folder import LocalFolderStore

        return LocalFolderStore(file_checks.resolve_folder(config))
    if destination_type in _S3_TYPES:
        from batchexports.destinations.s3_store import S3ObjectStore

        return S3ObjectStore(config)
    return None


def _stage_sweeper(destination_type: str, config: Mapping[str, Any]) -> Any:
    """The sink's `drop_stale_stages` when the destination stages tables, else None."""
    try:
        factory = registry.get(destination_type).sink_factory
    except KeyError:
        return None
    return getattr(factory(config), "drop_stale_stages", None) if factory else None


def sweep() -> int:
    """Sweep every live export's destination; the number of leftovers removed."""
    removed = 0
    for batch_export in BatchExport.objects.filter(deleted=False).select_related("destination"):
        destination = batch_export.destination
        try:
            config = destination.full_config()
            drop_stale_stages = _stage_sweeper(destination.type, config)
            if drop_stale_stages is not None:
                removed += len(drop_stale_stages(str(batch_export.id), run_timeout(batch_export.interval)))
                continue
            store = _file_store(destination.type, config)
            if store is not None:
                removed += len(sweep_files(store, str(config.get("prefix") or ""), run_timeout(batch_export.interval)))
        except Exception as error:  # one export's destination must not stop the sweep of the others
            logger.warning("leftover sweep of export %s failed: %s: %s", batch_export.id, type(error).__name__, error)
    logger.info("leftover sweep: %d removed", removed)
    return removed


def _sweep_in_thread() -> None:
    try:
        sweep()
    except Exception as error:
        logger.warning("leftover sweep failed: %s: %s", type(error).__name__, error)
    finally:
        connection.close()


def start_sweep() -> threading.Thread:
    thread = threading.Thread(target=_sweep_in_thread, name="leftover-sweep", daemon=True)
    thread.start()
    return thread
