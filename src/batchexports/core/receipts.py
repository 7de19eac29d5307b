"""Receipts: the row count and an order-independent checksum of the identities of a run's rows.

A row's identity is its model's keys plus its version columns (`model_rules.py`): events the
uuid, persons and sessions their keys with their versions. Each identity is written as text
(integers in decimal, timestamps as microseconds since the epoch, NULL as `\\x00`, columns joined
by `\\x1f`), and the row's hash is the first 8 bytes of the text's MD5, read big-endian. The
checksum is the sum of the rows' hashes modulo 2**64: order-independent, and unlike XOR a doubled
row changes it. MD5 rather than DuckDB's `hash()`, whose values may change between DuckDB
versions: a receipt must still compare when a destination is read back later, and any SQL engine
can compute the same (`left(md5(identity), 16)`).

Vectorized over Arrow batches (pyarrow builds the text, DuckDB the digests, numpy the sum): no
per-row Python. Knows nothing of the pipeline or destinations, so a verify feature computes the
same over what it reads back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from batchexports.core.model_rules import MODEL_RULES

NULL_MARK = "\x00"
SEPARATOR = "\x1f"
_MASK = (1 << 64) - 1
# The first 8 bytes of the MD5, big-endian: the hex digest's first 16 digits.
_DIGESTS = "SELECT ('0x' || left(md5(identity), 16))::UBIGINT AS h FROM identities"


@dataclass(frozen=True)
class Receipt:
    rows: int
    checksum: int  # unsigned 64-bit

    @property
    def checksum_hex(self) -> str:
        return f"{self.checksum:016x}"

    def as_dict(self) -> dict[str, int | str]:
        return {"rows": self.rows, "checksum": self.checksum_hex}


EMPTY = Receipt(0, 0)


def identity_columns(model: str) -> tuple[str, ...]:
    rules = MODEL_RULES[model]
    return rules.keys + rules.versions


def _as_text(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    kind = column.type
    if pa.types.is_timestamp(kind):
        # The instant, whatever the unit or zone a reader gives it.
        column = pc.cast(pc.cast(column, pa.timestamp("us", tz=kind.tz)), pa.int64())
    elif pa.types.is_dictionary(kind):
        column = pc.cast(column, kind.value_type)
    return pc.cast(column, pa.large_string())


def identities(batch: pa.RecordBatch | pa.Table, model: str) -> pa.Array | pa.ChunkedArray:
    """Each row's identity as text (see the module docstring)."""
    names = identity_columns(model)
    missing = [name for name in names if name not in batch.schema.names]
    if missing:
        raise KeyError(f"the rows lack the identity column(s) {missing} of the {model} model")
    parts = [_as_text(batch.column(name)) for name in names]
    if len(parts) == 1:
        return pc.fill_null(parts[0], NULL_MARK)
    separator = pa.scalar(SEPARATOR, pa.large_string())
    return pc.binary_join_element_wise(*parts, separator, null_handling="replace", null_replacement=NULL_MARK)


class ReceiptTally:
    """Adds batches up into a receipt; one per run, used from one thread.

    Rows without their identity columns (a custom HogQL schema that leaves the uuid out) give no
    receipt: a count alone would claim a proof it cannot give.
    """

    def __init__(self, model: str):
        self.model = model
        self.rows = 0
        self.identified = model in MODEL_RULES
        self._sum = np.uint64(0)
        self._db: duckdb.DuckDBPyConnection | None = None

    def add(self, batch: pa.RecordBatch | pa.Table) -> None:
        if not batch.num_rows:
            return
        self.rows += batch.num_rows
        if not self.identified or not set(identity_columns(self.model)) <= set(batch.schema.names):
            self.identified = False
            return
        if self._db is None:
            self._db = duckdb.connect()
        identity = pa.table({"identity": identities(batch, self.model)})
        self._db.register("identities", identity)
        digests = self._db.sql(_DIGESTS).to_arrow_table()
        self._db.unregister("identities")
        hashes = digests.column("h").to_numpy()
        with np.errstate(over="ignore"):  # wrapping is the point: the sum is modulo 2**64
            self._sum = np.uint64(self._sum + hashes.sum(dtype=np.uint64))

    def counting(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        """`batches`, tallied as they pass."""
        for batch in batches:
            self.add(batch)
            yield batch

    @property
    def receipt(self) -> Receipt | None:
        return Receipt(self.rows, int(self._sum) & _MASK) if self.identified else None

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def receipt_of(batches: Iterable[pa.RecordBatch | pa.Table], model: str) -> Receipt | None:
    tally = ReceiptTally(model)
    try:
        for batch in batches:
            tally.add(batch)
        return tally.receipt
    finally:
        tally.close()
