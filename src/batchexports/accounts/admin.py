"""Django admin for accounts.

Personal API keys are created by the CLI or here; either way the value is shown once (here as
a message after saving) and only its digest is stored.
"""

from __future__ import annotations

import uuid
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.http import HttpRequest

from batchexports.accounts import scopes as scope_names
from batchexports.accounts.models import Organization, OrganizationMembership, PersonalAPIKey, Project, User


class MembershipInline(admin.TabularInline):
    model = OrganizationMembership
    extra = 0


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "created_at")
    search_fields = ("name",)
    inlines = [MembershipInline]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "organization", "api_token", "created_at")
    list_filter = ("organization",)
    search_fields = ("name", "api_token")


@admin.register(User)
class UserAdmin(DjangoUserAdmin):
    ordering = ("email",)
    list_display = ("email", "first_name", "is_staff", "is_active")
    search_fields = ("email", "first_name")
    fieldsets = (
        (None, {"fields": ("email", "password")}),
        ("Profile", {"fields": ("first_name",)}),
        ("Permissions", {"fields": ("is_active", "is_staff", "is_superuser", "groups", "user_permissions")}),
    )
    add_fieldsets = ((None, {"classes": ("wide",), "fields": ("email", "password1", "password2")}),)
    inlines = [MembershipInline]


class PersonalAPIKeyForm(forms.ModelForm):
    """Checks scopes and limits as the CLI does, so the admin cannot store a key the API misreads."""

    class Meta:
        model = PersonalAPIKey
        fields = ("user", "label", "scopes", "scoped_organizations", "scoped_teams")

    def clean_scopes(self) -> list[str]:
        value = self.cleaned_data.get("scopes")
        if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
            raise forms.ValidationError('Give a non-empty list of scopes, e.g. ["batch_export:read"].')
        unknown = [s for s in value if not scope_names.is_valid_scope(s)]
        if unknown:
            known = ", ".join(sorted([scope_names.ALL, *scope_names.KNOWN_SCOPES]))
            raise forms.ValidationError(f"Unknown scope(s): {', '.join(unknown)}. Known scopes: {known}.")
        return value

    def clean_scoped_organizations(self) -> list[str]:
        value = self.cleaned_data.get("scoped_organizations") or []
        if not isinstance(value, list):
            raise forms.ValidationError("Give a list of organization ids, or [] for all.")
        try:
            return [str(uuid.UUID(str(item))) for item in value]
        except ValueError:
            raise forms.ValidationError("Every organization id must be a UUID.") from None

    def clean_scoped_teams(self) -> list[int]:
        value = self.cleaned_data.get("scoped_teams") or []
        if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
            raise forms.ValidationError("Give a list of project ids (integers), or [] for all.")
        return value


@admin.register(PersonalAPIKey)
class PersonalAPIKeyAdmin(admin.ModelAdmin):
    form = PersonalAPIKeyForm
    list_display = ("label", "mask_value", "user", "scopes", "created_at", "last_used_at")
    readonly_fields = ("secure_value", "mask_value", "created_at", "last_used_at")
    search_fields = ("label", "user__email")

    def save_model(self, request: HttpRequest, obj: PersonalAPIKey, form: Any, change: bool) -> None:
        value = None if change else obj.set_new_value()
        super().save_model(request, obj, form, change)
        if value is not None:
            messages.warning(
                request,
                f"The new personal API key is {value} - copy it now: it is not stored and won't be shown again.",
            )
