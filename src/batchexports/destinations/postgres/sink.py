"""The PostgreSQL sink: the rows of one run into a table, as if the run happened exactly once.

How one run is loaded (the skeleton is `warehouse/sql_kit/sink.py`, shared with Redshift):

1. One connection (the run's) checks the schema, creates the table when it is missing (PostHog's
   columns, `jsonb` for JSON, a primary key for persons and sessions), reads the columns the table
   has (only those are written) and drops stage tables an earlier attempt of the run left.
2. The calling thread reads the record batches from the events store and hands them to a small
   pool of loader threads (`LOAD_CONNECTIONS`) through a bounded queue (peak memory is a few
   batches). A loader cleans its batch and renders it to PostgreSQL's binary COPY format with
   Arrow kernels (`copy_format.py`), then COPYs it into an UNLOGGED stage segment
   (`<table>_stage_<run hash>_<n>`); every `SEGMENT_BYTES` it commits the segment and starts the
   next one. A merger thread merges each committed segment into the table on the run's
   connection, in one transaction that stays open for the whole run (`segments.py`). So reading,
   rendering, the server's parsing (on several backends) and the merge all overlap. Progress is
   reported and cancellation checked in the calling thread, between batches.
3. Merging, inside that one transaction, is `dialect.py`'s: events inserted then the rows they
   replace deleted, persons and sessions upserted with `ON CONFLICT`, the newer version winning.
   Then the segments are dropped and the transaction commits: readers see all of the run or none
   of it.

Values are cleaned on the way (`warehouse/sql_kit/cleaning.py`), errors are translated once
(`warehouse/sql_kit/errors.py`) and every connection has bounded waits and the stall hook
(`warehouse/sql_kit/connection.py`). No message contains the password.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pyarrow as pa

from batchexports.core.run import CancelToken, Progress, ProgressCallback
from batchexports.destinations.postgres.dialect import PostgresDialect
from batchexports.destinations.postgres.segments import Merger, SegmentCopySession, Segments
from batchexports.destinations.warehouse.sql_kit.identifiers import qualified
from batchexports.destinations.warehouse.sql_kit.loading import ParallelLoader
from batchexports.destinations.warehouse.sql_kit.plan import LoadPlan
from batchexports.destinations.warehouse.sql_kit.sink import PgFamilySink
from batchexports.destinations.warehouse.sql_kit.stages import STALE_STAGE_AGE, stale_stages

logger = logging.getLogger(__name__)

LOAD_CONNECTIONS = 2  # COPY streams into the stage at once
SEGMENT_BYTES = 32 * 1024 * 1024  # of COPY data per stage segment, merged while the next ones load


class PostgresSink(PgFamilySink):
    """Loads record batches into a PostgreSQL table; see the module docstring.

    The stage is a series of segments, each committed by a loader once it holds `segment_bytes`
    of rows; a merger thread merges every committed segment into the table in the run's one
    transaction while the loaders go on, so the merge overlaps the load.
    """

    dialect_class = PostgresDialect
    dialect: PostgresDialect

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        load_connections: int = LOAD_CONNECTIONS,
        connector: Callable[..., Any] | None = None,
        segment_bytes: int = SEGMENT_BYTES,
    ):
        super().__init__(config, load_connections=load_connections, connector=connector)
        self.segment_bytes = segment_bytes
        self._segments: Segments | None = None  # of the export under way (a sink exports one run at a time)

    def create_stage(self, cursor: Any, plan: LoadPlan) -> None:
        """Drop the segments an earlier attempt of this run left (they are created while loading), and
        those of this export's other intervals older than any attempt lives (runs killed and never retried)."""
        prefix = f"{plan.stage_name}_"
        cursor.execute(
            "SELECT c.relname FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace "
            "WHERE n.nspname = %s AND c.relkind = 'r' AND left(c.relname, %s) = %s",
            (plan.schema, len(prefix), prefix),
        )
        stale = [qualified(plan.schema, row[0]) for row in cursor.fetchall()]
        if self.export_id:
            stale += [
                name for name in stale_stages(cursor, plan.schema, self.export_id, STALE_STAGE_AGE) if name not in stale
            ]
        if stale:
            cursor.execute(f"DROP TABLE IF EXISTS {', '.join(stale)}")

    def drop_stage(self, connection: Any, plan: LoadPlan) -> None:
        created = self._segments.created if self._segments else []
        if not created:
            return
        try:
            connection.execute(f"DROP TABLE IF EXISTS {', '.join(created)}")
            connection.commit()
        except Exception:  # the next attempt drops them first
            logger.warning("could not drop the stage tables of %s", plan.stage_name)

    def load(
        self,
        connection: Any,
        plan: LoadPlan,
        batches: Iterable[pa.RecordBatch],
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> tuple[int, int]:
        segments = self._segments = Segments(plan)
        loader = ParallelLoader(lambda: SegmentCopySession(self, plan, segments), self.load_connections)
        merger = Merger(self, connection, plan, segments)
        try:
            for batch in batches:
                if cancel:
                    cancel.raise_if_cancelled()
                merger.raise_if_failed()
                loader.put(batch.select(plan.stage_names))
                if progress:
                    rows, sent = loader.progress()
                    progress(Progress(records_completed=rows, bytes_exported=sent))
            if cancel:
                cancel.raise_if_cancelled()
            loader.close()
            merger.close()
        except BaseException:
            loader.abort()
            merger.abort()
            raise
        return loader.progress()

    def merge(self, connection: Any, plan: LoadPlan) -> None:
        created = self._segments.created if self._segments else []
        cursor = connection.cursor()
        for statement in self.dialect.final_statements(plan, created):
            cursor.execute(statement)
        connection.commit()
        self._segments = None
