"""URL routes: the batch exports API under its three prefixes, health, OpenAPI and admin."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView

from batchexports import health

urlpatterns = [
    path("api/schema/", SpectacularAPIView.as_view(), name="openapi-schema"),
    path("api/", include("batchexports.exports.urls")),
    path("_health", health.health, name="health"),
    path("_health/", health.health),
    path("admin/", admin.site.urls),
]
