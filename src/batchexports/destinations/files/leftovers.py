"""What interrupted runs leave behind in file destinations, and removing it.

A run killed mid-file leaves a temporary file in a local export folder and an incomplete multipart
upload in S3 (whose parts S3 keeps, and bills, until they are aborted). Stores that can leave such
things have `remove_leftovers(prefix, started_before)`; this module calls it:

- `clean_interval()` at the start of every run, for the keys of that run's interval (a run of the
  interval is starting: anything an earlier attempt of it left is dead);
- `sweep_files()` at start-up (`batchexports.pipeline.startup_sweep`), for everything under an export's prefix that
  started more than the run timeout ago (no attempt of any interval lives that long).

The local folder knows exactly which temporary files are dead (their writer's lock is gone) and
ignores `started_before`. Azure Blob needs nothing: uncommitted blocks are dropped by the service.
Cleaning never fails a run: a failure is logged and the next run tries again.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, Protocol, runtime_checkable

logger = logging.getLogger(__name__)


@runtime_checkable
class LeavesLeftovers(Protocol):
    def remove_leftovers(self, prefix: str, started_before: dt.datetime | None = None) -> list[str]: ...


def static_root(prefix_template: str) -> str:
    """The part of a key prefix template before its first placeholder: where all of an export's keys are."""
    return prefix_template.split("{", 1)[0]


def _remove(store: Any, prefix: str, started_before: dt.datetime | None) -> list[str]:
    if not isinstance(store, LeavesLeftovers):
        return []
    try:
        return store.remove_leftovers(prefix, started_before)
    except Exception as error:
        logger.warning("could not remove leftovers under %r: %s: %s", prefix, type(error).__name__, error)
        return []


def clean_interval(store: Any, interval_stem: str) -> list[str]:
    """Remove what earlier attempts of this interval left: keys starting with its stem (folder + base name)."""
    return _remove(store, interval_stem, dt.datetime.now(dt.UTC))


def sweep_files(store: Any, prefix_template: str, older_than: dt.timedelta) -> list[str]:
    """Remove what runs older than `older_than` left anywhere under the export's prefix."""
    return _remove(store, static_root(prefix_template), dt.datetime.now(dt.UTC) - older_than)
