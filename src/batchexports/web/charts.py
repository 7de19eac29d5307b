"""Per-day charts of a batch export as inline SVG: runs (successes, failures) and rows exported.

Drawn on the server, so the page needs no charting library and nothing from the network.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import QuerySet, Sum
from django.db.models.functions import TruncDate
from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

from batchexports.exports.app_metrics import daily_run_counts
from batchexports.exports.models import BatchExportRun

WIDTH, HEIGHT = 640, 200
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 12, 26


@dataclass(frozen=True)
class Series:
    label: str
    values: list[int]
    css_class: str


@dataclass(frozen=True)
class Chart:
    chart_id: str
    title: str
    summary: str
    series: list[Series]
    svg: SafeString


def _nice_max(value: int) -> int:
    if value <= 4:
        return max(value, 1)
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 2.5, 5, 10):
        candidate = int(step * magnitude)
        if candidate >= value:
            return candidate
    return value


def _number(value: int) -> str:
    for limit, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if value >= limit:
            return f"{value / limit:.1f}".rstrip("0").rstrip(".") + suffix
    return str(value)


def bar_chart(chart_id: str, title: str, dates: list[str], series: list[Series], unit: str) -> Chart:
    """Stacked bars, one per day, each with a tooltip; the y axis from 0 to a round maximum."""
    totals = [sum(s.values[i] for s in series) for i in range(len(dates))]
    top = _nice_max(max(totals, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(dates), 1)
    bar_w = max(slot * 0.7, 1)
    parts = [
        format_html(
            '<svg class="chart" id="{}" viewBox="0 0 {} {}" role="img" aria-labelledby="{}-title {}-desc">',
            chart_id,
            WIDTH,
            HEIGHT,
            chart_id,
            chart_id,
        ),
        format_html('<title id="{}-title">{}</title>', chart_id, title),
    ]
    summary = ", ".join(f"{s.label}: {_number(sum(s.values))}" for s in series) + f" over {len(dates)} days"
    parts.append(format_html('<desc id="{}-desc">{}</desc>', chart_id, summary))
    for fraction in (0, 0.5, 1) if top % 2 == 0 else (0, 1):
        y = TOP + plot_h * (1 - fraction)
        parts.append(
            format_html(
                '<line class="grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                '<text class="axis" x="{}" y="{}" text-anchor="end">{}</text>',
                LEFT,
                WIDTH - RIGHT,
                f"{y:.1f}",
                f"{y:.1f}",
                LEFT - 6,
                f"{y + 4:.1f}",
                _number(round(top * fraction)),
            )
        )
    for i, day in enumerate(dates):
        x = LEFT + slot * i + (slot - bar_w) / 2
        base: float = TOP + plot_h
        tooltip = f"{day}: " + ", ".join(f"{_number(s.values[i])} {s.label.lower()}" for s in series)
        parts.append(format_html('<g class="bar"><title>{}</title>', tooltip))
        # A transparent full-height target keeps the tooltip reachable on empty days.
        parts.append(
            format_html(
                '<rect class="hit" x="{}" y="{}" width="{}" height="{}"/>',
                f"{LEFT + slot * i:.1f}",
                TOP,
                f"{slot:.1f}",
                plot_h,
            )
        )
        for s in series:
            value = s.values[i]
            if not value:
                continue
            h = plot_h * value / top
            base -= h
            parts.append(
                format_html(
                    '<rect class="{}" x="{}" y="{}" width="{}" height="{}"/>',
                    s.css_class,
                    f"{x:.1f}",
                    f"{base:.1f}",
                    f"{bar_w:.1f}",
                    f"{h:.1f}",
                )
            )
        parts.append(mark_safe("</g>"))
    label_every = max(len(dates) // 5, 1)
    for i, day in enumerate(dates):
        if i % label_every and i != len(dates) - 1:
            continue
        if i != len(dates) - 1 and len(dates) - 1 - i < label_every / 2:
            continue  # keep the last label clear of its neighbour
        x = LEFT + slot * i + slot / 2
        anchor = "middle"
        if i == len(dates) - 1 and len(dates) > 1:
            x, anchor = LEFT + slot * (i + 1), "end"  # keep the last date inside the chart
        parts.append(
            format_html(
                '<text class="axis" x="{}" y="{}" text-anchor="{}">{}</text>', f"{x:.1f}", HEIGHT - 8, anchor, day[5:]
            )
        )
    parts.append(mark_safe("</svg>"))
    svg = mark_safe("".join(str(part) for part in parts))
    return Chart(chart_id, title, escape(summary), series, svg)


def rows_per_day(runs: QuerySet[BatchExportRun], start: dt.datetime, end: dt.datetime) -> dict[str, int]:
    """Rows of completed runs per day (UTC) they ran (were last updated), as the runs chart counts them."""
    found = (
        runs.filter(status=BatchExportRun.Status.COMPLETED, last_updated_at__gte=start, last_updated_at__lte=end)
        .annotate(day=TruncDate("last_updated_at", tzinfo=dt.UTC))
        .values("day")
        .annotate(rows=Sum("records_completed"))
    )
    return {row["day"].isoformat(): int(row["rows"] or 0) for row in found}


def _days(start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    day, last = start.astimezone(dt.UTC).date(), end.astimezone(dt.UTC).date()
    days = []
    while day <= last:
        days.append(day)
        day += dt.timedelta(days=1)
    return days


def export_charts(runs: QuerySet[BatchExportRun], now: dt.datetime, days: int = 30) -> list[Chart]:
    start = (now - dt.timedelta(days=days - 1)).astimezone(dt.UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    counts = daily_run_counts(runs, start, now)  # the API's app metrics, every day of the chart present
    calendar = _days(start, now)
    dates = [day.isoformat() for day in calendar]
    successes = [counts.get(day, (0, 0))[0] for day in calendar]
    failures = [counts.get(day, (0, 0))[1] for day in calendar]
    by_day = rows_per_day(runs, start, now)
    return [
        bar_chart(
            "chart-runs",
            f"Runs per day, last {days} days (UTC)",
            dates,
            [Series("Successes", successes, "ok"), Series("Failures", failures, "bad")],
            "runs",
        ),
        bar_chart(
            "chart-rows",
            f"Rows exported per day, last {days} days (UTC)",
            dates,
            [Series("Rows", [by_day.get(day, 0) for day in dates], "rows")],
            "rows",
        ),
    ]
