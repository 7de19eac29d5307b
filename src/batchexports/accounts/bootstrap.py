"""Creating the first organization, project, admin user and keys (idempotent by name and email)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from django.db import transaction

from batchexports.accounts import scopes as scope_names
from batchexports.accounts.models import Organization, OrganizationMembership, PersonalAPIKey, Project, User

DEFAULT_ORGANIZATION = "Default"
DEFAULT_EMAIL = "admin@localhost"
DEFAULT_PROJECT = "Default project"


@dataclass(frozen=True)
class BootstrapResult:
    organization: Organization
    project: Project
    user: User
    personal_api_key: str | None  # minted when the user was created now, or when asked for
    generated_password: str | None  # set only when the user was created now

    def as_dict(self) -> dict[str, object]:
        return {
            "organization_id": str(self.organization.id),
            "project_id": self.project.id,
            "personal_api_key": self.personal_api_key,
            "project_api_key": self.project.api_token,
        }


@transaction.atomic
def bootstrap(
    organization_name: str = DEFAULT_ORGANIZATION, email: str = DEFAULT_EMAIL, new_key: bool = False
) -> BootstrapResult:
    """Find or create the organization, its first project and the admin user.

    A full-access key is minted only for a user created now or when `new_key` is asked for: running
    bootstrap again (scripts do, to read the ids) must not leave a new `*` key behind each time.
    """
    organization, _ = Organization.objects.get_or_create(name=organization_name)
    project = organization.projects.order_by("id").first()
    if project is None:
        project = Project.objects.create(organization=organization, name=DEFAULT_PROJECT)
    user = User.objects.filter(email__iexact=email).first()
    password = None
    if user is None:
        password = secrets.token_urlsafe(12)
        user = User.objects.create_user(email=email, password=password, is_staff=True, is_superuser=True)
    OrganizationMembership.objects.get_or_create(
        organization=organization, user=user, defaults={"level": OrganizationMembership.Level.ADMIN}
    )
    value = None
    if password is not None or new_key:
        _, value = PersonalAPIKey.create_for(user, [scope_names.ALL], label="bootstrap")
    return BootstrapResult(organization, project, user, value, password)


def create_api_key(email: str, scopes: list[str], label: str = "") -> tuple[PersonalAPIKey, str]:
    unknown = [s for s in scopes if not scope_names.is_valid_scope(s)]
    if unknown:
        raise ValueError(f"Unknown scope(s): {', '.join(unknown)}")
    if not scopes:
        raise ValueError("At least one scope is required")
    user = User.objects.filter(email__iexact=email).first()
    if user is None:
        raise ValueError(f"No user with email {email}")
    return PersonalAPIKey.create_for(user, scopes, label=label)
