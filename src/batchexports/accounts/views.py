"""The account routes clients call first: projects (environments), organizations, users.

Read-only, in PostHog's shapes and with PostHog's limit/offset pagination. What a caller sees:
the organizations it belongs to and their projects, narrowed by its personal API key's
organization and project limits. Lookups follow the rules of `access` (another organization:
403; a project outside the key's projects: 404), `@current` names the caller's first visible
project (PostHog: the user's current team) and `@me` the caller.
"""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from rest_framework import viewsets
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from batchexports.accounts import access
from batchexports.accounts.models import Organization, Project, User
from batchexports.accounts.serializers import (
    AccountContext,
    OrganizationSerializer,
    ProjectBasicSerializer,
    ProjectSerializer,
    UserSerializer,
)


class AccountViewSet(viewsets.GenericViewSet):
    """Builds the caller's `AccountContext` once, after authentication and the scope check."""

    account: AccountContext

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        key = access.key_of(request)
        visible = frozenset(int(t) for t in key.scoped_teams) if key is not None and key.scoped_teams else None
        self.account = AccountContext.for_user(access.signed_in_user(request), visible)

    def get_serializer_context(self) -> dict[str, Any]:
        context = super().get_serializer_context()
        if hasattr(self, "account"):
            context.update(self.account.as_serializer_context())
        return context

    def paginated(self, queryset: QuerySet[Any], serializer_class: type) -> Response:
        page = self.paginate_queryset(queryset)
        data = serializer_class(page, many=True, context=self.get_serializer_context()).data
        return self.get_paginated_response(data)

    def one(self, instance: Any, serializer_class: type) -> Response:
        return Response(serializer_class(instance, context=self.get_serializer_context()).data)


def _project_in(projects: QuerySet[Project], pk: str) -> Project:
    try:
        project_id = int(pk)
    except (TypeError, ValueError):
        raise NotFound(f"Project '{pk}' not found.") from None
    project = projects.filter(id=project_id).first()
    if project is None:
        raise NotFound(f"Project {project_id} not found.")
    return project


class ProjectViewSet(AccountViewSet):
    """`/api/projects/` and `/api/environments/`: here a project is its only environment."""

    scope_object = "project"

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.paginated(access.visible_projects(request), ProjectBasicSerializer)

    def retrieve(self, request: Request, project_id: str, **kwargs: Any) -> Response:
        return self.one(access.project_of(request, project_id), ProjectSerializer)

    def environments(self, request: Request, project_id: str, **kwargs: Any) -> Response:
        """`/api/projects/:id/environments/`: the project's environments, i.e. the project itself."""
        project = access.project_of(request, project_id)
        return self.paginated(Project.objects.filter(pk=project.pk), ProjectBasicSerializer)

    def environment(self, request: Request, project_id: str, pk: str, **kwargs: Any) -> Response:
        project = access.project_of(request, project_id)
        return self.one(_project_in(Project.objects.filter(pk=project.pk), pk), ProjectSerializer)


class OrganizationViewSet(AccountViewSet):
    scope_object = "organization"

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return self.paginated(access.visible_organizations(request), OrganizationSerializer)

    def retrieve(self, request: Request, organization_id: str, **kwargs: Any) -> Response:
        return self.one(access.resolve_organization(request, organization_id).organization, OrganizationSerializer)


class OrganizationProjectViewSet(AccountViewSet):
    """`/api/organizations/:id/projects/`: PostHog scopes these with `project:read`."""

    scope_object = "project"

    def _organization(self, request: Request, organization_id: str) -> Organization:
        return access.resolve_organization(request, organization_id).organization

    def list(self, request: Request, organization_id: str, **kwargs: Any) -> Response:
        organization = self._organization(request, organization_id)
        return self.paginated(access.visible_projects(request, organization), ProjectBasicSerializer)

    def retrieve(self, request: Request, organization_id: str, pk: str, **kwargs: Any) -> Response:
        organization = self._organization(request, organization_id)
        return self.one(_project_in(access.visible_projects(request, organization), pk), ProjectSerializer)


class UserViewSet(AccountViewSet):
    """`/api/users/`: as in PostHog, a non-staff caller sees only itself, and only as `@me`."""

    scope_object = "user"

    def _context_for(self, request: Request, user: User) -> dict[str, Any]:
        context = self.get_serializer_context()
        if user.pk == request.user.pk:
            # The caller: as its key sees it, so that every id it reads can be fetched with the same key.
            organizations = access.visible_organizations(request)
            projects = access.visible_projects(request)
        else:
            organizations = Organization.objects.filter(memberships__user=user).order_by("created_at", "id")
            projects = Project.objects.filter(organization__memberships__user=user).order_by("id")
            context.update(AccountContext.for_user(user, None).as_serializer_context())
        context["organizations"] = list(organizations)
        context["current_project"] = projects.select_related("organization").first()
        return context

    def list(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        users = User.objects.filter(is_active=True).order_by("id")
        caller = access.signed_in_user(request)
        if not caller.is_staff:
            users = users.filter(pk=caller.pk)
        page = self.paginate_queryset(users) or []  # the viewset always pages
        data = [UserSerializer(user, context=self._context_for(request, user)).data for user in page]
        return self.get_paginated_response(data)

    def retrieve(self, request: Request, uuid_or_me: str, **kwargs: Any) -> Response:
        user: User | None
        if uuid_or_me == "@me":
            user = access.signed_in_user(request)
        elif not request.user.is_staff:
            raise PermissionDenied("As a non-staff user you're only allowed to access the `@me` user instance.")
        else:
            try:
                user_uuid = uuid.UUID(uuid_or_me)
            except ValueError:
                raise NotFound(f"User '{uuid_or_me}' not found.") from None
            user = User.objects.filter(uuid=user_uuid, is_active=True).first()
            if user is None:
                raise NotFound(f"User '{uuid_or_me}' not found.")
        return Response(UserSerializer(user, context=self._context_for(request, user)).data)
