"""Resolves the organization or project a request addresses and checks that its caller may see it.

Rules (as PostHog's API): no membership of the organization -> 403; a project outside what
the API key is limited to, within an organization the caller belongs to -> 404, as if it did
not exist; an unknown id -> 404.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db.models import QuerySet
from rest_framework.exceptions import NotAuthenticated, NotFound, PermissionDenied
from rest_framework.request import Request

from batchexports.accounts.models import Organization, PersonalAPIKey, Project, User


@dataclass(frozen=True)
class Scope:
    """What a URL prefix addresses: an organization, and a project unless it is organization-wide."""

    organization: Organization
    project: Project | None
    visible_project_ids: frozenset[int] | None = None  # None: every project of the organization

    def project_ids(self) -> list[int]:
        if self.project is not None:
            return [self.project.id]
        ids = self.organization.projects.order_by("id").values_list("id", flat=True)
        if self.visible_project_ids is not None:
            return [pid for pid in ids if pid in self.visible_project_ids]
        return list(ids)


def signed_in_user(request: Request) -> User:
    """The caller; the API's permission classes let only signed-in users and API keys this far."""
    user = request.user
    if not isinstance(user, User):
        raise NotAuthenticated()
    return user


def _key(request: Request) -> PersonalAPIKey | None:
    # A plain Django request (the web page, signed in with a session) has no `auth`.
    auth = getattr(request, "auth", None)
    return auth if isinstance(auth, PersonalAPIKey) else None


def _check_organization(request: Request, organization: Organization) -> None:
    user = signed_in_user(request)
    if not organization.memberships.filter(user=user).exists():
        raise PermissionDenied("You don't have access to this organization.")
    key = _key(request)
    if key is not None and key.scoped_organizations and str(organization.id) not in key.scoped_organizations:
        raise PermissionDenied("This API key is not allowed to access this organization.")


def _visible_project_ids(request: Request) -> frozenset[int] | None:
    key = _key(request)
    if key is None or not key.scoped_teams:
        return None
    return frozenset(int(t) for t in key.scoped_teams)


def resolve_project(request: Request, project_id: str) -> Scope:
    if project_id == "@current":
        project = _current_project(request)
    else:
        try:
            pid = int(project_id)
        except (TypeError, ValueError):
            raise NotFound(f"Project '{project_id}' not found.") from None
        found = Project.objects.select_related("organization").filter(id=pid).first()
        if found is None:
            raise NotFound(f"Project {pid} not found.")
        project = found
    _check_organization(request, project.organization)
    visible = _visible_project_ids(request)
    if visible is not None and project.id not in visible:
        raise NotFound(f"Project {project.id} not found.")
    return Scope(organization=project.organization, project=project, visible_project_ids=visible)


def resolve_organization(request: Request, organization_id: str) -> Scope:
    if organization_id == "@current":
        project = _current_project(request)
        organization = project.organization
    else:
        try:
            oid = uuid.UUID(str(organization_id))
        except ValueError:
            raise NotFound(f"Organization '{organization_id}' not found.") from None
        found = Organization.objects.filter(id=oid).first()
        if found is None:
            raise NotFound(f"Organization {oid} not found.")
        organization = found
    _check_organization(request, organization)
    return Scope(organization=organization, project=None, visible_project_ids=_visible_project_ids(request))


def project_of(request: Request, project_id: str) -> Project:
    """The project a `/api/projects/:id/` route addresses, checked as `resolve_project` checks it."""
    project = resolve_project(request, project_id).project
    assert project is not None  # resolve_project always addresses one project
    return project


def _current_project(request: Request) -> Project:
    """`@current`: the caller's first project, within what its API key may see."""
    projects = Project.objects.select_related("organization").filter(
        organization__memberships__user=signed_in_user(request)
    )
    key = _key(request)
    if key is not None and key.scoped_teams:
        projects = projects.filter(id__in=[int(t) for t in key.scoped_teams])
    if key is not None and key.scoped_organizations:
        projects = projects.filter(organization_id__in=key.scoped_organizations)
    project = projects.order_by("id").first()
    if project is None:
        raise NotFound("You have no project.")
    return project


def key_of(request: Request) -> PersonalAPIKey | None:
    """The personal API key the request authenticated with, if any (None for a signed-in session)."""
    return _key(request)


def visible_organizations(request: Request) -> QuerySet[Organization]:
    """The caller's organizations, within the organizations its API key is limited to."""
    organizations = Organization.objects.filter(memberships__user=signed_in_user(request))
    key = _key(request)
    if key is not None and key.scoped_organizations:
        organizations = organizations.filter(id__in=key.scoped_organizations)
    return organizations.order_by("created_at", "id")


def visible_projects(request: Request, organization: Organization | None = None) -> QuerySet[Project]:
    """The projects of the caller's organizations (or of one of them) that its API key may see."""
    projects = Project.objects.select_related("organization").filter(organization__in=visible_organizations(request))
    if organization is not None:
        projects = projects.filter(organization=organization)
    visible = _visible_project_ids(request)
    if visible is not None:
        projects = projects.filter(id__in=visible)
    return projects.order_by("id")


def current_project(request: Request) -> Project:
    """The project `@current` names for this caller (PostHog: the user's current team)."""
    return _current_project(request)
