"""URL routes: the batch exports and account API, health, OpenAPI, admin, capture and the web page.

Every API route answers with or without its trailing slash (as PostHog's router does), so a POST
without it reaches its view instead of Django's APPEND_SLASH redirect; any other path under
`/api/` gets a JSON 404 in the API's error shape.
"""

from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView

from batchexports import health
from batchexports.api_fallback import EndpointNotFound
from batchexports.capture import flags, remote_config
from batchexports.capture import views as capture

urlpatterns = [
    re_path(r"^api/schema/?$", SpectacularAPIView.as_view(), name="openapi-schema"),
    path("api/", include("batchexports.accounts.urls")),
    path("api/", include("batchexports.exports.urls")),
    re_path(r"^api(?:/.*)?$", EndpointNotFound.as_view(), name="api-not-found"),
    path("_health", health.health, name="health"),
    path("_health/", health.health),
    path("admin/", admin.site.urls),
    re_path(r"^(?:batch|capture|e|i/v0/e|track)/?$", capture.capture, name="capture"),
    re_path(r"^engage/?$", capture.engage, name="engage"),
    # What PostHog's SDKs call at start-up: feature flags and the remote config.
    re_path(r"^flags/?$", flags.flags, name="flags"),
    re_path(r"^decide/?$", flags.decide, name="decide"),
    re_path(r"^array/(?P<token>[^/]+)/config$", remote_config.array_config, name="remote-config"),
    re_path(r"^array/(?P<token>[^/]+)/config\.js$", remote_config.array_config_js, name="remote-config-js"),
    # The web page, last: its routes must never shadow the API, health, admin or capture ones.
    path("", include("batchexports.web.urls")),
]
