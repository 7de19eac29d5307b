"""PostHog's shapes of projects (teams, environments), organizations and users, read-only.

Field names and types follow PostHog's serializers (TeamBasicSerializer, TeamSerializer /
ProjectBackwardCompatSerializer, OrganizationSerializer, OrganizationBasicSerializer,
UserSerializer). PostHog features this service does not have (onboarding, demo data, access
control, group types, session replay, surveys, heatmaps, live events, project secret tokens,
plugins, billing, 2FA, social sign-in) are answered as PostHog answers for an account that does
not use them: false, empty or null. Each serializer needs `membership_levels` (organization id ->
the caller's level) and `visible_project_ids` in its context; `AccountContext` builds both.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from django.utils.text import slugify
from rest_framework import serializers

from batchexports.accounts.models import Organization, OrganizationMembership, Project, User

ADMIN_LEVEL = OrganizationMembership.Level.ADMIN

# Fields of a project that name features this service does not have, with PostHog's "unused" value.
PROJECT_BASIC_FIXED: dict[str, Any] = {
    "completed_snippet_onboarding": False,
    "has_completed_onboarding_for": None,
    "ingested_event": False,
    "is_demo": False,
    "access_control": False,
}
PROJECT_DETAIL_FIXED: dict[str, Any] = {
    "product_description": None,
    "secret_api_token": None,
    "secret_api_token_backup": None,
    "live_events_token": None,
    "default_modifiers": {},
    "modifiers": None,
    "person_on_events_querying_enabled": True,
    "has_group_types": False,
    "group_types": [],
    "product_intents": [],
    "managed_viewsets": {},
    "app_urls": [],
    "anonymize_ips": False,
    "week_start_day": None,
    "autocapture_opt_out": False,
    "session_recording_opt_in": False,
    "surveys_opt_in": False,
    "heatmaps_opt_in": False,
    "test_account_filters": [],
}
ORGANIZATION_FIXED: dict[str, Any] = {
    "logo_media_id": None,
    "plugins_access_level": 0,  # PostHog's "none": there are no plugins here
    "available_product_features": [],
    "is_member_join_email_enabled": False,
    "metadata": {},
    "customer_id": None,
    "enforce_2fa": None,
    "members_can_invite": False,
    "members_can_use_personal_api_keys": True,
    "allow_publicly_shared_resources": False,
    "is_ai_data_processing_approved": None,
    "default_experiment_stats_method": None,
    "default_role_id": None,
}
USER_FIXED: dict[str, Any] = {
    "last_name": "",
    "pending_email": None,
    "is_email_verified": None,
    "notification_settings": {},
    "anonymize_data": False,
    "toolbar_mode": None,
    "is_impersonated": False,
    "is_impersonated_until": None,
    "sensitive_session_expires_at": None,
    "events_column_config": {"active": "DEFAULT"},
    "is_2fa_enabled": False,
    "has_social_auth": False,
    "has_sso_enforcement": False,
    "has_seen_product_intro_for": None,
    "scene_personalisation": [],
    "theme_mode": None,
    "hedgehog_config": None,
}


@dataclass(frozen=True)
class AccountContext:
    """What the serializers need to know about the caller, computed once per request."""

    membership_levels: dict[Any, int]
    visible_project_ids: frozenset[int] | None  # None: every project of the caller's organizations

    @classmethod
    def for_user(cls, user: User, visible_project_ids: frozenset[int] | None) -> AccountContext:
        levels = dict(OrganizationMembership.objects.filter(user=user).values_list("organization_id", "level"))
        return cls(membership_levels=levels, visible_project_ids=visible_project_ids)

    def as_serializer_context(self) -> dict[str, Any]:
        return {"account": self}


def _account(serializer: serializers.BaseSerializer) -> AccountContext:
    return serializer.context["account"]


def _with_fixed(data: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    for name, value in fixed.items():
        data.setdefault(name, copy.deepcopy(value))
    return data


def organization_slug(organization: Organization) -> str:
    """A URL-safe name (PostHog's pattern `^[-a-zA-Z0-9_]+$`), derived from the name."""
    return slugify(organization.name) or str(organization.id)


class ProjectBasicSerializer(serializers.ModelSerializer):
    """A project in PostHog's TeamBasicSerializer shape: what lists and nested references show."""

    organization = serializers.UUIDField(source="organization_id", read_only=True)
    project_id = serializers.IntegerField(source="id", read_only=True)

    class Meta:
        model = Project
        fields: tuple[str, ...] = ("id", "uuid", "organization", "project_id", "api_token", "name", "timezone")
        read_only_fields: tuple[str, ...] = fields

    def to_representation(self, instance: Project) -> dict[str, Any]:
        return _with_fixed(super().to_representation(instance), PROJECT_BASIC_FIXED)


class ProjectSerializer(ProjectBasicSerializer):
    """One project in the shape of PostHog's TeamSerializer (`/api/projects/:id/`, `/api/environments/:id/`)."""

    effective_membership_level = serializers.SerializerMethodField()
    user_access_level = serializers.SerializerMethodField()

    class Meta(ProjectBasicSerializer.Meta):
        fields = (
            *ProjectBasicSerializer.Meta.fields,
            "created_at",
            "updated_at",
            "effective_membership_level",
            "user_access_level",
        )
        read_only_fields = fields

    def get_effective_membership_level(self, project: Project) -> int | None:
        return _account(self).membership_levels.get(project.organization_id)

    def get_user_access_level(self, project: Project) -> str | None:
        level = self.get_effective_membership_level(project)
        if level is None:
            return None
        return "admin" if level >= ADMIN_LEVEL else "member"

    def to_representation(self, instance: Project) -> dict[str, Any]:
        return _with_fixed(super().to_representation(instance), PROJECT_DETAIL_FIXED)


class ProjectReferenceSerializer(serializers.ModelSerializer):
    """PostHog's ProjectBasicSerializer: the `projects` of an organization."""

    organization_id = serializers.UUIDField(read_only=True)

    class Meta:
        model = Project
        fields = ("id", "organization_id", "name")
        read_only_fields = fields


def _visible(projects: Any, account: AccountContext) -> Any:
    projects = projects.order_by("id")
    if account.visible_project_ids is not None:
        projects = projects.filter(id__in=account.visible_project_ids)
    return projects


class OrganizationSerializer(serializers.ModelSerializer):
    """An organization in the shape of PostHog's OrganizationSerializer."""

    slug = serializers.SerializerMethodField()
    membership_level = serializers.SerializerMethodField()
    teams = serializers.SerializerMethodField()
    projects = serializers.SerializerMethodField()
    member_count = serializers.SerializerMethodField()

    class Meta:
        model = Organization
        fields = (
            "id",
            "name",
            "slug",
            "created_at",
            "updated_at",
            "membership_level",
            "teams",
            "projects",
            "member_count",
        )
        read_only_fields = fields

    def get_slug(self, organization: Organization) -> str:
        return organization_slug(organization)

    def get_membership_level(self, organization: Organization) -> int | None:
        return _account(self).membership_levels.get(organization.id)

    def get_teams(self, organization: Organization) -> list[dict[str, Any]]:
        projects = _visible(organization.projects.all(), _account(self))
        return list(ProjectBasicSerializer(projects, many=True, context=self.context).data)

    def get_projects(self, organization: Organization) -> list[dict[str, Any]]:
        projects = _visible(organization.projects.all(), _account(self))
        return list(ProjectReferenceSerializer(projects, many=True, context=self.context).data)

    def get_member_count(self, organization: Organization) -> int:
        return organization.memberships.filter(user__is_active=True).count()

    def to_representation(self, instance: Organization) -> dict[str, Any]:
        return _with_fixed(super().to_representation(instance), ORGANIZATION_FIXED)


class OrganizationBasicSerializer(serializers.ModelSerializer):
    """PostHog's OrganizationBasicSerializer: the `organizations` a user belongs to."""

    slug = serializers.SerializerMethodField()
    membership_level = serializers.SerializerMethodField()

    class Meta:
        model = Organization
        fields = ("id", "name", "slug", "membership_level")
        read_only_fields = fields

    def get_slug(self, organization: Organization) -> str:
        return organization_slug(organization)

    def get_membership_level(self, organization: Organization) -> int | None:
        return _account(self).membership_levels.get(organization.id)

    def to_representation(self, instance: Organization) -> dict[str, Any]:
        data = super().to_representation(instance)
        data.update(
            logo_media_id=None,
            members_can_use_personal_api_keys=True,
            is_active=True,
            is_not_active_reason=None,
            is_pending_deletion=False,
        )
        return data


class UserSerializer(serializers.ModelSerializer):
    """A user in the shape of PostHog's UserSerializer, with their current project and organization.

    The context also carries `current_project` (a Project or None) and `organizations` (those to list).
    """

    has_password = serializers.SerializerMethodField()
    team = serializers.SerializerMethodField()
    organization = serializers.SerializerMethodField()
    organizations = serializers.SerializerMethodField()

    class Meta:
        model = User
        fields = (
            "date_joined",
            "uuid",
            "distinct_id",
            "first_name",
            "email",
            "has_password",
            "id",
            "is_staff",
            "team",
            "organization",
            "organizations",
        )
        read_only_fields = fields

    def get_has_password(self, user: User) -> bool:
        return user.has_usable_password()

    def get_team(self, user: User) -> dict[str, Any] | None:
        project = self.context.get("current_project")
        return ProjectBasicSerializer(project, context=self.context).data if project is not None else None

    def get_organization(self, user: User) -> dict[str, Any] | None:
        project = self.context.get("current_project")
        if project is None:
            return None
        return OrganizationSerializer(project.organization, context=self.context).data

    def get_organizations(self, user: User) -> list[dict[str, Any]]:
        return list(OrganizationBasicSerializer(self.context["organizations"], many=True, context=self.context).data)

    def to_representation(self, instance: User) -> dict[str, Any]:
        return _with_fixed(super().to_representation(instance), USER_FIXED)
