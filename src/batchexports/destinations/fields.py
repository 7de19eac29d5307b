"""Config fields and schemas that several destinations share: event-name filters, http(s) URLs.

Only DRF: this module knows nothing of a destination's client or of Django models.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from rest_framework import serializers

from batchexports.destinations.base import DestinationConfigSerializer


def event_names_field(help_text: str) -> serializers.ListField:
    """An optional list of event names (`include_events` / `exclude_events`)."""
    return serializers.ListField(
        child=serializers.CharField(), required=False, allow_null=True, default=None, help_text=help_text
    )


class EventFilterConfigSerializer(DestinationConfigSerializer):
    """Event-name filters, accepted by every destination (they apply to the `events` model)."""

    include_events = event_names_field("Export only events with these names; null for all events.")
    exclude_events = event_names_field("Leave out events with these names; null to leave out none.")


class HttpUrlField(serializers.CharField):
    """An absolute http:// or https:// URL; unlike `URLField`, accepts hosts without a dot
    (`http://minio:9000`, `http://posthog:8000/batch/`), common inside a private network."""

    def to_internal_value(self, data: Any) -> str:
        value = super().to_internal_value(data)
        try:
            parts = urlsplit(value)
            valid = parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            valid = False
        if not valid:
            raise serializers.ValidationError("Enter a full http:// or https:// URL, like 'https://example.com/path'.")
        return value
