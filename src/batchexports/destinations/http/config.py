"""Config schema of the HTTP destination: events sent to another PostHog's `/batch/` endpoint.

The receiving PostHog is named by its capture URL and identified by its project API key
(`token`, kept secret). Only the `events` model can be sent this way. This module holds no
HTTP client code: the sink (`sink.py`) and the test steps (`checks.py`) do the sending.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

from batchexports.destinations.base import Capabilities, DestinationSpec, Sink
from batchexports.destinations.fields import EventFilterConfigSerializer, HttpUrlField
from batchexports.destinations.http import checks as http_checks


class HttpConfigSerializer(EventFilterConfigSerializer):
    url = HttpUrlField(help_text="Capture endpoint of the receiving PostHog, e.g. 'https://eu.i.posthog.com/batch/'.")
    token = serializers.CharField(trim_whitespace=False, help_text="Project API key of the receiving PostHog project.")


def _http_sink(config: Mapping[str, Any]) -> Sink:
    from batchexports.destinations.http.sink import HttpSink

    return HttpSink(config)


SPEC = DestinationSpec(
    type="HTTP",
    label="PostHog (HTTP)",
    config_serializer=HttpConfigSerializer,
    secret_fields=(("token",),),
    capabilities=Capabilities(models=frozenset({"events"}), writes="send"),
    description="Events sent in PostHog's /batch/ format to another PostHog instance.",
    test_steps=http_checks.STEPS,
    sink_factory=_http_sink,
)
