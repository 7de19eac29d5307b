"""Backfill rules: which ranges a backfill may cover, how many may run at once, how far along one is."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import APIException

from batchexports.core.intervals import FIXED_INTERVALS, IntervalCalendar, nominal_length, split_offset
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportRun

# The runs PostHog counts as finished for a backfill's progress: a cancelled or terminated run
# may be retried by hand, so it is not counted as done.
FINISHED_RUN_STATUSES = (BatchExportRun.Status.COMPLETED, BatchExportRun.Status.FAILED)


class TooManyConcurrentBackfills(APIException):
    """PostHog's answer to one backfill too many for a project (429 `too_many_concurrent_backfills`)."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "too_many_concurrent_backfills"
    default_detail = "Too many concurrent batch export backfills for this project."
    default_type = "throttled_error"


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


@extend_schema_field({"type": "string", "nullable": True, "description": "ISO 8601 datetime, or a date (day, week)"})
class _AsSent(serializers.Field):
    """A value as the client sent it (JSON of any type, or a form field's text), checked by `_parse_bound`."""

    def to_internal_value(self, data: Any) -> Any:
        return data

    def to_representation(self, value: Any) -> Any:
        return value


class BackfillRequestSerializer(serializers.Serializer):
    """`{"start_at", "end_at"}` of a new backfill, checked against the export's interval."""

    start_at = _AsSent(required=False, allow_null=True)
    end_at = _AsSent(required=False, allow_null=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        batch_export: BatchExport = self.context["batch_export"]
        calendar = calendar_for(batch_export)
        raw_start, raw_end = attrs.get("start_at"), attrs.get("end_at")
        start = _parse_bound("start_at", raw_start, batch_export, calendar) if raw_start is not None else None
        end = _parse_bound("end_at", raw_end, batch_export, calendar) if raw_end is not None else None
        now = timezone.now()
        # As PostHog accepts it: at most one interval into the future; that interval is exported
        # once it has ended (the backfill waits for it).
        latest_end = now + nominal_length(batch_export.interval)
        if end is not None and end > latest_end:
            latest = latest_end.replace(microsecond=0).isoformat()
            raise serializers.ValidationError(
                {
                    "end_at": f"end_at {end.isoformat()} is too far into the future: a backfill may end at most one "
                    f"interval ('{batch_export.interval}') from now, at {latest}."
                }
            )
        if start is not None and end is not None and start >= end:
            raise serializers.ValidationError({"start_at": "start_at must be before end_at."})
        if start is not None and start > now:
            raise serializers.ValidationError({"start_at": "start_at cannot be in the future."})
        return {"start_at": start, "end_at": end}


def check_concurrency(project_id: int) -> None:
    """Refuse a new backfill once the project has BATCHEXPORTS_MAX_CONCURRENT_BACKFILLS active ones.

    Called inside the transaction that creates the backfill, after locking the project's row, so
    that two requests at once cannot both pass (PostgreSQL; SQLite serializes writers anyway).
    """
    limit = settings.BATCHEXPORTS_MAX_CONCURRENT_BACKFILLS
    active = BatchExportBackfill.objects.filter(
        team_id=project_id, status__in=BatchExportBackfill.ACTIVE_STATUSES
    ).count()
    if active >= limit:
        raise TooManyConcurrentBackfills(
            f"This project already has {active} batch export backfill(s) running (at most {limit} at once). "
            "Wait for some to finish or cancel them before creating more."
        )


def progress(backfill: BatchExportBackfill) -> dict[str, Any] | None:
    """`{total_runs, finished_runs, progress}`, null where PostHog's is null.

    Null for a backfill that ended other than Completed (its progress means little), while the
    number of runs is unknown or zero, and for a backfill from the beginning of time whose start
    the engine has not fixed yet. Finished runs are the Completed and Failed ones, one per interval.
    """
    if backfill.status == BatchExportBackfill.Status.COMPLETED:
        total = backfill.total_runs or 0
        return {"total_runs": total, "finished_runs": total, "progress": 1.0}
    if backfill.status not in BatchExportBackfill.ACTIVE_STATUSES:
        return None
    if not backfill.total_runs:
        return None
    if backfill.start_at is None and backfill.adjusted_start_at is None:
        return None
    finished = (
        BatchExportRun.objects.filter(backfill=backfill, status__in=FINISHED_RUN_STATUSES)
        .values("data_interval_end")
        .distinct()
        .count()
    )
    total = max(backfill.total_runs, finished)
    return {"total_runs": total, "finished_runs": finished, "progress": round(finished / total, 4)}
