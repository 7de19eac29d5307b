"""The registry is an explicit list of destination definitions, and importing it loads no client.

Real: the registry and every destination's config module, imported in a fresh Python process so
that no other test's imports hide a client library loaded at import time. Nothing is faked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from batchexports.destinations import registry

SRC = Path(__file__).resolve().parents[1] / "src"

# The client libraries the sinks and stores import; none may load before a sink is built.
CLIENT_LIBRARIES = (
    "boto3",
    "botocore",
    "snowflake",
    "google.cloud",
    "azure.storage",
    "databricks",
    "duckdb",
    "pyarrow",
)

PROBE = """
import json, sys
from batchexports.destinations import registry
for spec in registry.all_specs():
    spec.config_serializer(data={}).is_valid()
print(json.dumps(sorted(name for name in sys.modules)))
"""


def test_importing_the_registry_loads_no_client_library():
    env = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.setdefault("DJANGO_SETTINGS_MODULE", "batchexports.settings")
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120, check=True
    )
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert "batchexports.destinations.registry" in loaded  # the probe did import it
    early = [name for name in loaded if any(name == lib or name.startswith(lib + ".") for lib in CLIENT_LIBRARIES)]
    assert early == []
    assert not [name for name in loaded if name.startswith("batchexports.pipeline")]


def test_every_destination_is_listed_once_with_a_sink_factory():
    types = [spec.type for spec in registry.DESTINATIONS]
    assert len(types) == len(set(types))
    assert sorted(types) == registry.types()
    assert all(callable(spec.sink_factory) for spec in registry.DESTINATIONS)


def test_the_noop_sink_is_built_lazily_and_exports_nothing():
    sink = registry.get("NoOp").sink_factory({})
    result = sink.export(None, iter(()), None, None, None)  # type: ignore[arg-type]
    assert (result.records, result.bytes_exported) == (0, 0)


def test_capabilities_say_how_each_destination_writes():
    writes = {spec.type: spec.capabilities.writes for spec in registry.DESTINATIONS}
    assert writes == {
        **dict.fromkeys(("AzureBlob", "File", "S3", "AwsS3", "S3Compatible"), "files"),
        **dict.fromkeys(("BigQuery", "Databricks", "Postgres", "Redshift", "Snowflake"), "merge"),
        "HTTP": "send",
        "NoOp": "nothing",
    }


def test_a_file_destination_offers_the_formats_its_schema_accepts():
    for spec in registry.DESTINATIONS:
        field = spec.config_serializer().fields.get("file_format")
        choices = tuple(field.choices) if field is not None else ()
        assert spec.capabilities.file_formats == choices, spec.type
        assert (spec.capabilities.writes == "files") == bool(choices), spec.type
