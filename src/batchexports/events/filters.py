"""Property filters of a batch export, as PostHog serializes them, turned into SQL conditions.

A filter is `{"key", "operator", "type", "value"}`: `type` is `event` (the event's properties),
`person` (the person's properties) or `hogql` (the key is a HogQL expression). Filters combine
with AND. Invalid filters are refused with a message naming the filter by its position.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from batchexports.events import hogql
from batchexports.events.dialects import SQLDialect

OPERATORS = (
    "exact", "is_not", "icontains", "not_icontains", "regex", "not_regex", "gt", "gte", "lt", "lte",
    "is_set", "is_not_set", "is_date_before", "is_date_after",
)  # fmt: skip
TYPES = ("event", "person", "hogql")
NUMERIC = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
# Which property column each filter type reads, per model; a model missing here cannot be filtered.
COLUMNS: dict[str, dict[str, str | None]] = {
    "events": {"event": "properties", "person": "person_properties", "hogql": None},
    "persons": {"person": "properties"},
}


class InvalidFilters(ValueError):
    """Filters that cannot be applied; the message names the filter."""


@dataclass(frozen=True)
class PropertyFilter:
    key: str
    operator: str
    type: str
    value: Any
    expression: exp.Expr | None = None  # the parsed key of a `hogql` filter

    def values(self) -> list[Any]:
        return list(self.value) if isinstance(self.value, list) else [self.value]


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _date(value: Any, where: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InvalidFilters(f"{where}: '{value}' is not a date or datetime (YYYY-MM-DD or ISO 8601).") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def parse_filters(raw: Any, model: str = "events") -> list[PropertyFilter]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidFilters("filters must be a list of property filters.")
    if raw and model not in COLUMNS:
        raise InvalidFilters(f"filters apply to the events and persons models, not to '{model}'.")
    parsed = []
    for index, item in enumerate(raw):
        where = f"filter {index}"
        if not isinstance(item, dict):
            raise InvalidFilters(f"{where} must be an object with key, operator, type and value.")
        key, operator = item.get("key"), item.get("operator") or "exact"
        kind, value = item.get("type") or "event", item.get("value")
        if not isinstance(key, str) or not key:
            raise InvalidFilters(f"{where} has no 'key'.")
        if kind not in TYPES:
            raise InvalidFilters(f"{where}: type '{kind}' is not one of {', '.join(TYPES)}.")
        if kind not in COLUMNS.get(model, {}):
            raise InvalidFilters(f"{where}: filters of type '{kind}' do not apply to the {model} model.")
        if operator not in OPERATORS:
            raise InvalidFilters(f"{where}: operator '{operator}' is not one of {', '.join(OPERATORS)}.")
        values = value if isinstance(value, list) else [value]
        missing = value is None or value == [] or any(isinstance(v, dict | list) or v is None for v in values)
        if operator not in ("is_set", "is_not_set") and missing:
            raise InvalidFilters(f"{where}: operator '{operator}' needs a value (a scalar or a list of scalars).")
        if operator in NUMERIC:
            for v in values:
                try:
                    float(v)  # type: ignore[arg-type]  # a non-number raises, which is the check
                except (TypeError, ValueError):
                    raise InvalidFilters(
                        f"{where}: operator '{operator}' compares numbers; '{v}' is not one."
                    ) from None
        if operator in ("is_date_before", "is_date_after"):
            for v in values:
                _date(v, where)
        if operator in ("regex", "not_regex"):
            for v in values:
                try:
                    re.compile(str(v))
                except re.error as error:
                    raise InvalidFilters(f"{where}: '{v}' is not a valid regular expression ({error}).") from None
        expression = None
        if kind == "hogql":
            try:
                expression = hogql.parse_expression(key)
            except hogql.InvalidHogQL as error:
                raise InvalidFilters(f"{where}: {error}") from None
        parsed.append(PropertyFilter(key, operator, kind, value, expression))
    return parsed


def _subject(f: PropertyFilter, dialect: SQLDialect, model: str) -> tuple[str, str | None]:
    """(text value of what the filter tests, the JSON column it reads or None for expressions)."""
    if f.expression is not None:
        return dialect.to_text(hogql.render_expression(f.expression, dialect)), None
    column = COLUMNS[model][f.type]
    assert column is not None
    return dialect.json_string(column, f.key), column


def condition(f: PropertyFilter, dialect: SQLDialect, model: str = "events") -> str:
    subject, column = _subject(f, dialect, model)
    values = f.values()
    op = f.operator
    if op == "exact":
        return f"({subject} IN {dialect.string_list([_as_text(v) for v in values])})"
    if op == "is_not":
        return f"({subject} IS NULL OR {subject} NOT IN {dialect.string_list([_as_text(v) for v in values])})"
    if op in ("icontains", "not_icontains"):
        any_of = " OR ".join(dialect.contains_ci(subject, _as_text(v)) for v in values)
        return f"({any_of})" if op == "icontains" else f"({subject} IS NULL OR NOT ({any_of}))"
    if op in ("regex", "not_regex"):
        any_of = " OR ".join(dialect.regex(subject, _as_text(v)) for v in values)
        return f"({any_of})" if op == "regex" else f"({subject} IS NULL OR NOT ({any_of}))"
    if op in NUMERIC:
        return f"({dialect.try_float(subject)} {NUMERIC[op]} {dialect.literal(float(values[0]))})"
    if op in ("is_date_before", "is_date_after"):
        sign = "<" if op == "is_date_before" else ">"
        return f"({dialect.try_timestamp(subject)} {sign} {dialect.timestamp(_date(values[0], 'filter'))})"
    present = dialect.json_has(column, f.key) if column is not None else f"({subject} IS NOT NULL)"
    return present if op == "is_set" else f"(NOT {present})"
