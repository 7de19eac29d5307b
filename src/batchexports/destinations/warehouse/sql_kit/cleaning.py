"""Values cleaned for a PostgreSQL-family server, with Arrow kernels (no Python code runs per row).

NUL characters are removed from text and JSON (PostgreSQL stores neither a NUL byte in `text` nor
`\\u0000` in `jsonb`), escaped lone UTF-16 surrogates are removed from JSON (`jsonb` refuses them),
and bytes that are not UTF-8 become U+FFFD. Knows column kinds (`dialect.column_kind`), no server.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# Escapes in JSON text that `jsonb` refuses: `\u0000`, and UTF-16 surrogates that are not a
# high-low pair. One left-to-right pass over the escapes: an escaped backslash (kept, so that
# `\\u0000` stays text) and a valid pair (kept) are consumed as units, anything else matched
# (a lone surrogate, `\u0000`) is removed. The cheap pattern finds the values worth the pass.
_SUSPECT_ESCAPE = r"\\u(?:0000|[dD][89a-fA-F])"
_FIX_ESCAPES = (
    r"(\\\\)"
    r"|(\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2})"
    r"|\\u(?:[dD][89a-fA-F][0-9a-fA-F]{2}|0000)"
)


def _value_bytes(array: pa.Array) -> np.ndarray:
    """The bytes of the values of a string or binary array (the part its offsets cover)."""
    buffers = array.buffers()
    if len(array) == 0 or buffers[2] is None:
        return np.empty(0, np.uint8)
    offsets = np.frombuffer(buffers[1], np.int32, len(array) + 1, array.offset * 4)
    return np.frombuffer(buffers[2], np.uint8)[offsets[0] : offsets[-1]]


def _valid_utf8(array: pa.Array) -> pa.Array:
    """`array` as a string array; values that are not UTF-8 are repaired (rare, so value by value)."""
    try:
        if pa.types.is_string(array.type):
            array.validate(full=True)
            return array
        return array.cast(pa.string())  # binary or large types: the cast checks UTF-8
    except pa.ArrowInvalid:
        raw = array.cast(pa.binary(), safe=False).to_pylist()
        return pa.array([None if v is None else v.decode("utf-8", "replace") for v in raw], pa.string())


def clean_text(array: pa.Array) -> pa.Array:
    """A string array without NUL characters and with valid UTF-8 only."""
    array = _valid_utf8(array)
    values = _value_bytes(array)
    if values.size and values.min() == 0:
        array = pc.replace_substring(array, "\x00", "")
    return array


def clean_json(array: pa.Array) -> pa.Array:
    """`clean_text`, and JSON text without the `\\u0000` escapes and lone surrogates `jsonb` refuses."""
    array = clean_text(array)
    values = _value_bytes(array)
    if not values.size or not (values == ord("\\")).any():  # no escape at all: a single pass of numpy
        return array
    suspect = pc.fill_null(pc.match_substring_regex(array, _SUSPECT_ESCAPE), False)
    if not pc.any(suspect).as_py():
        return array
    fixed = pc.replace_substring_regex(array.filter(suspect), _FIX_ESCAPES, r"\1\2")
    return pc.replace_with_mask(array, suspect, fixed)


def clean_column(array: pa.Array, kind: str) -> pa.Array:
    if kind == "json":
        return clean_json(array)
    if kind == "text":
        return clean_text(array)
    if kind == "list":
        return _clean_list(array)
    return array


def _clean_list(array: pa.Array) -> pa.Array:
    if not pa.types.is_list(array.type):
        array = array.cast(pa.list_(pa.string()))
    offsets = array.offsets
    start = offsets[0].as_py()
    values = clean_text(array.values.slice(start, offsets[-1].as_py() - start))
    relative = pc.subtract(offsets, pa.scalar(start, pa.int32()))
    mask = array.is_null() if array.null_count else None
    return pa.ListArray.from_arrays(relative, values, mask=mask)
