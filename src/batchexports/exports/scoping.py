"""The mixin that makes a viewset answer under its organization or project prefix."""

from __future__ import annotations

import uuid
from typing import Any, TypeVar

from django.db.models import Model, QuerySet
from rest_framework.exceptions import NotFound
from rest_framework.request import Request

from batchexports.accounts.access import Scope, resolve_organization, resolve_project
from batchexports.exports.models import BatchExport

M = TypeVar("M", bound=Model)


def get_by_uuid_or_404(queryset: QuerySet[M], pk: object, what: str) -> M:
    """The object with UUID `pk` in `queryset`; a 404 naming `what` for a malformed or unknown id."""
    try:
        key = uuid.UUID(str(pk))
    except ValueError:
        raise NotFound(f"{what} '{pk}' not found.") from None
    found = queryset.filter(pk=key).first()
    if found is None:
        raise NotFound(f"{what} '{pk}' not found.")
    return found


class ScopedViewMixin:
    """Resolves `self.scope` from the URL after authentication and scope checks have run."""

    scope_object = "batch_export"
    kwargs: dict[str, Any]
    scope: Scope

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)  # type: ignore[misc]
        if "project_id" in self.kwargs:
            self.scope = resolve_project(request, self.kwargs["project_id"])
        else:
            self.scope = resolve_organization(request, self.kwargs["organization_id"])

    def batch_exports(self) -> QuerySet[BatchExport]:
        """The live batch exports this URL's scope can see."""
        return BatchExport.objects.filter(team_id__in=self.scope.project_ids(), deleted=False)

    def parent_batch_export(self) -> BatchExport:
        """The batch export of a nested route (`…/batch_exports/:batch_export_id/runs/`)."""
        if not hasattr(self, "_parent_batch_export"):
            self._parent_batch_export = get_by_uuid_or_404(
                self.batch_exports().select_related("destination"),
                self.kwargs["batch_export_id"],
                "Batch export",
            )
        return self._parent_batch_export
