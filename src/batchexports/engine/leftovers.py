"""The start-up sweep: what runs interrupted before this start left in file destinations.

`start_sweep()` (called once the worker reconciles) walks every live export in a thread of its own,
so a slow or unreachable destination never delays the worker, and removes, under each export's
prefix, temporary files of dead writers (local folder) and multipart uploads older than the
export's run timeout (S3), and PostgreSQL stage tables the export created longer ago than that: no
attempt of any interval lives longer, so none of them is in flight.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from typing import Any

from django.db import connection

from batchexports.core.intervals import run_timeout
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


def sweep() -> int:
    """Sweep every live export's file destination; the number of leftovers removed."""
    removed = 0
    for batch_export in BatchExport.objects.filter(deleted=False).select_related("destination"):
        destination = batch_export.destination
        try:
            config = destination.full_config()
            if destination.type == "Postgres":
                from batchexports.destinations.postgres_sink import PostgresSink, drop_stale_stages

                removed += len(
                    drop_stale_stages(PostgresSink(config), str(batch_export.id), run_timeout(batch_export.interval))
                )
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
