"""Routes of the account API under `/api/`; like every API route, with or without the trailing slash."""

from typing import Any

from django.urls import URLPattern, re_path
from rest_framework.viewsets import ViewSetMixin

from batchexports.accounts import views

ID = r"[^/]+"


def route(pattern: str, viewset: type[ViewSetMixin], actions: dict[str, Any], name: str) -> URLPattern:
    return re_path(rf"^{pattern}/?$", viewset.as_view(actions), name=name)


urlpatterns = [
    route("projects", views.ProjectViewSet, {"get": "list"}, "projects"),
    route(rf"projects/(?P<project_id>{ID})", views.ProjectViewSet, {"get": "retrieve"}, "project"),
    route(
        rf"projects/(?P<project_id>{ID})/environments",
        views.ProjectViewSet,
        {"get": "environments"},
        "project_environments",
    ),
    route(
        rf"projects/(?P<project_id>{ID})/environments/(?P<pk>{ID})",
        views.ProjectViewSet,
        {"get": "environment"},
        "project_environment",
    ),
    route("environments", views.ProjectViewSet, {"get": "list"}, "environments"),
    route(rf"environments/(?P<project_id>{ID})", views.ProjectViewSet, {"get": "retrieve"}, "environment"),
    route("organizations", views.OrganizationViewSet, {"get": "list"}, "organizations"),
    route(
        rf"organizations/(?P<organization_id>{ID})",
        views.OrganizationViewSet,
        {"get": "retrieve"},
        "organization",
    ),
    route(
        rf"organizations/(?P<organization_id>{ID})/projects",
        views.OrganizationProjectViewSet,
        {"get": "list"},
        "organization_projects",
    ),
    route(
        rf"organizations/(?P<organization_id>{ID})/projects/(?P<pk>{ID})",
        views.OrganizationProjectViewSet,
        {"get": "retrieve"},
        "organization_project",
    ),
    route("users", views.UserViewSet, {"get": "list"}, "users"),
    route(rf"users/(?P<uuid_or_me>{ID})", views.UserViewSet, {"get": "retrieve"}, "user"),
]
