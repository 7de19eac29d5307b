"""PostgreSQL's SQL: its types (`jsonb` for JSON, `text[]` for lists), its catalogue, and the merge of
one committed stage segment into the table, inside the run's one transaction.

- events: each segment is inserted; at the end one `DELETE FROM table WHERE uuid IN (the run's
  uuids) AND xmin <> this transaction` removes the rows the run replaces (earlier exports of the
  same events), so re-running an interval never duplicates a row. (A row written exactly 2^32
  transactions before, with a re-exported uuid, would be kept: the 32-bit `xmin` cannot tell it
  apart.) Without an index on `uuid` the delete scans the table; for a large table add one
  (`CREATE INDEX ON table (uuid)`), which PostgreSQL then uses. The sink does not create it:
  maintaining it made inserting 1M events into the table about three times slower on the
  benchmark's machine.
- persons and sessions: `INSERT … ON CONFLICT (team_id, distinct_id | session_id) DO UPDATE … WHERE`
  the incoming version is newer (`warehouse/sql_kit/merge.py`), which needs a primary key or unique
  constraint on the key; a table without one is refused before anything is loaded.

Columns of another type than the stage's are converted with an explicit `CAST` to the column's
type, checked before loading (`check_conversions`), so an impossible conversion names its column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batchexports.core.errors import NonRetryableError
from batchexports.destinations.warehouse.sql_kit import merge
from batchexports.destinations.warehouse.sql_kit.dialect import SqlDialect, StageColumn, TargetColumn
from batchexports.destinations.warehouse.sql_kit.identifiers import ident, qualified
from batchexports.destinations.warehouse.sql_kit.plan import LoadPlan

# PostHog's events table for PostgreSQL batch exports, plus the person and insertion columns.
# `elements` holds the elements chain as a JSON string, `ip` is `properties.$ip`, `site_url` is
# kept for compatibility with tables of PostHog's older export app (always NULL).
POSTGRES_EVENTS_TABLE: tuple[tuple[str, str], ...] = (
    ("uuid", "TEXT"),
    ("event", "TEXT"),
    ("properties", "JSONB"),
    ("elements", "JSONB"),
    ("set", "JSONB"),
    ("set_once", "JSONB"),
    ("distinct_id", "TEXT"),
    ("team_id", "BIGINT"),
    ("ip", "TEXT"),
    ("site_url", "TEXT"),
    ("timestamp", "TIMESTAMPTZ"),
    ("person_id", "TEXT"),
    ("person_properties", "JSONB"),
    ("created_at", "TIMESTAMPTZ"),
    ("_inserted_at", "TIMESTAMPTZ"),
)


class PostgresDialect(SqlDialect):
    label = "PostgreSQL"
    stage_prefix = "CREATE UNLOGGED TABLE"
    json_type = "JSONB"

    stage_types = {
        "json": ("JSONB", "jsonb"),
        "text": ("TEXT", "text"),
        "int": ("BIGINT", "bigint"),
        "float": ("DOUBLE PRECISION", "double precision"),
        "bool": ("BOOLEAN", "boolean"),
        "timestamptz": ("TIMESTAMPTZ", "timestamp with time zone"),
        "timestamp": ("TIMESTAMP", "timestamp without time zone"),
        "date": ("DATE", "date"),
        "list": ("TEXT[]", "text[]"),
    }

    def events_table(self) -> tuple[tuple[str, str], ...]:
        return POSTGRES_EVENTS_TABLE

    def derived(self, name: str, available: set[str]) -> tuple[str, tuple[str, ...]] | None:
        if name == "ip" and "properties" in available:
            return "NULLIF(s.\"properties\" ->> '$ip', '')", ("properties",)
        if name == "elements" and "elements_chain" in available:
            return 'to_jsonb(s."elements_chain")', ("elements_chain",)
        return None

    def convert(self, expression: str, stage: StageColumn, target: TargetColumn) -> str:
        if stage.kind == "list" and target.type in ("jsonb", "json"):
            return f"to_jsonb({expression})" + ("::json" if target.type == "json" else "")
        return super().convert(expression, stage, target)

    def describe(self, cursor: Any, schema: str, table: str) -> list[TargetColumn] | None:
        cursor.execute(
            "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute AS a "
            "WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            (qualified(schema, table),),
        )
        rows = cursor.fetchall()
        return [TargetColumn(name, kind) for name, kind in rows] or None

    def unique_keys(self, cursor: Any, schema: str, table: str) -> list[set[str]]:
        cursor.execute(
            "SELECT array_agg(a.attname::text) FROM pg_index AS i "
            "JOIN pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
            "WHERE i.indrelid = to_regclass(%s) AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL "
            "GROUP BY i.indexrelid",
            (qualified(schema, table),),
        )
        return [set(row[0]) for row in cursor.fetchall()]

    def check_conversions(self, cursor: Any, plan: LoadPlan) -> None:
        """Refuse a column whose type the stage's values cannot be cast to, naming it, before loading."""
        for column in plan.columns:
            stage = plan.stage_by_name.get(column)
            target = plan.target_by_name[column]
            if stage is None or target.type == stage.type or "CAST(" not in plan.expressions[column]:
                continue
            try:
                cursor.execute(f"SELECT CAST(NULL::{stage.ddl} AS {target.type})")
                cursor.fetchall()
            except Exception as error:
                if getattr(error, "sqlstate", None) not in ("42846", "42804", "42883"):
                    raise
                cursor.connection.rollback()
                raise NonRetryableError(
                    f"The column '{column}' of '{plan.schema}.{plan.table}' is of type {target.type}, which "
                    f"{stage.type} values cannot be converted to: change its type to {stage.type} "
                    f"(ALTER TABLE {plan.target} ALTER COLUMN {ident(column)} TYPE {stage.ddl} USING ...), drop "
                    "the column, or export into a new table."
                ) from None

    def segment_insert(self, plan: LoadPlan, segment: str) -> str:
        """The statement that merges one committed stage segment into the table (inside the run's transaction).

        Events are inserted (the rows they replace are deleted at the end, see `final_statements`);
        persons and sessions are upserted, the newer version winning.
        """
        if not plan.rules.upsert:
            return merge.insert_select(plan, segment)
        keys = ", ".join(f"s.{ident(k)}" for k in plan.rules.keys)
        order = ", ".join([keys, *(f"s.{ident(v)} DESC NULLS LAST" for v in plan.versions)])
        updated = [c for c in plan.columns if c not in plan.rules.keys]
        if updated:
            assignments = ", ".join(f"{ident(c)} = EXCLUDED.{ident(c)}" for c in updated)
            newer = merge.newer("EXCLUDED", "t", plan.versions)
            action = f"DO UPDATE SET {assignments}" + (f" WHERE {newer}" if newer else "")
        else:
            action = "DO NOTHING"
        conflict = ", ".join(ident(k) for k in plan.rules.keys)
        return (
            f"INSERT INTO {plan.target} AS t ({merge.column_list(plan)}) SELECT DISTINCT ON ({keys}) "
            f"{merge.select_list(plan)} FROM {segment} AS s ORDER BY {order} ON CONFLICT ({conflict}) {action}"
        )

    def final_statements(self, plan: LoadPlan, segments: Sequence[str]) -> list[str]:
        """After every segment is merged: delete the rows this run's events replace, drop the segments.

        The run's own rows are those this transaction wrote (`xmin` is its transaction id); every
        other row with one of the run's uuids is an earlier export of the same event.
        """
        statements = []
        if not plan.rules.upsert and segments:
            key = merge.event_key(plan)
            staged = " UNION ALL ".join(merge.staged_keys(plan, key, segment) for segment in segments)
            statements.append(
                f"DELETE FROM {plan.target} WHERE {ident(key)} IN ({staged}) "
                "AND NOT (xmin = (txid_current() % 4294967296)::text::xid)"
            )
        if segments:
            statements.append(f"DROP TABLE {', '.join(segments)}")
        return statements
