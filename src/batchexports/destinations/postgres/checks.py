"""The test steps of the PostgreSQL destination (`warehouse/sql_kit/checks.py`): connect, check the
schema and the permissions, create, write, read and drop a test table. psycopg and the sink are
imported when a step runs, never when this module is imported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchexports.destinations.warehouse.sql_kit.checks import make_steps


def _postgres_sink(config: Mapping[str, Any]) -> Any:
    from batchexports.destinations.postgres.sink import PostgresSink

    return PostgresSink(config)


STEPS = make_steps(_postgres_sink, "PostgreSQL")
