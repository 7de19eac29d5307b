"""Routes of the batch exports API, each served under the three PostHog prefixes.

Every route answers with or without its trailing slash, as PostHog's router does (`/?`).
"""

from django.urls import include, re_path
from rest_framework.routers import SimpleRouter

from batchexports.exports.app_metrics import AppMetricsViewSet
from batchexports.exports.viewsets import (
    BatchExportBackfillViewSet,
    BatchExportRunViewSet,
    BatchExportViewSet,
)

router = SimpleRouter()
router.trailing_slash = "/?"
router.register(r"batch_exports", BatchExportViewSet, basename="batch_exports")
router.register(r"batch_exports/(?P<batch_export_id>[^/.]+)/runs", BatchExportRunViewSet, basename="batch_export_runs")
router.register(
    r"batch_exports/(?P<batch_export_id>[^/.]+)/backfills",
    BatchExportBackfillViewSet,
    basename="batch_export_backfills",
)

app_metrics = [
    re_path(r"^app_metrics/(?P<pk>[^/]+)/?$", AppMetricsViewSet.as_view({"get": "retrieve"}), name="app_metrics"),
    re_path(
        r"^app_metrics/(?P<pk>[^/]+)/error_details/?$",
        AppMetricsViewSet.as_view({"get": "error_details"}),
        name="app_metrics_error_details",
    ),
    re_path(
        r"^app_metrics/(?P<plugin_config_id>[^/]+)/historical_exports/?$",
        AppMetricsViewSet.as_view({"get": "historical_exports"}),
        name="app_metrics_historical_exports",
    ),
    re_path(
        r"^app_metrics/(?P<plugin_config_id>[^/]+)/historical_exports/(?P<pk>[^/]+)/?$",
        AppMetricsViewSet.as_view({"get": "historical_export"}),
        name="app_metrics_historical_export",
    ),
]

urlpatterns = [
    re_path(r"^organizations/(?P<organization_id>[^/]+)/", include(router.urls)),
    re_path(r"^projects/(?P<project_id>[^/]+)/", include(router.urls)),
    re_path(r"^environments/(?P<project_id>[^/]+)/", include(router.urls)),
    re_path(r"^projects/(?P<project_id>[^/]+)/", include(app_metrics)),
    re_path(r"^environments/(?P<project_id>[^/]+)/", include(app_metrics)),
]
