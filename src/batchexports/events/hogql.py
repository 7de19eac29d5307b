"""HogQL custom export schemas: `SELECT … FROM events`, checked with sqlglot and rendered per dialect.

HogQL is PostHog's ClickHouse-flavoured SQL. An export's `hogql_query` chooses and names the
columns of the events it exports: expressions over the readable fields, property access such as
`properties.$browser` and `person.properties.email`, and common functions (`toString`, `toInt`,
`toDateTime`, `JSONExtractString`, `coalesce`, `lower`, `if`, …). Everything else (joins, unions,
CTEs, subqueries, aggregates, ordering) is refused with a message that says what to change.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from batchexports.events.dialects import SQLDialect

READABLE_FIELDS = frozenset(
    {"created_at", "distinct_id", "elements_chain", "event", "person_id", "person_properties", "properties",
     "team_id", "timestamp", "uuid"}
)  # fmt: skip
PROPERTY = "__bx_property"
# HogQL functions sqlglot does not know, by lower-case name; rendered per dialect below.
HOGQL_FUNCTIONS = frozenset(
    {"tostring", "toint", "toint64", "tofloat", "tofloat64", "todatetime", "todate", "replaceall"}
)
TYPED_FUNCTIONS = (
    exp.Lower, exp.Upper, exp.If, exp.Coalesce, exp.Concat, exp.Length, exp.Trim, exp.Round, exp.Abs, exp.Substring,
    exp.Nullif, exp.Greatest, exp.Least, exp.StartsWith, exp.RegexpLike, exp.JSONExtractScalar, exp.JSONExtract,
    exp.Case, exp.Cast, exp.TryCast, exp.CurrentTimestamp, exp.Floor, exp.Ceil, exp.Mod, exp.Pow, exp.Sqrt, exp.Ln,
    exp.Replace,
)  # fmt: skip
ALLOWED_NODES = (
    exp.Alias, exp.Column, exp.Identifier, exp.Literal, exp.Boolean, exp.Null, exp.Paren, exp.Binary, exp.Not,
    exp.Neg, exp.In, exp.Tuple, exp.Between, exp.DataType, exp.Is, exp.Where, exp.Anonymous, exp.Bracket,
    exp.JSONPath, exp.JSONPathPart,
)  # fmt: skip


class InvalidHogQL(ValueError):
    """A query batchexports cannot export; the message says what to change."""


@dataclass(frozen=True)
class HogQLField:
    expression: str  # as the user wrote it, normalised
    alias: str
    node: exp.Expr  # with property access as PROPERTY(...) placeholders


@dataclass(frozen=True)
class HogQLQuery:
    text: str
    fields: tuple[HogQLField, ...]
    where: exp.Expr | None

    def schema(self) -> dict[str, object]:
        """The read-only `schema` of the API: `{fields: [{expression, alias}], hogql_query}`."""
        return {
            "fields": [{"expression": f.expression, "alias": f.alias} for f in self.fields],
            "hogql_query": self.text,
        }


_PROPERTY_ACCESS = re.compile(r"\b(person\.)?properties\.(`[^`]+`|\$?[A-Za-z_][A-Za-z0-9_$]*)")


def _replace_property_access(text: str) -> str:
    """`properties.$browser` -> `__bx_property(properties, '$browser')`, outside of string literals."""
    out, i = [], 0
    for match in re.finditer(r"'(?:[^'\\]|\\.|'')*'", text):
        out.append(_PROPERTY_ACCESS.sub(_placeholder, text[i : match.start()]))
        out.append(match.group(0))
        i = match.end()
    out.append(_PROPERTY_ACCESS.sub(_placeholder, text[i:]))
    return "".join(out)


def _placeholder(match: re.Match[str]) -> str:
    column = "person_properties" if match.group(1) else "properties"
    key = match.group(2).strip("`").replace("'", "''")
    return f"{PROPERTY}({column}, '{key}')"


def _hogql_text(node: exp.Expr) -> str:
    """An expression as HogQL text, with property access written back the way users write it."""

    def back(n: exp.Expr) -> exp.Expr:
        if isinstance(n, exp.Anonymous) and n.name == PROPERTY:
            column, key = n.expressions[0].name, n.expressions[1].name
            prefix = "person." if column == "person_properties" else ""
            return exp.column(exp.to_identifier(f"{prefix}properties.{key}"))
        return n

    text = node.transform(back, copy=True).sql("clickhouse")
    return re.sub(r'"((?:person\.)?properties\.[^"]+)"', r"\1", text)


def _check(node: exp.Expr, where: str) -> None:
    for child in node.walk():
        if isinstance(child, exp.Select | exp.Subquery | exp.Union | exp.With):
            raise InvalidHogQL(f"Subqueries are not supported in {where}; select from `events` directly.")
        if isinstance(child, exp.Star):
            raise InvalidHogQL("`*` is not supported: list the fields to export, e.g. `SELECT uuid, event, timestamp`.")
        if isinstance(child, exp.AggFunc):
            raise InvalidHogQL(
                f"Aggregate function {child.sql('clickhouse')!r} is not supported: "
                "a batch export exports events row by row."
            )
        if isinstance(child, exp.Window):
            raise InvalidHogQL("Window functions are not supported in batch exports.")
        if isinstance(child, exp.Column):
            name = child.name
            if child.table and child.table != "events":
                raise InvalidHogQL(f"Unknown table '{child.table}': only `events` can be exported.")
            if name not in READABLE_FIELDS:
                raise InvalidHogQL(
                    f"Unknown field '{name}'; readable fields are {', '.join(sorted(READABLE_FIELDS))}, "
                    "and properties as `properties.name` or `person.properties.name`."
                )
        elif isinstance(child, exp.Anonymous):
            if child.name != PROPERTY and child.name.lower() not in HOGQL_FUNCTIONS:
                raise InvalidHogQL(f"Unsupported function '{child.name}'.")
        elif not isinstance(child, ALLOWED_NODES + TYPED_FUNCTIONS):
            raise InvalidHogQL(f"Unsupported expression in {where}: {child.sql('clickhouse')!r}.")


def _alias(node: exp.Expr) -> str:
    if isinstance(node, exp.Alias):
        return node.alias
    if isinstance(node, exp.Column):
        return node.name
    if isinstance(node, exp.Anonymous) and node.name == PROPERTY:
        return node.expressions[1].name
    return _hogql_text(node)


def parse_query(text: str) -> HogQLQuery:
    if not text or not text.strip():
        raise InvalidHogQL("The query is empty.")
    try:
        statements = sqlglot.parse(_replace_property_access(text), read="clickhouse")
    except ParseError as error:
        raise InvalidHogQL(
            f"The query cannot be parsed: {error.errors[0]['description'] if error.errors else error}."
        ) from None
    if len(statements) != 1 or statements[0] is None:
        raise InvalidHogQL("Send exactly one SELECT statement.")
    select = statements[0]
    if isinstance(select, exp.Union):
        raise InvalidHogQL("UNION is not supported: a batch export query selects from `events` once.")
    if not isinstance(select, exp.Select):
        raise InvalidHogQL("Only SELECT queries can define an export.")
    if select.args.get("with_") or select.args.get("with"):
        raise InvalidHogQL("WITH (common table expressions) is not supported.")
    if select.args.get("joins"):
        raise InvalidHogQL("JOIN is not supported: only the fields of `events` can be exported.")
    source = select.args.get("from_") or select.args.get("from")
    table = source.this if source is not None else None
    if not isinstance(table, exp.Table) or table.name != "events" or table.db:
        raise InvalidHogQL("The query must select FROM events.")
    for clause, name in (("group", "GROUP BY"), ("having", "HAVING"), ("order", "ORDER BY"), ("limit", "LIMIT"),
                         ("offset", "OFFSET"), ("distinct", "DISTINCT")):  # fmt: skip
        if select.args.get(clause):
            raise InvalidHogQL(f"{name} is not supported: a batch export exports every matching event.")
    fields = []
    for node in select.expressions:
        _check(node, "the selected fields")
        inner = node.this if isinstance(node, exp.Alias) else node
        fields.append(HogQLField(expression=_hogql_text(inner), alias=_alias(node), node=inner))
    seen: set[str] = set()
    for field in fields:
        if field.alias in seen:
            raise InvalidHogQL(f"Two fields are named '{field.alias}'; give one of them another alias with AS.")
        seen.add(field.alias)
    where = select.args.get("where")
    if where is not None:
        _check(where, "WHERE")
    return HogQLQuery(text=text.strip(), fields=tuple(fields), where=where.this if where is not None else None)


def parse_expression(text: str) -> exp.Expr:
    """One HogQL expression (for filters of type `hogql`)."""
    node: exp.Expr
    try:
        node = sqlglot.parse_one(_replace_property_access(text), read="clickhouse", into=exp.Condition)
    except ParseError:
        try:
            node = sqlglot.parse_one(_replace_property_access(text), read="clickhouse")
        except ParseError as error:
            raise InvalidHogQL(f"'{text}' cannot be parsed as an expression: {error}.") from None
    _check(node, "the expression")
    return node


def _render_node(node: exp.Expr, dialect: SQLDialect) -> exp.Expr:
    def rewrite(n: exp.Expr) -> exp.Expr:
        if isinstance(n, exp.Anonymous):
            name, args = n.name.lower(), [render_expression(a, dialect) for a in n.expressions]
            if n.name == PROPERTY:
                return sqlglot.parse_one(dialect.json_string(args[0], n.expressions[1].name), read=dialect.name)
            sql = _hogql_function(name, args, dialect)
            if sql is not None:
                return sqlglot.parse_one(sql, read=dialect.name)
        return n

    return node.transform(rewrite, copy=True)


def _hogql_function(name: str, args: list[str], dialect: SQLDialect) -> str | None:
    if name == "tostring":
        return dialect.to_text(args[0])
    if name in ("toint", "toint64"):
        return dialect.try_int(args[0])
    if name in ("tofloat", "tofloat64"):
        return dialect.try_float(args[0])
    if name == "todatetime":
        return dialect.try_timestamp(args[0])
    if name == "todate":
        return dialect.try_date(args[0])
    if name == "replaceall":
        return dialect.replace_all(*args)
    return None


def render_expression(node: exp.Expr, dialect: SQLDialect) -> str:
    return _render_node(node, dialect).sql(dialect.name)


def select_list(query: HogQLQuery, dialect: SQLDialect) -> str:
    return ", ".join(f"{render_expression(f.node, dialect)} AS {dialect.quote(f.alias)}" for f in query.fields)
