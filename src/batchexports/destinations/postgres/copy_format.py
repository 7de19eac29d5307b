"""PostgreSQL's binary COPY format, rendered with Arrow kernels: no Python code runs per row.

A cleaned record batch (`warehouse/sql_kit/cleaning.py`) becomes the rows of a `COPY … FROM STDIN
(FORMAT BINARY)` stream, each column in the binary format of its stage column's type (`jsonb`
with its version byte, `text[]` with its array header, timestamps and dates from PostgreSQL's
epoch). Knows the column kinds, no connection.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0)
COPY_TRAILER = struct.pack(">h", -1)
_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970
_PG_EPOCH_DAYS = 10_957
_TEXT_OID = 25
_MAX_BATCH_BYTES = 1 << 29  # render larger batches in halves (the rows use 32-bit offsets)


def _as_string(array: pa.Array) -> pa.Array:
    return array if pa.types.is_string(array.type) else array.cast(pa.string())


def _fixed_binary(records: np.ndarray, valid: pa.Array | None = None) -> pa.Array:
    """A binary array over the rows of a numpy (structured) array, without copying; NULL where not `valid`."""
    count, width = len(records), records.dtype.itemsize
    data = pa.py_buffer(np.ascontiguousarray(records).view(np.uint8))
    offsets = pa.py_buffer(np.arange(0, (count + 1) * width, width, dtype=np.int32))
    bitmap = valid.buffers()[1] if valid is not None else None
    return pa.Array.from_buffers(pa.binary(), count, [bitmap, offsets, data])


def _valid(array: pa.Array) -> pa.Array | None:
    """The validity of `array` as a fresh boolean array (bitmap at offset 0), or None without nulls."""
    return pc.is_valid(array) if array.null_count else None


def _lengths(array: pa.Array, extra: int = 0) -> pa.Array:
    """Field lengths (int32, big-endian): the value's byte length + `extra`, or -1 for NULL."""
    lengths = pc.binary_length(array).fill_null(-1 - extra).to_numpy(zero_copy_only=False).astype(np.int32) + extra
    return _fixed_binary(lengths.astype(">i4"))


def _fixed_width_parts(values: np.ndarray, code: str, array: pa.Array) -> list[pa.Array]:
    valid = _valid(array)
    width = np.dtype(code).itemsize
    lengths = np.full(len(values), width, ">i4")
    if valid is not None:
        lengths[~valid.to_numpy(zero_copy_only=False)] = -1
    return [_fixed_binary(lengths), _fixed_binary(values.astype(code), valid)]


def _numbers(array: pa.Array, kind: pa.DataType, fill: Any) -> np.ndarray:
    return array.cast(kind, safe=False).fill_null(fill).to_numpy(zero_copy_only=False)


def _text_array_payload(array: pa.Array) -> pa.Array:
    """list<string> as the payload of `text[]` fields: a one-dimensional array header, then the elements."""
    offsets = array.offsets
    start = offsets[0].as_py()
    values = array.values.slice(start, offsets[-1].as_py() - start).cast(pa.binary())
    elements = pc.binary_join_element_wise(_lengths(values), values, b"", null_handling="replace")
    relative = pc.subtract(offsets, pa.scalar(start, pa.int32()))
    joined = pc.binary_join(pa.ListArray.from_arrays(relative, elements), b"")
    counts = np.diff(relative.to_numpy()).astype(np.int32)
    header = np.empty(len(array), np.dtype([(n, ">i4") for n in ("ndim", "flags", "oid", "length", "lower")]))
    header["ndim"], header["flags"], header["oid"], header["length"], header["lower"] = 1, 0, _TEXT_OID, counts, 1
    empty = pa.scalar(struct.pack(">iii", 0, 0, _TEXT_OID), pa.binary())
    headers = pc.if_else(pa.array(counts == 0), empty, _fixed_binary(header))
    payload = pc.binary_join_element_wise(headers, joined, b"")
    return pc.if_else(array.is_valid(), payload, pa.scalar(None, pa.binary())) if array.null_count else payload


def binary_parts(array: pa.Array, kind: str) -> list[pa.Array]:
    """The COPY fields of one cleaned column, as pieces to concatenate row by row (a NULL piece is empty):
    the field's length (int32, big-endian, -1 for NULL), then its bytes in the stage column's binary format."""
    if kind in ("json", "text"):
        payload = _as_string(array).cast(pa.binary())
        if kind == "text":
            return [_lengths(payload), payload]
        version = _fixed_binary(np.ones(len(payload), np.uint8), _valid(payload))  # jsonb's format version 1
        return [_lengths(payload, extra=1), version, payload]
    if kind == "int":
        return _fixed_width_parts(_numbers(array, pa.int64(), 0), ">i8", array)
    if kind == "float":
        return _fixed_width_parts(_numbers(array, pa.float64(), 0.0), ">f8", array)
    if kind == "bool":
        return _fixed_width_parts(array.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint8), "u1", array)
    if kind in ("timestamptz", "timestamp"):
        unit = pa.timestamp("us", tz=array.type.tz)
        micros = array.cast(unit, safe=False).cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
        return _fixed_width_parts(micros - _PG_EPOCH_US, ">i8", array)
    if kind == "date":
        days = array.cast(pa.date32()).cast(pa.int32()).fill_null(0).to_numpy(zero_copy_only=False)
        return _fixed_width_parts(days - _PG_EPOCH_DAYS, ">i4", array)
    if kind == "list":
        payload = _text_array_payload(array)
        return [_lengths(payload), payload]
    raise ValueError(f"no binary encoding for {kind}")


def encode_copy_rows(batch: pa.RecordBatch, kinds: Sequence[str]) -> list[memoryview]:
    """The rows of a cleaned batch in PostgreSQL's binary COPY format (without signature and trailer).

    Every column becomes zero-copy pieces (lengths, version bytes, values); one element-wise join
    copies them, row by row, into the stream's bytes.
    """
    if batch.nbytes > _MAX_BATCH_BYTES and batch.num_rows > 1:
        half = batch.num_rows // 2
        return encode_copy_rows(batch.slice(0, half), kinds) + encode_copy_rows(batch.slice(half), kinds)
    parts = [part for i, kind in enumerate(kinds) for part in binary_parts(batch.column(i), kind)]
    count = pa.scalar(struct.pack(">h", len(kinds)), pa.binary())
    rows = pc.binary_join_element_wise(count, *parts, b"", null_handling="replace", null_replacement=b"")
    offsets = np.frombuffer(rows.buffers()[1], np.int32, len(rows) + 1, rows.offset * 4)
    return [memoryview(rows.buffers()[2])[offsets[0] : offsets[-1]]]
