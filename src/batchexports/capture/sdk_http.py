"""What the endpoints PostHog's SDKs call share: the error shape, CORS, and the project of a token.

Capture, `/flags/`, `/decide/` and the remote config are called from browsers on the sites
they track, so every answer (errors included) carries CORS headers for the caller's origin.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.cache import patch_vary_headers

from batchexports.accounts.models import Project

INVALID_TOKEN_DETAIL = "Project API key invalid. You can find your project API key in PostHog project settings."
MISSING_TOKEN_DETAIL = "No project API key provided. You can find your project API key in PostHog project settings."


def error(status: int, error_type: str, code: str, detail: str, attr: str | None = None) -> JsonResponse:
    return JsonResponse({"type": error_type, "code": code, "detail": detail, "attr": attr}, status=status)


def with_cors(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    # Browsers send events from the sites they track: any origin may call, as with PostHog.
    origin = request.headers.get("Origin")
    response["Access-Control-Allow-Origin"] = origin or "*"
    if origin:
        response["Access-Control-Allow-Credentials"] = "true"
        patch_vary_headers(response, ["Origin"])
    response["Access-Control-Allow-Methods"] = "GET, POST, OPTIONS"
    response["Access-Control-Allow-Headers"] = "Content-Type, Content-Encoding, X-Requested-With"
    return response


def project_for_token(token: str | None) -> Project | None:
    if not token:
        return None
    return Project.objects.filter(api_token=token).only("id", "api_token").first()
