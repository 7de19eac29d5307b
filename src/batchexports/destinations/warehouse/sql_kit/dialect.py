"""What a PostgreSQL-protocol server calls things: the column kinds of a model, the stage and table
types of each kind, the catalogue that describes an existing table, and conversions between them.

`SqlDialect` is the base; `postgres/dialect.py` and `redshift/dialect.py` fill it in. A dialect only
renders SQL and reads the catalogue through a cursor it is given: it opens no connection.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from batchexports.core.model_rules import JSON_COLUMNS

if TYPE_CHECKING:
    from batchexports.destinations.warehouse.sql_kit.plan import LoadPlan


def column_kind(field: pa.Field) -> str:
    """What a column of the model holds: json, text, int, float, bool, timestamptz, timestamp, date, list."""
    kind = field.type
    if _is_stringish(kind):
        return "json" if field.name in JSON_COLUMNS else "text"
    if pa.types.is_integer(kind):
        return "int"
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "float"
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_timestamp(kind):
        return "timestamptz" if kind.tz else "timestamp"
    if pa.types.is_date(kind):
        return "date"
    if (pa.types.is_list(kind) or pa.types.is_large_list(kind)) and _is_stringish(kind.value_type):
        return "list"
    return "text"  # anything else is sent as its text rendering


def _is_stringish(kind: pa.DataType) -> bool:
    """Text, or bytes meant as text (a store may deliver strings as binary)."""
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_binary(kind)
        or pa.types.is_large_binary(kind)
    )


@dataclass(frozen=True)
class TargetColumn:
    name: str
    type: str  # the column's type without modifiers, as the database spells it
    max_length: int | None = None


@dataclass(frozen=True)
class StageColumn:
    name: str
    kind: str
    ddl: str  # the type in CREATE TABLE
    type: str  # the same type as the catalogue spells it


class SqlDialect(ABC):
    """The SQL of one server family member; see the module docstring."""

    label: str  # the server's name in messages
    stage_prefix: str  # how a stage table is created: `<stage_prefix> name (columns)`
    json_type: str  # the type of JSON columns in the tables the sink creates
    stage_types: Mapping[str, tuple[str, str]]  # column kind -> (type in CREATE TABLE, the catalogue's spelling)

    def __init__(self, config: Mapping[str, Any]):
        self.config = config

    def stage_column(self, field: pa.Field) -> StageColumn:
        kind = column_kind(field)
        ddl, spelled = self.stage_types[kind]
        return StageColumn(field.name, kind, ddl, spelled)

    def table_ddl(self, model: str, schema: pa.Schema) -> list[tuple[str, str]]:
        """Columns of a table the sink creates for `model`."""
        if model == "events":
            return list(self.events_table())
        return [(field.name, self.table_type(self.stage_column(field))) for field in schema]

    @abstractmethod
    def events_table(self) -> tuple[tuple[str, str], ...]:
        """PostHog's events table for this server: (column, type)."""

    def table_type(self, stage: StageColumn) -> str:
        """The type of a created table's column staged as `stage` (other than the events table's)."""
        return stage.ddl

    @abstractmethod
    def derived(self, name: str, available: set[str]) -> tuple[str, tuple[str, ...]] | None:
        """An expression over the stage (alias `s`) for a target column that is not a model column,
        with the model columns it reads; None when the column cannot be filled."""

    def convert(self, expression: str, stage: StageColumn, target: TargetColumn) -> str:
        """`expression` (of the stage's type) as a value of the target column's type."""
        if target.type == stage.type:
            return expression
        return f"CAST({expression} AS {target.type})"

    @abstractmethod
    def describe(self, cursor: Any, schema: str, table: str) -> list[TargetColumn] | None:
        """The columns of an existing table, in order; None when there is no such table."""

    def unique_keys(self, cursor: Any, schema: str, table: str) -> list[set[str]]:
        """The column sets of the table's unique constraints (read only by sinks that merge on one)."""
        raise NotImplementedError(f"{self.label} merges without a unique key")

    def check_conversions(self, cursor: Any, plan: LoadPlan) -> None:
        """Refuse, before loading, a column the stage's values cannot be converted to; by default the
        server reports it when merging (a non-retryable DatatypeMismatch)."""
        return None
