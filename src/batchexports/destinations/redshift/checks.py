"""The test steps of the Redshift destination (`warehouse/sql_kit/checks.py`): connect, check the
schema and the permissions, create, write, read and drop a test table (its JSON column of the
configured `properties_data_type`). psycopg and the sink are imported when a step runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchexports.destinations.warehouse.sql_kit.checks import make_steps


def _redshift_sink(config: Mapping[str, Any]) -> Any:
    from batchexports.destinations.redshift.sink import RedshiftSink

    return RedshiftSink(config)


STEPS = make_steps(_redshift_sink, "Redshift")
