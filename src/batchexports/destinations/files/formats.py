"""The file formats and compressions the format writers support.

The API validates `file_format`/`compression` against this catalogue, so what a user can
configure is exactly what the writers can produce.
"""

from __future__ import annotations

FILE_FORMATS: dict[str, tuple[str, ...]] = {
    # Parquet compresses its pages internally; the others compress the whole stream.
    "Parquet": ("zstd", "lz4", "snappy", "gzip", "brotli"),
    "JSONLines": ("gzip", "brotli", "zstd"),
    "CSV": ("gzip", "brotli", "zstd"),
}

DEFAULT_FILE_FORMAT = "JSONLines"


def supported_compressions(file_format: str) -> tuple[str, ...]:
    return FILE_FORMATS.get(file_format, ())
