"""The NoOp destination, PostHog's `NoOp`: accepts any config, exports nothing, and its runs complete.

PostHog's NoOp workflow never queries its events store (it only echoes its `arg`), so this
destination does not read the source either: a run of it completes at once with 0 records. It is
useful to try schedules, backfills and the API without a destination.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from batchexports.destinations.base import Capabilities, DestinationSpec, Sink


@extend_schema_serializer(component_name="NoOpDestinationConfig")
class NoOpConfigSerializer(serializers.Serializer):
    """Any JSON object; `arg` is the one field PostHog's NoOp declares (it echoes it back)."""

    arg = serializers.CharField(
        required=False, allow_blank=True, help_text="Any text; accepted and ignored, as PostHog's NoOp echoes it."
    )

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if not isinstance(data, Mapping):
            raise serializers.ValidationError({"non_field_errors": ["The config must be a JSON object."]})
        return dict(data)


def _noop_sink(config: Mapping[str, Any]) -> Sink:
    from batchexports.destinations.noop.sink import NoOpSink

    return NoOpSink()


SPEC = DestinationSpec(
    type="NoOp",
    label="No-op",
    config_serializer=NoOpConfigSerializer,
    secret_fields=(),
    description="Exports nothing; its runs complete at once. For trying schedules and the API.",
    sink_factory=_noop_sink,
    capabilities=Capabilities(writes="nothing"),
    reads_source=False,
)
