"""The skeleton both PostgreSQL-protocol sinks share: one run loaded into a table, as if it ran once.

`PgFamilySink.export` connects (bounded waits, TLS, the stall hook), checks the schema, creates
the table when it is missing (with a primary key for persons and sessions), refuses a table the
merge cannot work on, plans the columns (`plan.plan_load`) and then leaves to the sink how the
rows reach a stage and how the stage is merged (`create_stage`, `load`, `merge`, `drop_stage`): the
PostgreSQL sink pipelines COPY segments with their merge, the Redshift sink loads one stage table
by INSERT or COPY from S3 and merges it at the end. Any error is translated once (`translated`);
on failure the run's transaction is rolled back and its stage dropped, so readers see all of a run
or none of it. psycopg is imported only when a connection is opened.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import pyarrow as pa

from batchexports.core import watchdog
from batchexports.core.errors import DestinationError, NonRetryableError
from batchexports.core.model_rules import MODEL_RULES
from batchexports.core.run import CancelToken, ExportRun, Progress, ProgressCallback
from batchexports.destinations.base import SinkResult
from batchexports.destinations.warehouse.sql_kit import connection as connections
from batchexports.destinations.warehouse.sql_kit.dialect import SqlDialect
from batchexports.destinations.warehouse.sql_kit.errors import classify, classify_connect
from batchexports.destinations.warehouse.sql_kit.identifiers import ident, qualified
from batchexports.destinations.warehouse.sql_kit.plan import LoadPlan, plan_load
from batchexports.destinations.warehouse.sql_kit.stages import stale_stages

logger = logging.getLogger(__name__)


class PgFamilySink(ABC):
    """Loads record batches into a table of a PostgreSQL-protocol server; see the module docstring."""

    dialect_class: type[SqlDialect]
    merges_without_unique_key = False  # Redshift merges by delete-then-insert, without ON CONFLICT
    statement_timeout_in_options = True  # Redshift takes no `options` at connect: it is SET instead

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        load_connections: int,
        connector: Callable[..., Any] | None = None,
    ):
        self.config = config
        self.dialect = self.dialect_class(config)
        self.load_connections = max(1, load_connections)
        self._connector = connector  # psycopg.connect unless a test passes another
        self._watchdog: watchdog.Watchdog | None = None  # of the export under way
        self.export_id: str | None = None  # of the export under way: named in its stage tables' comments
        self._sockets = connections.SocketGuard()  # duplicates of its connections' sockets, for the stall hook

    # connections

    def connection_options(self) -> dict[str, Any]:
        return connections.connection_options(
            self.config, statement_timeout_in_options=self.statement_timeout_in_options
        )

    def connect(self) -> Any:
        import psycopg

        try:
            connection = (self._connector or psycopg.connect)(**self.connection_options())
        except psycopg.Error as error:
            raise classify_connect(error, self.config, self.dialect.label) from None
        try:
            with self.translated("setting up the session"):
                connection.execute("SET TIME ZONE 'UTC'")
                if not self.statement_timeout_in_options:
                    connection.execute(f"SET statement_timeout TO {connections.STATEMENT_TIMEOUT_S * 1000}")
                connection.commit()
        except BaseException:
            connection.close()
            raise
        self._sockets.watch(connection, self._watchdog)
        return connection

    @contextlib.contextmanager
    def translated(self, action: str) -> Iterator[None]:
        """Raise what psycopg raises inside as a `RetryableError` or `NonRetryableError`."""
        try:
            yield
        except DestinationError:
            raise
        except Exception as error:
            import psycopg

            if not isinstance(error, psycopg.Error | OSError):
                raise
            raise classify(error, self.config, action, self.dialect.label) from None

    # the run

    def export(
        self,
        run: ExportRun,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> SinkResult:
        if run.model not in MODEL_RULES:
            raise NonRetryableError(f"{self.dialect.label} destinations cannot export the model '{run.model}'.")
        self._watchdog = watchdog.current()
        self.export_id = run.batch_export_id
        try:
            records, sent = self._export(run, batches, schema, progress, cancel)
        finally:
            self._watchdog = None
            self._sockets.release()
        if progress:
            progress(Progress(records_completed=records, bytes_exported=sent))
        logger.info("loaded %d %s rows into %s", records, run.model, self.config.get("table_name"))
        return SinkResult(records, sent)

    def _export(
        self,
        run: ExportRun,
        batches: Iterable[pa.RecordBatch],
        schema: pa.Schema,
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> tuple[int, int]:
        connection = self.connect()
        plan: LoadPlan | None = None
        try:
            plan = self.prepare(connection, run, schema)
            records, sent = self.load(connection, plan, batches, progress, cancel)
            if cancel:
                cancel.raise_if_cancelled()
            with (
                self.translated(f"merging the loaded rows into '{plan.schema}.{plan.table}'"),
                watchdog.patience(connections.STATEMENT_TIMEOUT_S + 60, self._watchdog),  # the server works, silently
            ):
                self.merge(connection, plan)
            plan = None  # the merge dropped the stage
        except BaseException:
            with contextlib.suppress(BaseException):
                connection.rollback()
            if plan is not None:
                self.drop_stage(connection, plan)
            raise
        finally:
            with contextlib.suppress(BaseException):
                connection.close()
        return records, sent

    def prepare(self, connection: Any, run: ExportRun, model_schema: pa.Schema) -> LoadPlan:
        """Check the schema, create the table if needed, plan the columns, create the stage table."""
        schema_name = str(self.config.get("schema") or "public")
        table = str(self.config["table_name"])
        rules = MODEL_RULES[run.model]
        with self.translated(f"checking the table '{schema_name}.{table}'"):
            cursor = connection.cursor()
            cursor.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema_name,))
            if not cursor.fetchall():
                raise NonRetryableError(
                    f"The schema '{schema_name}' does not exist in the database '{self.config.get('database')}': "
                    f"create it (CREATE SCHEMA {ident(schema_name)}), or fix schema."
                )
            targets = self.dialect.describe(cursor, schema_name, table)
            if targets is None:
                self.create_table(cursor, run.model, schema_name, table, model_schema)
                targets = self.dialect.describe(cursor, schema_name, table) or []
            needs_key = rules.upsert and not self.merges_without_unique_key
            if needs_key and set(rules.keys) not in self.dialect.unique_keys(cursor, schema_name, table):
                keys = ", ".join(rules.keys)
                raise NonRetryableError(
                    f"The table '{schema_name}.{table}' has no primary key on ({keys}), which exporting "
                    f"{run.model} needs to update rows in place: add it (ALTER TABLE "
                    f"{qualified(schema_name, table)} ADD PRIMARY KEY ({keys}), after removing duplicate rows), "
                    "or export into a new table, which the export creates with it."
                )
            plan = plan_load(self.dialect, run, schema_name, table, model_schema, targets)
            self.dialect.check_conversions(cursor, plan)
            self.create_stage(cursor, plan)
            connection.commit()
        return plan

    def create_table(self, cursor: Any, model: str, schema_name: str, table: str, model_schema: pa.Schema) -> None:
        columns = [f"{ident(name)} {ddl}" for name, ddl in self.dialect.table_ddl(model, model_schema)]
        rules = MODEL_RULES[model]
        if rules.upsert:
            columns.append(f"PRIMARY KEY ({', '.join(ident(k) for k in rules.keys)})")
        cursor.execute(f"CREATE TABLE IF NOT EXISTS {qualified(schema_name, table)} ({', '.join(columns)})")

    def drop_stale_stages(self, export_id: str, older_than: dt.timedelta) -> list[str]:
        """The start-up sweep of one export: drop its stage tables older than `older_than`."""
        schema = str(self.config.get("schema") or "public")
        connection = self.connect()
        try:
            with self.translated("dropping stale stage tables"):
                stale = stale_stages(connection.cursor(), schema, export_id, older_than)
                if stale:
                    connection.execute(f"DROP TABLE IF EXISTS {', '.join(stale)}")
                connection.commit()
            return stale
        finally:
            connection.close()

    # what each sink does its own way

    @abstractmethod
    def create_stage(self, cursor: Any, plan: LoadPlan) -> None:
        """Drop the stage an earlier attempt of this run left and this export's stale stages; create
        the stage (or leave that to the loaders), marked as this export's."""

    @abstractmethod
    def load(
        self,
        connection: Any,
        plan: LoadPlan,
        batches: Iterable[pa.RecordBatch],
        progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> tuple[int, int]:
        """Load `batches` into the stage; return (rows, bytes sent)."""

    @abstractmethod
    def merge(self, connection: Any, plan: LoadPlan) -> None:
        """Merge the stage into the table, drop the stage and commit, on the run's `connection`."""

    @abstractmethod
    def drop_stage(self, connection: Any, plan: LoadPlan) -> None:
        """After a failure: drop what the run staged (best effort; never raises)."""


def drop_stale_stages(sink: PgFamilySink, export_id: str, older_than: dt.timedelta) -> list[str]:
    """The start-up sweep of one export: drop its stage tables older than `older_than`."""
    return sink.drop_stale_stages(export_id, older_than)
