"""Versioned schema of the DuckDB events store.

Each migration runs once, in order, inside a transaction, and is recorded in
`schema_migrations`; a store opened by an older version of batchexports is upgraded in place.
Persons and their distinct ids are append-only version logs (as in PostHog's ClickHouse
tables): the latest version of a row wins, nothing is updated in place.
"""

from __future__ import annotations

import duckdb

MIGRATIONS: list[tuple[int, str, str]] = [
    (
        1,
        "events, persons and person distinct ids",
        """
        CREATE TABLE events (
            uuid UUID NOT NULL,
            event VARCHAR NOT NULL,
            properties JSON,
            timestamp TIMESTAMPTZ NOT NULL,
            team_id BIGINT NOT NULL,
            distinct_id VARCHAR NOT NULL,
            elements_chain VARCHAR,
            created_at TIMESTAMPTZ NOT NULL,
            person_id UUID,
            person_properties JSON,
            session_id VARCHAR,
            _inserted_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE persons (
            team_id BIGINT NOT NULL,
            person_id UUID NOT NULL,
            properties JSON NOT NULL,
            is_identified BOOLEAN NOT NULL DEFAULT false,
            created_at TIMESTAMPTZ NOT NULL,
            version BIGINT NOT NULL,
            is_deleted BOOLEAN NOT NULL DEFAULT false,
            _inserted_at TIMESTAMPTZ NOT NULL
        );
        CREATE TABLE person_distinct_ids (
            team_id BIGINT NOT NULL,
            distinct_id VARCHAR NOT NULL,
            person_id UUID NOT NULL,
            version BIGINT NOT NULL,
            is_deleted BOOLEAN NOT NULL DEFAULT false,
            _inserted_at TIMESTAMPTZ NOT NULL
        );
        """,
    ),
]


def migrate(con: duckdb.DuckDBPyConnection) -> int:
    """Apply pending migrations; return the schema version now in force."""
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name VARCHAR, "
        "applied_at TIMESTAMPTZ DEFAULT now())"
    )
    applied = {row[0] for row in con.execute("SELECT version FROM schema_migrations").fetchall()}
    for version, name, sql in MIGRATIONS:
        if version in applied:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(sql)
            con.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", [version, name])
            con.execute("COMMIT")
        except Exception:
            con.execute("ROLLBACK")
            raise
    return max(v for v, _, _ in MIGRATIONS)
