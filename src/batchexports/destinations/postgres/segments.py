"""The stage segments of a PostgreSQL run: loaders COPY into `<stage>_<n>` tables, a merger merges
each one committed into the table while the next ones load.

A loader (`SegmentCopySession`, one connection) cleans its batch, renders it to the binary COPY
format (`copy_format.py`) and sends it with `COPY … FROM STDIN (FORMAT BINARY)` into an UNLOGGED
segment it created in the same transaction; every `segment_bytes` it commits the segment and
starts the next one. The `Merger` thread merges each committed segment on the run's connection,
in one transaction that stays open for the whole run.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from batchexports.destinations.postgres.copy_format import COPY_SIGNATURE, COPY_TRAILER, encode_copy_rows
from batchexports.destinations.warehouse.sql_kit.cleaning import clean_column
from batchexports.destinations.warehouse.sql_kit.identifiers import ident, literal, qualified
from batchexports.destinations.warehouse.sql_kit.loading import LoadSession
from batchexports.destinations.warehouse.sql_kit.plan import LoadPlan
from batchexports.destinations.warehouse.sql_kit.stages import stage_comment

if TYPE_CHECKING:
    from batchexports.destinations.postgres.sink import PostgresSink


class Segments:
    """The stage segments of one run: `<stage>_<n>`, created by loader sessions and merged as they commit."""

    def __init__(self, plan: LoadPlan):
        self._plan = plan
        self._lock = threading.Lock()
        self.created: list[str] = []  # qualified names, in the order they were created
        self.committed: queue.Queue[str | None] = queue.Queue()

    def new(self) -> str:
        with self._lock:
            name = qualified(self._plan.schema, f"{self._plan.stage_name}_{len(self.created)}")
            self.created.append(name)
            return name


class SegmentCopySession(LoadSession):
    """`COPY segment FROM STDIN (FORMAT BINARY)` over one connection, a new segment every `segment_bytes`.

    Each segment is created and loaded in one transaction, then committed and handed to the merger.
    """

    def __init__(self, sink: PostgresSink, plan: LoadPlan, segments: Segments):
        self._sink = sink
        self._segments = segments
        self._kinds = [c.kind for c in plan.stage_columns]
        self._names = plan.stage_names
        self._create = ", ".join(f"{ident(c.name)} {c.ddl}" for c in plan.stage_columns)
        self._columns = ", ".join(ident(name) for name in self._names)
        self._connection = sink.connect()
        self._segment: str | None = None
        self._context: Any = None
        self._copy: Any = None
        self._bytes = 0

    def _start_segment(self) -> None:
        segment = self._segments.new()
        with self._sink.translated("creating a stage table"):
            cursor = self._connection.cursor()
            cursor.execute(f"{self._sink.dialect.stage_prefix} {segment} ({self._create})")
            cursor.execute(f"COMMENT ON TABLE {segment} IS {literal(stage_comment(self._sink.export_id))}")
            self._context = cursor.copy(f"COPY {segment} ({self._columns}) FROM STDIN (FORMAT BINARY)")
            self._copy = self._context.__enter__()
            self._copy.write(COPY_SIGNATURE)
        self._segment, self._bytes = segment, 0

    def _finish_segment(self) -> None:
        with self._sink.translated("loading rows into a stage table"):
            self._copy.write(COPY_TRAILER)
            self._context.__exit__(None, None, None)
            self._connection.commit()
        self._copy = self._context = None
        self._segments.committed.put(self._segment)
        self._segment = None

    def send(self, batch: pa.RecordBatch) -> int:
        columns = [clean_column(batch.column(name), kind) for name, kind in zip(self._names, self._kinds, strict=True)]
        chunks = encode_copy_rows(pa.RecordBatch.from_arrays(columns, self._names), self._kinds)
        if self._copy is None:
            self._start_segment()
        with self._sink.translated("loading rows into a stage table"):
            for chunk in chunks:
                self._copy.write(chunk)
        sent = sum(chunk.nbytes for chunk in chunks)
        self._bytes += sent
        if self._bytes >= self._sink.segment_bytes:
            self._finish_segment()
        return sent

    def finish(self) -> None:
        if self._copy is not None:
            self._finish_segment()
        self._connection.close()

    def abort(self) -> None:
        if self._context is not None:
            with contextlib.suppress(BaseException):
                self._context.__exit__(RuntimeError, RuntimeError("the load was stopped"), None)
        with contextlib.suppress(BaseException):
            self._connection.rollback()
        with contextlib.suppress(BaseException):
            self._connection.close()


class Merger:
    """Merges committed segments into the table on the run's connection, in one open transaction,
    while the loaders go on loading the next ones."""

    def __init__(self, sink: PostgresSink, connection: Any, plan: LoadPlan, segments: Segments):
        self._sink, self._connection, self._plan, self._segments = sink, connection, plan, segments
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="batchexports-merge", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        try:
            cursor = self._connection.cursor()
            while (segment := self._segments.committed.get()) is not None:
                with self._sink.translated(f"merging the loaded rows into '{self._plan.schema}.{self._plan.table}'"):
                    cursor.execute(self._sink.dialect.segment_insert(self._plan, segment))
        except BaseException as error:  # handed to the calling thread
            self.error = error

    def raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def close(self) -> None:
        """Merge what is left and wait; raise the merger's error."""
        self._segments.committed.put(None)
        self._thread.join()
        self.raise_if_failed()

    def abort(self) -> None:
        self._segments.committed.put(None)
        self._thread.join(timeout=60)
