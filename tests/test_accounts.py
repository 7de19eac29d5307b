"""Accounts: bootstrapping an installation, personal and project API keys, and the Django admin.

The CLI is called in-process (`batchexports.cli.main`), against the test database.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
from typing import Any

import pytest
from django.contrib import admin
from django.urls import reverse
from django.utils import timezone

from batchexports import cli
from batchexports.accounts import keys
from batchexports.accounts.models import Organization, OrganizationMembership, PersonalAPIKey, Project, User
from tests.conftest import CheckedAPIClient, export_payload, prefix_for


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def bootstrap_json(capsys: pytest.CaptureFixture[str], *extra: str) -> dict[str, Any]:
    code, out, err = run_cli(capsys, "bootstrap", "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def with_key(value: str) -> CheckedAPIClient:
    client = CheckedAPIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {value}")
    return client


def counts() -> dict[str, int]:
    return {
        "organizations": Organization.objects.count(),
        "projects": Project.objects.count(),
        "users": User.objects.count(),
        "memberships": OrganizationMembership.objects.count(),
    }


# --- bootstrap -----------------------------------------------------------------------------


def test_bootstrap_json_prints_ids_and_keys(db: Any, capsys: pytest.CaptureFixture[str]) -> None:
    result = bootstrap_json(capsys, "--organization", "Initech", "--email", "peter@initech.example")
    assert set(result) == {"organization_id", "project_id", "personal_api_key", "project_api_key"}
    organization = Organization.objects.get(id=result["organization_id"])
    assert organization.name == "Initech"
    project = Project.objects.get(id=result["project_id"])
    assert project.organization_id == organization.id
    assert result["personal_api_key"].startswith("phx_")
    assert result["project_api_key"].startswith("phc_")
    assert result["project_api_key"] == project.api_token
    user = User.objects.get(email="peter@initech.example")
    assert user.is_superuser and user.is_staff and user.has_usable_password()
    membership = OrganizationMembership.objects.get(user=user, organization=organization)
    assert membership.level == OrganizationMembership.Level.ADMIN
    key = PersonalAPIKey.objects.get(user=user)
    assert key.scopes == ["*"]
    assert key.secure_value == keys.hash_key(result["personal_api_key"])


def test_bootstrap_defaults(db: Any, capsys: pytest.CaptureFixture[str]) -> None:
    result = bootstrap_json(capsys)
    assert Organization.objects.get(id=result["organization_id"]).name == "Default"
    assert User.objects.filter(email="admin@localhost", is_superuser=True).exists()


def test_bootstrap_without_json_shows_the_key_once_and_the_generated_password(
    db: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "bootstrap", "--organization", "Initech", "--email", "peter@initech.example")
    assert code == 0
    key = PersonalAPIKey.objects.get(user__email="peter@initech.example")
    plain = next(word for word in out.split() if word.startswith("phx_"))
    assert key.secure_value == keys.hash_key(plain)
    assert "peter@initech.example / " in out
    password = out.split("peter@initech.example / ")[1].split()[0]
    assert User.objects.get(email="peter@initech.example").check_password(password)
    # A second run creates no user, so it has no password to show.
    code, out, _ = run_cli(capsys, "bootstrap", "--organization", "Initech", "--email", "peter@initech.example")
    assert code == 0
    assert "peter@initech.example / " not in out


def test_bootstrap_twice_reuses_everything_and_mints_no_second_key(db: Any, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--organization", "Initech", "--email", "peter@initech.example")
    first = bootstrap_json(capsys, *args)
    before = counts()
    second = bootstrap_json(capsys, *args)
    assert counts() == before
    assert before == {"organizations": 1, "projects": 1, "users": 1, "memberships": 1}
    assert second["organization_id"] == first["organization_id"]
    assert second["project_id"] == first["project_id"]
    assert second["project_api_key"] == first["project_api_key"]
    assert second["personal_api_key"] is None
    assert PersonalAPIKey.objects.count() == 1


def test_bootstrap_new_key_mints_another_working_key(db: Any, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--organization", "Initech", "--email", "peter@initech.example")
    first = bootstrap_json(capsys, *args)
    second = bootstrap_json(capsys, *args, "--new-key")
    assert second["personal_api_key"].startswith("phx_")
    assert second["personal_api_key"] != first["personal_api_key"]
    assert PersonalAPIKey.objects.count() == 2
    # Both keys work: a new key does not revoke the first.
    for value in (first["personal_api_key"], second["personal_api_key"]):
        assert with_key(value).get(f"/api/projects/{first['project_id']}/batch_exports/").status_code == 200


def test_bootstrap_again_without_json_says_how_to_get_a_key(db: Any, capsys: pytest.CaptureFixture[str]) -> None:
    run_cli(capsys, "bootstrap")
    code, out, _ = run_cli(capsys, "bootstrap")
    assert code == 0
    assert "phx_" not in out
    assert "--new-key" in out


def test_bootstrap_env_prints_assignments_that_eval_to_the_ids(db: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "bootstrap", "--env", "--organization", "O'Brien & Co")
    assert code == 0
    shell = subprocess.run(
        ["bash", "-c", 'eval "$1"; printf "%s\\n" "$ORGANIZATION" "$PROJECT" "$KEY" "$PROJECT_KEY"', "_", out],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    organization_id, project_id, key, project_key = shell.stdout.splitlines()
    project = Project.objects.get(id=int(project_id))
    assert str(project.organization_id) == organization_id
    assert project.organization.name == "O'Brien & Co"
    assert project_key == project.api_token
    assert PersonalAPIKey.objects.get().secure_value == keys.hash_key(key)
    # Without a new key, KEY is left out rather than set empty.
    code, out, _ = run_cli(capsys, "bootstrap", "--env", "--organization", "O'Brien & Co")
    assert "KEY=" not in out.replace("PROJECT_KEY=", "")


def test_bootstrap_matches_the_email_case_insensitively(db: Any, capsys: pytest.CaptureFixture[str]) -> None:
    bootstrap_json(capsys, "--organization", "Initech", "--email", "peter@initech.example")
    bootstrap_json(capsys, "--organization", "Initech", "--email", "Peter@Initech.example")
    assert User.objects.count() == 1


def test_bootstrap_of_an_existing_user_into_a_new_organization(db: Any, capsys: pytest.CaptureFixture[str]) -> None:
    first = bootstrap_json(capsys, "--organization", "Initech", "--email", "peter@initech.example")
    second = bootstrap_json(capsys, "--organization", "Initrode", "--email", "peter@initech.example")
    assert second["organization_id"] != first["organization_id"]
    assert second["project_id"] != first["project_id"]
    assert User.objects.count() == 1
    user = User.objects.get()
    assert set(user.organizations.values_list("name", flat=True)) == {"Initech", "Initrode"}
    # The user's key, made with the user, reaches both organizations' projects.
    assert second["personal_api_key"] is None
    for project_id in (first["project_id"], second["project_id"]):
        assert with_key(first["personal_api_key"]).get(f"/api/projects/{project_id}/batch_exports/").status_code == 200


def test_bootstrap_key_works_against_the_api(db: Any, capsys: pytest.CaptureFixture[str], engine: Any) -> None:
    result = bootstrap_json(capsys)
    client = with_key(result["personal_api_key"])
    listed = client.get(f"/api/projects/{result['project_id']}/batch_exports/")
    assert listed.status_code == 200, listed.content
    assert listed.json()["results"] == []
    created = client.post(f"/api/projects/{result['project_id']}/batch_exports/", export_payload(), format="json")
    assert created.status_code == 201, created.content
    org_list = client.get(f"/api/organizations/{result['organization_id']}/batch_exports/")
    assert [e["id"] for e in org_list.json()["results"]] == [created.json()["id"]]


# --- api-key create ------------------------------------------------------------------------


def test_api_key_create_with_one_scope(
    user: User, project: Project, capsys: pytest.CaptureFixture[str], engine: Any
) -> None:
    code, out, err = run_cli(
        capsys, "api-key", "create", "--email", user.email, "--scopes", "batch_export:read", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["personal_api_key"].startswith("phx_")
    assert result["scopes"] == ["batch_export:read"]
    key = PersonalAPIKey.objects.get(id=result["id"])
    assert key.user == user
    assert key.scopes == ["batch_export:read"]

    client = with_key(result["personal_api_key"])
    prefix = prefix_for("projects", project)
    assert client.get(prefix).status_code == 200
    denied = client.post(prefix, export_payload(), format="json")
    assert denied.status_code == 403
    assert denied.json()["code"] == "permission_denied"
    assert "batch_export:write" in denied.json()["detail"]


def test_api_key_create_with_several_scopes_and_a_label(user: User, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(
        capsys,
        "api-key",
        "create",
        "--email",
        user.email.upper(),
        "--scopes",
        "batch_export:write, plugin:read",
        "--label",
        "ci",
        "--json",
    )
    assert code == 0, err
    key = PersonalAPIKey.objects.get(id=json.loads(out)["id"])
    assert key.user == user
    assert key.scopes == ["batch_export:write", "plugin:read"]
    assert key.label == "ci"


def test_api_key_create_without_json_prints_only_the_key(user: User, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "api-key", "create", "--email", user.email, "--scopes", "*")
    assert code == 0
    value = out.strip()
    assert value.startswith("phx_")
    assert PersonalAPIKey.objects.get(user=user).secure_value == keys.hash_key(value)


@pytest.mark.parametrize(
    ("email", "scopes", "message"),
    [
        ("ada@example.com", "batch_export:delete", "batch_export:delete"),
        ("ada@example.com", "batch_export:read,everything", "everything"),
        ("ada@example.com", ",", "scope"),
        ("nobody@example.com", "batch_export:read", "nobody@example.com"),
    ],
    ids=["unknown scope", "one unknown among known", "no scope", "unknown email"],
)
def test_api_key_create_rejects_bad_input_with_exit_code_2(
    user: User, capsys: pytest.CaptureFixture[str], email: str, scopes: str, message: str
) -> None:
    code, out, err = run_cli(capsys, "api-key", "create", "--email", email, "--scopes", scopes, "--json")
    assert code == 2
    assert out == ""
    assert err.startswith("error: ") and message in err
    assert not PersonalAPIKey.objects.exists()


# --- keys at rest --------------------------------------------------------------------------


def test_personal_api_keys_are_stored_hashed(user: User) -> None:
    key, value = PersonalAPIKey.create_for(user, ["batch_export:read"], label="reporting")
    assert value.startswith("phx_") and len(value) > 30
    row = PersonalAPIKey.objects.filter(pk=key.pk).values().get()
    assert row["secure_value"] != value
    assert row["secure_value"].startswith("sha256$")
    assert row["secure_value"] == keys.hash_key(value)
    for column, stored in row.items():
        assert value not in str(stored), column
    assert value not in json.dumps(row, default=str)
    # The mask is recognisable but does not give the key away.
    assert row["mask_value"].startswith("phx_") and row["mask_value"].endswith(value[-4:])
    assert len(row["mask_value"]) < 16


def test_each_key_is_unique(user: User) -> None:
    values = {PersonalAPIKey.create_for(user, ["*"])[1] for _ in range(20)}
    assert len(values) == 20
    assert PersonalAPIKey.objects.values("secure_value").distinct().count() == 20


def test_last_used_at_is_set_when_a_key_is_used(user: User, project: Project) -> None:
    key, value = PersonalAPIKey.create_for(user, ["batch_export:read"])
    assert key.last_used_at is None
    assert with_key(value).get(prefix_for("projects", project)).status_code == 200
    key.refresh_from_db()
    assert key.last_used_at is not None
    assert abs((timezone.now() - key.last_used_at).total_seconds()) < 60
    # An old timestamp is refreshed by the next use.
    long_ago = timezone.now() - dt.timedelta(days=3)
    PersonalAPIKey.objects.filter(pk=key.pk).update(last_used_at=long_ago)
    assert with_key(value).get(prefix_for("projects", project)).status_code == 200
    key.refresh_from_db()
    assert key.last_used_at > long_ago + dt.timedelta(days=2)


def test_an_unused_key_keeps_no_last_used_at(user: User, project: Project) -> None:
    used, used_value = PersonalAPIKey.create_for(user, ["*"])
    unused, _ = PersonalAPIKey.create_for(user, ["*"])
    with_key(used_value).get(prefix_for("projects", project))
    used.refresh_from_db()
    unused.refresh_from_db()
    assert used.last_used_at is not None
    assert unused.last_used_at is None


def test_project_api_token_is_a_phc_key(organization: Organization) -> None:
    first = Project.objects.create(organization=organization, name="Web")
    second = Project.objects.create(organization=organization, name="Mobile")
    assert first.api_token.startswith("phc_")
    assert second.api_token.startswith("phc_")
    assert first.api_token != second.api_token
    # Project keys identify a project to capture, they are not personal API keys.
    assert with_key(first.api_token).get(prefix_for("projects", first)).status_code == 401


# --- Django admin --------------------------------------------------------------------------


@pytest.fixture
def superuser_client(user: User, project: Project, client: CheckedAPIClient) -> CheckedAPIClient:
    admin_user = User.objects.create_superuser(email="root@example.com", password="x")
    OrganizationMembership.objects.create(organization=project.organization, user=admin_user)
    PersonalAPIKey.create_for(user, ["*"], label="listed in the admin")
    client.force_login(admin_user)
    return client


def registered_models() -> list[Any]:
    return sorted(admin.site._registry, key=lambda model: model._meta.label)


def test_admin_registers_the_account_models() -> None:
    registered = {model._meta.label for model in admin.site._registry}
    assert {"accounts.Organization", "accounts.Project", "accounts.User", "accounts.PersonalAPIKey"} <= registered


def test_admin_index_and_every_models_pages(superuser_client: CheckedAPIClient) -> None:
    index = superuser_client.get("/admin/")
    assert index.status_code == 200
    for model in registered_models():
        opts = model._meta
        assert opts.verbose_name_plural.lower() in index.content.decode().lower(), opts.label
        changelist = superuser_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))
        assert changelist.status_code == 200, (opts.label, changelist.content[:300])
        add = superuser_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add"))
        assert add.status_code == 200, (opts.label, add.content[:300])


def test_admin_change_pages_of_the_account_models(superuser_client: CheckedAPIClient, project: Project) -> None:
    key = PersonalAPIKey.objects.get(label="listed in the admin")
    for obj in (project.organization, project, key.user, key):
        opts = obj._meta
        page = superuser_client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk]))
        assert page.status_code == 200, (opts.label, page.content[:300])
    key_page = superuser_client.get(reverse("admin:accounts_personalapikey_change", args=[key.pk]))
    assert key.mask_value in key_page.content.decode()


def test_admin_is_closed_to_anonymous_and_non_staff_users(client: CheckedAPIClient, user: User) -> None:
    anonymous = client.get("/admin/")
    assert anonymous.status_code == 302
    assert "/admin/login/" in anonymous["Location"]
    client.force_login(user)
    assert client.get(reverse("admin:accounts_personalapikey_changelist")).status_code == 302


def key_form(user: User, **overrides: str) -> dict[str, Any]:
    data: dict[str, Any] = {
        "user": user.pk,
        "label": "from the admin",
        "scopes": '["batch_export:read"]',
        "scoped_organizations": "[]",
        "scoped_teams": "[]",
    }
    data.update(overrides)
    return data


def test_admin_creates_a_working_key_and_shows_it_once(
    superuser_client: CheckedAPIClient, user: User, project: Project
) -> None:
    add_url = reverse("admin:accounts_personalapikey_add")
    shown = []
    for label in ("first", "second"):  # two keys: neither may collide with the other
        response = superuser_client.post(
            add_url, key_form(user, label=label, scoped_teams=f"[{project.id}]"), follow=True
        )
        assert response.status_code == 200
        values = {word.rstrip(".,") for word in re.findall(r"phx_[A-Za-z0-9_\-]{20,}", response.content.decode())}
        assert len(values) == 1, values
        shown.append(values.pop())
    assert shown[0] != shown[1]
    for label, value in zip(("first", "second"), shown, strict=True):
        key = PersonalAPIKey.objects.get(label=label)
        assert key.secure_value == keys.hash_key(value)
        assert key.mask_value == keys.mask_key(value)
        assert (key.user, key.scopes, key.scoped_teams) == (user, ["batch_export:read"], [project.id])
        assert with_key(value).get(prefix_for("projects", project)).status_code == 200
    # Shown once: the list page does not show the value again.
    listing = superuser_client.get(reverse("admin:accounts_personalapikey_changelist")).content.decode()
    assert shown[1] not in listing and shown[0] not in listing


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("scopes", '["batch_export:delete"]'),
        ("scopes", "[]"),
        ("scopes", '"batch_export:read"'),
        ("scoped_organizations", '["not-a-uuid"]'),
        ("scoped_teams", '["web"]'),
    ],
)
def test_admin_rejects_keys_the_api_could_not_use(
    superuser_client: CheckedAPIClient, user: User, field: str, value: str
) -> None:
    response = superuser_client.post(reverse("admin:accounts_personalapikey_add"), key_form(user, **{field: value}))
    assert response.status_code == 200  # the form again, with its error
    assert "errorlist" in response.content.decode()
    assert not PersonalAPIKey.objects.filter(label="from the admin").exists()


def test_admin_edit_keeps_the_key_value(superuser_client: CheckedAPIClient, user: User, project: Project) -> None:
    key, value = PersonalAPIKey.create_for(user, ["batch_export:read"], label="before")
    secure_value = key.secure_value
    response = superuser_client.post(
        reverse("admin:accounts_personalapikey_change", args=[key.pk]),
        key_form(user, label="after", scopes='["*"]'),
    )
    assert response.status_code == 302, response.content[:500]
    key.refresh_from_db()
    assert (key.label, key.scopes, key.secure_value) == ("after", ["*"], secure_value)
    assert with_key(value).post(prefix_for("projects", project), {}, format="json").status_code == 400
