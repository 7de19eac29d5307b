"""The SQL dialects the model queries are rendered in: DuckDB (embedded) and ClickHouse (at scale).

A query is built once (see `model_queries.py`); only what the two engines spell differently lives
here: literals, JSON access, safe casts, regexes, the table and column names of each store, and
how to keep the first row of each uuid. Values are rendered as quoted literals by sqlglot, so
no user text is ever spliced into SQL unquoted.
"""

from __future__ import annotations

import datetime as dt
from abc import ABC, abstractmethod
from typing import Any

from sqlglot import exp


def _key_path(key: str) -> str:
    return '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SQLDialect(ABC):
    name = ""  # the sqlglot dialect
    events = "events"
    persons = "persons"
    distinct_ids = "person_distinct_ids"
    inserted_at = "_inserted_at"
    session_id = "session_id"
    person_id = "person_id"
    person_inserted_at = "_inserted_at"
    person_properties_version = "version"

    def literal(self, value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, int | float):
            return exp.Literal.number(value).sql(self.name)
        if isinstance(value, dt.datetime):
            return self.timestamp(value)
        return exp.Literal.string(str(value)).sql(self.name)

    def string_list(self, values: list[str]) -> str:
        return "(" + ", ".join(self.literal(v) for v in values) + ")"

    @abstractmethod
    def timestamp(self, moment: dt.datetime) -> str: ...

    @abstractmethod
    def json_string(self, column: str, key: str) -> str:
        """The value at `key` as text (strings unquoted, other JSON as written), NULL when absent or null."""

    @abstractmethod
    def json_has(self, column: str, key: str) -> str: ...

    @abstractmethod
    def try_float(self, expression: str) -> str: ...

    @abstractmethod
    def try_timestamp(self, expression: str) -> str: ...

    @abstractmethod
    def regex(self, expression: str, pattern: str) -> str: ...

    @abstractmethod
    def contains_ci(self, expression: str, needle: str) -> str:
        """Whether `needle` occurs in `expression`, ignoring case (no wildcard characters)."""


class DuckDBDialect(SQLDialect):
    name = "duckdb"

    def timestamp(self, moment: dt.datetime) -> str:
        return f"TIMESTAMPTZ '{moment.astimezone(dt.UTC).isoformat()}'"

    def json_string(self, column: str, key: str) -> str:
        return f"json_extract_string({column}, {self.literal(_key_path(key))})"

    def json_has(self, column: str, key: str) -> str:
        return f"(json_type({column}, {self.literal(_key_path(key))}) IS NOT NULL)"

    def try_float(self, expression: str) -> str:
        return f"TRY_CAST({expression} AS DOUBLE)"

    def try_timestamp(self, expression: str) -> str:
        return f"TRY_CAST({expression} AS TIMESTAMPTZ)"

    def regex(self, expression: str, pattern: str) -> str:
        return f"regexp_matches({expression}, {self.literal(pattern)})"

    def contains_ci(self, expression: str, needle: str) -> str:
        return f"contains(lower({expression}), lower({self.literal(needle)}))"


class ClickHouseDialect(SQLDialect):
    """PostHog's ClickHouse schema: `events` with `inserted_at`/`_timestamp` and a `$session_id`
    column, persons in `person` and `person_distinct_id2`."""

    name = "clickhouse"
    persons = "person"
    distinct_ids = "person_distinct_id2"
    inserted_at = "coalesce(inserted_at, toDateTime64(_timestamp, 6, 'UTC'))"
    session_id = "nullIf(`$session_id`, '')"
    person_inserted_at = "toDateTime64(_timestamp, 6, 'UTC')"

    def timestamp(self, moment: dt.datetime) -> str:
        text = moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        return f"toDateTime64('{text}', 6, 'UTC')"

    def json_string(self, column: str, key: str) -> str:
        # As PostHog's HogQL reads a property: the raw JSON value, quotes trimmed, '' and null as NULL.
        raw = f"JSONExtractRaw({column}, {self.literal(key)})"
        return f"replaceRegexpAll(nullIf(nullIf({raw}, ''), 'null'), '^\"|\"$', '')"

    def json_has(self, column: str, key: str) -> str:
        return f"JSONHas({column}, {self.literal(key)})"

    def try_float(self, expression: str) -> str:
        return f"toFloat64OrNull(toString({expression}))"

    def try_timestamp(self, expression: str) -> str:
        return f"parseDateTime64BestEffortOrNull(toString({expression}), 6, 'UTC')"

    def regex(self, expression: str, pattern: str) -> str:
        return f"match({expression}, {self.literal(pattern)})"

    def contains_ci(self, expression: str, needle: str) -> str:
        return f"(positionCaseInsensitiveUTF8({expression}, {self.literal(needle)}) > 0)"


DUCKDB = DuckDBDialect()
CLICKHOUSE = ClickHouseDialect()
