"""SQL of the rows each model exports for one data interval, built once, rendered per dialect.

Every model selects by `_inserted_at` in `[start, end)`, which is what makes a backfilled
interval export the same rows as a scheduled run of it. Column names and order are the ones
PostHog's batch exports produce. Values are quoted literals (see `dialects.py`).
"""

from __future__ import annotations

from batchexports.events import filters as property_filters
from batchexports.events import hogql
from batchexports.events.dialects import DUCKDB, SQLDialect
from batchexports.events.store import ModelQuery

EVENTS_COLUMNS = (
    "uuid", "team_id", "timestamp", "_inserted_at", "created_at", "event", "properties",
    "distinct_id", "elements_chain", "person_id", "person_properties", "set", "set_once",
)  # fmt: skip

PERSONS_COLUMNS = (
    "team_id", "distinct_id", "person_id", "properties", "person_version",
    "person_distinct_id_version", "created_at", "is_deleted", "_inserted_at",
)  # fmt: skip

SESSIONS_COLUMNS = (
    "session_id", "team_id", "distinct_id", "start_timestamp", "end_timestamp", "urls",
    "entry_url", "exit_url", "entry_pathname", "exit_pathname",
    "entry_utm_source", "entry_utm_medium", "entry_utm_campaign", "entry_utm_term", "entry_utm_content",
    "entry_referring_domain", "pageview_count", "autocapture_count", "session_duration", "is_bounce",
    "_inserted_at",
)  # fmt: skip

# A session bounces when it saw at most one pageview, no autocapture and lasted under 10 s.
BOUNCE_SECONDS = 10


def _interval(query: ModelQuery, d: SQLDialect, column: str) -> str:
    """`column` within `[start, end)` (from the beginning of time when there is no start)."""
    upper = f"{column} < {d.timestamp(query.end)}"
    return upper if query.start is None else f"{column} >= {d.timestamp(query.start)} AND {upper}"


def _event_names(query: ModelQuery, d: SQLDialect) -> str:
    sql = ""
    if query.include_events:
        sql += f" AND event IN {d.string_list(list(query.include_events))}"
    if query.exclude_events:
        sql += f" AND event NOT IN {d.string_list(list(query.exclude_events))}"
    return sql


def _events_scope(query: ModelQuery, d: SQLDialect) -> str:
    """The events a run exports, before property filters: the team's, arrived in the interval."""
    return f"team_id = {d.literal(query.team_id)} AND {_interval(query, d, d.inserted_at)}{_event_names(query, d)}"


def events_sql(query: ModelQuery, d: SQLDialect) -> str:
    conditions = [property_filters.condition(f, d, "events") for f in query.filters]
    if query.hogql is not None:
        columns = hogql.select_list(query.hogql, d)
        if query.hogql.where is not None:
            conditions.append(f"({hogql.render_expression(query.hogql.where, d)})")
    else:
        columns = ", ".join(d.quote(c) for c in EVENTS_COLUMNS)
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT {columns} FROM ({d.export_events(_events_scope(query, d))}) AS events{where}"


def persons_sql(query: ModelQuery, d: SQLDialect) -> str:
    """Each distinct id whose mapping or person changed in the interval, at its latest version as of
    the interval's end (so that re-running a past interval gives the rows it gave then)."""
    team, end = d.literal(query.team_id), d.timestamp(query.end)
    inserted = d.person_inserted_at
    person_filters = "".join(f" AND {property_filters.condition(f, d, 'persons')}" for f in query.filters)
    return f"""
        WITH changed_persons AS (
            SELECT DISTINCT {d.persons_id} AS person_id FROM {d.persons}
            WHERE team_id = {team} AND {_interval(query, d, inserted)}
        ),
        changed AS (
            SELECT DISTINCT distinct_id FROM {d.distinct_ids} WHERE team_id = {team} AND {_interval(query, d, inserted)}
            {d.union_distinct}
            SELECT DISTINCT distinct_id FROM {d.distinct_ids}
            WHERE team_id = {team} AND {inserted} < {end} AND person_id IN (SELECT person_id FROM changed_persons)
        ),
        latest_distinct_ids AS (
            SELECT distinct_id,
                   {d.arg_max("person_id", "version")} AS person_id,
                   max(version) AS person_distinct_id_version,
                   {d.arg_max("is_deleted", "version")} AS is_deleted,
                   {d.arg_max(inserted, "version")} AS _inserted_at
            FROM {d.distinct_ids}
            WHERE team_id = {team} AND {inserted} < {end} AND distinct_id IN (SELECT distinct_id FROM changed)
            GROUP BY distinct_id
        ),
        latest_persons AS (
            SELECT {d.persons_id} AS person_id,
                   {d.arg_max("properties", "version")} AS properties,
                   max(version) AS person_version,
                   min(created_at) AS created_at,
                   {d.arg_max("is_deleted", "version")} AS is_deleted,
                   {d.arg_max(inserted, "version")} AS _inserted_at
            FROM {d.persons}
            WHERE team_id = {team} AND {inserted} < {end}
              AND {d.persons_id} IN (SELECT person_id FROM latest_distinct_ids)
            GROUP BY {d.persons_id}
        )
        SELECT * FROM (
            SELECT
                CAST({team} AS BIGINT) AS team_id, dids.distinct_id AS distinct_id,
                {d.to_text("dids.person_id")} AS person_id,
                {d.to_text("p.properties")} AS properties, CAST(p.person_version AS BIGINT) AS person_version,
                CAST(dids.person_distinct_id_version AS BIGINT) AS person_distinct_id_version,
                p.created_at AS created_at,
                {d.boolean("(p.is_deleted OR dids.is_deleted)")} AS is_deleted,
                greatest(p._inserted_at, dids._inserted_at) AS _inserted_at
            FROM latest_distinct_ids AS dids JOIN latest_persons AS p ON dids.person_id = p.person_id
        ) AS persons
        {"WHERE true" + person_filters if person_filters else ""}
    """


def sessions_sql(query: ModelQuery, d: SQLDialect) -> str:
    """Each session with an event that arrived in the interval, aggregated over all its events
    that had arrived by the interval's end."""
    team, end = d.literal(query.team_id), d.timestamp(query.end)
    url, pathname = d.json_string("properties", "$current_url"), d.json_string("properties", "$pathname")

    def first(expr: str) -> str:
        return d.arg_min_if(expr, "timestamp", f"{expr} IS NOT NULL")

    def last(expr: str) -> str:
        return d.arg_max_if(expr, "timestamp", f"{expr} IS NOT NULL")

    def count(event: str) -> str:
        return d.count_if(f"event = '{event}'")

    seconds = d.seconds_between("min(timestamp)", "max(timestamp)")
    utm = ",\n".join(
        f"{first(d.json_string('properties', 'utm_' + part))} AS entry_utm_{part}"
        for part in ("source", "medium", "campaign", "term", "content")
    )
    return f"""
        WITH touched AS (
            SELECT DISTINCT {d.session_id} AS session_id FROM {d.events}
            WHERE team_id = {team} AND {_interval(query, d, d.inserted_at)} AND {d.session_id} IS NOT NULL
        ),
        session_events AS (
            SELECT uuid, event, properties, timestamp, distinct_id, team_id, {d.session_id} AS session_id,
                   {d.inserted_at} AS _inserted_at
            FROM {d.events}
            WHERE team_id = {team} AND {d.inserted_at} < {end} AND {d.session_id} IN (SELECT session_id FROM touched)
            {d.first_row_of_each("uuid", "_inserted_at")}
        )
        SELECT
            session_id, team_id,
            {d.arg_min("distinct_id", "timestamp")} AS distinct_id,
            min(timestamp) AS start_timestamp,
            max(timestamp) AS end_timestamp,
            {d.sorted_distinct(url)} AS urls,
            {first(url)} AS entry_url,
            {last(url)} AS exit_url,
            {first(pathname)} AS entry_pathname,
            {last(pathname)} AS exit_pathname,
            {utm},
            {first(d.json_string("properties", "$referring_domain"))} AS entry_referring_domain,
            {count("$pageview")} AS pageview_count,
            {count("$autocapture")} AS autocapture_count,
            {seconds} AS session_duration,
            {d.boolean(f"({count('$pageview')} <= 1 AND {count('$autocapture')} = 0 AND {seconds} < {BOUNCE_SECONDS})")}
                AS is_bounce,
            max(_inserted_at) AS _inserted_at
        FROM session_events
        GROUP BY session_id, team_id
    """


BUILDERS = {"events": events_sql, "persons": persons_sql, "sessions": sessions_sql}


def model_sql(query: ModelQuery, dialect: SQLDialect = DUCKDB) -> str:
    return BUILDERS[query.model](query, dialect)


def count_sql(query: ModelQuery, dialect: SQLDialect = DUCKDB) -> str:
    return f"SELECT count(*) FROM ({model_sql(query, dialect)}) AS model_rows"


def earliest_sql(model: str, team_id: int, d: SQLDialect = DUCKDB) -> str:
    team = d.literal(team_id)
    if model == "persons":
        return f"SELECT min({d.person_inserted_at}) FROM {d.distinct_ids} WHERE team_id = {team}"
    sessions_only = f" AND {d.session_id} IS NOT NULL" if model == "sessions" else ""
    return f"SELECT min({d.inserted_at}) FROM {d.events} WHERE team_id = {team}{sessions_only}"
