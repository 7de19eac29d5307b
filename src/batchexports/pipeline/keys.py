"""Object keys of exported files: deterministic, so re-exporting an interval replaces the same objects.

`prefix` is a template with `{year} {month} {day} {hour} {minute} {second}` (of the interval's
start), `{table}`, `{data_interval_start}` and `{data_interval_end}`; names are
`{data_interval_start}-{data_interval_end}[-{n}].{ext}[.{codec}]`.
"""

from __future__ import annotations

import datetime as dt
import string

from batchexports.pipeline.run import ExportRun

TEMPLATE_FIELDS = frozenset(
    {"year", "month", "day", "hour", "minute", "second", "table", "data_interval_start", "data_interval_end"}
)
EXTENSIONS = {"JSONLines": "jsonl", "Parquet": "parquet", "CSV": "csv"}
# Stream compression shows in the name; Parquet compresses inside the file and keeps `.parquet`.
CODEC_SUFFIXES = {"gzip": "gz", "brotli": "br", "zstd": "zst"}


class InvalidPrefix(ValueError):
    pass


def _stamp(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def template_fields(prefix: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(prefix) if name}


def check_prefix(prefix: str) -> None:
    unknown = template_fields(prefix) - TEMPLATE_FIELDS
    if unknown:
        raise InvalidPrefix(
            f"Unknown placeholder(s) {', '.join('{' + u + '}' for u in sorted(unknown))} in prefix; "
            f"use {', '.join('{' + f + '}' for f in sorted(TEMPLATE_FIELDS))}."
        )


def render_prefix(prefix: str, run: ExportRun) -> str:
    check_prefix(prefix)
    start = run.data_interval_start or run.data_interval_end
    values = {
        "year": f"{start:%Y}",
        "month": f"{start:%m}",
        "day": f"{start:%d}",
        "hour": f"{start:%H}",
        "minute": f"{start:%M}",
        "second": f"{start:%S}",
        "table": run.table,
        "data_interval_start": _stamp(start),
        "data_interval_end": _stamp(run.data_interval_end),
    }
    return prefix.format(**values)


def base_name(run: ExportRun) -> str:
    start = run.data_interval_start or run.data_interval_end
    return f"{_stamp(start)}-{_stamp(run.data_interval_end)}"


def join_key(prefix: str, name: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def file_name(run: ExportRun, file_format: str, compression: str | None, part: int | None) -> str:
    name = base_name(run) + (f"-{part}" if part is not None else "")
    name += "." + EXTENSIONS[file_format]
    if compression and file_format != "Parquet":
        name += "." + CODEC_SUFFIXES[compression]
    return name


def manifest_name(run: ExportRun) -> str:
    return f"{base_name(run)}.manifest.json"
