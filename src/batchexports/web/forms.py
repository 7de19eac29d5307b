"""The create/edit form of a batch export, built from the serializers that validate it.

The destination part of the form is generated from the destination's config serializer (the
same one the API validates with), so a new destination type or field shows up here without
template changes. The form is parsed into the API's payload and validated by
`BatchExportSerializer`; its (nested) errors are mapped back to the fields they name.

Secrets are write-only here as in the API: their inputs are always rendered empty, the page only
says whether one is set, and an empty input on edit leaves the stored value as it is.
"""

from __future__ import annotations

import json
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from rest_framework import serializers
from rest_framework.fields import empty

from batchexports.core.intervals import INTERVALS
from batchexports.destinations.base import DestinationSpec
from batchexports.exports.models import BatchExport

CONFIG_PREFIX = "config."
# Event-name filters apply to every destination: shown after the destination's own fields.
TRAILING_FIELDS = ("include_events", "exclude_events")
WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
INTERVAL_LABELS = {
    "every 5 minutes": "Every 5 minutes",
    "every 15 minutes": "Every 15 minutes",
    "hour": "Hourly",
    "day": "Daily",
    "week": "Weekly",
}


@cache
def timezones() -> list[str]:
    return sorted(zoneinfo.available_timezones())


@dataclass
class ConfigField:
    """One input of a destination's config, described for the template and the page's script."""

    name: str
    label: str
    kind: str  # text | email | url | textarea | number | select | checkbox | list | json | secret | secret_text
    required: bool
    help_text: str
    nullable: bool
    blank: bool
    default: Any
    choices: list[tuple[str, str]] = field(default_factory=list)
    min_value: Any = None
    max_value: Any = None
    value: str = ""
    checked: bool = False
    secret_set: bool = False
    nested_secrets: list[tuple[str, bool]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    placeholder: str = ""

    @property
    def input_name(self) -> str:
        return CONFIG_PREFIX + self.name

    @property
    def input_id(self) -> str:
        return "config-" + self.name.replace("_", "-")

    @property
    def is_secret(self) -> bool:
        return self.kind in ("secret", "secret_text")

    @property
    def has_default(self) -> bool:
        return self.default is not empty

    @property
    def default_json(self) -> str:
        """The default as JSON for the page's script (never a secret: secrets have no default shown)."""
        if not self.has_default or self.is_secret:
            return ""
        return json.dumps(self.default)

    @property
    def clearable(self) -> bool:
        return self.is_secret and (self.nullable or self.blank) and not self.required


def _default(drf_field: serializers.Field) -> Any:
    default = drf_field.default
    if default is empty or callable(default):
        return empty
    return default


def _kind(name: str, drf_field: serializers.Field, top_secrets: set[str]) -> str:
    # From the serializer's field styles (DRF's way): a text area style makes a secret multi-line.
    if name in top_secrets:
        return "secret_text" if drf_field.style.get("base_template") == "textarea.html" else "secret"
    if isinstance(drf_field, serializers.BaseSerializer):
        return "json"
    if isinstance(drf_field, serializers.BooleanField):
        return "checkbox"
    if isinstance(drf_field, serializers.ChoiceField):
        return "select"
    if isinstance(drf_field, serializers.IntegerField | serializers.FloatField | serializers.DecimalField):
        return "number"
    if isinstance(drf_field, serializers.ListField):
        child = drf_field.child
        return "list" if isinstance(child, serializers.CharField) else "json"
    if isinstance(drf_field, serializers.EmailField):
        return "email"
    if isinstance(drf_field, serializers.URLField) or type(drf_field).__name__.endswith("UrlField"):
        return "url"
    if isinstance(drf_field, serializers.CharField):
        if drf_field.style.get("base_template") == "textarea.html":
            return "textarea"
        return "text"
    return "json"


def _label(name: str) -> str:
    words = name.replace("_", " ").strip()
    for short, long in (("aws", "AWS"), ("id", "ID"), ("url", "URL"), ("mb", "MB"), ("kms", "KMS"), ("http", "HTTP")):
        words = " ".join(long if w == short else w for w in words.split(" "))
    return words[:1].upper() + words[1:]


def _get_path(data: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return None
        data = data[key]
    return data


def _render_value(kind: str, value: Any) -> str:
    if value is None or value is empty:
        return ""
    if kind == "json":
        return json.dumps(value, indent=2)
    if kind == "list":
        return ", ".join(str(item) for item in value) if isinstance(value, list | tuple) else str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _ordered_fields(spec: DestinationSpec) -> list[tuple[str, serializers.Field]]:
    fields = list(spec.config_serializer().fields.items())
    required = [(n, f) for n, f in fields if f.required and n not in TRAILING_FIELDS]
    optional = [(n, f) for n, f in fields if not f.required and n not in TRAILING_FIELDS]
    trailing = [(n, f) for n, f in fields if n in TRAILING_FIELDS]
    return required + optional + trailing


def config_fields(
    spec: DestinationSpec,
    public_config: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
    submitted: Mapping[str, Any] | None = None,
    errors: Mapping[str, list[str]] | None = None,
) -> list[ConfigField]:
    """The inputs of `spec`'s config: defaults on create, the stored public values on edit, the
    submitted values after a failed save. Secret values are never part of it."""
    top_secrets = {path[0] for path in spec.secret_fields if len(path) == 1}
    secrets = secrets or {}
    described = []
    for name, drf_field in _ordered_fields(spec):
        kind = _kind(name, drf_field, top_secrets)
        choices: list[tuple[str, str]] = []
        if kind == "select":
            choices = [(str(key), str(label)) for key, label in getattr(drf_field, "choices", {}).items()]
        config_field = ConfigField(
            name=name,
            label=_label(name),
            kind=kind,
            required=bool(drf_field.required),
            help_text=str(drf_field.help_text or ""),
            nullable=bool(getattr(drf_field, "allow_null", False)),
            blank=bool(getattr(drf_field, "allow_blank", False)),
            default=_default(drf_field),
            choices=choices,
            min_value=getattr(drf_field, "min_value", None),
            max_value=getattr(drf_field, "max_value", None),
            errors=list((errors or {}).get(name, [])),
        )
        if kind == "json" and isinstance(drf_field, serializers.Serializer):
            # The shape a nested object takes, e.g. Redshift's copy_inputs.
            config_field.placeholder = json.dumps({key: "…" for key in drf_field.fields})
        if config_field.is_secret:
            config_field.secret_set = bool(secrets.get(name))
        else:
            if submitted is not None and kind == "checkbox":
                config_field.checked = (CONFIG_PREFIX + name) in submitted
            elif submitted is not None:
                config_field.value = str(submitted.get(CONFIG_PREFIX + name, ""))
            else:
                if public_config is not None and name in public_config:
                    current = public_config[name]
                else:
                    current = config_field.default
                config_field.checked = bool(current) if current is not empty else False
                config_field.value = _render_value(kind, current)
            config_field.nested_secrets = [
                (".".join(path[1:]), bool(_get_path(secrets, path)))
                for path in spec.secret_fields
                if len(path) > 1 and path[0] == name
            ]
        described.append(config_field)
    return described


def _blank_value(config_field: ConfigField) -> Any:
    """What an empty input means: blank, null, the default, or "" for the serializer to reject."""
    if config_field.kind in ("text", "email", "url", "textarea") and config_field.blank:
        return ""
    if config_field.nullable:
        return None
    if config_field.kind == "list":
        return []
    if not config_field.required and config_field.has_default:
        return config_field.default
    if not config_field.required:
        return empty
    return ""


def parse_config(
    spec: DestinationSpec, post: Mapping[str, Any], editing: bool
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The config a submitted form describes, and errors of inputs that could not be read (bad JSON).

    An empty secret input leaves the secret out: on create the serializer then asks for it if it
    is required; on edit the stored secret is kept (the API's PATCH merges the config)."""
    config: dict[str, Any] = {}
    errors: dict[str, list[str]] = {}
    for config_field in config_fields(spec):
        key = CONFIG_PREFIX + config_field.name
        raw = post.get(key, "")
        if config_field.kind == "checkbox":
            config[config_field.name] = key in post
            continue
        if config_field.is_secret:
            if raw != "":
                config[config_field.name] = raw
            elif editing and post.get(key + ".clear"):
                config[config_field.name] = None if config_field.nullable else ""
            continue
        if config_field.kind not in ("textarea",) and isinstance(raw, str):
            raw = raw.strip()
        if raw == "":
            value = _blank_value(config_field)
            if value is not empty:
                config[config_field.name] = value
            continue
        if config_field.kind == "json":
            try:
                config[config_field.name] = json.loads(raw)
            except ValueError as error:
                errors[config_field.name] = [f"Enter valid JSON ({error})."]
        elif config_field.kind == "list":
            config[config_field.name] = [item.strip() for item in raw.replace("\n", ",").split(",") if item.strip()]
        else:
            config[config_field.name] = raw
    return config, errors


# The batch export's own fields


def _optional_int(raw: str) -> int | str | None:
    raw = (raw or "").strip()
    if raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        return raw  # the serializer says why it is not a valid integer


def parse_export(
    spec: DestinationSpec, post: Mapping[str, Any], editing: bool
) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """The API payload (as `BatchExportSerializer` takes it) a submitted form describes."""
    errors: dict[str, list[str]] = {}
    interval = post.get("interval", "")
    payload: dict[str, Any] = {
        "name": post.get("name", ""),
        "model": post.get("model") or BatchExport.Model.EVENTS,
        "interval": interval,
        "timezone": (post.get("timezone") or "").strip() or "UTC",
        "paused": "paused" in post,
        "hogql_query": post.get("hogql_query", ""),
        "start_at": (post.get("start_at") or "").strip() or None,
        "end_at": (post.get("end_at") or "").strip() or None,
        "offset_day": _optional_int(post.get("offset_day", "")),
        "offset_hour": _optional_int(post.get("offset_hour", "")),
    }
    raw_filters = (post.get("filters") or "").strip()
    if raw_filters:
        try:
            payload["filters"] = json.loads(raw_filters)
        except ValueError as error:
            errors["filters"] = [f"Enter valid JSON ({error})."]
    else:
        payload["filters"] = None
    config, config_errors = parse_config(spec, post, editing)
    payload["destination"] = {"type": spec.type, "config": config}
    if config_errors:
        errors["destination"] = {"config": config_errors}  # type: ignore[assignment]
    return payload, errors


def export_initial(batch_export: BatchExport | None, data: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The values of the export's own inputs (not the destination's)."""
    if data is not None:
        keys = ("name", "model", "interval", "timezone", "offset_day", "offset_hour", "start_at", "end_at")
        values = {key: str(data.get(key, "")) for key in keys}
        values.update(hogql_query=data.get("hogql_query", ""), filters=data.get("filters", ""))
        values["paused"] = "paused" in data  # type: ignore[assignment]
        return values
    if batch_export is None:
        return {
            "name": "",
            "model": "events",
            "interval": "hour",
            "timezone": "UTC",
            "offset_day": "",
            "offset_hour": "",
            "start_at": "",
            "end_at": "",
            "hogql_query": "",
            "filters": "",
            "paused": False,  # type: ignore[dict-item]
        }
    from batchexports.core.intervals import split_offset

    day, hour = split_offset(batch_export.interval_offset)
    iso = lambda value: value.isoformat().replace("+00:00", "Z") if value else ""  # noqa: E731
    return {
        "name": batch_export.name,
        "model": batch_export.model,
        "interval": batch_export.interval,
        "timezone": batch_export.timezone or "UTC",
        "offset_day": "" if day is None or batch_export.interval != "week" else str(day),
        "offset_hour": "" if hour is None or batch_export.interval not in ("day", "week") else str(hour),
        "start_at": iso(batch_export.start_at),
        "end_at": iso(batch_export.end_at),
        "hogql_query": batch_export.hogql_query or "",
        "filters": json.dumps(batch_export.filters, indent=2) if batch_export.filters else "",
        "paused": batch_export.paused,  # type: ignore[dict-item]
    }


def interval_choices() -> list[tuple[str, str]]:
    return [(interval, INTERVAL_LABELS.get(interval, interval)) for interval in INTERVALS]


def model_choices(spec: DestinationSpec) -> list[tuple[str, str]]:
    return [(value, label) for value, label in BatchExport.Model.choices if value in spec.supported_models]


# Errors


def messages_of(detail: Any, prefix: str = "") -> list[str]:
    """Every message in a (possibly nested) DRF error detail, nested ones prefixed with their field."""
    if isinstance(detail, Mapping):
        return [
            message
            for key, value in detail.items()
            for message in messages_of(value, prefix if key == "non_field_errors" else f"{prefix}{key}: ")
        ]
    if isinstance(detail, list | tuple):
        return [message for item in detail for message in messages_of(item, prefix)]
    return [f"{prefix}{detail}"]


@dataclass
class FormErrors:
    """Serializer errors split by where the page shows them."""

    export: dict[str, list[str]] = field(default_factory=dict)
    config: dict[str, list[str]] = field(default_factory=dict)
    destination: list[str] = field(default_factory=list)  # of the destination as a whole
    general: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.export or self.config or self.destination or self.general)

    def add(self, errors: Mapping[str, Any], config_names: set[str], export_names: set[str]) -> None:
        for key, detail in errors.items():
            if key == "destination":
                self._add_destination(detail, config_names)
            elif key in export_names:
                self._extend(self.export, key, messages_of(detail))
            else:
                self.general.extend(messages_of(detail if key == "non_field_errors" else {key: detail}))

    def _add_destination(self, detail: Any, config_names: set[str]) -> None:
        if not isinstance(detail, Mapping):
            self.destination.extend(messages_of(detail))
            return
        for key, value in detail.items():
            if key == "config" and isinstance(value, Mapping):
                for name, messages in value.items():
                    if name in config_names:
                        self._extend(self.config, name, messages_of(messages))
                    else:
                        self.destination.extend(
                            messages_of(messages if name == "non_field_errors" else {name: messages})
                        )
            else:
                self.destination.extend(messages_of(value if key in ("config", "non_field_errors") else {key: value}))

    @staticmethod
    def _extend(target: dict[str, list[str]], key: str, messages: list[str]) -> None:
        existing = target.setdefault(key, [])
        existing.extend(message for message in messages if message not in existing)
