"""How the web page shows values: destination targets, sizes, durations, statuses, times."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from batchexports.destinations import registry

ACTIVE_STATUSES = ("Starting", "Running")
NONE = "\u2013"  # an en dash, for a value that is not there
DASH = " \u2013 "  # between the ends of a range
STATUS_CLASSES = {
    "Completed": "ok",
    "Failed": "bad",
    "FailedBilling": "bad",
    "TimedOut": "bad",
    "Terminated": "bad",
    "FailedRetryable": "warn",
    "Running": "active",
    "Starting": "pending",
    "Cancelled": "muted",
    "ContinuedAsNew": "muted",
}


def destination_label(destination_type: str) -> str:
    try:
        return registry.get(destination_type).label
    except KeyError:
        return destination_type


def _join(*parts: Any, sep: str = ".") -> str:
    return sep.join(str(part) for part in parts if part not in (None, ""))


def destination_target(destination_type: str, config: Mapping[str, Any] | None) -> str:
    """Where a destination writes, from its public config (secrets are never part of it)."""
    c = dict(config or {})
    if destination_type in ("S3", "AwsS3", "S3Compatible"):
        return "s3://" + _join(c.get("bucket_name"), c.get("prefix"), sep="/")
    if destination_type == "AzureBlob":
        return _join(c.get("container_name"), c.get("prefix"), sep="/")
    if destination_type == "File":
        return _join(c.get("path"), c.get("prefix"), sep="/")
    if destination_type in ("Postgres", "Redshift"):
        server = _join(c.get("host"), c.get("port"), sep=":")
        return f"{server}/{c.get('database', '')} · {_join(c.get('schema'), c.get('table_name'))}"
    if destination_type == "Snowflake":
        return f"{c.get('account', '')} · {_join(c.get('database'), c.get('schema'), c.get('table_name'))}"
    if destination_type == "BigQuery":
        return _join(c.get("project_id"), c.get("dataset_id"), c.get("table_id"))
    if destination_type == "Databricks":
        return f"{c.get('server_hostname', '')} · {_join(c.get('catalog'), c.get('schema'), c.get('table_name'))}"
    if destination_type == "HTTP":
        return str(c.get("url", ""))
    for key in ("bucket_name", "container_name", "path", "url", "host", "table_name"):
        if c.get(key):
            return str(c[key])
    return ""


def filesize(value: int | None) -> str:
    if value is None:
        return NONE
    size = float(value)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{value} B"


def duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None or end is None:
        return NONE
    seconds = max((end - start).total_seconds(), 0)
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def when(value: dt.datetime | None) -> str:
    """A moment in UTC, to the minute (seconds when they are not zero)."""
    if value is None:
        return NONE
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S" if value.second else "%Y-%m-%d %H:%M")


def interval_text(start: dt.datetime | None, end: dt.datetime | None) -> str:
    if start is None:
        return f"until {when(end)}"
    if end is not None and start.astimezone(dt.UTC).date() == end.astimezone(dt.UTC).date():
        return f"{when(start)}{DASH}{when(end)[11:]}"
    return f"{when(start)}{DASH}{when(end)}"


def rows(value: int | None) -> str:
    return NONE if value is None else f"{value:,}"


def backfill_records(total: int | None, status: str) -> str:
    """A backfill's `total_records_count`: the source's estimate while it runs, what it exported once ended."""
    if total is None:
        return "records: counting…" if status in ACTIVE_STATUSES else "records: unknown"
    if status in ACTIVE_STATUSES:
        return f"about {total:,} records to export"
    return f"{total:,} records exported"


def attempts(runs: Any) -> dict[Any, int]:
    """Run id -> which execution of its interval it is (1 for the first), among `runs`: an interval
    exported again (a retry, a second backfill) has a row per execution."""
    numbered: dict[Any, int] = {}
    seen: dict[tuple[Any, Any], int] = {}
    for run in sorted(runs, key=lambda r: r.created_at):
        key = (run.data_interval_start, run.data_interval_end)
        seen[key] = seen.get(key, 0) + 1
        numbered[run.id] = seen[key]
    return numbered


def status_class(status: str) -> str:
    return STATUS_CLASSES.get(status, "muted")


def run_title(run: Any) -> str:
    """The hover text of a run's square: its interval, status and rows."""
    interval = interval_text(run.data_interval_start, run.data_interval_end)
    return f"{interval} UTC · {run.status} · {rows(run.records_completed)} rows"
