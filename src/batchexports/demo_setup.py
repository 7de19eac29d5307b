"""`batchexports up --demo`: two days of demo events, a sample File export and a backfill over them,
so that a newcomer sees runs complete within a minute of the first command."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from django.utils import timezone

from batchexports.accounts.models import Project, User
from batchexports.events.demo import DemoTraffic
from batchexports.events.stores import get_store
from batchexports.exports.backfills import calendar_for
from batchexports.exports.models import BatchExport
from batchexports.exports.services import create_backfill, create_export

DEMO_EVENTS = 20_000
DEMO_DAYS = 2


def load_demo(project: Project, user: User, say: Callable[[str], None]) -> BatchExport:
    store = get_store()
    written = sum(store.import_table(project.id, table) for table in DemoTraffic(DEMO_EVENTS, DEMO_DAYS, 0).batches())
    batch_export = create_export(
        project.id,
        {"name": "Demo: hourly events to a local folder", "interval": "hour"},
        {
            "type": "File",
            "config": {
                "path": "demo", "prefix": "{table}/{year}-{month}-{day}", "file_format": "Parquet",
                "compression": "zstd",
            },
        },
    )  # fmt: skip
    calendar = calendar_for(batch_export)
    end = calendar.floor(timezone.now())
    backfill = create_backfill(batch_export, end - dt.timedelta(days=DEMO_DAYS), end)
    say(f"demo: {written} events over {DEMO_DAYS} days, export {batch_export.id} with backfill {backfill.id}")
    return batch_export
