"""Views of the web page: server-rendered pages over the same models, serializers and access
rules as the API. Actions that change things from a page's buttons (pause, retry, cancel,
backfill, destination tests, delete) go through the JSON API with the session, so the API stays
the one place that decides them; creating and editing validate with the API's serializer here,
so that every message can be shown beside its field."""

from __future__ import annotations

import datetime as dt
import functools
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.staticfiles.views import serve as serve_static
from django.core.exceptions import PermissionDenied, SuspiciousFileOperation
from django.db.models import Prefetch, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.http.response import HttpResponseBase
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods
from rest_framework import exceptions as drf_exceptions
from rest_framework import serializers

from batchexports.accounts.access import resolve_project
from batchexports.accounts.models import Project, User
from batchexports.core.intervals import FIXED_INTERVALS, nominal_length
from batchexports.destinations import registry
from batchexports.destinations.base import DestinationSpec, deep_merge
from batchexports.exports import backfills as backfill_rules
from batchexports.exports.log_entries import query_log_entries
from batchexports.exports.models import BatchExport, BatchExportBackfill, BatchExportRun
from batchexports.exports.serializers import BatchExportSerializer
from batchexports.web import charts, display, forms

SESSION_PROJECT = "web_project_id"
LEVEL_CHOICES = [
    ("", "All levels"),
    ("ERROR", "Errors"),
    ("WARNING,ERROR", "Warnings and errors"),
    ("INFO,WARNING,ERROR", "Info and above"),
    ("DEBUG", "Debug"),
]
RUNS_PAGE, MAX_RUNS = 25, 100  # the runs API pages by 100
LOGS_PAGE, MAX_LOGS = 50, 1000  # the logs API's own maximum
EXPORT_FIELDS = {
    "name",
    "model",
    "interval",
    "timezone",
    "offset_day",
    "offset_hour",
    "paused",
    "start_at",
    "end_at",
    "hogql_query",
    "filters",
    "team_id",
}


# Nothing on a page comes from another origin, and no inline script runs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'self'; object-src 'none'"
)


def with_csp(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        response = view(request, *args, **kwargs)
        response.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.setdefault("Referrer-Policy", "same-origin")
        return response

    return wrapped


# Access


def _user_projects(user: User) -> QuerySet[Project]:
    return (
        Project.objects.filter(organization__memberships__user=user)
        .select_related("organization")
        .order_by("organization__name", "name", "id")
    )


def _project(request: HttpRequest, project_id: int) -> Project:
    """The project, if the signed-in user belongs to its organization (the API's rule)."""
    try:
        scope = resolve_project(request, str(project_id))  # type: ignore[arg-type]
    except drf_exceptions.NotFound:
        raise Http404("No such project.") from None
    except drf_exceptions.PermissionDenied:
        raise PermissionDenied("You don't have access to this project.") from None
    assert scope.project is not None
    request.session[SESSION_PROJECT] = scope.project.id
    return scope.project


def _export(project: Project, export_id: str) -> BatchExport:
    try:
        key = uuid.UUID(export_id)
    except ValueError:
        raise Http404("No such batch export.") from None
    found = (
        BatchExport.objects.filter(team=project, deleted=False, id=key).select_related("destination", "team").first()
    )
    if found is None:
        raise Http404("No such batch export.")
    return found


def _api_base(project: Project) -> str:
    return f"/api/projects/{project.id}/batch_exports/"


def _base_context(request: HttpRequest, project: Project | None) -> dict[str, Any]:
    organizations: dict[Any, dict[str, Any]] = {}
    for candidate in _user_projects(request.user):  # type: ignore[arg-type]
        group = organizations.setdefault(
            candidate.organization_id, {"organization": candidate.organization, "projects": []}
        )
        group["projects"].append(candidate)
    return {"project": project, "organizations": list(organizations.values())}


# Pages


@with_csp
@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    projects = _user_projects(request.user)  # type: ignore[arg-type]
    selected = request.session.get(SESSION_PROJECT)
    project = (projects.filter(id=selected).first() if selected is not None else None) or projects.first()
    if project is None:
        return render(request, "web/no_project.html", _base_context(request, None))
    return redirect("web:export_list", project_id=project.id)


@with_csp
@login_required
@require_GET
def switch_project(request: HttpRequest) -> HttpResponse:
    try:
        project_id = int(request.GET.get("project", ""))
    except ValueError:
        return redirect("web:home")
    project = _project(request, project_id)
    return redirect("web:export_list", project_id=project.id)


@with_csp
@login_required
@require_GET
def export_list(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _project(request, project_id)
    latest_runs = Prefetch("runs", queryset=BatchExportRun.objects.order_by("-created_at")[:10], to_attr="latest")
    exports = (
        BatchExport.objects.filter(team=project, deleted=False)
        .select_related("destination")
        .prefetch_related(latest_runs)
        .order_by("name", "-created_at")
    )
    rows = [
        {
            "export": export,
            "label": display.destination_label(export.destination.type),
            "target": display.destination_target(export.destination.type, export.destination.config),
            "interval": forms.INTERVAL_LABELS.get(export.interval, export.interval),
            "runs": list(reversed(export.latest)),
        }
        for export in exports
    ]
    context = _base_context(request, project)
    context.update(rows=rows, api_base=_api_base(project))
    return render(request, "web/export_list.html", context)


def _serializer_context(request: HttpRequest, project: Project) -> dict[str, Any]:
    return {"request": request, "project_ids": [project.id], "default_project_id": project.id}


def _config_errors(
    spec: DestinationSpec, config: Mapping[str, Any], instance: BatchExport | None
) -> Mapping[str, Any] | None:
    """The config's own errors, for when the export's fields failed first and the serializer
    stopped before the destination (so that every message shows at once)."""
    if instance is not None:
        config = deep_merge(instance.destination.full_config(), config)
    try:
        spec.validate_config(config)
    except serializers.ValidationError as error:
        return {"destination": {"config": error.detail}}
    return None


def _save_form(
    request: HttpRequest, project: Project, spec: DestinationSpec, instance: BatchExport | None
) -> tuple[BatchExport | None, forms.FormErrors]:
    payload, parse_errors = forms.parse_export(spec, request.POST, editing=instance is not None)
    config_names = {f.name for f in forms.config_fields(spec)}
    errors = forms.FormErrors()
    errors.add(parse_errors, config_names, EXPORT_FIELDS)
    serializer = BatchExportSerializer(
        instance, data=payload, partial=instance is not None, context=_serializer_context(request, project)
    )
    if not serializer.is_valid():
        errors.add(serializer.errors, config_names, EXPORT_FIELDS)
        if "destination" not in serializer.errors and "destination" not in parse_errors:
            config_errors = _config_errors(spec, payload["destination"]["config"], instance)
            if config_errors:
                errors.add(config_errors, config_names, EXPORT_FIELDS)
    if errors:
        return None, errors
    return serializer.save(), errors


def _form_context(
    request: HttpRequest,
    project: Project,
    spec: DestinationSpec,
    instance: BatchExport | None,
    errors: forms.FormErrors | None = None,
) -> dict[str, Any]:
    submitted = request.POST if request.method == "POST" else None
    destination = instance.destination if instance is not None else None
    context = _base_context(request, project)
    context.update(
        spec=spec,
        editing=instance is not None,
        export=instance,
        errors=errors or forms.FormErrors(),
        values=forms.export_initial(instance, submitted),
        config_fields=forms.config_fields(
            spec,
            public_config=destination.config if destination else None,
            secrets=destination.secrets() if destination else None,
            submitted=submitted,
            errors=(errors or forms.FormErrors()).config,
        ),
        intervals=forms.interval_choices(),
        models=forms.model_choices(spec),
        weekdays=list(enumerate(forms.WEEKDAYS)),
        hours=list(range(24)),
        timezones=forms.timezones(),
        test_steps=[{"name": s.name, "description": s.description} for s in spec.test_steps],
        api_base=_api_base(project),
        test_url=(
            f"{_api_base(project)}{instance.id}/run_test_step/"
            if instance is not None
            else f"{_api_base(project)}run_test_step_new/"
        ),
        resubmitted=submitted is not None,
    )
    return context


@with_csp
@login_required
@require_http_methods(["GET", "POST"])
def export_create(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _project(request, project_id)
    destination_type = request.POST.get("destination_type") or request.GET.get("type")
    if not destination_type:
        context = _base_context(request, project)
        context["specs"] = [spec for spec in registry.all_specs() if spec.offered]
        return render(request, "web/export_choose.html", context)
    try:
        spec = registry.get(destination_type)
    except KeyError:
        raise Http404(f"Unknown destination type '{destination_type}'.") from None
    errors = None
    if request.method == "POST":
        saved, errors = _save_form(request, project, spec, None)
        if saved is not None:
            messages.success(request, f"Created the batch export “{saved.name}”.")
            return redirect("web:export_detail", project_id=project.id, export_id=str(saved.id))
    return render(request, "web/export_form.html", _form_context(request, project, spec, None, errors))


@with_csp
@login_required
@require_http_methods(["GET", "POST"])
def export_edit(request: HttpRequest, project_id: int, export_id: str) -> HttpResponse:
    project = _project(request, project_id)
    batch_export = _export(project, export_id)
    spec = registry.get(batch_export.destination.type)
    errors = None
    if request.method == "POST":
        saved, errors = _save_form(request, project, spec, batch_export)
        if saved is not None:
            messages.success(request, f"Saved the batch export “{saved.name}”.")
            return redirect("web:export_detail", project_id=project.id, export_id=str(saved.id))
        batch_export.refresh_from_db()
    return render(request, "web/export_form.html", _form_context(request, project, spec, batch_export, errors))


def _limit(params: Mapping[str, Any], name: str, default: int, maximum: int) -> int:
    try:
        return min(max(int(params.get(name, default)), 1), maximum)
    except (TypeError, ValueError):
        return default


def _more_url(request: HttpRequest, name: str, value: int, anchor: str) -> str:
    query = request.GET.copy()
    query[name] = str(value)
    return f"?{query.urlencode()}#{anchor}"


def _logs(
    request: HttpRequest, batch_export: BatchExport, params: Mapping[str, Any], run_id: uuid.UUID | None = None
) -> dict[str, Any]:
    level = params.get("level", "")
    search = params.get("search", "")
    run = params.get("run", "") if run_id is None else ""
    limit = _limit(params, "logs", LOGS_PAGE, MAX_LOGS)
    query: dict[str, Any] = {"limit": limit}
    if level:
        query["level"] = level
    if search:
        query["search"] = search
    if run:
        query["instance_id"] = run
    error = None
    try:
        entries = query_log_entries(batch_export.id, query, run_id=run_id)
    except drf_exceptions.ValidationError as invalid:
        entries, error = [], "; ".join(forms.messages_of(invalid.detail))
    for entry in entries:
        entry["when"] = entry["timestamp"].replace("T", " ").replace("Z", "")[:23]
    return {
        "entries": entries,
        "more_url": _more_url(request, "logs", limit + LOGS_PAGE, "logs")
        if len(entries) == limit and limit < MAX_LOGS
        else None,
        "error": error,
        "level": level,
        "search": search,
        "run": run,
        "levels": LEVEL_CHOICES,
        "filtered": bool(level or search or run),
    }


def _backfill_defaults(batch_export: BatchExport, now: dt.datetime) -> dict[str, str]:
    calendar = backfill_rules.calendar_for(batch_export)
    end = calendar.floor(now)
    if batch_export.interval in FIXED_INTERVALS:
        span = dt.timedelta(hours=24) if batch_export.interval == "hour" else dt.timedelta(hours=1)
        start = end - span
        iso = lambda value: value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
        return {
            "start": iso(start),
            "end": iso(end),
            "hint": "ISO 8601 datetimes with a timezone offset, e.g. 2026-11-01T00:00:00Z.",
            "placeholder": "2026-11-01T00:00:00Z",
        }
    start = end - nominal_length(batch_export.interval) * (7 if batch_export.interval == "day" else 4)
    start = calendar.floor(start + dt.timedelta(hours=12))
    local = lambda value: value.astimezone(calendar.tz).date().isoformat()  # noqa: E731
    hint = f"Dates (YYYY-MM-DD): the interval boundary that day in {batch_export.timezone}"
    if batch_export.interval == "week":
        hint += f"; weeks start on {forms.WEEKDAYS[calendar.offset_day % 7]}s"
    return {"start": local(start), "end": local(end), "hint": hint + ".", "placeholder": "2026-11-01"}


def _export_summary(batch_export: BatchExport) -> dict[str, Any]:
    destination = batch_export.destination
    return {
        "label": display.destination_label(destination.type),
        "target": display.destination_target(destination.type, destination.config),
        "interval": forms.INTERVAL_LABELS.get(batch_export.interval, batch_export.interval),
    }


@with_csp
@login_required
@require_GET
def export_detail(request: HttpRequest, project_id: int, export_id: str) -> HttpResponse:
    project = _project(request, project_id)
    batch_export = _export(project, export_id)
    now = timezone.now()
    runs_limit = _limit(request.GET, "runs", RUNS_PAGE, MAX_RUNS)
    runs = list(batch_export.runs.order_by("-data_interval_start", "-created_at")[: runs_limit + 1])
    more_runs = (
        _more_url(request, "runs", runs_limit + RUNS_PAGE, "runs")
        if len(runs) > runs_limit and runs_limit < MAX_RUNS
        else None
    )
    runs = runs[:runs_limit]
    for run, attempt in zip(runs, map(display.attempts(runs).get, (run.id for run in runs)), strict=True):
        run.attempt = attempt  # type: ignore[attr-defined]  # shown by _runs_rows.html
    recent_backfills = list(batch_export.backfills.order_by("-created_at")[:20])
    backfills = [
        {
            "backfill": backfill,
            "progress": backfill_rules.progress(backfill),
            # A backfill that ended Failed says how many of its runs did, in red.
            "failed_runs": backfill.runs.filter(status=BatchExportRun.Status.FAILED).count(),
        }
        for backfill in recent_backfills
    ]
    active = any(run.status in display.ACTIVE_STATUSES for run in runs) or any(
        backfill.status in BatchExportBackfill.ACTIVE_STATUSES for backfill in recent_backfills
    )
    context = _base_context(request, project)
    context.update(
        export=batch_export,
        summary=_export_summary(batch_export),
        runs=runs,
        more_runs=more_runs,
        backfills=backfills,
        logs=_logs(request, batch_export, request.GET),
        run_choices=[
            (str(run.id), display.interval_text(run.data_interval_start, run.data_interval_end)) for run in runs
        ],
        charts=charts.export_charts(batch_export.runs.all(), now),
        backfill=_backfill_defaults(batch_export, now),
        page_data={
            "apiBase": _api_base(project),
            "exportId": str(batch_export.id),
            "runUrl": reverse(
                "web:run_detail",
                kwargs={"project_id": project.id, "export_id": str(batch_export.id), "run_id": "RUN_ID"},
            ),
            "listUrl": reverse("web:export_list", kwargs={"project_id": project.id}),
            "active": active,
            "runsLimit": runs_limit,
        },
    )
    return render(request, "web/export_detail.html", context)


@with_csp
@login_required
@require_GET
def run_detail(request: HttpRequest, project_id: int, export_id: str, run_id: str) -> HttpResponse:
    project = _project(request, project_id)
    batch_export = _export(project, export_id)
    try:
        run = batch_export.runs.filter(id=uuid.UUID(run_id)).select_related("backfill").first()
    except ValueError:
        run = None
    if run is None:
        raise Http404("No such run.")
    context = _base_context(request, project)
    context.update(
        export=batch_export,
        summary=_export_summary(batch_export),
        run=run,
        logs=_logs(request, batch_export, request.GET, run_id=run.id),
        page_data={
            "apiBase": _api_base(project),
            "exportId": str(batch_export.id),
            "runId": str(run.id),
            "active": run.status in display.ACTIVE_STATUSES,
        },
    )
    return render(request, "web/run_detail.html", context)


@require_GET
def static_file(request: HttpRequest, path: str) -> HttpResponseBase:
    """The apps' static files (the page's and the admin's) straight from their packages."""
    try:
        response = serve_static(request, path, insecure=True)
    except SuspiciousFileOperation:
        raise Http404("No such file.") from None
    if not isinstance(response, HttpResponseRedirect):
        response["Cache-Control"] = "public, max-age=300"
    return response
