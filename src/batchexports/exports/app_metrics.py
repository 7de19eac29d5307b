"""App metrics of a batch export, in the shape of PostHog's `app_metrics` routes: runs per day,
the errors of failed runs, and backfills as "historical exports"."""

from __future__ import annotations

import datetime as dt
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


def _parse_date_param(name: str, value: str) -> dt.datetime:
    try:
        return parse_relative_or_absolute(value)
    except ValueError as error:
        raise ValidationError({name: str(error)}) from None


def _date_range(request: Request) -> tuple[dt.datetime, dt.datetime]:
    start = _parse_date_param("date_from", request.query_params.get("date_from") or "-30d")
    end_raw = request.query_params.get("date_to")
    end = _parse_date_param("date_to", end_raw) if end_raw else timezone.now()
    # Metrics are counted per day: the first day counts whole, from its midnight (UTC), as PostHog's `-7d` does.
    start = start.astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    if start > end:
        raise ValidationError({"date_from": "date_from must be before date_to."})
    return start, end


def runs_per_day(runs: QuerySet[BatchExportRun], start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """Counts of finished runs per day (UTC) of their data interval end, every day present."""
    rows = (
        runs.filter(data_interval_end__gte=start, data_interval_end__lte=end)
        .annotate(day=TruncDate("data_interval_end", tzinfo=dt.UTC))
        .values("day")
        .annotate(
            successes=Count("id", filter=Q(status=BatchExportRun.Status.COMPLETED, backfill__isnull=True)),
            successes_on_retry=Count("id", filter=Q(status=BatchExportRun.Status.COMPLETED, backfill__isnull=False)),
            failures=Count("id", filter=Q(status__in=FAILURE_STATUSES)),
        )
    )
    by_day = {row["day"]: row for row in rows}
    dates, successes, retries, failures = [], [], [], []
    day = start.astimezone(dt.UTC).date()
    while day <= end.astimezone(dt.UTC).date():
        row = by_day.get(day, {})
        dates.append(day.isoformat())
        successes.append(row.get("successes", 0))
        retries.append(row.get("successes_on_retry", 0))
        failures.append(row.get("failures", 0))
        day += dt.timedelta(days=1)
    return {
        "dates": dates,
        "successes": successes,
        "successes_on_retry": retries,
        "failures": failures,
        "totals": {
            "successes": sum(successes),
            "successes_on_retry": sum(retries),
            "failures": sum(failures),
        },
    }


class AppMetricsViewSet(ScopedViewMixin, viewsets.ViewSet):
    required_scopes = {
        "retrieve": "plugin:read",
        "error_details": "plugin:read",
        "historical_exports": "plugin:read",
        "historical_export": "plugin:read",
    }

    def _batch_export(self, pk: str) -> Any:
        return get_by_uuid_or_404(self.batch_exports(), pk, "Batch export")

    @extend_schema(responses={200: OpenApiResponse(description="`{metrics: {dates, successes, ...}, errors}`")})
    def retrieve(self, request: Request, pk: str, **kwargs: Any) -> Response:
        batch_export = self._batch_export(pk)
        start, end = _date_range(request)
        return Response({"metrics": runs_per_day(batch_export.runs.all(), start, end), "errors": None})

    @extend_schema(responses={200: OpenApiResponse(description="`{result: [error]}`")})
    @action(methods=["GET"], detail=True)
    def error_details(self, request: Request, pk: str, **kwargs: Any) -> Response:
        batch_export = self._batch_export(pk)
        start, end = _date_range(request)
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


def _historical(backfill: BatchExportBackfill) -> dict[str, Any]:
    """A backfill presented as PostHog presents a plugin's historical export."""
    progress = backfills.progress(backfill)
    finished = backfill.finished_at
    status = {
        BatchExportBackfill.Status.COMPLETED: "success",
        BatchExportBackfill.Status.STARTING: "not_finished",
        BatchExportBackfill.Status.RUNNING: "not_finished",
    }.get(backfill.status, "fail")
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
