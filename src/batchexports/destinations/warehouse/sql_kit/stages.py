"""Stage tables of the PostgreSQL-protocol sinks: their names and the mark that lets a sweep drop them.

A stage table is named after the run (`stage_table_name`), so every attempt of the run finds the
one an earlier attempt left. Its comment (`COMMENT ON TABLE`, read back with `obj_description` on
PostgreSQL and on Redshift alike) carries `staging.stage_mark()`: the export and the creation time.
Only marked tables of the export, older than any attempt of a run lives, are ever dropped.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from batchexports.core.run import ExportRun
from batchexports.destinations.warehouse import staging
from batchexports.destinations.warehouse.sql_kit.identifiers import MAX_IDENTIFIER_BYTES, qualified


def stage_table_name(run: ExportRun, table: str) -> str:
    """`<table>_stage_<hash of the run's identity>`: the same for every attempt of the run, short enough
    for PostgreSQL's 63 bytes with a segment number (`_<n>`, up to 9999) after it."""
    identity = "|".join(
        str(part)
        for part in (run.batch_export_id, run.team_id, run.model, run.data_interval_start, run.data_interval_end)
    )
    digest = hashlib.sha1(identity.encode(), usedforsecurity=False).hexdigest()[:12]
    suffix = f"_stage_{digest}"
    head = table.encode()[: MAX_IDENTIFIER_BYTES - len("_9999") - len(suffix)].decode("utf-8", "ignore")
    return head + suffix


STAGE_COMMENT = staging.STAGE_MARK
STALE_STAGE_AGE = staging.STALE_STAGE_AGE
stage_comment = staging.stage_mark


def stale_stages(cursor: Any, schema: str, export_id: str, older_than: dt.timedelta) -> list[str]:
    """Qualified names of the stage tables (segments) of `export_id` in `schema` created more than `older_than` ago.

    `obj_description` reads the table's comment on PostgreSQL and on Redshift alike."""
    cursor.execute(
        "SELECT c.relname, obj_description(c.oid, 'pg_class') FROM pg_class AS c "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relkind = 'r' "
        "AND left(obj_description(c.oid, 'pg_class'), %s) = %s",
        (schema, len(STAGE_COMMENT), STAGE_COMMENT),
    )
    return [
        qualified(schema, name)
        for name, comment in cursor.fetchall()
        if staging.is_stale(comment, export_id, older_than)
    ]
