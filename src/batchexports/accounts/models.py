"""Organizations, projects (PostHog's teams/environments), users and API keys."""

from __future__ import annotations

import secrets
import uuid

from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models
from django.utils import timezone

from batchexports.accounts import keys


class Organization(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(max_length=255, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return self.name


class Project(models.Model):
    """A project: PostHog calls it a team, and its API addresses it as project or environment."""

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="projects")
    # PostHog's clients read a project's (team's) UUID beside its integer id.
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    name = models.CharField(max_length=255)
    api_token = models.CharField(max_length=64, unique=True, default=keys.generate_project_api_key)
    timezone = models.CharField(max_length=64, default="UTC")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "name"], name="unique_project_name")]

    def __str__(self) -> str:
        return f"{self.name} ({self.organization})"


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: object) -> User:
        if not email:
            raise ValueError("An email is required")
        user = self.model(email=self.normalize_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: object) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)


def generate_distinct_id() -> str:
    """The id under which a user's own actions would be captured, as PostHog gives every user one."""
    return secrets.token_urlsafe(24)


class User(AbstractBaseUser, PermissionsMixin):
    uuid = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    distinct_id = models.CharField(max_length=200, unique=True, default=generate_distinct_id, editable=False)
    email = models.EmailField(unique=True)
    first_name = models.CharField(max_length=150, blank=True)
    is_active = models.BooleanField(default=True)
    is_staff = models.BooleanField(default=False)
    date_joined = models.DateTimeField(default=timezone.now)
    organizations: models.ManyToManyField[Organization, OrganizationMembership] = models.ManyToManyField(
        Organization, through="OrganizationMembership", related_name="members"
    )

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    objects = UserManager()

    def __str__(self) -> str:
        return self.email


class OrganizationMembership(models.Model):
    class Level(models.IntegerChoices):
        MEMBER = 1, "member"
        ADMIN = 8, "admin"
        OWNER = 15, "owner"

    organization = models.ForeignKey(Organization, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    level = models.PositiveSmallIntegerField(choices=Level.choices, default=Level.MEMBER)
    joined_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["organization", "user"], name="unique_membership")]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.organization_id}"


class PersonalAPIKey(models.Model):
    """A personal API key: acts as its user, limited by `scopes` and optionally by scoped orgs/projects."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="personal_api_keys")
    label = models.CharField(max_length=255, blank=True)
    secure_value = models.CharField(max_length=300, unique=True, editable=False)
    mask_value = models.CharField(max_length=16, editable=False)
    scopes = models.JSONField(default=list)
    scoped_organizations = models.JSONField(default=list, blank=True)
    scoped_teams = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.label or 'key'} {self.mask_value}"

    @classmethod
    def create_for(
        cls,
        user: User,
        scopes: list[str],
        label: str = "",
        scoped_organizations: list[str] | None = None,
        scoped_teams: list[int] | None = None,
    ) -> tuple[PersonalAPIKey, str]:
        """Create a key and return it with its plain value, which is not stored anywhere."""
        key = cls(
            user=user,
            label=label,
            scopes=list(scopes),
            scoped_organizations=[str(o) for o in scoped_organizations or []],
            scoped_teams=[int(t) for t in scoped_teams or []],
        )
        value = key.set_new_value()
        key.save()
        return key, value

    def set_new_value(self) -> str:
        """Give this (unsaved) key a fresh value, keep only its digest and mask, and return the value."""
        value = keys.generate_personal_api_key()
        self.secure_value = keys.hash_key(value)
        self.mask_value = keys.mask_key(value)
        return value
