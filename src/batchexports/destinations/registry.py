"""The one place that maps a destination type name to its definition: an explicit list.

Adding a destination means adding its folder and one line here; nothing registers itself on
import. Importing this module imports every destination's config (DRF only): their heavy client
libraries (boto3, snowflake-connector, ...) are imported inside their sinks, when one is built.
"""

from __future__ import annotations

from batchexports.destinations.azure_blob import config as azure_blob
from batchexports.destinations.base import DestinationSpec
from batchexports.destinations.bigquery import config as bigquery
from batchexports.destinations.databricks import config as databricks
from batchexports.destinations.file import config as file
from batchexports.destinations.http import config as http
from batchexports.destinations.noop import config as noop
from batchexports.destinations.postgres import config as postgres
from batchexports.destinations.redshift import config as redshift
from batchexports.destinations.s3 import config as s3
from batchexports.destinations.snowflake import config as snowflake

DESTINATIONS: tuple[DestinationSpec, ...] = (
    azure_blob.SPEC,
    bigquery.SPEC,
    databricks.SPEC,
    file.SPEC,
    http.SPEC,
    noop.SPEC,
    postgres.SPEC,
    redshift.SPEC,
    s3.SPEC,
    s3.AWS_S3,
    s3.S3_COMPATIBLE,
    snowflake.SPEC,
)

_REGISTRY: dict[str, DestinationSpec] = {spec.type: spec for spec in DESTINATIONS}


def get(destination_type: str) -> DestinationSpec:
    """The spec of `destination_type`; `KeyError` when there is no such type."""
    return _REGISTRY[destination_type]


def all_specs() -> list[DestinationSpec]:
    return sorted(_REGISTRY.values(), key=lambda spec: spec.type)


def types() -> list[str]:
    return [spec.type for spec in all_specs()]
