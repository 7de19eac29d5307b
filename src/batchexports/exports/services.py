"""Every change of an export's state, in one place: create, update, pause, unpause (with its
backfill), delete, backfill, cancel a run or a backfill.

Each writes the metadata database in one transaction and then tells the engine, once that
transaction is over (the database is the source of truth: an engine that is away is repaired by
the next reconcile). The API's viewsets and serializers, the web page (through the API) and the
demo call these, never the engine directly.

The engine is called after the `atomic()` block rather than from `transaction.on_commit`: in
autocommit (how the service runs) the block's end is the commit, and the tests, which wrap each
test in a transaction that never commits, still see the engine called.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from django.db import transaction
from django.utils import timezone

from batchexports.accounts.models import Project
from batchexports.exports.backfills import calendar_for, check_concurrency
from batchexports.exports.engine_port import get_engine
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportDestination, BatchExportRun


def create_export(team_id: int, fields: dict[str, Any], destination: Mapping[str, Any]) -> BatchExport:
    """A new export and its destination (`destination`: validated `type` and full `config`)."""
    if fields.get("paused"):
        fields["last_paused_at"] = timezone.now()
    with transaction.atomic():
        row = BatchExportDestination(type=destination["type"])
        row.set_full_config(destination["config"])
        row.save()
        batch_export = BatchExport.objects.create(team_id=team_id, destination=row, **fields)
    get_engine().sync_batch_export(batch_export, created=True)
    return batch_export


def update_export(
    batch_export: BatchExport, fields: dict[str, Any], destination: Mapping[str, Any] | None
) -> BatchExport:
    """Change an export's fields (and its destination's config); pausing or unpausing through an
    update pauses or unpauses its schedule as the pause and unpause actions do (without backfill)."""
    was_paused = batch_export.paused
    with transaction.atomic():
        if destination is not None:
            batch_export.destination.set_full_config(destination["config"])
            batch_export.destination.save()
        for name, value in fields.items():
            setattr(batch_export, name, value)
        if batch_export.paused and not was_paused:
            batch_export.last_paused_at = timezone.now()
        batch_export.save()
    engine = get_engine()
    engine.sync_batch_export(batch_export, created=False)
    if batch_export.paused != was_paused:
        if batch_export.paused:
            engine.pause(batch_export)
        else:
            engine.unpause(batch_export, backfill_from=None)
    return batch_export


def pause(batch_export: BatchExport) -> None:
    if batch_export.paused:
        return
    batch_export.paused = True
    batch_export.last_paused_at = timezone.now()
    batch_export.save(update_fields=["paused", "last_paused_at", "last_updated_at"])
    get_engine().pause(batch_export)


def unpause(batch_export: BatchExport, backfill: bool) -> BatchExportBackfill | None:
    """Resume the schedule; with `backfill`, also export the intervals missed since the pause."""
    if not batch_export.paused:
        return None
    batch_export.paused = False
    batch_export.save(update_fields=["paused", "last_updated_at"])
    backfill_from = batch_export.last_paused_at if backfill else None
    get_engine().unpause(batch_export, backfill_from=backfill_from)
    if backfill_from is None:
        return None
    calendar = calendar_for(batch_export)
    start, end = calendar.floor(backfill_from), calendar.floor(timezone.now())
    return create_backfill(batch_export, start, end) if start < end else None


def delete(batch_export: BatchExport) -> None:
    batch_export.deleted = True
    batch_export.save(update_fields=["deleted", "last_updated_at"])
    get_engine().delete(batch_export)


def create_backfill(
    batch_export: BatchExport,
    start_at: dt.datetime | None,
    end_at: dt.datetime | None,
    limit_concurrency: bool = False,
) -> BatchExportBackfill:
    """Record a backfill and hand it to the engine.

    `limit_concurrency`: the API's backfill routes apply the per-project limit; a run's retry and
    the backfill of an unpause do not, as in PostHog.
    """
    total = None
    if start_at is not None:
        total = calendar_for(batch_export).count(start_at, end_at or timezone.now())
    with transaction.atomic():
        if limit_concurrency:
            Project.objects.select_for_update().filter(id=batch_export.team_id).first()
            check_concurrency(batch_export.team_id)
        backfill = BatchExportBackfill.objects.create(
            team_id=batch_export.team_id,
            batch_export=batch_export,
            start_at=start_at,
            end_at=end_at,
            status=BatchExportBackfill.Status.STARTING,
            total_runs=total,
        )
    get_engine().start_backfill(backfill)
    return backfill


def cancel_run(run: BatchExportRun) -> None:
    """Mark an active run Cancelled and stop its workflow (the caller checked that it is active)."""
    run.status = BatchExportRun.Status.CANCELLED
    run.finished_at = timezone.now()
    run.save(update_fields=["status", "finished_at", "last_updated_at"])
    get_engine().cancel_run(run)


def cancel_backfill(backfill: BatchExportBackfill) -> None:
    """Mark an active backfill and its active runs Cancelled and stop its workflow."""
    now = timezone.now()
    with transaction.atomic():
        backfill.status = BatchExportBackfill.Status.CANCELLED
        backfill.finished_at = now
        backfill.save(update_fields=["status", "finished_at", "last_updated_at"])
        BatchExportRun.objects.filter(backfill=backfill, status__in=BatchExportRun.ACTIVE_STATUSES).update(
            status=BatchExportRun.Status.CANCELLED, finished_at=now, last_updated_at=now
        )
    get_engine().cancel_backfill(backfill)
