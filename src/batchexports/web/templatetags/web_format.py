"""Template filters of the web page (see `batchexports.web.display`)."""

from __future__ import annotations

from typing import Any

from django import template

from batchexports.web import display

register = template.Library()

register.filter("filesize", display.filesize)
register.filter("rows", display.rows)
register.filter("status_class", display.status_class)
register.filter("when", display.when)
register.filter("run_title", display.run_title)


@register.filter
def run_interval(run: Any) -> str:
    return display.interval_text(run.data_interval_start, run.data_interval_end)


@register.filter
def run_duration(run: Any) -> str:
    return display.duration(run.created_at, run.finished_at)


@register.filter
def is_active(status: str) -> bool:
    return status in display.ACTIVE_STATUSES


@register.filter
def iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z") if value else ""


@register.filter
def percent(progress: Any) -> int:
    if not progress:
        return 0
    return round(float(progress.get("progress") or 0) * 100)


@register.filter
def backfill_records(backfill: Any) -> str:
    return display.backfill_records(backfill.total_records_count, backfill.status)
