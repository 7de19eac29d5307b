"""Specification of the destination test routes: describe the steps, run one, report each result."""

from __future__ import annotations

import os

import pytest

from batchexports.destinations.testing import DestinationCheckFailed, TestStep, run_step
from tests.conftest import prefix_for


@pytest.fixture
def export_dir(tmp_path, monkeypatch):
    folder = tmp_path / "exports"
    monkeypatch.setenv("BATCHEXPORTS_EXPORT_DIR", str(folder))
    return folder


def file_destination(path="acme/events", **extra):
    return {"type": "File", "config": {"path": path, **extra}}


@pytest.fixture
def base(project):
    return prefix_for("projects", project)


def test_describes_the_steps_of_the_file_destination(api, prefix):
    response = api.get(f"{prefix}test/", {"destination": "File"})
    assert response.status_code == 200
    assert [step["name"] for step in response.json()["steps"]] == [
        "Create the folder",
        "Write and delete a test file",
    ]
    assert all(step["description"] for step in response.json()["steps"])


def test_describing_without_a_destination_is_a_400_naming_the_parameter(api, base):
    response = api.get(f"{base}test/")
    assert response.status_code == 400
    assert response.json()["attr"] == "destination"


@pytest.fixture
def untestable_snowflake(monkeypatch):
    """Snowflake, as if it had no test steps (every real destination has them now)."""
    import dataclasses

    from batchexports.destinations import registry

    spec = registry.get("Snowflake")
    monkeypatch.setitem(registry._REGISTRY, "Snowflake", dataclasses.replace(spec, test_steps=()))


@pytest.mark.parametrize("destination", ["Nope", "Snowflake"])
def test_unknown_or_untestable_destination_is_a_404(api, base, destination, untestable_snowflake):
    response = api.get(f"{base}test/", {"destination": destination})
    assert response.status_code == 404
    assert response.json()["type"] == "invalid_request"


def test_run_test_step_new_creates_the_folder_then_writes_and_removes_a_file(api, base, export_dir):
    first = api.post(f"{base}run_test_step_new/", {"step": 0, "destination": file_destination()}, format="json")
    assert first.status_code == 200, first.json()
    assert first.json()["result"] == {"status": "Passed", "message": None}
    assert (export_dir / "acme" / "events").is_dir()

    second = api.post(f"{base}run_test_step_new/", {"step": 1, "destination": file_destination()}, format="json")
    assert second.json()["name"] == "Write and delete a test file"
    assert second.json()["result"]["status"] == "Passed"
    assert os.listdir(export_dir / "acme" / "events") == []


def test_a_step_fails_with_an_actionable_message_when_the_path_is_a_file(api, base, export_dir):
    export_dir.mkdir(parents=True)
    (export_dir / "taken").write_text("not a folder")
    response = api.post(
        f"{base}run_test_step_new/", {"step": 0, "destination": file_destination("taken/events")}, format="json"
    )
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["status"] == "Failed"
    assert "is not a folder" in result["message"]


def test_a_symlink_out_of_the_export_directory_fails_the_step(api, base, export_dir, tmp_path):
    export_dir.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (export_dir / "escape").symlink_to(outside)
    response = api.post(
        f"{base}run_test_step_new/", {"step": 0, "destination": file_destination("escape")}, format="json"
    )
    assert response.json()["result"]["status"] == "Failed"
    assert "outside the export directory" in response.json()["result"]["message"]


def test_writing_before_the_folder_exists_says_to_run_the_first_step(api, base, export_dir):
    response = api.post(f"{base}run_test_step_new/", {"step": 1, "destination": file_destination()}, format="json")
    assert response.json()["result"]["status"] == "Failed"
    assert "run the first step" in response.json()["result"]["message"]


@pytest.mark.parametrize("step", [2, -1, "first"])
def test_a_step_out_of_range_is_a_400_naming_step(api, base, export_dir, step):
    response = api.post(f"{base}run_test_step_new/", {"step": step, "destination": file_destination()}, format="json")
    assert response.status_code == 400
    assert response.json()["attr"] == "step"


def test_an_invalid_config_is_a_400_naming_the_field(api, base, export_dir):
    response = api.post(
        f"{base}run_test_step_new/", {"step": 0, "destination": file_destination("/etc")}, format="json"
    )
    assert response.status_code == 400
    assert response.json()["attr"] == "destination__config__path"
    assert "relative to the export directory" in response.json()["detail"]


def test_missing_destination_is_a_400(api, base):
    response = api.post(f"{base}run_test_step_new/", {"step": 0}, format="json")
    assert response.status_code == 400
    assert response.json()["attr"] == "destination"


def test_run_test_step_of_a_saved_export_uses_its_stored_config(api, prefix, export_dir, engine):
    created = api.post(
        prefix, {"name": "Local", "interval": "hour", "destination": file_destination("saved")}, format="json"
    )
    assert created.status_code == 201, created.json()
    response = api.post(f"{prefix}{created.json()['id']}/run_test_step/", {"step": 0}, format="json")
    assert response.status_code == 200
    assert response.json()["result"]["status"] == "Passed"
    assert (export_dir / "saved").is_dir()


SNOWFLAKE = {  # a destination type without tests
    "type": "Snowflake",
    "config": {
        "account": "org-acct",
        "user": "u",
        "password": "p",
        "database": "DB",
        "warehouse": "WH",
        "schema": "PUBLIC",
    },
}


def test_run_test_step_of_an_export_without_tests_is_a_404(api, base, untestable_snowflake):
    from tests.conftest import export_payload

    created = api.post(base, export_payload(destination=SNOWFLAKE), format="json")
    assert created.status_code == 201, created.json()
    response = api.post(f"{base}{created.json()['id']}/run_test_step/", {"step": 0}, format="json")
    assert response.status_code == 404


def test_secrets_are_scrubbed_from_step_messages():
    def leaky(config):
        raise DestinationCheckFailed(f"login failed for password {config['password']}")

    def crashing(config):
        raise RuntimeError(f"connect(password={config['password']}) refused")

    steps = (TestStep("leaky", "", leaky), TestStep("crashing", "", crashing))
    config = {"password": "hunter2-very-secret"}
    for index in range(2):
        result = run_step(steps, index, config, {"password": "hunter2-very-secret"})["result"]
        assert result["status"] == "Failed"
        assert "hunter2-very-secret" not in result["message"]
        assert "***" in result["message"]
