"""API representations and validation of batch exports, their runs and backfills.

Validation lives here, views stay thin. Secrets are split out of a destination's config
before it is stored and are never part of a representation.
"""

from __future__ import annotations

import zoneinfo
from functools import cache
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from batchexports.core.intervals import INTERVALS, split_offset
from batchexports.destinations import registry
from batchexports.destinations.base import deep_merge, split_secrets
from batchexports.events import filters as property_filters
from batchexports.events import hogql
from batchexports.exports import backfills, services
from batchexports.exports.models import (
    BatchExport,
    BatchExportBackfill,
    BatchExportDestination,
    BatchExportRun,
)
from batchexports.exports.relative_dates import parse_relative_or_absolute
from batchexports.exports.schema import destination_union


@cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


class RelativeOrAbsoluteDateField(serializers.CharField):
    """An ISO 8601 date/datetime or PostHog's relative form (`-7d`), read in the project's timezone."""

    def to_internal_value(self, data: Any) -> Any:
        text = super().to_internal_value(data)
        if not text:
            return None
        tz = zoneinfo.ZoneInfo(self.context.get("tz") or "UTC")
        try:
            return parse_relative_or_absolute(text, tz=tz)
        except ValueError as error:
            raise serializers.ValidationError(str(error)) from None


class RunsListQuerySerializer(serializers.Serializer):
    """Query parameters of a runs list, as PostHog takes them."""

    status = serializers.ListField(
        child=serializers.CharField(allow_blank=True),
        required=False,
        help_text="Only runs in these statuses; repeat the parameter for several (`?status=Failed&status=Completed`).",
    )
    after = RelativeOrAbsoluteDateField(
        required=False, allow_blank=True, help_text="Runs created at or after this (ISO 8601 or `-7d`; default `-7d`)."
    )
    before = RelativeOrAbsoluteDateField(
        required=False, allow_blank=True, help_text="Runs created at or before this (default now)."
    )
    start = RelativeOrAbsoluteDateField(
        required=False,
        allow_blank=True,
        help_text="With `ordering=data_interval_start`: runs whose interval starts at or after this (default `-7d`).",
    )
    end = RelativeOrAbsoluteDateField(
        required=False,
        allow_blank=True,
        help_text="With `ordering=data_interval_start`: runs whose interval ends at or before this (default now).",
    )

    def validate_status(self, values: list[str]) -> list[str]:
        known = set(BatchExportRun.Status.values)
        unknown = [value for value in values if value not in known]
        if unknown:
            raise serializers.ValidationError(
                f"Unknown status {', '.join(repr(v) for v in unknown)}; use one or more of "
                f"{', '.join(sorted(known))} (repeat the parameter for several)."
            )
        return values


class RunReceiptSerializer(serializers.Serializer):
    """What a completed run read from the source: its row count and the checksum of the rows'
    identities (`core/receipts.py`). Not in PostHog's schema: its clients ignore the field."""

    rows = serializers.IntegerField(source="receipt_rows")
    checksum = serializers.CharField(source="receipt_checksum")


class BatchExportRunSerializer(serializers.ModelSerializer):
    receipt = serializers.SerializerMethodField()

    class Meta:
        model = BatchExportRun
        fields = [
            "id",
            "status",
            "records_completed",
            "records_failed",
            "latest_error",
            "data_interval_start",
            "data_interval_end",
            "cursor",
            "created_at",
            "finished_at",
            "last_updated_at",
            "records_total_count",
            "bytes_exported",
            "batch_export",
            "backfill",
            "receipt",
        ]
        read_only_fields = fields

    @extend_schema_field(RunReceiptSerializer(allow_null=True))
    def get_receipt(self, run: BatchExportRun) -> dict[str, Any] | None:
        if run.receipt_rows is None or run.receipt_checksum is None:
            return None
        return dict(RunReceiptSerializer(run).data)


@extend_schema_field(destination_union())
class BatchExportDestinationSerializer(serializers.Serializer):
    """`{type, config, integration}`; `config` is validated by the destination's own schema."""

    type = serializers.ChoiceField(choices=[])
    config = serializers.DictField(required=False, default=dict)
    integration = serializers.IntegerField(required=False, allow_null=True)
    integration_id = serializers.IntegerField(required=False, allow_null=True, write_only=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        type_field = self.fields["type"]
        assert isinstance(type_field, serializers.ChoiceField)
        type_field.choices = registry.types()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        integration = attrs.pop("integration_id", None) or attrs.get("integration")
        if integration is not None:
            raise serializers.ValidationError(
                {"integration": "Integrations are not supported: put the credentials in 'config'."}
            )
        return attrs

    def to_representation(self, instance: BatchExportDestination) -> dict[str, Any]:
        # Secrets are stored apart, but a row saved before a field became secret (BigQuery's
        # client_email, token_uri) still has it in its public part: hide what PostHog hides anyway.
        try:
            secret_paths = registry.get(instance.type).secret_fields
        except KeyError:
            secret_paths = ()
        config = split_secrets(instance.config or {}, secret_paths)[0]
        return {"type": instance.type, "config": config, "integration": instance.integration}


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "properties": {
            "total_runs": {"type": "integer", "nullable": True},
            "finished_runs": {"type": "integer", "nullable": True},
            "progress": {"type": "number", "nullable": True},
        },
    }
)
class BackfillProgressField(serializers.ReadOnlyField):
    pass


class BatchExportBackfillSerializer(serializers.ModelSerializer):
    progress = BackfillProgressField(source="*")
    team = serializers.IntegerField(source="team_id", read_only=True)

    class Meta:
        model = BatchExportBackfill
        fields = [
            "id",
            "progress",
            "start_at",
            "end_at",
            "status",
            "created_at",
            "finished_at",
            "last_updated_at",
            "total_records_count",
            "adjusted_start_at",
            "team",
            "batch_export",
        ]
        read_only_fields = fields

    def to_representation(self, instance: BatchExportBackfill) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["progress"] = backfills.progress(instance)
        return data


class BatchExportSerializer(serializers.ModelSerializer):
    destination = BatchExportDestinationSerializer()
    latest_runs = serializers.SerializerMethodField()
    interval = serializers.ChoiceField(choices=INTERVALS)
    model = serializers.ChoiceField(choices=BatchExport.Model.choices, required=False)
    hogql_query = serializers.CharField(required=False, allow_blank=True, allow_null=True)
    filters = serializers.JSONField(required=False, allow_null=True)
    timezone = serializers.CharField(required=False, allow_null=True)
    offset_day = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=6)
    offset_hour = serializers.IntegerField(required=False, allow_null=True, min_value=0, max_value=23)
    team_id = serializers.IntegerField(required=False)

    class Meta:
        model = BatchExport
        fields = [
            "id",
            "team_id",
            "name",
            "model",
            "destination",
            "interval",
            "paused",
            "created_at",
            "last_updated_at",
            "last_paused_at",
            "start_at",
            "end_at",
            "latest_runs",
            "hogql_query",
            "schema",
            "filters",
            "timezone",
            "offset_day",
            "offset_hour",
        ]
        read_only_fields = ["id", "created_at", "last_updated_at", "latest_runs", "schema"]

    @extend_schema_field(BatchExportRunSerializer(many=True))
    def get_latest_runs(self, instance: BatchExport) -> list[dict[str, Any]]:
        runs = getattr(instance, "prefetched_latest_runs", None)
        if runs is None:
            runs = instance.runs.order_by("-created_at")[:10]
        return list(BatchExportRunSerializer(runs, many=True).data)

    def to_representation(self, instance: BatchExport) -> dict[str, Any]:
        data = super().to_representation(instance)
        data["team_id"] = instance.team_id
        data["hogql_query"] = instance.hogql_query or ""
        offset_day, offset_hour = split_offset(instance.interval_offset)
        data["offset_day"] = offset_day if instance.interval == "week" else None
        data["offset_hour"] = offset_hour if instance.interval in ("day", "week") else None
        return data

    # Field validators

    def validate_name(self, name: str) -> str:
        if not name.strip():
            raise serializers.ValidationError("Name cannot be blank.")
        return name

    def validate_timezone(self, value: str | None) -> str:
        if value is None or value == "":
            return "UTC"
        if value not in _timezones():
            raise serializers.ValidationError(f"'{value}' is not a known IANA timezone, e.g. 'Europe/Berlin' or 'UTC'.")
        return value

    def validate_filters(self, value: Any) -> Any:
        if value is not None and not isinstance(value, list):
            raise serializers.ValidationError("filters must be a list of property filters or null.")
        return value

    def validate_hogql_query(self, value: str | None) -> str:
        return value or ""

    # Cross-field validation

    def _current(self, attrs: dict[str, Any], name: str, default: Any = None) -> Any:
        if name in attrs:
            return attrs[name]
        if self.instance is not None and self.partial:
            return getattr(self.instance, name)
        return default

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        self._validate_team(attrs)
        interval = self._current(attrs, "interval")
        model = self._current(attrs, "model", BatchExport.Model.EVENTS) or BatchExport.Model.EVENTS
        if self.instance is None:
            attrs.setdefault("model", model)

        self._validate_offsets(attrs, interval)

        start_at = self._current(attrs, "start_at")
        end_at = self._current(attrs, "end_at")
        if start_at is not None and end_at is not None and start_at >= end_at:
            raise serializers.ValidationError({"end_at": "end_at must be after start_at."})

        if "destination" in attrs:
            attrs["destination"] = self._validate_destination(attrs["destination"])
        self._validate_query(attrs, model)
        if "destination" in attrs:
            destination_type = attrs["destination"]["type"]
        elif self.instance is not None:
            destination_type = self.instance.destination.type
        else:
            raise serializers.ValidationError({"destination": "This field is required."})
        spec = registry.get(destination_type)
        if model not in spec.supported_models:
            raise serializers.ValidationError(
                {
                    "model": f"{spec.label} batch exports only support the "
                    f"{', '.join(sorted(spec.supported_models))} model, not '{model}'."
                }
            )
        return attrs

    def _validate_query(self, attrs: dict[str, Any], model: str) -> None:
        """Check `hogql_query` and `filters` for the model, and derive the read-only `schema`."""
        hogql_query = self._current(attrs, "hogql_query", "")
        if hogql_query:
            if model != BatchExport.Model.EVENTS:
                raise serializers.ValidationError({"hogql_query": "A HogQL query only applies to the events model."})
            try:
                attrs["schema"] = hogql.parse_query(hogql_query).schema()
            except hogql.InvalidHogQL as error:
                raise serializers.ValidationError({"hogql_query": str(error)}) from None
        elif "hogql_query" in attrs or self.instance is None:
            attrs["schema"] = None
        try:
            property_filters.parse_filters(self._current(attrs, "filters"), model)
        except property_filters.InvalidFilters as error:
            raise serializers.ValidationError({"filters": str(error)}) from None

    def _validate_team(self, attrs: dict[str, Any]) -> None:
        project_ids: list[int] = self.context["project_ids"]
        if "team_id" not in attrs:
            return
        if self.instance is not None:
            if attrs["team_id"] != self.instance.team_id:
                raise serializers.ValidationError({"team_id": "A batch export cannot move to another project."})
            return
        if attrs["team_id"] not in project_ids:
            raise serializers.ValidationError({"team_id": f"Project {attrs['team_id']} is not in this scope."})

    def _validate_offsets(self, attrs: dict[str, Any], interval: str) -> None:
        """offset_day/offset_hour -> the stored `interval_offset` in seconds, as PostHog stores it."""
        given = {name: attrs.pop(name) for name in ("offset_day", "offset_hour") if name in attrs}
        if given.get("offset_day") is not None and interval != "week":
            raise serializers.ValidationError(
                {"offset_day": f"offset_day only applies to weekly batch exports, not '{interval}'."}
            )
        if given.get("offset_hour") is not None and interval not in ("day", "week"):
            raise serializers.ValidationError(
                {"offset_hour": f"offset_hour only applies to daily and weekly batch exports, not '{interval}'."}
            )
        # A PATCH keeps what it does not mention, as far as the (new) interval allows it.
        day = hour = None
        if self.partial and self.instance is not None:
            day, hour = split_offset(self.instance.interval_offset)
        day = given.get("offset_day", day) if interval == "week" else None
        hour = given.get("offset_hour", hour) if interval in ("day", "week") else None
        attrs["interval_offset"] = None if day is None and hour is None else (day or 0) * 86400 + (hour or 0) * 3600

    def _validate_destination(self, destination: dict[str, Any]) -> dict[str, Any]:
        # A PATCH may leave out `type` (the nested serializer is partial too): it stays what it is.
        destination_type = destination.get("type") or (self.instance.destination.type if self.instance else None)
        if destination_type is None:
            raise serializers.ValidationError({"destination": {"type": "This field is required."}})
        incoming = destination.get("config") or {}
        if self.instance is not None:
            current = self.instance.destination
            if destination_type != current.type:
                raise serializers.ValidationError(
                    {
                        "destination": {
                            "type": f"Cannot change the destination type from '{current.type}' to "
                            f"'{destination_type}'. Create a new batch export instead."
                        }
                    }
                )
            # Secrets are write-only: whoever updates a config cannot send back what they never saw.
            base = current.full_config() if self.partial else deep_merge({}, current.secrets())
            config = deep_merge(base, incoming)
        else:
            config = incoming
        self._check_legacy_parquet_extension(incoming)
        try:
            validated = registry.get(destination_type).validate_config(config)
        except serializers.ValidationError as error:
            raise serializers.ValidationError({"destination": {"config": error.detail}}) from None
        return {"type": destination_type, "config": validated}

    def _check_legacy_parquet_extension(self, incoming: dict[str, Any]) -> None:
        """PostHog's rule: once an export writes `.parquet`, the codec never comes back into its names.

        PostHog also refuses `true` on create; here a new export may ask for it, so that an export
        moved from PostHog keeps the names its readers expect (batchexports never wrote them before)."""
        if self.instance is None or incoming.get("legacy_parquet_extension") is not True:
            return
        if (self.instance.destination.config or {}).get("legacy_parquet_extension") is not True:
            raise serializers.ValidationError(
                {
                    "destination": {
                        "config": {
                            "legacy_parquet_extension": "legacy_parquet_extension can only stay on for an export "
                            "that already writes the compression codec into its Parquet file names; it cannot be "
                            "turned back on once an export uses the standard '.parquet' extension."
                        }
                    }
                }
            )

    # Persistence

    def create(self, validated_data: dict[str, Any]) -> BatchExport:
        destination_data = validated_data.pop("destination")
        team_id = validated_data.pop("team_id", None) or self.context["default_project_id"]
        return services.create_export(team_id, validated_data, destination_data)

    def update(self, instance: BatchExport, validated_data: dict[str, Any]) -> BatchExport:
        destination_data = validated_data.pop("destination", None)
        validated_data.pop("team_id", None)
        return services.update_export(instance, validated_data, destination_data)


class UnpauseRequestSerializer(serializers.Serializer):
    backfill = serializers.BooleanField(required=False, default=False)


class LogEntriesRequestSerializer(serializers.Serializer):
    limit = serializers.IntegerField(required=False, default=50, min_value=1, max_value=1000)
    after = serializers.DateTimeField(required=False)
    before = serializers.DateTimeField(required=False)
    level = serializers.CharField(required=False)
    search = serializers.CharField(required=False, allow_blank=True)
    instance_id = serializers.UUIDField(required=False)

    LEVEL_ALIASES = {
        "WARN": "WARNING",
        "DEBUG": "DEBUG",
        "LOG": "LOG",
        "INFO": "INFO",
        "WARNING": "WARNING",
        "ERROR": "ERROR",
    }

    def validate_level(self, value: str) -> list[str]:
        levels = []
        for raw in value.split(","):
            name = raw.strip().upper()
            if not name:
                continue
            if name not in self.LEVEL_ALIASES:
                raise serializers.ValidationError(
                    f"Unknown level '{raw.strip()}'; use one or more of DEBUG, LOG, INFO, WARNING, ERROR."
                )
            levels.append(self.LEVEL_ALIASES[name])
        return levels
