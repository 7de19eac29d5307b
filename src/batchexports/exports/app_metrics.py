"""App metrics of a batch export, in the shape of PostHog's `app_metrics` routes: runs per day
(counted as PostHog counts them), the errors of failed runs, and backfills as "historical exports"."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from typing import Any

from django.db.models import Count, Q, QuerySet
from django.db.models.functions import TruncDate
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from batchexports.exports import backfills
from batchexports.exports.models import BatchExportBackfill, BatchExportRun
from batchexports.exports.relative_dates import parse_relative_or_absolute
from batchexports.exports.scoping import ScopedViewMixin, get_by_uuid_or_404

FAILURE_STATUSES = (
    BatchExportRun.Status.FAILED,
    BatchExportRun.Status.FAILED_BILLING,
    BatchExportRun.Status.TERMINATED,
    BatchExportRun.Status.TIMEDOUT,
)
# What PostHog's app metrics of a batch export count: finished or retrying executions. Each
# execution is a run row of its own, so a retried interval counts its failure and its success.
SUCCESS_STATUSES = (BatchExportRun.Status.COMPLETED,)
COUNTED_FAILURE_STATUSES = (BatchExportRun.Status.FAILED, BatchExportRun.Status.FAILED_RETRYABLE)


def _parse_date_param(name: str, value: str, tz: dt.tzinfo) -> dt.datetime:
    try:
        return parse_relative_or_absolute(value, tz=tz)
    except ValueError as error:
        raise ValidationError({name: str(error)}) from None


def _date_range(request: Request, tz: dt.tzinfo = dt.UTC) -> tuple[dt.datetime, dt.datetime]:
    """`date_from` (default `-30d`) and `date_to` (default now), read as PostHog reads them: relative
    dates counted back from now, dates without an offset in the project's timezone."""
    start = _parse_date_param("date_from", request.query_params.get("date_from") or "-30d", tz)
    end_raw = request.query_params.get("date_to")
    end = _parse_date_param("date_to", end_raw, tz) if end_raw else timezone.now()
    if start > end:
        raise ValidationError({"date_from": "date_from must be before date_to."})
    return start, end


def daily_run_counts(
    runs: QuerySet[BatchExportRun], start: dt.datetime, end: dt.datetime
) -> dict[dt.date, tuple[int, int]]:
    """(successes, failures) per day (UTC) of the runs last updated in [start, end], days with runs only."""
    rows = (
        runs.filter(
            last_updated_at__gte=start,
            last_updated_at__lte=end,
            status__in=SUCCESS_STATUSES + COUNTED_FAILURE_STATUSES,
        )
        .annotate(day=TruncDate("last_updated_at", tzinfo=dt.UTC))
        .values("day")
        .annotate(
            successes=Count("id", filter=Q(status__in=SUCCESS_STATUSES)),
            failures=Count("id", filter=Q(status__in=COUNTED_FAILURE_STATUSES)),
        )
    )
    return {row["day"]: (row["successes"], row["failures"]) for row in sorted(rows, key=lambda row: row["day"])}


def runs_per_day(runs: QuerySet[BatchExportRun], start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """PostHog's `metrics` of a batch export: for each day (UTC) on which runs finished or failed, the
    runs that completed (`successes`) and those that failed or are failing and retrying (`failures`),
    by the day they were last updated, oldest first. `successes_on_retry` is always 0, as in PostHog:
    a retry is a run of its own and counts as a success."""
    counts = daily_run_counts(runs, start, end)
    successes = [pair[0] for pair in counts.values()]
    failures = [pair[1] for pair in counts.values()]
    return {
        "dates": [day.isoformat() for day in counts],
        "successes": successes,
        "successes_on_retry": [0] * len(counts),
        "failures": failures,
        "totals": {"successes": sum(successes), "successes_on_retry": 0, "failures": sum(failures)},
    }


class AppMetricsViewSet(ScopedViewMixin, viewsets.ViewSet):
    required_scopes = {
        "retrieve": "plugin:read",
        "error_details": "plugin:read",
        "historical_exports": "plugin:read",
        "historical_export": "plugin:read",
    }

    def _batch_export(self, pk: str) -> Any:
        return get_by_uuid_or_404(self.batch_exports().select_related("team"), pk, "Batch export")

    @extend_schema(responses={200: OpenApiResponse(description="`{metrics: {dates, successes, ...}, errors}`")})
    def retrieve(self, request: Request, pk: str, **kwargs: Any) -> Response:
        batch_export = self._batch_export(pk)
        start, end = _date_range(request, _project_tz(batch_export))
        return Response({"metrics": runs_per_day(batch_export.runs.all(), start, end), "errors": None})

    @extend_schema(responses={200: OpenApiResponse(description="`{result: [error]}`")})
    @action(methods=["GET"], detail=True)
    def error_details(self, request: Request, pk: str, **kwargs: Any) -> Response:
        batch_export = self._batch_export(pk)
        start, end = _date_range(request, _project_tz(batch_export))
        failed = batch_export.runs.filter(
            status__in=FAILURE_STATUSES, data_interval_end__gte=start, data_interval_end__lte=end
        ).order_by("-created_at")[:100]
        return Response(
            {
                "result": [
                    {
                        "error_uuid": str(run.id),
                        "error_type": run.status,
                        "error_details": {"error": {"message": run.latest_error or ""}},
                        "timestamp": (run.finished_at or run.last_updated_at).isoformat().replace("+00:00", "Z"),
                    }
                    for run in failed
                ]
            }
        )

    @extend_schema(responses={200: OpenApiResponse(description="`{results: [historical export]}`")})
    def historical_exports(self, request: Request, plugin_config_id: str, **kwargs: Any) -> Response:
        batch_export = self._batch_export(plugin_config_id)
        return Response({"results": [_historical(b) for b in batch_export.backfills.order_by("-created_at")[:100]]})

    @extend_schema(responses={200: OpenApiResponse(description="historical export")})
    def historical_export(self, request: Request, plugin_config_id: str, pk: str, **kwargs: Any) -> Response:
        batch_export = self._batch_export(plugin_config_id)
        backfill = get_by_uuid_or_404(batch_export.backfills.all(), pk, "Historical export")
        return Response(_historical(backfill))


def _project_tz(batch_export: Any) -> dt.tzinfo:
    return zoneinfo.ZoneInfo(batch_export.team.timezone or "UTC")


def _historical(backfill: BatchExportBackfill) -> dict[str, Any]:
    """A backfill presented as PostHog presents a plugin's historical export."""
    progress = backfills.progress(backfill)
    finished = backfill.finished_at
    statuses: dict[str, str] = {
        BatchExportBackfill.Status.COMPLETED: "success",
        BatchExportBackfill.Status.STARTING: "not_finished",
        BatchExportBackfill.Status.RUNNING: "not_finished",
    }
    status = statuses.get(backfill.status, "fail")
    iso = lambda value: value.isoformat().replace("+00:00", "Z") if value else None  # noqa: E731
    return {
        "job_id": str(backfill.id),
        "status": status,
        "payload": {"start_at": iso(backfill.start_at), "end_at": iso(backfill.end_at)},
        "created_at": iso(backfill.created_at),
        "created_by": None,
        "finished_at": iso(finished),
        "duration": (finished - backfill.created_at).total_seconds() if finished else None,
        "progress": progress["progress"] if progress else None,
        "failure_reason": None if status != "fail" else f"Backfill {backfill.status.lower()}",
    }
