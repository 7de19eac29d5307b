"""`export()`: the rows of one run, from the events store to the destination, as Arrow batches.

Callable without Temporal: the engine wraps it in an activity and heartbeats with the progress
callback. A run with no rows finishes without touching the destination. The sink runs under the
no-progress watchdog (`watchdog.py`): a destination that stops answering fails the run retryably.
The rows are tallied into the run's receipt (`core/receipts.py`) as the sink takes them.
A run reads only once the store's watermark has passed the interval's end, so that no write can
still commit a row into an interval already read (`events/commit_clock.py`).
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
from collections.abc import Iterator

import pyarrow as pa

from batchexports.core import receipts, watchdog
from batchexports.core.errors import NonRetryableError, RetryableError
from batchexports.core.run import CancelToken, ExportResult, ExportRun, ProgressCallback
from batchexports.destinations import registry
from batchexports.events.filters import InvalidFilters, parse_filters
from batchexports.events.hogql import InvalidHogQL, parse_query
from batchexports.events.store import DEFAULT_BATCH_ROWS, EventsStore, ModelQuery
from batchexports.events.stores import get_store


def model_query(run: ExportRun, batch_rows: int = DEFAULT_BATCH_ROWS) -> ModelQuery:
    config = run.destination_config
    include = tuple(config.get("include_events") or ())
    exclude = tuple(config.get("exclude_events") or ())
    hogql = None
    try:
        if run.hogql_query and run.model == "events":
            hogql = parse_query(run.hogql_query)
        filters = tuple(parse_filters(list(run.filters), run.model)) if run.filters else ()
    except (InvalidHogQL, InvalidFilters) as error:  # validated by the API; a stored one may predate a rule
        raise NonRetryableError(f"The export's query or filters are no longer valid: {error}") from None
    return ModelQuery(
        model=run.model,
        team_id=run.team_id,
        start=run.data_interval_start,
        end=run.data_interval_end,
        include_events=tuple(include),
        exclude_events=tuple(exclude),
        batch_rows=batch_rows,
        hogql=hogql,
        filters=filters,
    )


# A write holds the watermark back only while it commits (milliseconds): the wait is short or none.
WATERMARK_POLL_SECONDS = 0.2
WATERMARK_WAIT_SECONDS = 30.0


def wait_for_watermark(
    store: EventsStore,
    end: dt.datetime,
    poll: float | None = None,
    limit: float | None = None,
) -> None:
    """Return once every write with `_inserted_at` before `end` has committed; retryable after `limit`."""
    poll = WATERMARK_POLL_SECONDS if poll is None else poll
    limit = WATERMARK_WAIT_SECONDS if limit is None else limit
    deadline = time.monotonic() + limit
    while (mark := store.watermark()) < end:
        # An interval that ends beyond the wait (not over yet) fails at once rather than after it.
        if time.monotonic() >= deadline or end - mark > dt.timedelta(seconds=limit):
            raise RetryableError(
                f"The events store has not committed every write before {end.isoformat()} after {limit:g} s "
                f"(its watermark is {mark.isoformat()}): the interval is read once they have"
            )
        time.sleep(poll)


def _non_empty(reader: pa.RecordBatchReader) -> Iterator[pa.RecordBatch]:
    return (batch for batch in reader if batch.num_rows)


def export(
    run: ExportRun,
    store: EventsStore | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelToken | None = None,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    count_total: bool = True,
) -> ExportResult:
    spec = registry.get(run.destination_type)
    if not spec.reads_source:  # NoOp: nothing is read, nothing is exported, the run completes
        return ExportResult(0, 0, (), 0)
    store = store or get_store()
    query = model_query(run, batch_rows)
    wait_for_watermark(store, query.end)
    total = store.count(query) if count_total else None
    reader = store.read(query)
    batches = _non_empty(reader)
    first = next(batches, None)
    if first is None:
        return ExportResult(0, 0, (), total, receipts.EMPTY)
    sink = spec.sink_factory(run.destination_config)
    cancel = cancel or CancelToken()  # the watchdog stops a stalled export through it
    tally = receipts.ReceiptTally(run.model)
    with watchdog.watching(cancel) as dog:
        rows: Iterator[pa.RecordBatch] = tally.counting(itertools.chain([first], batches))
        if dog is not None:
            rows, progress = dog.batches(rows), dog.progress_callback(progress)
        try:
            result = sink.export(run, rows, reader.schema, progress, cancel)
        finally:
            tally.close()
    return ExportResult(result.records, result.bytes_exported, result.files, total, tally.receipt)
