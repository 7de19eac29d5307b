"""Backfill rules: which ranges a backfill may cover, and how far along one is."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import transaction
from django.utils import timezone
from rest_framework import serializers

from batchexports.engine.interface import get_engine
from batchexports.exports.intervals import FIXED_INTERVALS, IntervalCalendar, split_offset
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportRun

FINISHED_RUN_STATUSES = (
    BatchExportRun.Status.COMPLETED,
    BatchExportRun.Status.FAILED,
    BatchExportRun.Status.CANCELLED,
    BatchExportRun.Status.TERMINATED,
    BatchExportRun.Status.TIMEDOUT,
    BatchExportRun.Status.FAILED_BILLING,
)


def calendar_for(batch_export: BatchExport) -> IntervalCalendar:
    offset_day, offset_hour = split_offset(batch_export.interval_offset)
    return IntervalCalendar(batch_export.interval, batch_export.timezone, offset_day or 0, offset_hour or 0)


def _week_day(calendar: IntervalCalendar) -> str:
    """The name of the day a week starts on (offset_day 0 = Sunday)."""
    return ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")[calendar.offset_day % 7]


def _parse_bound(name: str, raw: Any, batch_export: BatchExport, calendar: IntervalCalendar) -> dt.datetime:
    if isinstance(raw, dt.datetime):
        text = raw.isoformat()
    elif isinstance(raw, str):
        text = raw.strip()
    else:
        raise serializers.ValidationError({name: f"{name} must be a string, not {type(raw).__name__}."})
    fixed = batch_export.interval in FIXED_INTERVALS
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        day = None
    if day is not None:
        if fixed:
            raise serializers.ValidationError(
                {
                    name: f"{name} must be a datetime with a timezone offset (e.g. {day}T00:00:00Z) "
                    f"for '{batch_export.interval}' batch exports, not a date."
                }
            )
        # A date means the interval boundary that starts that day in the export's timezone.
        moment = dt.datetime.combine(day, dt.time(calendar.offset_hour), tzinfo=calendar.tz).astimezone(dt.UTC)
        if not calendar.is_boundary(moment):  # a weekly export's weeks start on one day of the week only
            raise serializers.ValidationError(
                {name: f"{name} {day} is a {day:%A}; the weeks of this batch export start on {_week_day(calendar)}s."}
            )
        return moment
    try:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        expected = "an ISO 8601 datetime with a timezone offset" if fixed else "a date (YYYY-MM-DD)"
        raise serializers.ValidationError({name: f"{name} '{text}' is not {expected}."}) from None
    if moment.tzinfo is None:
        raise serializers.ValidationError(
            {name: f"{name} '{text}' has no timezone offset; add one, e.g. '{text}Z' for UTC."}
        )
    if not fixed and not calendar.is_boundary(moment):
        on_day = f"{_week_day(calendar)}s at " if batch_export.interval == "week" else ""
        raise serializers.ValidationError(
            {
                name: f"{name} must be a date (YYYY-MM-DD) for '{batch_export.interval}' batch exports, or a datetime "
                f"on an interval boundary ({on_day}{calendar.offset_hour:02d}:00 in {batch_export.timezone})."
            }
        )
    return moment.astimezone(dt.UTC)


class BackfillRequestSerializer(serializers.Serializer):
    """`{"start_at", "end_at"}` of a new backfill, checked against the export's interval."""

    start_at = serializers.JSONField(required=False, allow_null=True)
    end_at = serializers.JSONField(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        batch_export: BatchExport = self.context["batch_export"]
        calendar = calendar_for(batch_export)
        raw_start, raw_end = attrs.get("start_at"), attrs.get("end_at")
        start = _parse_bound("start_at", raw_start, batch_export, calendar) if raw_start is not None else None
        end = _parse_bound("end_at", raw_end, batch_export, calendar) if raw_end is not None else None
        now = timezone.now()
        if end is not None and end > now:
            raise serializers.ValidationError({"end_at": "end_at cannot be in the future."})
        if start is not None and end is not None and start >= end:
            raise serializers.ValidationError({"start_at": "start_at must be before end_at."})
        if start is not None and start > now:
            raise serializers.ValidationError({"start_at": "start_at cannot be in the future."})
        return {"start_at": start, "end_at": end}


def create_backfill(
    batch_export: BatchExport, start_at: dt.datetime | None, end_at: dt.datetime | None
) -> BatchExportBackfill:
    """Record a backfill and hand it to the engine."""
    total = None
    if start_at is not None:
        total = calendar_for(batch_export).count(start_at, end_at or timezone.now())
    with transaction.atomic():
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


def progress(backfill: BatchExportBackfill) -> dict[str, Any] | None:
    """`{total_runs, finished_runs, progress}`, or None while the number of runs is unknown."""
    if backfill.status == BatchExportBackfill.Status.COMPLETED:
        total = backfill.total_runs or 0
        return {"total_runs": total, "finished_runs": total, "progress": 1.0}
    if not backfill.total_runs:
        return None
    finished = (
        BatchExportRun.objects.filter(backfill=backfill, status__in=FINISHED_RUN_STATUSES)
        .values("data_interval_end")
        .distinct()
        .count()
    )
    finished = min(finished, backfill.total_runs)
    return {
        "total_runs": backfill.total_runs,
        "finished_runs": finished,
        "progress": round(finished / backfill.total_runs, 4),
    }
