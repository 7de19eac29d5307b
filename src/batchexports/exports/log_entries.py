"""Reading a batch export's log entries with PostHog's filters (limit, after, before, level, search, run)."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet

from batchexports.exports.models import BatchExportLogEntry
from batchexports.exports.serializers import LogEntriesRequestSerializer


def query_log_entries(batch_export_id: uuid.UUID, params: Any, run_id: uuid.UUID | None = None) -> list[dict[str, Any]]:
    request = LogEntriesRequestSerializer(data=params)
    request.is_valid(raise_exception=True)
    filters = request.validated_data
    entries: QuerySet[BatchExportLogEntry] = BatchExportLogEntry.objects.filter(batch_export_id=batch_export_id)
    instance_id = run_id or filters.get("instance_id")
    if instance_id is not None:
        entries = entries.filter(run_id=instance_id)
    if "after" in filters:
        entries = entries.filter(timestamp__gt=filters["after"])
    if "before" in filters:
        entries = entries.filter(timestamp__lt=filters["before"])
    if filters.get("level"):
        entries = entries.filter(level__in=filters["level"])
    if filters.get("search"):
        entries = entries.filter(message__icontains=filters["search"])
    entries = entries.order_by("-timestamp", "-id")[: filters["limit"]]
    return [
        {
            "team_id": entry.team_id,
            "log_source": "batch_exports",
            "log_source_id": str(entry.batch_export_id),
            "instance_id": str(entry.run_id) if entry.run_id else None,
            "timestamp": entry.timestamp.isoformat().replace("+00:00", "Z"),
            "level": entry.level,
            "message": entry.message,
        }
        for entry in entries
    ]
