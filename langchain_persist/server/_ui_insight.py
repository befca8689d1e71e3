"""What the viewer shows of search and statistics: hits with their matches marked, tiles, bar
charts over time, tables by agent and by tool.  Pure data, no HTTP, no HTML (see `_ui_views`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .._records import SearchHit, Stats, StatsRow
from ._ui_views import ms

CHART_WIDTH = 600  # the charts' viewBox
CHART_HEIGHT = 120
RANGES = {"24h": dt.timedelta(hours=24), "7d": dt.timedelta(days=7),
          "30d": dt.timedelta(days=30)}
HOURLY_UP_TO = dt.timedelta(days=2)  # longer ranges are charted by day


# -- search ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hit:
    """A search hit as the runs page lists it: its snippet cut into plain and matched pieces."""

    hit: SearchHit
    pieces: list[tuple[str, bool]]  # (text, whether it matched)


def hit(found: SearchHit) -> Hit:
    """The hit with its snippet split at its highlights (the template marks the matches)."""
    pieces: list[tuple[str, bool]] = []
    at = 0
    for start, end in sorted(found.highlights):
        start, end = max(start, at), min(end, len(found.snippet))
        if start >= end:
            continue
        if start > at:
            pieces.append((found.snippet[at:start], False))
        pieces.append((found.snippet[start:end], True))
        at = end
    if at < len(found.snippet):
        pieces.append((found.snippet[at:], False))
    return Hit(found, pieces)


# -- statistics ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tile:
    """One headline figure."""

    label: str
    value: str
    note: str = ""


@dataclass(frozen=True, slots=True)
class Bar:
    """One bucket's bar: where it is drawn, and what it says when pointed at."""

    x: float
    y: float
    width: float
    height: float
    title: str


@dataclass(frozen=True, slots=True)
class Chart:
    """A bar chart of one figure over time, drawn as inline SVG by the template."""

    name: str  # the CSS class: runs, failures, durations, tokens
    title: str
    summary: str  # what the chart shows, in words (its caption, for every reader)
    top: str  # the y axis's top label
    bars: list[Bar]
    first: str  # the x axis's labels
    last: str


def bucket_of(span: dt.timedelta) -> str:
    """``hour`` or ``day``: how a range is charted."""
    return "hour" if span <= HOURLY_UP_TO else "day"


def buckets(since: dt.datetime, until: dt.datetime, by: str) -> list[dt.datetime]:
    """Every bucket start from ``since`` to ``until`` (UTC), empty ones too."""
    step = dt.timedelta(hours=1) if by == "hour" else dt.timedelta(days=1)
    at = since.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    if by == "day":
        at = at.replace(hour=0)
    out = []
    while at < until:
        out.append(at)
        at += step
    return out


def tiles(totals: StatsRow) -> list[Tile]:
    """The range's headline figures."""
    stopped = (totals.completed or 0) + (totals.failed or 0) + (totals.interrupted or 0)
    return [
        Tile("Runs", f"{totals.runs or 0:,}",
             f"{totals.running:,} running" if totals.running else ""),
        Tile("Succeeded", percent(totals.success_rate), f"of {stopped:,} that stopped"),
        Tile("Failed", f"{totals.failed or 0:,}", percent(totals.failure_rate)),
        Tile("Interrupted", f"{totals.interrupted or 0:,}", "waiting for a human"),
        Tile("p95 run", ms(totals.run_p95_ms), f"p50 {ms(totals.run_p50_ms)}"),
        Tile("Tool calls", f"{totals.tool_calls or 0:,}",
             f"{percent(totals.tool_error_rate)} errors" if totals.tool_calls else ""),
        Tile("Tokens", f"{totals.total_tokens or 0:,}",
             f"{totals.input_tokens or 0:,} in · {totals.output_tokens or 0:,} out"),
    ]


def charts(found: Stats, since: dt.datetime, until: dt.datetime) -> list[Chart]:
    """Runs, failed runs, p95 run durations and tokens per hour or day of the range."""
    by = found.by or "day"
    rows = {_utc(g.key): g for g in found.groups if isinstance(g.key, dt.datetime)}
    starts = buckets(since, until, by)
    label = (lambda at: at.astimezone().strftime("%d %b %H:00")) if by == "hour" else (
        lambda at: at.astimezone().strftime("%d %b"))
    per = "hour" if by == "hour" else "day"
    specs: list[tuple[str, str, Callable[[StatsRow], float | None], Callable[[float], str]]] = [
        ("runs", "Runs", lambda r: r.runs, _count),
        ("failures", "Failed runs", lambda r: r.failed, _count),
        ("durations", "p95 run duration", lambda r: r.run_p95_ms, ms),
        ("tokens", "Tokens", lambda r: r.total_tokens, _count),
    ]
    return [_chart(name, title, per, starts, rows, figure, shown, label)
            for name, title, figure, shown in specs]


def _chart(name: str, title: str, per: str, starts: Sequence[dt.datetime],
           rows: dict[dt.datetime, StatsRow], figure: Callable[[StatsRow], float | None],
           shown: Callable[[float], str], label: Callable[[dt.datetime], str]) -> Chart:
    values = [(at, figure(rows[at]) if at in rows else None) for at in starts]
    top = max((v for _, v in values if v), default=0.0)
    slot = CHART_WIDTH / max(len(values), 1)
    bars = []
    for i, (at, value) in enumerate(values):
        height = (value or 0) / top * CHART_HEIGHT if top else 0.0
        height = max(height, 1.0) if value else 0.0
        bars.append(Bar(round(i * slot + slot * 0.1, 2), round(CHART_HEIGHT - height, 2),
                        round(slot * 0.8, 2), round(height, 2),
                        f"{label(at)}: {shown(value) if value is not None else 'none'}"))
    busiest = max(values, key=lambda v: v[1] or 0, default=None)
    summary = (f"{title} per {per}: highest {shown(busiest[1])} at {label(busiest[0])}"
               if busiest and busiest[1] else f"{title} per {per}: none in this range")
    return Chart(name, title, summary, shown(top) if top else "0", bars,
                 label(starts[0]) if starts else "", label(starts[-1]) if starts else "")


def percent(rate: float | None) -> str:
    """A rate as a percentage (— when there is nothing to divide)."""
    return "—" if rate is None else f"{rate * 100:.1f}%"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def _utc(at: dt.datetime) -> dt.datetime:
    return at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at.astimezone(dt.UTC)
