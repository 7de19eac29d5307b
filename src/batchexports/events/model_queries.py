"""SQL of the rows each model exports for one data interval, in DuckDB's dialect.

Every model selects by `_inserted_at` in `[start, end)`, which is what makes a backfilled
interval export the same rows as a scheduled run of it. Parameters are bound, never
interpolated. Column names and order are the ones PostHog's batch exports produce.
"""

from __future__ import annotations

from typing import Any

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


def _interval(query: ModelQuery, column: str = "_inserted_at") -> tuple[str, list[Any]]:
    """`column` within `[start, end)` (from the beginning of time when there is no start)."""
    if query.start is None:
        return f"{column} < ?", [query.end]
    return f"{column} >= ? AND {column} < ?", [query.start, query.end]


def _event_filters(query: ModelQuery, column: str = "event") -> tuple[str, list[Any]]:
    sql, params = "", []
    if query.include_events:
        sql += f" AND {column} IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(query.include_events))
    if query.exclude_events:
        sql += f" AND {column} NOT IN (SELECT unnest(?::VARCHAR[]))"
        params.append(list(query.exclude_events))
    return sql, params


def events_sql(query: ModelQuery) -> tuple[str, list[Any]]:
    """Events that arrived in the interval, one row per uuid (the first to arrive).

    Duplicates are found by an aggregate over uuids alone, then joined back, so the rows
    themselves stream; a window over whole rows would hold the interval in memory and is 3x slower.
    """

    def scope(alias: str) -> tuple[str, list[Any]]:
        interval, params = _interval(query, f"{alias}_inserted_at")
        filters, filter_params = _event_filters(query, f"{alias}event")
        return f"{alias}team_id = ? AND {interval}{filters}", [query.team_id, *params, *filter_params]

    (all_rows, params), (rows, row_params) = scope(""), scope("e.")
    sql = f"""
        WITH duplicated AS (
            SELECT uuid, arg_min(rowid, _inserted_at) AS kept FROM events
            WHERE {all_rows} GROUP BY uuid HAVING count(*) > 1
        )
        SELECT
            e.uuid::VARCHAR AS uuid, e.team_id, e.timestamp, e._inserted_at, e.created_at, e.event,
            e.properties::VARCHAR AS properties, e.distinct_id, e.elements_chain,
            e.person_id::VARCHAR AS person_id, e.person_properties::VARCHAR AS person_properties,
            json_extract(e.properties, '$."$set"')::VARCHAR AS "set",
            json_extract(e.properties, '$."$set_once"')::VARCHAR AS set_once
        FROM events AS e LEFT JOIN duplicated AS d ON e.uuid = d.uuid
        WHERE {rows} AND (d.kept IS NULL OR e.rowid = d.kept)
    """
    return sql, [*params, *row_params]


def persons_sql(query: ModelQuery) -> tuple[str, list[Any]]:
    """Each distinct id whose mapping or person changed in the interval, at its latest version as of
    the interval's end (so that re-running a past interval gives the rows it gave then)."""
    interval, interval_params = _interval(query)
    t, end = query.team_id, query.end
    sql = f"""
        WITH changed_persons AS (
            SELECT DISTINCT person_id FROM persons WHERE team_id = ? AND {interval}
        ),
        changed AS (
            SELECT DISTINCT distinct_id FROM person_distinct_ids WHERE team_id = ? AND {interval}
            UNION
            SELECT DISTINCT distinct_id FROM person_distinct_ids
            WHERE team_id = ? AND _inserted_at < ? AND person_id IN (SELECT person_id FROM changed_persons)
        ),
        latest_distinct_ids AS (
            SELECT distinct_id,
                   arg_max(person_id, version) AS person_id,
                   max(version) AS person_distinct_id_version,
                   arg_max(is_deleted, version) AS is_deleted,
                   arg_max(_inserted_at, version) AS _inserted_at
            FROM person_distinct_ids
            WHERE team_id = ? AND _inserted_at < ? AND distinct_id IN (SELECT distinct_id FROM changed)
            GROUP BY distinct_id
        ),
        latest_persons AS (
            SELECT person_id,
                   arg_max(properties, version) AS properties,
                   max(version) AS person_version,
                   min(created_at) AS created_at,
                   arg_max(is_deleted, version) AS is_deleted,
                   arg_max(_inserted_at, version) AS _inserted_at
            FROM persons
            WHERE team_id = ? AND _inserted_at < ? AND person_id IN (SELECT person_id FROM latest_distinct_ids)
            GROUP BY person_id
        )
        SELECT
            ?::BIGINT AS team_id, d.distinct_id, d.person_id::VARCHAR AS person_id,
            p.properties::VARCHAR AS properties, p.person_version, d.person_distinct_id_version,
            p.created_at, (p.is_deleted OR d.is_deleted) AS is_deleted,
            greatest(p._inserted_at, d._inserted_at) AS _inserted_at
        FROM latest_distinct_ids AS d JOIN latest_persons AS p USING (person_id)
    """
    params = [t, *interval_params, t, *interval_params, t, end, t, end, t, end, t]
    return sql, params


def _json_text(path: str) -> str:
    return f"nullif(json_extract_string(properties, '$.\"{path}\"'), '')"


def sessions_sql(query: ModelQuery) -> tuple[str, list[Any]]:
    """Each session with an event that arrived in the interval, aggregated over all its events
    that had arrived by the interval's end."""
    interval, interval_params = _interval(query)
    t, end = query.team_id, query.end
    url, pathname = _json_text("$current_url"), _json_text("$pathname")
    entry = lambda expr: f"arg_min({expr}, timestamp) FILTER (WHERE {expr} IS NOT NULL)"  # noqa: E731
    exit_ = lambda expr: f"arg_max({expr}, timestamp) FILTER (WHERE {expr} IS NOT NULL)"  # noqa: E731
    utm = ",\n".join(
        f"{entry(_json_text('utm_' + part))} AS entry_utm_{part}"
        for part in ("source", "medium", "campaign", "term", "content")
    )
    sql = f"""
        WITH touched AS (
            SELECT DISTINCT session_id FROM events
            WHERE team_id = ? AND {interval} AND session_id IS NOT NULL
        ),
        session_events AS (
            SELECT * FROM events
            WHERE team_id = ? AND _inserted_at < ? AND session_id IN (SELECT session_id FROM touched)
            QUALIFY row_number() OVER (PARTITION BY uuid ORDER BY _inserted_at) = 1
        )
        SELECT
            session_id, team_id,
            arg_min(distinct_id, timestamp) AS distinct_id,
            min(timestamp) AS start_timestamp,
            max(timestamp) AS end_timestamp,
            coalesce(list_sort(list_distinct(list({url}) FILTER (WHERE {url} IS NOT NULL))), []::VARCHAR[]) AS urls,
            {entry(url)} AS entry_url,
            {exit_(url)} AS exit_url,
            {entry(pathname)} AS entry_pathname,
            {exit_(pathname)} AS exit_pathname,
            {utm},
            {entry(_json_text("$referring_domain"))} AS entry_referring_domain,
            count(*) FILTER (WHERE event = '$pageview') AS pageview_count,
            count(*) FILTER (WHERE event = '$autocapture') AS autocapture_count,
            CAST(epoch(max(timestamp)) - epoch(min(timestamp)) AS BIGINT) AS session_duration,
            (count(*) FILTER (WHERE event = '$pageview') <= 1
             AND count(*) FILTER (WHERE event = '$autocapture') = 0
             AND epoch(max(timestamp)) - epoch(min(timestamp)) < {BOUNCE_SECONDS}) AS is_bounce,
            max(_inserted_at) AS _inserted_at
        FROM session_events
        GROUP BY session_id, team_id
    """
    return sql, [t, *interval_params, t, end]


BUILDERS = {"events": events_sql, "persons": persons_sql, "sessions": sessions_sql}


def model_sql(query: ModelQuery) -> tuple[str, list[Any]]:
    return BUILDERS[query.model](query)


def count_sql(query: ModelQuery) -> tuple[str, list[Any]]:
    sql, params = model_sql(query)
    return f"SELECT count(*) FROM ({sql})", params


EARLIEST = {
    "events": "SELECT min(_inserted_at) FROM events WHERE team_id = ?",
    "persons": "SELECT min(_inserted_at) FROM person_distinct_ids WHERE team_id = ?",
    "sessions": "SELECT min(_inserted_at) FROM events WHERE team_id = ? AND session_id IS NOT NULL",
}
