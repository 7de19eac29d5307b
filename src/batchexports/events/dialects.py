"""The SQL dialects the model queries are rendered in: DuckDB (embedded) and ClickHouse (at scale).

A query is built once (see `model_queries.py`, `filters.py`, `hogql.py`) and never asks which
engine it is for: whatever the two engines spell differently is a method or an attribute here,
one class per engine. That is literals, identifiers, casts, JSON access, regexes, the aggregates
the models use, the table and column names of each store, and how to keep the first row of each
uuid. Values are rendered as quoted literals by sqlglot, so no user text is ever spliced into SQL
unquoted.
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
    # Where each store keeps what the models read.
    events = "events"
    persons = "persons"
    persons_id = "person_id"  # the id column of `persons`
    distinct_ids = "person_distinct_ids"
    inserted_at = "_inserted_at"
    session_id = "session_id"
    person_inserted_at = "_inserted_at"
    union_distinct = "UNION"

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
    def quote(self, name: str) -> str:
        """`name` as a quoted identifier (a column alias chosen by the user, say)."""

    # -- casts: the `try_` ones give NULL where the value does not convert -----------------------

    @abstractmethod
    def to_text(self, expression: str) -> str: ...

    @abstractmethod
    def boolean(self, expression: str) -> str:
        """A condition as a value of the engine's boolean type."""

    @abstractmethod
    def try_int(self, expression: str) -> str: ...

    @abstractmethod
    def try_float(self, expression: str) -> str: ...

    @abstractmethod
    def try_date(self, expression: str) -> str: ...

    @abstractmethod
    def try_timestamp(self, expression: str) -> str: ...

    # -- JSON and text ---------------------------------------------------------------------------

    @abstractmethod
    def json_string(self, column: str, key: str) -> str:
        """The value at `key` as text (strings unquoted, other JSON as written), NULL when absent or null."""

    @abstractmethod
    def json_has(self, column: str, key: str) -> str: ...

    @abstractmethod
    def regex(self, expression: str, pattern: str) -> str: ...

    @abstractmethod
    def contains_ci(self, expression: str, needle: str) -> str:
        """Whether `needle` occurs in `expression`, ignoring case (no wildcard characters)."""

    @abstractmethod
    def replace_all(self, *args: str) -> str:
        """Every occurrence of the second argument in the first replaced by the third."""

    # -- aggregates ------------------------------------------------------------------------------

    @abstractmethod
    def arg_min(self, value: str, by: str) -> str: ...

    @abstractmethod
    def arg_max(self, value: str, by: str) -> str: ...

    @abstractmethod
    def arg_min_if(self, value: str, by: str, condition: str) -> str:
        """`value` of the row with the least `by` among the rows where `condition` holds."""

    @abstractmethod
    def arg_max_if(self, value: str, by: str, condition: str) -> str: ...

    @abstractmethod
    def count_if(self, condition: str) -> str:
        """How many rows `condition` holds for, as a 64-bit integer."""

    @abstractmethod
    def sorted_distinct(self, expression: str) -> str:
        """The distinct non-null values of `expression`, sorted, as a list (empty when there are none)."""

    @abstractmethod
    def seconds_between(self, start: str, end: str) -> str:
        """Whole seconds from `start` to `end`, as a 64-bit integer."""

    # -- rows ------------------------------------------------------------------------------------

    @abstractmethod
    def first_row_of_each(self, key: str, order: str) -> str:
        """The clause, after WHERE, that keeps one row per `key`: the first by `order`."""

    @abstractmethod
    def export_events(self, scope: str) -> str:
        """The store's events matching `scope` (a condition over the `events` table's columns, at
        most `team_id`, `_inserted_at` and `event`), with PostHog's export columns, once per uuid:
        the first to arrive."""


class DuckDBDialect(SQLDialect):
    name = "duckdb"

    def timestamp(self, moment: dt.datetime) -> str:
        return f"TIMESTAMPTZ '{moment.astimezone(dt.UTC).isoformat()}'"

    def quote(self, name: str) -> str:
        return '"' + name.replace('"', '""') + '"'

    def to_text(self, expression: str) -> str:
        return f"CAST({expression} AS VARCHAR)"

    def boolean(self, expression: str) -> str:
        return expression

    def try_int(self, expression: str) -> str:
        return f"TRY_CAST({expression} AS BIGINT)"

    def try_float(self, expression: str) -> str:
        return f"TRY_CAST({expression} AS DOUBLE)"

    def try_date(self, expression: str) -> str:
        return f"TRY_CAST({expression} AS DATE)"

    def try_timestamp(self, expression: str) -> str:
        return f"TRY_CAST({expression} AS TIMESTAMPTZ)"

    def json_string(self, column: str, key: str) -> str:
        return f"json_extract_string({column}, {self.literal(_key_path(key))})"

    def json_has(self, column: str, key: str) -> str:
        return f"(json_type({column}, {self.literal(_key_path(key))}) IS NOT NULL)"

    def regex(self, expression: str, pattern: str) -> str:
        return f"regexp_matches({expression}, {self.literal(pattern)})"

    def contains_ci(self, expression: str, needle: str) -> str:
        return f"contains(lower({expression}), lower({self.literal(needle)}))"

    def replace_all(self, *args: str) -> str:
        return f"replace({', '.join(args)})"  # DuckDB's replace replaces every occurrence

    def arg_min(self, value: str, by: str) -> str:
        return f"arg_min({value}, {by})"

    def arg_max(self, value: str, by: str) -> str:
        return f"arg_max({value}, {by})"

    def arg_min_if(self, value: str, by: str, condition: str) -> str:
        return f"arg_min({value}, {by}) FILTER (WHERE {condition})"

    def arg_max_if(self, value: str, by: str, condition: str) -> str:
        return f"arg_max({value}, {by}) FILTER (WHERE {condition})"

    def count_if(self, condition: str) -> str:
        return f"count(*) FILTER (WHERE {condition})"

    def sorted_distinct(self, expression: str) -> str:
        # list() over no rows (all filtered out) is NULL, not an empty list.
        return (
            f"coalesce(list_sort(list_distinct(list({expression}) FILTER (WHERE {expression} IS NOT NULL))),"
            " []::VARCHAR[])"
        )

    def seconds_between(self, start: str, end: str) -> str:
        return f"CAST(epoch({end}) - epoch({start}) AS BIGINT)"

    def first_row_of_each(self, key: str, order: str) -> str:
        return f"QUALIFY row_number() OVER (PARTITION BY {key} ORDER BY {order}) = 1"

    def export_events(self, scope: str) -> str:
        # Duplicates are found by an aggregate over uuids alone and joined back, so the rows
        # themselves stream; a window over whole rows would hold the interval in memory (3x slower).
        # The scope's columns are only in `events`, so it needs no table name in the join.
        return f"""
            WITH duplicated AS (
                SELECT uuid, arg_min(rowid, _inserted_at) AS kept FROM events WHERE {scope}
                GROUP BY uuid HAVING count(*) > 1
            )
            SELECT
                e.uuid::VARCHAR AS uuid, e.team_id, e.timestamp, e._inserted_at, e.created_at, e.event,
                e.properties::VARCHAR AS properties, e.distinct_id, e.elements_chain,
                e.person_id::VARCHAR AS person_id, e.person_properties::VARCHAR AS person_properties,
                json_extract(e.properties, '$."$set"')::VARCHAR AS "set",
                json_extract(e.properties, '$."$set_once"')::VARCHAR AS set_once
            FROM events AS e LEFT JOIN duplicated AS d ON e.uuid = d.uuid
            WHERE {scope}
              AND (d.kept IS NULL OR e.rowid = d.kept)
        """


class ClickHouseDialect(SQLDialect):
    """PostHog's ClickHouse schema: `events` with `inserted_at`/`_timestamp` and a `$session_id`
    column, persons in `person` and `person_distinct_id2`."""

    name = "clickhouse"
    persons = "person"
    persons_id = "id"
    distinct_ids = "person_distinct_id2"
    inserted_at = "coalesce(inserted_at, toDateTime64(_timestamp, 6, 'UTC'))"
    session_id = "nullIf(`$session_id`, '')"
    person_inserted_at = "toDateTime64(_timestamp, 6, 'UTC')"
    union_distinct = "UNION DISTINCT"  # a bare UNION is refused unless a setting chooses its mode

    def timestamp(self, moment: dt.datetime) -> str:
        text = moment.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        return f"toDateTime64('{text}', 6, 'UTC')"

    def quote(self, name: str) -> str:
        return "`" + name.replace("`", "\\`") + "`"

    def to_text(self, expression: str) -> str:
        return f"toString({expression})"

    def boolean(self, expression: str) -> str:
        return f"toBool({expression})"  # a condition is a UInt8 in ClickHouse

    # ClickHouse's OrNull conversions read text only, hence the toString first.
    def try_int(self, expression: str) -> str:
        return f"toInt64OrNull(toString({expression}))"

    def try_float(self, expression: str) -> str:
        return f"toFloat64OrNull(toString({expression}))"

    def try_date(self, expression: str) -> str:
        return f"toDateOrNull(toString({expression}))"

    def try_timestamp(self, expression: str) -> str:
        return f"parseDateTime64BestEffortOrNull(toString({expression}), 6, 'UTC')"

    def json_string(self, column: str, key: str) -> str:
        # As PostHog's HogQL reads a property: the raw JSON value, quotes trimmed, '' and null as NULL.
        raw = f"JSONExtractRaw({column}, {self.literal(key)})"
        return f"replaceRegexpAll(nullIf(nullIf({raw}, ''), 'null'), '^\"|\"$', '')"

    def json_has(self, column: str, key: str) -> str:
        return f"JSONHas({column}, {self.literal(key)})"

    def regex(self, expression: str, pattern: str) -> str:
        return f"match({expression}, {self.literal(pattern)})"

    def contains_ci(self, expression: str, needle: str) -> str:
        return f"(positionCaseInsensitiveUTF8({expression}, {self.literal(needle)}) > 0)"

    def replace_all(self, *args: str) -> str:
        return f"replaceAll({', '.join(args)})"

    def arg_min(self, value: str, by: str) -> str:
        return f"argMin({value}, {by})"

    def arg_max(self, value: str, by: str) -> str:
        return f"argMax({value}, {by})"

    def arg_min_if(self, value: str, by: str, condition: str) -> str:
        return f"argMinIf({value}, {by}, {condition})"

    def arg_max_if(self, value: str, by: str, condition: str) -> str:
        return f"argMaxIf({value}, {by}, {condition})"

    def count_if(self, condition: str) -> str:
        return f"toInt64(countIf({condition}))"

    def sorted_distinct(self, expression: str) -> str:
        return f"arraySort(groupUniqArrayIf({expression}, {expression} IS NOT NULL))"

    def seconds_between(self, start: str, end: str) -> str:
        return f"toInt64(dateDiff('second', {start}, {end}))"

    def first_row_of_each(self, key: str, order: str) -> str:
        return f"ORDER BY {key}, {order} LIMIT 1 BY {key}"

    def export_events(self, scope: str) -> str:
        return f"""
        SELECT
            toString(uuid) AS uuid, team_id, timestamp, {self.inserted_at} AS _inserted_at, created_at, event,
            properties, distinct_id, nullIf(elements_chain, '') AS elements_chain,
            toString(person_id) AS person_id, nullIf(person_properties, '') AS person_properties,
            nullIf(JSONExtractRaw(properties, '$set'), '') AS `set`,
            nullIf(JSONExtractRaw(properties, '$set_once'), '') AS set_once
        FROM {self.events}
        WHERE {scope}
        {self.first_row_of_each("uuid", "_inserted_at")}
    """


DUCKDB = DuckDBDialect()
CLICKHOUSE = ClickHouseDialect()
