"""The batch exports API: exports, their runs and backfills, under all three URL prefixes.

Views stay thin: validation is in serializers, scope checks in one permission class and
the scoping mixin, and everything that schedules or runs goes through the engine seam.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Prefetch, QuerySet
from django.utils import timezone
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import filters, mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from batchexports.destinations import registry, testing
from batchexports.destinations.base import deep_merge
from batchexports.exports import services
from batchexports.exports.backfills import BackfillRequestSerializer
from batchexports.exports.log_entries import query_log_entries
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportRun
from batchexports.exports.pagination import BackfillsCursorPagination, RunsCursorPagination
from batchexports.exports.scoping import ScopedViewMixin, get_by_uuid_or_404
from batchexports.exports.serializers import (
    BatchExportBackfillSerializer,
    BatchExportDestinationSerializer,
    BatchExportRunSerializer,
    BatchExportSerializer,
    RunsListQuerySerializer,
    UnpauseRequestSerializer,
)

# PostHog's default window of a runs list: the last 7 days, whichever way it is ordered.
DEFAULT_RUNS_WINDOW = dt.timedelta(days=7)

TEST_SCOPES = {
    "test": "batch_export:read",
    "run_test_step_new": "batch_export:write",
    "run_test_step": "batch_export:write",
}


def _step_index(request: Request, steps: tuple[testing.TestStep, ...]) -> int:
    raw = request.data.get("step", 0) if hasattr(request.data, "get") else 0
    try:
        index = int(raw)
    except (TypeError, ValueError):
        raise ValidationError({"step": f"step must be an integer, not '{raw}'."}) from None
    if not 0 <= index < len(steps):
        raise ValidationError({"step": f"step must be between 0 and {len(steps) - 1}."})
    return index


def _test_steps(destination_type: str) -> tuple[testing.TestStep, ...]:
    try:
        spec = registry.get(destination_type)
    except KeyError:
        raise NotFound(f"Unknown destination type '{destination_type}'.") from None
    if not spec.test_steps:
        raise NotFound(f"There is no test for {spec.label} destinations yet.")
    return spec.test_steps


class BatchExportViewSet(ScopedViewMixin, viewsets.ModelViewSet):
    serializer_class = BatchExportSerializer
    required_scopes = TEST_SCOPES

    def get_queryset(self) -> QuerySet[BatchExport]:
        latest_runs = Prefetch(
            "runs",
            queryset=BatchExportRun.objects.order_by("-created_at")[:10],
            to_attr="prefetched_latest_runs",
        )
        return self.batch_exports().select_related("destination").prefetch_related(latest_runs).order_by("-created_at")

    def get_object(self) -> BatchExport:
        return get_by_uuid_or_404(self.get_queryset(), self.kwargs["pk"], "Batch export")

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        if hasattr(self, "scope"):
            project_ids = self.scope.project_ids()
            context["project_ids"] = project_ids
            context["default_project_id"] = (
                self.scope.project.id if self.scope.project else (project_ids[0] if project_ids else None)
            )
        return context

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        if serializer.context["default_project_id"] is None:
            raise ValidationError({"team_id": "This organization has no project to create the batch export in."})
        serializer.save()

    def perform_destroy(self, instance: BatchExport) -> None:
        services.delete(instance)

    @extend_schema(request=None, responses={200: OpenApiResponse(description='`{"paused": true}`')})
    @action(methods=["POST"], detail=True)
    def pause(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        services.pause(self.get_object())
        return Response({"paused": True})

    @extend_schema(
        request=UnpauseRequestSerializer, responses={200: OpenApiResponse(description='`{"paused": false}`')}
    )
    @action(methods=["POST"], detail=True)
    def unpause(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        batch_export = self.get_object()
        body = UnpauseRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        services.unpause(batch_export, backfill=body.validated_data["backfill"])
        return Response({"paused": False})

    @extend_schema(
        request=BackfillRequestSerializer,
        responses={200: OpenApiResponse(description='`{"backfill_id"}`')},
        deprecated=True,
        description="Deprecated: use POST backfills/ instead.",
    )
    @action(methods=["POST"], detail=True)
    def backfill(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        batch_export = self.get_object()
        backfill = _create_backfill(batch_export, request)
        return Response({"backfill_id": str(backfill.id)})

    @extend_schema(request=None, responses={200: OpenApiResponse(description='`{"results": [log entry]}`')})
    @action(methods=["GET"], detail=True)
    def logs(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        batch_export = self.get_object()
        return Response({"results": query_log_entries(batch_export.id, request.query_params)})

    @extend_schema(request=None, responses={200: OpenApiResponse(description='`{"steps": [{name, description}]}`')})
    @action(methods=["GET"], detail=False)
    def test(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        destination_type = request.query_params.get("destination")
        if not destination_type:
            raise ValidationError({"destination": "Pass the destination type to test, e.g. ?destination=S3."})
        return Response(testing.describe(_test_steps(destination_type)))

    @extend_schema(request=None, responses={200: OpenApiResponse(description="`{name, description, result}`")})
    @action(methods=["POST"], detail=False)
    def run_test_step_new(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        destination = BatchExportDestinationSerializer(data=request.data.get("destination"))
        if "destination" not in request.data:
            raise ValidationError({"destination": "This field is required."})
        try:
            destination.is_valid(raise_exception=True)
        except ValidationError as error:
            raise ValidationError({"destination": error.detail}) from None
        destination_type = destination.validated_data["type"]
        steps = _test_steps(destination_type)
        index = _step_index(request, steps)
        spec = registry.get(destination_type)
        config = _validated_config(spec, destination.validated_data.get("config") or {})
        return Response(testing.run_step(steps, index, config, _secrets_of(spec, config)))

    @extend_schema(request=None, responses={200: OpenApiResponse(description="`{name, description, result}`")})
    @action(methods=["POST"], detail=True)
    def run_test_step(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        batch_export = self.get_object()
        spec = registry.get(batch_export.destination.type)
        steps = _test_steps(spec.type)
        index = _step_index(request, steps)
        incoming = (request.data.get("destination") or {}).get("config") or {}
        if not isinstance(incoming, dict):
            raise ValidationError({"destination": {"config": "config must be an object."}})
        config = _validated_config(spec, deep_merge(batch_export.destination.full_config(), incoming))
        return Response(testing.run_step(steps, index, config, _secrets_of(spec, config)))


def _validated_config(spec: Any, config: dict[str, Any]) -> dict[str, Any]:
    try:
        return spec.validate_config(config)
    except serializers.ValidationError as error:
        raise ValidationError({"destination": {"config": error.detail}}) from None


def _secrets_of(spec: Any, config: dict[str, Any]) -> dict[str, Any]:
    from batchexports.destinations.base import split_secrets

    return split_secrets(config, spec.secret_fields)[1]


def _create_backfill(batch_export: BatchExport, request: Request) -> BatchExportBackfill:
    body = BackfillRequestSerializer(data=request.data, context={"batch_export": batch_export})
    body.is_valid(raise_exception=True)
    return services.create_backfill(
        batch_export, body.validated_data["start_at"], body.validated_data["end_at"], limit_concurrency=True
    )


class NestedInBatchExportMixin(ScopedViewMixin):
    """For routes under `…/batch_exports/:batch_export_id/`."""

    ordering = "-created_at"  # with an OrderingFilter in each viewset's filter_backends


@extend_schema(parameters=[RunsListQuerySerializer])
class BatchExportRunViewSet(NestedInBatchExportMixin, viewsets.ReadOnlyModelViewSet):
    """Every execution of the export's intervals, newest first, in PostHog's default window.

    Ordered by `created_at` (the default): `after`/`before` bound `created_at`, by default the
    last 7 days. Ordered by `data_interval_start`: `start`/`end` bound the data interval instead,
    by default the intervals of the last 7 days. `status` (repeatable) keeps runs in those states.
    """

    serializer_class = BatchExportRunSerializer
    pagination_class = RunsCursorPagination
    filter_backends = [filters.OrderingFilter]
    ordering_fields = ["created_at", "data_interval_start"]

    def get_queryset(self) -> QuerySet[BatchExportRun]:
        batch_export = self.parent_batch_export()
        runs = BatchExportRun.objects.filter(batch_export=batch_export)
        if self.action != "list":
            return runs  # a run is reachable by its id whenever it ran
        query = RunsListQuerySerializer(data=self.request.query_params, context={"tz": batch_export.team.timezone})
        query.is_valid(raise_exception=True)
        params = query.validated_data
        now = timezone.now()
        if self.request.query_params.get("ordering", "").lstrip("-") == "data_interval_start":
            runs = runs.filter(
                data_interval_start__gte=params.get("start") or now - DEFAULT_RUNS_WINDOW,
                data_interval_end__lte=params.get("end") or now,
            )
        else:
            runs = runs.filter(
                created_at__gte=params.get("after") or now - DEFAULT_RUNS_WINDOW,
                created_at__lte=params.get("before") or now,
            )
        if params.get("status"):
            runs = runs.filter(status__in=params["status"])
        return runs

    def get_object(self) -> BatchExportRun:
        return get_by_uuid_or_404(self.get_queryset(), self.kwargs["pk"], "Run")

    @extend_schema(request=None, responses={201: OpenApiResponse(description='`{"backfill_id"}`')})
    @action(methods=["POST"], detail=True)
    def retry(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Re-run this run's data interval, as a backfill of exactly that interval: a new run row,
        this one left as it was."""
        run = self.get_object()
        if run.data_interval_start is None:
            raise ValidationError("This run has no data interval start, so its interval cannot be re-run.")
        backfill = services.create_backfill(run.batch_export, run.data_interval_start, run.data_interval_end)
        return Response({"backfill_id": str(backfill.id)}, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: OpenApiResponse(description='`{"cancelled": true}`')})
    @action(methods=["POST"], detail=True)
    def cancel(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        run = self.get_object()
        if run.status not in BatchExportRun.ACTIVE_STATUSES:
            raise ValidationError(f"Only Starting or Running runs can be cancelled; this run is {run.status}.")
        services.cancel_run(run)
        return Response({"cancelled": True})

    @extend_schema(request=None, responses={200: OpenApiResponse(description='`{"results": [log entry]}`')})
    @action(methods=["GET"], detail=True)
    def logs(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        run = self.get_object()
        return Response({"results": query_log_entries(run.batch_export_id, request.query_params, run_id=run.id)})


class BatchExportBackfillViewSet(NestedInBatchExportMixin, mixins.CreateModelMixin, viewsets.ReadOnlyModelViewSet):
    serializer_class = BatchExportBackfillSerializer
    pagination_class = BackfillsCursorPagination
    filter_backends = [filters.OrderingFilter]
    ordering_fields = ["created_at", "start_at"]

    def get_queryset(self) -> QuerySet[BatchExportBackfill]:
        return BatchExportBackfill.objects.filter(batch_export=self.parent_batch_export())

    def get_object(self) -> BatchExportBackfill:
        return get_by_uuid_or_404(self.get_queryset(), self.kwargs["pk"], "Backfill")

    @extend_schema(request=BackfillRequestSerializer, responses={201: OpenApiResponse(description='`{"backfill_id"}`')})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        backfill = _create_backfill(self.parent_batch_export(), request)
        return Response({"backfill_id": str(backfill.id)}, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses={200: OpenApiResponse(description='`{"cancelled": true}`')})
    @action(methods=["POST"], detail=True)
    def cancel(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        backfill = self.get_object()
        if backfill.status not in BatchExportBackfill.ACTIVE_STATUSES:
            raise ValidationError(
                f"Only a Starting or Running backfill can be cancelled; this one is {backfill.status}."
            )
        services.cancel_backfill(backfill)
        return Response({"cancelled": True})
