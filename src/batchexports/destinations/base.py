"""The contract every destination type fulfils, independent of Django models and Temporal.

A `DestinationSpec` names a destination type, the DRF serializer that validates its
`config`, which config fields are secrets (encrypted at rest, never returned), which
models it can export, and how to build its sink (imported only when one is built).
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from rest_framework import serializers

from batchexports.destinations.testing import TestStep

if TYPE_CHECKING:
    import pyarrow as pa

    from batchexports.core.run import CancelToken, ExportRun, ProgressCallback
    from batchexports.destinations.files.leftovers import LeavesLeftovers

ALL_MODELS: frozenset[str] = frozenset({"events", "persons", "sessions"})

# A secret field is named by its path inside the config: ("password",) or
# ("copy_inputs", "bucket_credentials", "aws_secret_access_key").
SecretPath = tuple[str, ...]


class DestinationConfigSerializer(serializers.Serializer):
    """Base for every destination config schema: rejects fields the schema does not know.

    Unknown fields are an error rather than silently dropped, so that a typo in a field
    name ("bucket" for "bucket_name") is reported instead of producing a broken export.
    """

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: [f"Unknown field '{name}' for this destination."] for name in unknown}
                )
        return super().to_internal_value(data)


@dataclass(frozen=True)
class SinkResult:
    records: int
    bytes_exported: int
    files: tuple[str, ...] = ()


class Sink(Protocol):
    """Takes the record batches of one run and leaves the destination as if the run happened once."""

    def export(
        self,
        run: ExportRun,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> SinkResult: ...


# How a run's rows land: "files" writes the interval's files (a re-run replaces them); "merge"
# merges rows into a table on the model's keys (`core/model_rules.py`); "send" posts them to an
# endpoint; "nothing" exports nothing.
WriteStrategy = Literal["files", "merge", "send", "nothing"]


@dataclass(frozen=True, kw_only=True)
class Capabilities:
    """What a destination type can do, in one record; its config schema and sink enforce it."""

    models: frozenset[str] = ALL_MODELS
    # The formats a config may choose; () where the sink stages in a format of its own.
    file_formats: tuple[str, ...] = ()
    writes: WriteStrategy = "merge"


@dataclass(frozen=True, kw_only=True)
class DestinationSpec:
    """What the rest of the service needs to know about one destination type."""

    type: str
    label: str
    config_serializer: builtins.type[serializers.Serializer]  # `type` is also a field here
    # Builds the sink for a validated config (secrets included). Every destination has one; it
    # imports the sink module (and its client library) only when called, never at import time.
    sink_factory: Callable[[Mapping[str, Any]], Sink]
    secret_fields: tuple[SecretPath, ...] = ()
    capabilities: Capabilities = Capabilities()
    description: str = ""
    # The checks of `GET test/?destination=TYPE` and `run_test_step`; empty until the
    # destination's I/O exists, and then the API answers 404 as PostHog does.
    test_steps: tuple[TestStep, ...] = ()
    # Offered for new exports in the web page; the legacy `S3` type is not, but still works.
    offered: bool = True
    # False for a destination that exports nothing (NoOp): its runs complete without a query.
    reads_source: bool = True
    # Opens the store where interrupted runs leave temporary files or multipart uploads, for the
    # start-up sweep (`files/leftovers.py`); None where nothing is left (Azure Blob drops uncommitted
    # blocks itself) or where the sink sweeps its own stage tables (`drop_stale_stages`).
    leftover_store: Callable[[Mapping[str, Any]], LeavesLeftovers] | None = None

    @property
    def supported_models(self) -> frozenset[str]:
        return self.capabilities.models

    def validate_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Validate a complete config; raise `serializers.ValidationError` naming the field."""
        serializer = self.config_serializer(data=dict(config))
        serializer.is_valid(raise_exception=True)
        return _plain(serializer.validated_data)


def _plain(value: Any) -> Any:
    """Turn OrderedDicts and nested serializer output into plain JSON-able structures."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def split_secrets(
    config: Mapping[str, Any], secret_paths: Iterable[SecretPath]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate a config into (public part, secret part), both nested like the config."""
    public = _plain(config)
    secrets: dict[str, Any] = {}
    for path in secret_paths:
        parent = public
        for key in path[:-1]:
            parent = parent.get(key) if isinstance(parent, dict) else None
            if parent is None:
                break
        if not isinstance(parent, dict) or path[-1] not in parent:
            continue
        value = parent.pop(path[-1])
        target = secrets
        for key in path[:-1]:
            target = target.setdefault(key, {})
        target[path[-1]] = value
    return public, secrets


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge `override` into `base` recursively; mappings merge, other values replace."""
    merged = _plain(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = _plain(value)
    return merged
