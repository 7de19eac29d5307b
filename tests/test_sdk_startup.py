"""Specification of what PostHog's SDKs call at start-up: `/flags/`, `/decide/` and the remote config.

The shapes are PostHog's, read from its source: `rust/feature-flags/src/api/types.rs` (the
`/flags/` v1 and v2 and `/decide/` v1..v4 response structs), `api/endpoint.rs` (which shape a
path and `v` get; no `v` and no `config` means v2 with the config; GET gets a minimal answer;
OPTIONS is 204 with `Allow`) and `errors.rs`. The requests go through Django's test client to the
real views, bodies built as posthog-js 1.449.2 builds them (`data=<base64>` with
`compression=base64`). One test drives the official Python SDK (`posthog`, version named in
`SDK_VERSION`) against a live server of this test, as its `get_flags_decision` calls `/flags/?v=2`.
This service has no flags: every answer holds none, with every product off.
"""

from __future__ import annotations

import base64
import gzip
import importlib.metadata
import json
import os
import re
import uuid
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client

from batchexports.capture.sdk_http import INVALID_TOKEN_DETAIL

ORIGIN = "https://shop.example"
SDK_VERSION = importlib.metadata.version("posthog")


@pytest.fixture
def http(db: Any) -> Client:
    return Client()


def post_flags(http: Client, path: str, body: dict[str, Any], **extra: Any) -> Any:
    return http.post(path, data=json.dumps(body), content_type="application/json", **extra)


def posthog_js_form(body: dict[str, Any]) -> str:
    """posthog-js's flags request: `data=encodeURIComponent(btoa(utf8(JSON)))`."""
    data = base64.b64encode(json.dumps(body, ensure_ascii=False).encode("utf-8")).decode()
    return f"data={quote(data, safe='')}"


def ask(project: Any, **extra: Any) -> dict[str, Any]:
    return {"token": project.api_token, "distinct_id": "user-1", **extra}


def assert_evaluation(answer: dict[str, Any]) -> None:
    """Every flags shape carries its request id and evaluation time (posthog-js logs them)."""
    uuid.UUID(answer["requestId"])
    assert isinstance(answer["evaluatedAt"], int) and answer["evaluatedAt"] > 1_700_000_000_000


def assert_startup_config(answer: dict[str, Any]) -> None:
    """The config keys posthog-js reads from `/flags/?config=true` and `/decide/`: everything off."""
    assert answer["supportedCompression"] == ["gzip", "gzip-js"]
    assert answer["sessionRecording"] is False
    assert answer["surveys"] is False
    assert answer["heatmaps"] is False
    assert answer["autocaptureExceptions"] is False
    assert answer["capturePerformance"] is False
    assert answer["siteApps"] == []
    assert answer["isAuthenticated"] is False
    assert answer["toolbarParams"] == {}
    assert answer["config"] == {"enable_collect_everything": True}


FLAGS_V2_KEYS = {"flags", "errorsWhileComputingFlags", "requestId", "evaluatedAt"}
FLAGS_V1_KEYS = {"featureFlags", "featureFlagPayloads", "errorsWhileComputingFlags", "requestId", "evaluatedAt"}


# /flags/, POST.


def test_flags_v2_answers_flags_and_no_errors(http, project):
    answer = post_flags(http, "/flags/?v=2", ask(project)).json()
    assert set(answer) == FLAGS_V2_KEYS, "v=2 without config=true has no config"
    assert answer["flags"] == {} and answer["errorsWhileComputingFlags"] is False
    assert_evaluation(answer)


@pytest.mark.parametrize("version", ["1", "1.0", "x"])  # PostHog reads an unparsable version as 1
def test_flags_v1_answers_the_legacy_shape(http, project, version):
    answer = post_flags(http, f"/flags/?v={version}", ask(project)).json()
    assert set(answer) == FLAGS_V1_KEYS
    assert answer["featureFlags"] == {} and answer["featureFlagPayloads"] == {}
    assert answer["errorsWhileComputingFlags"] is False


def test_flags_without_v_or_config_is_v2_with_the_config(http, project):
    answer = post_flags(http, "/flags/", ask(project)).json()
    assert set(answer) >= FLAGS_V2_KEYS and "featureFlags" not in answer
    assert_startup_config(answer)


def test_flags_config_without_v_is_the_legacy_shape_with_the_config(http, project):
    answer = post_flags(http, "/flags/?config=true", ask(project)).json()
    assert set(answer) >= FLAGS_V1_KEYS and "flags" not in answer
    assert_startup_config(answer)


def test_flags_v2_config_true_flattens_the_config_in(http, project):
    """posthog-js's own start-up call."""
    answer = post_flags(http, "/flags/?v=2&config=true", ask(project)).json()
    assert answer["flags"] == {} and answer["errorsWhileComputingFlags"] is False
    assert_startup_config(answer)
    assert answer["analytics"] == {"endpoint": "/i/v0/e/"}


def test_flags_config_false_leaves_the_config_out(http, project):
    answer = post_flags(http, "/flags/?v=2&config=false", ask(project)).json()
    assert set(answer) == FLAGS_V2_KEYS


def test_flags_reads_posthog_js_base64_form(http, project):
    body = posthog_js_form(ask(project, person_properties={"name": "Zoë 😀"}))
    response = http.post(
        "/flags/?v=2&config=true&ip=0&_=1764763200000&ver=1.449.2&compression=base64",
        data=body,
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200, response.content
    assert response.json()["flags"] == {}
    assert_startup_config(response.json())


def test_flags_reads_a_gzip_body(http, project):
    body = gzip.compress(json.dumps(ask(project)).encode())
    response = http.post("/flags/?v=2", data=body, content_type="application/json", HTTP_CONTENT_ENCODING="gzip")
    assert response.status_code == 200, response.content
    assert response.json()["flags"] == {}


def test_flags_takes_the_token_as_api_key_too(http, project):
    """The Python and Node SDKs send `api_key`; posthog-js sends `token`."""
    body = {"api_key": project.api_token, "distinct_id": "user-1"}
    assert post_flags(http, "/flags/?v=2", body).status_code == 200


# /flags/, GET: no distinct id, PostHog's minimal answer in the shape of `v`.


def test_flags_get_v2_is_the_minimal_answer(http, project):
    answer = http.get("/flags/", {"v": "2"}).json()
    assert answer["flags"] == {} and answer["errorsWhileComputingFlags"] is False
    assert answer["supportedCompression"] == ["gzip", "gzip-js"]
    assert answer["sessionRecording"] is False
    assert answer["config"] == {"enable_collect_everything": True}
    assert_evaluation(answer)


@pytest.mark.parametrize("query", [{}, {"v": "1"}])
def test_flags_get_v1_is_the_minimal_legacy_answer(http, project, query):
    answer = http.get("/flags/", query).json()
    assert answer["featureFlags"] == {} and answer["featureFlagPayloads"] == {}
    assert "flags" not in answer


def test_flags_get_with_an_unknown_token_is_a_401(http, project):
    response = http.get("/flags/", {"v": "2", "token": "phc_nobody"})
    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"


# /decide/: always with the config, its shape by `v`.


@pytest.mark.parametrize(
    ("version", "flags_key", "empty", "absent"),
    [
        (None, "featureFlags", [], "featureFlagPayloads"),
        ("1", "featureFlags", [], "featureFlagPayloads"),  # v1: a list of the active flags' keys
        ("2", "featureFlags", {}, "featureFlagPayloads"),  # v2: active flags and their values
        ("3", "featureFlagPayloads", {}, "flags"),  # v3: the legacy flags shape
        ("4", "flags", {}, "featureFlags"),  # v4: the v2 flags shape
    ],
)
def test_decide_shapes_by_version(http, project, version, flags_key, empty, absent):
    path = "/decide/" if version is None else f"/decide/?v={version}"
    answer = post_flags(http, path, ask(project)).json()
    assert answer[flags_key] == empty
    assert absent not in answer
    assert_evaluation(answer)
    assert_startup_config(answer)


def test_decide_v3_and_v4_report_no_errors(http, project):
    for version in ("3", "4"):
        assert post_flags(http, f"/decide/?v={version}", ask(project)).json()["errorsWhileComputingFlags"] is False


def test_decide_reads_posthog_js_base64_form(http, project):
    response = http.post(
        "/decide/?v=4&compression=base64",
        data=posthog_js_form(ask(project)),
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200, response.content
    assert response.json()["flags"] == {}


# Errors, in PostHog's shape.


@pytest.mark.parametrize("path", ["/flags/?v=2", "/decide/?v=4"])
def test_an_unknown_token_is_posthogs_401(http, project, path):
    response = post_flags(http, path, {"token": "phc_nobody", "distinct_id": "user-1"})
    assert response.status_code == 401
    assert response.json() == {
        "type": "authentication_error",
        "code": "invalid_api_key",
        "detail": INVALID_TOKEN_DETAIL,
        "attr": None,
    }


def test_no_token_is_a_401(http, project):
    response = post_flags(http, "/flags/?v=2", {"distinct_id": "user-1"})
    assert response.status_code == 401
    assert response.json()["code"] == "no_api_key"


@pytest.mark.parametrize("path", ["/flags/?v=2", "/decide/?v=4"])
def test_a_missing_distinct_id_is_a_400(http, project, path):
    response = post_flags(http, path, {"token": project.api_token})
    assert response.status_code == 400
    assert response.json()["attr"] == "distinct_id"
    assert "distinct_id field is missing" in response.json()["detail"]


def test_an_empty_distinct_id_is_a_400(http, project):
    response = post_flags(http, "/flags/?v=2", {"token": project.api_token, "distinct_id": "  "})
    assert response.status_code == 400
    assert "cannot be empty" in response.json()["detail"]


def test_disable_flags_needs_no_distinct_id(http, project):
    """posthog-js with `advanced_disable_flags` still asks for the config, without a distinct id."""
    response = post_flags(http, "/flags/?v=2&config=true", {"token": project.api_token, "disable_flags": True})
    assert response.status_code == 200, response.content
    assert_startup_config(response.json())


def test_an_unreadable_flags_body_is_a_400(http, project):
    response = http.post("/flags/?v=2", data=b"{nope", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["code"] == "malformed_data"


# CORS, on answers and preflights (posthog-js calls from the sites it tracks).


@pytest.mark.parametrize("path", ["/flags/", "/decide/"])
def test_flags_preflight_is_204_with_allow_and_cors(http, project, path):
    response = http.options(path, HTTP_ORIGIN=ORIGIN, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST")
    assert response.status_code == 204
    assert response["Allow"] == "GET, POST, OPTIONS, HEAD"
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert "POST" in response["Access-Control-Allow-Methods"]
    assert "content-type" in response["Access-Control-Allow-Headers"].lower()


@pytest.mark.parametrize("token", ["valid", "phc_nobody"])
def test_flags_answers_and_errors_carry_cors(http, project, token):
    body = {"token": project.api_token if token == "valid" else token, "distinct_id": "u"}
    response = post_flags(http, "/flags/?v=2", body, HTTP_ORIGIN=ORIGIN)
    assert response.status_code == (200 if token == "valid" else 401)
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert response["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in response["Vary"]


def test_flags_without_an_origin_allows_any(http, project):
    response = post_flags(http, "/flags/?v=2", ask(project))
    assert response["Access-Control-Allow-Origin"] == "*"


def test_flags_head_is_200_without_a_body(http, project):
    response = http.head("/flags/")
    assert response.status_code == 200
    assert response.content == b""


def test_flags_refuses_other_methods(http, project):
    response = http.put("/flags/", data=b"{}", content_type="application/json")
    assert response.status_code == 405


# The official Python SDK.


def test_the_python_sdk_reads_an_empty_flags_decision(live_server, project):
    """posthog-python's `get_flags_decision` posts to `/flags/?v=2` and parses the answer."""
    from posthog import Posthog

    client = Posthog(project.api_token, host=live_server.url, sync_mode=True, max_retries=0)
    decision = client.get_flags_decision("sdk-user", person_properties={"plan": "pro"})
    assert decision["flags"] == {}
    assert decision["errorsWhileComputingFlags"] is False
    assert client.get_all_flags("sdk-user") == {}
    assert client.get_feature_flag("anything", "sdk-user") is None


def test_the_python_sdk_sees_an_unknown_token_as_posthogs_401(live_server, project):
    from posthog import Posthog
    from posthog.request import APIError

    client = Posthog("phc_nobody", host=live_server.url, sync_mode=True, max_retries=0)
    with pytest.raises(APIError) as raised:
        client.get_flags_decision("sdk-user")
    assert raised.value.status == 401
    assert raised.value.message == INVALID_TOKEN_DETAIL, f"posthog {SDK_VERSION} reads the error's 'detail'"


# /array/<token>/config and config.js: the remote config posthog-js loads first.

REMOTE_CONFIG_OFF = {
    "supportedCompression": ["gzip", "gzip-js"],
    "hasFeatureFlags": False,
    "sessionRecording": False,
    "heatmaps": False,
    "autocaptureExceptions": False,
    "capturePerformance": False,
    "captureDeadClicks": False,
    "siteApps": [],
}


def test_array_config_is_the_projects_remote_config_with_everything_off(http, project):
    response = http.get(f"/array/{project.api_token}/config")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/json")
    answer = response.json()
    assert answer["token"] == project.api_token
    assert {key: answer[key] for key in REMOTE_CONFIG_OFF} == REMOTE_CONFIG_OFF
    assert answer["analytics"] == {"endpoint": "/i/v0/e/"}


@pytest.mark.parametrize("suffix", ["config", "config.js"])
def test_array_config_has_no_surveys_key(http, project, suffix):
    """posthog-js loads surveys.js whenever `surveys` is in the config, even `false`."""
    body = http.get(f"/array/{project.api_token}/{suffix}").content.decode()
    assert "surveys" not in (json.loads(body) if suffix == "config" else script_config(body, project.api_token)[0])


def script_config(script: str, token: str) -> tuple[dict[str, Any], Any]:
    """What the script assigns to `window._POSTHOG_REMOTE_CONFIG[token]`: (config, siteApps)."""
    key = re.escape(json.dumps(token))
    match = re.search(
        rf"_POSTHOG_REMOTE_CONFIG\[{key}\] = \{{\s*config: (\{{.*\}}),\s*siteApps: (\[.*\])", script, re.S
    )
    assert match, script
    return json.loads(match.group(1)), json.loads(match.group(2))


def test_array_config_js_defines_the_remote_config_for_the_token(http, project):
    response = http.get(f"/array/{project.api_token}/config.js")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/javascript")
    script = response.content.decode()
    assert "window._POSTHOG_REMOTE_CONFIG = window._POSTHOG_REMOTE_CONFIG || {}" in script
    config, site_apps = script_config(script, project.api_token)
    assert site_apps == []
    assert config["token"] == project.api_token
    assert config["sessionRecording"] is False and config["hasFeatureFlags"] is False


def test_array_config_js_runs_in_node_and_sets_the_config(http, project, tmp_path):
    """The script is valid JavaScript that leaves the config where posthog-js looks for it."""
    import shutil
    import subprocess

    if shutil.which("node") is None:
        if os.environ.get("CI"):
            pytest.fail("Node.js is not installed", pytrace=False)
        pytest.skip("Node.js is not installed")
    script = http.get(f"/array/{project.api_token}/config.js").content.decode()
    runner = (
        "const window = {}; eval(require('fs').readFileSync(process.argv[1], 'utf8'));"
        "process.stdout.write(JSON.stringify(window._POSTHOG_REMOTE_CONFIG));"
    )
    (tmp_path / "config.js").write_text(script)
    done = subprocess.run(
        ["node", "-e", runner, str(tmp_path / "config.js")], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    defined = json.loads(done.stdout)
    assert list(defined) == [project.api_token]
    assert defined[project.api_token]["config"]["supportedCompression"] == ["gzip", "gzip-js"]
    assert defined[project.api_token]["siteApps"] == []


@pytest.mark.parametrize("suffix", ["config", "config.js"])
def test_array_config_of_an_unknown_token_is_a_404(http, project, suffix):
    response = http.get(f"/array/phc_nobody/{suffix}")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


@pytest.mark.parametrize("suffix", ["config", "config.js"])
@pytest.mark.parametrize("token", ["phc_<script>", "phc%20x", "a" * 201])
def test_array_config_of_an_invalid_token_is_a_400(http, project, suffix, token):
    response = http.get(f"/array/{token}/{suffix}")
    assert response.status_code == 400
    assert response.json()["attr"] == "token"


@pytest.mark.parametrize("suffix", ["config", "config.js"])
def test_array_config_carries_cors_and_varies_on_origin(http, project, suffix):
    response = http.get(f"/array/{project.api_token}/{suffix}", HTTP_ORIGIN=ORIGIN)
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert {"Origin", "Referer"} <= {v.strip() for v in response["Vary"].split(",")}


def test_array_config_preflight_is_204_with_cors(http, project):
    response = http.options(f"/array/{project.api_token}/config", HTTP_ORIGIN=ORIGIN)
    assert response.status_code == 204
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    assert response["Allow"] == "GET, OPTIONS"


def test_array_config_refuses_post(http, project):
    assert http.post(f"/array/{project.api_token}/config").status_code == 405
