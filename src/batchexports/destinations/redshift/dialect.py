"""Redshift's SQL: its types, its catalogue, and the merge of the run's one stage table.

- Text is `VARCHAR(65535)` (Redshift's `TEXT` is `VARCHAR(256)`), and JSON is either that or
  `SUPER` (`properties_data_type`), parsed with `JSON_PARSE` when merging. Lists (the sessions'
  `urls`) are staged as JSON text.
- Redshift enforces no primary key and has no `ON CONFLICT`: every model is merged by
  delete-then-insert in one transaction. Events: delete the table's rows whose uuid is staged,
  insert the stage. Persons and sessions: drop the staged rows that are not newer than the
  table's (by the same version columns as PostgreSQL, `warehouse/sql_kit/merge.py`), delete the
  rows they replace, insert.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from batchexports.destinations.warehouse.sql_kit import merge
from batchexports.destinations.warehouse.sql_kit.dialect import SqlDialect, StageColumn, TargetColumn
from batchexports.destinations.warehouse.sql_kit.identifiers import ident
from batchexports.destinations.warehouse.sql_kit.plan import LoadPlan

VARCHAR_MAX = 65535

_SHORT = "VARCHAR(200)"
_LONG = f"VARCHAR({VARCHAR_MAX})"


def _events_table(json_type: str) -> tuple[tuple[str, str], ...]:
    """PostHog's events table for Redshift batch exports, plus the person and insertion columns."""
    return (
        ("uuid", _SHORT),
        ("event", _LONG),
        ("properties", json_type),
        ("elements", _LONG),
        ("set", json_type),
        ("set_once", json_type),
        ("distinct_id", _LONG),
        ("team_id", "BIGINT"),
        ("ip", _SHORT),
        ("site_url", _SHORT),
        ("timestamp", "TIMESTAMPTZ"),
        ("person_id", _SHORT),
        ("person_properties", json_type),
        ("created_at", "TIMESTAMPTZ"),
        ("_inserted_at", "TIMESTAMPTZ"),
    )


class RedshiftDialect(SqlDialect):
    label = "Redshift"
    stage_prefix = "CREATE TABLE"  # no UNLOGGED; a TEMP table would be private to one session

    stage_types = {
        "json": (_LONG, "character varying"),
        "text": (_LONG, "character varying"),
        "list": (_LONG, "character varying"),  # as JSON text
        "int": ("BIGINT", "bigint"),
        "float": ("DOUBLE PRECISION", "double precision"),
        "bool": ("BOOLEAN", "boolean"),
        "timestamptz": ("TIMESTAMPTZ", "timestamp with time zone"),
        "timestamp": ("TIMESTAMP", "timestamp without time zone"),
        "date": ("DATE", "date"),
    }

    def __init__(self, config: Mapping[str, Any]):
        super().__init__(config)
        self.json_type = "SUPER" if config.get("properties_data_type") == "super" else _LONG

    def events_table(self) -> tuple[tuple[str, str], ...]:
        return _events_table(self.json_type)

    def table_type(self, stage: StageColumn) -> str:
        return self.json_type if stage.kind in ("json", "list") else stage.ddl

    def derived(self, name: str, available: set[str]) -> tuple[str, tuple[str, ...]] | None:
        if name == "ip" and "properties" in available:
            return "NULLIF(JSON_EXTRACT_PATH_TEXT(s.\"properties\", '$ip', TRUE), '')", ("properties",)
        if name == "elements" and "elements_chain" in available:
            return 's."elements_chain"', ("elements_chain",)
        return None

    def convert(self, expression: str, stage: StageColumn, target: TargetColumn) -> str:
        if target.type == "super":
            return f"JSON_PARSE({expression})" if stage.kind in ("json", "list") else expression
        return super().convert(expression, stage, target)

    def describe(self, cursor: Any, schema: str, table: str) -> list[TargetColumn] | None:
        cursor.execute(
            "SELECT column_name, COALESCE(domain_name, data_type), character_maximum_length "
            "FROM information_schema.columns WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            (schema, table),
        )
        rows = cursor.fetchall()
        return [TargetColumn(name, str(kind).lower(), length) for name, kind, length in rows] or None

    def merge_statements(self, plan: LoadPlan) -> list[str]:
        """The statements merging the stage table into the table (then the sink drops the stage)."""
        insert = merge.insert_select(plan, plan.stage)
        if not plan.rules.upsert:
            key = merge.event_key(plan)
            return [
                f"DELETE FROM {plan.target} WHERE {ident(key)} IN ({merge.staged_keys(plan, key, plan.stage)})",
                insert,
            ]
        # DELETE takes no alias in Redshift: columns are qualified with the tables' names.
        same_key = " AND ".join(f"{plan.target}.{ident(k)} = {plan.stage}.{ident(k)}" for k in plan.rules.keys)
        statements = []
        if plan.versions:
            newer = merge.newer(plan.stage, plan.target, plan.versions)
            statements.append(f"DELETE FROM {plan.stage} USING {plan.target} WHERE {same_key} AND NOT ({newer})")
        statements.append(f"DELETE FROM {plan.target} USING {plan.stage} WHERE {same_key}")
        statements.append(insert)
        return statements
