"""Object keys of exported files, named as PostHog's batch exports name them, and deterministic, so
re-exporting an interval replaces the same objects.

`prefix` is a template with `{year} {month} {day} {hour} {minute} {second}` (of the interval's END,
in UTC, as PostHog renders them), `{table}`, `{data_interval_start}` and `{data_interval_end}` (ISO
8601 with the UTC offset, e.g. `2024-05-01T10:00:00+00:00`). File names are
`{data_interval_start}-{data_interval_end}[-{n}].{ext}[.{codec}]`, parts numbered from 0 whenever
files are split, and a split export's manifest is `{data_interval_start}-{data_interval_end}_manifest.json`.

Stream compression (JSONLines, CSV) always shows in the name. Parquet compresses inside the file,
so it keeps `.parquet` unless `legacy_parquet_extension` asks for PostHog's older `.parquet.{codec}`.

Before these names, batchexports wrote `{start}-{end}` without the UTC offset and a manifest named
`{start}-{end}.manifest.json`; `legacy_base_name` and `legacy_manifest_name` name those, so that a
re-run can remove what an earlier run left under the old names.
"""

from __future__ import annotations

import datetime as dt
import string

from batchexports.core.run import ExportRun

TEMPLATE_FIELDS = frozenset(
    {"year", "month", "day", "hour", "minute", "second", "table", "data_interval_start", "data_interval_end"}
)
EXTENSIONS = {"JSONLines": "jsonl", "Parquet": "parquet", "CSV": "csv"}
# PostHog's codec suffixes (products/batch_exports/backend/temporal/destinations/constants.py).
CODEC_SUFFIXES = {"gzip": "gz", "snappy": "sz", "brotli": "br", "zstd": "zst", "lz4": "lz4"}
# What the name shows for an interval without a start (an export from the beginning of the data),
# as PostHog's `{data_interval_start}` template variable shows it.
NO_START = "START"


class InvalidPrefix(ValueError):
    pass


def _iso(moment: dt.datetime | None) -> str:
    """A bound as PostHog writes it into keys: `datetime.isoformat()` in UTC."""
    return NO_START if moment is None else moment.astimezone(dt.UTC).isoformat()


def _legacy_stamp(moment: dt.datetime) -> str:
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
    end = run.data_interval_end.astimezone(dt.UTC)
    values = {
        "year": f"{end:%Y}",
        "month": f"{end:%m}",
        "day": f"{end:%d}",
        "hour": f"{end:%H}",
        "minute": f"{end:%M}",
        "second": f"{end:%S}",
        "table": run.table,
        "data_interval_start": _iso(run.data_interval_start),
        "data_interval_end": _iso(run.data_interval_end),
    }
    return prefix.format(**values)


def legacy_render_prefix(prefix: str, run: ExportRun) -> str:
    """The prefix as batchexports rendered it before: date fields of the interval's START, bounds
    without the UTC offset. Only used to find files an earlier run wrote."""
    check_prefix(prefix)
    start = (run.data_interval_start or run.data_interval_end).astimezone(dt.UTC)
    values = {
        "year": f"{start:%Y}",
        "month": f"{start:%m}",
        "day": f"{start:%d}",
        "hour": f"{start:%H}",
        "minute": f"{start:%M}",
        "second": f"{start:%S}",
        "table": run.table,
        "data_interval_start": _legacy_stamp(start),
        "data_interval_end": _legacy_stamp(run.data_interval_end),
    }
    return prefix.format(**values)


def base_name(run: ExportRun) -> str:
    return f"{_iso(run.data_interval_start)}-{_iso(run.data_interval_end)}"


def legacy_base_name(run: ExportRun) -> str:
    """The base name batchexports used before it named files as PostHog does."""
    start = run.data_interval_start or run.data_interval_end
    return f"{_legacy_stamp(start)}-{_legacy_stamp(run.data_interval_end)}"


def join_key(prefix: str, name: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/{name}" if prefix else name


def codec_suffix(file_format: str, compression: str | None, legacy_parquet_extension: bool = False) -> str | None:
    """The suffix after the format's extension, if any (`gz` in `.jsonl.gz`)."""
    if compression is None:
        return None
    if file_format == "Parquet" and not legacy_parquet_extension:
        return None
    return CODEC_SUFFIXES[compression]


def file_name(
    run: ExportRun,
    file_format: str,
    compression: str | None,
    part: int | None,
    legacy_parquet_extension: bool = False,
) -> str:
    name = base_name(run) + (f"-{part}" if part is not None else "")
    name += "." + EXTENSIONS[file_format]
    suffix = codec_suffix(file_format, compression, legacy_parquet_extension)
    return name + (f".{suffix}" if suffix else "")


def manifest_name(run: ExportRun) -> str:
    return f"{base_name(run)}_manifest.json"


def legacy_manifest_name(run: ExportRun) -> str:
    return f"{legacy_base_name(run)}.manifest.json"
