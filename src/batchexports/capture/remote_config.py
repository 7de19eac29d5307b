"""The configuration PostHog's SDKs load at start-up, in PostHog's shapes, for a service without products.

posthog-js asks for `/array/<token>/config.js` (a script that sets `window._POSTHOG_REMOTE_CONFIG`)
and falls back to `/array/<token>/config` (JSON); `/flags/?config=true` and `/decide/` carry
the same settings flattened into their answer. This service stores and exports events and has
no feature flags, session replay, surveys, heatmaps or error tracking, so every such feature is
off: the SDK then loads none of its lazy bundles (recorder, surveys, exception autocapture, …)
from `/static/`.
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_vary_headers
from django.views.decorators.csrf import csrf_exempt

from batchexports.accounts.models import Project
from batchexports.capture.sdk_http import error, project_for_token, with_cors

SUPPORTED_COMPRESSION = ["gzip", "gzip-js"]
ANALYTICS_ENDPOINT = "/i/v0/e/"
# PostHog's check on the path's token (tokens are `phc_…`, some older ones hold `-` and `_`).
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,200}")


def remote_config(project: Project) -> dict[str, Any]:
    """`/array/<token>/config`: the keys of PostHog's `RemoteConfig.build_config`, each feature off.

    Except `surveys`, which is left out: posthog-js (1.449) loads its surveys bundle from
    `/static/surveys.js` whenever the key is there, `false` included, and skips surveys only
    when it is absent. This service serves no posthog-js bundles and has no surveys."""
    return {
        "token": project.api_token,
        "supportedCompression": SUPPORTED_COMPRESSION,
        "hasFeatureFlags": False,
        "captureDeadClicks": False,
        "capturePerformance": False,
        "autocapture_opt_out": False,
        "autocaptureExceptions": False,
        "analytics": {"endpoint": ANALYTICS_ENDPOINT},
        "elementsChainAsString": True,
        "errorTracking": {"autocaptureExceptions": False, "suppressionRules": []},
        "logs": {"captureConsoleLogs": False},
        "sessionRecording": False,
        "heatmaps": False,
        "conversations": False,
        "productTours": False,
        "defaultIdentifiedOnly": True,
        "siteApps": [],
    }


def flags_config(project: Project) -> dict[str, Any]:
    """The settings `/flags/?config=true` and `/decide/` flatten into their answer (PostHog's decide keys)."""
    return {
        "supportedCompression": SUPPORTED_COMPRESSION,
        "autocapture_opt_out": False,
        "capturePerformance": False,
        "config": {"enable_collect_everything": True},
        "analytics": {"endpoint": ANALYTICS_ENDPOINT},
        "elementsChainAsString": True,
        "autocaptureExceptions": False,
        "sessionRecording": False,
        "surveys": False,
        "logs": {"captureConsoleLogs": False},
        "toolbarParams": {},
        "isAuthenticated": False,
        "siteApps": [],
        "heatmaps": False,
        "defaultIdentifiedOnly": True,
        "captureDeadClicks": False,
        "errorTracking": {"autocaptureExceptions": False, "suppressionRules": []},
        "conversations": False,
    }


def minimal_config() -> dict[str, Any]:
    """What PostHog answers to a GET of `/flags/` or `/decide/`, which carries no project."""
    return {
        "supportedCompression": SUPPORTED_COMPRESSION,
        "config": {"enable_collect_everything": True},
        "toolbarParams": {},
        "isAuthenticated": False,
        "sessionRecording": False,
    }


def _project_or_error(request: HttpRequest, token: str) -> Project | HttpResponse:
    if request.method == "OPTIONS":
        return HttpResponse(status=204, headers={"Allow": "GET, OPTIONS"})
    if request.method not in ("GET", "HEAD"):
        return error(405, "invalid_request", "method_not_allowed", f"Method {request.method} is not allowed.")
    if not _TOKEN.fullmatch(token):
        return error(400, "validation_error", "invalid_token", "Invalid token.", attr="token")
    project = project_for_token(token)
    if project is None:
        return error(404, "invalid_request", "not_found", "No project has this API key.")
    return project


@csrf_exempt
def array_config(request: HttpRequest, token: str) -> HttpResponse:
    found = _project_or_error(request, token)
    response = found if isinstance(found, HttpResponse) else JsonResponse(remote_config(found))
    patch_vary_headers(response, ["Origin", "Referer"])
    return with_cors(request, response)


@csrf_exempt
def array_config_js(request: HttpRequest, token: str) -> HttpResponse:
    found = _project_or_error(request, token)
    if isinstance(found, HttpResponse):
        return with_cors(request, found)
    config = remote_config(found)
    config.pop("siteApps")  # the script carries site apps as code, and there are none
    # json.dumps keeps the token inside a JS string; the token itself passed _TOKEN.
    script = (
        "(function() {\n"
        "  window._POSTHOG_REMOTE_CONFIG = window._POSTHOG_REMOTE_CONFIG || {};\n"
        f"  window._POSTHOG_REMOTE_CONFIG[{json.dumps(found.api_token)}] = {{\n"
        f"    config: {json.dumps(config)},\n"
        "    siteApps: []\n"
        "  }\n"
        "})();"
    )
    response = HttpResponse(script, content_type="application/javascript")
    patch_vary_headers(response, ["Origin", "Referer"])
    return with_cors(request, response)
