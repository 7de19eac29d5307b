"""The one place that maps a destination type name to its spec.

Modules are imported here, so adding a destination means adding one line.
"""

from __future__ import annotations

from batchexports.destinations.base import DestinationSpec

_REGISTRY: dict[str, DestinationSpec] = {}
_loaded = False


def register(spec: DestinationSpec) -> DestinationSpec:
    _REGISTRY[spec.type] = spec
    return spec


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    # Imported for their `register(...)` side effect; their heavy client libraries
    # (boto3, snowflake-connector, ...) are imported lazily inside their sinks.
    from batchexports.destinations import (  # noqa: F401
        azure_blob,
        bigquery,
        databricks,
        file,
        http,
        noop,
        s3,
        snowflake,
    )
    from batchexports.destinations.postgres import config as postgres_config  # noqa: F401
    from batchexports.destinations.redshift import config as redshift_config  # noqa: F401


def get(destination_type: str) -> DestinationSpec:
    """The spec of `destination_type`; `KeyError` when there is no such type."""
    _load()  # even when one module registered itself on import, every type must be known
    return _REGISTRY[destination_type]


def all_specs() -> list[DestinationSpec]:
    _load()
    return sorted(_REGISTRY.values(), key=lambda spec: spec.type)


def types() -> list[str]:
    return [spec.type for spec in all_specs()]
