"""Rich renderings of search hits, statistics (tables with inline bar charts) and retention."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .._records import RetentionPolicy, RetentionReport, SearchHit, Stats, StatsRow
from .views import LEVEL_STYLE, STATUS_STYLE, clip, ms, when_short

BAR = 10
_EIGHTHS = " ▏▎▍▌▋▊▉"
TYPE_STYLE = {"tool_error": "red", "llm_error": "red", "chain_error": "red",
              "tool_interrupt": "yellow"}


def bar(value: float | None, top: float | None, width: int = BAR) -> str:
    """A horizontal bar of ``value`` out of ``top``, ``width`` characters at most, in eighths."""
    if not value or not top:
        return ""
    eighths = round(max(0.0, min(1.0, value / top)) * width * 8)
    full, part = divmod(eighths, 8)
    return "█" * full + (_EIGHTHS[part] if part else "") or "▏"


def _table(title: str | None = None) -> Table:
    return Table(title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
                 header_style="bold dim", pad_edge=False, padding=(0, 1), collapse_padding=True)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value * 100:.0f}%"


def _n(value: int | None) -> str:
    return "" if value is None else f"{value:,}"


# -- search ------------------------------------------------------------------------------------


def snippet_text(hit: SearchHit) -> Text:
    """The hit's snippet on one line, its matches highlighted."""
    text = Text(hit.snippet.replace("\n", " "))
    for start, end in hit.highlights:
        text.stylize("bold black on yellow", start, end)
    return text


def search_view(hits: Sequence[SearchHit], title: str) -> Group:
    """Hits, newest first, two lines each: when, agent, execution id, what (type and name);
    then the matching text, its matches highlighted.  Lines are cut, never wrapped."""
    lines: list[RenderableType] = [Text(title, style="bold")]
    for hit in hits:
        head = Text(f"  {when_short(hit.timestamp):<8}  ", no_wrap=True, overflow="ellipsis")
        head.append(hit.execution_id, style="bold")
        style = (LEVEL_STYLE.get(hit.type, "") if hit.kind == "log"
                 else TYPE_STYLE.get(hit.type, ""))
        head.append(f"  {'log ' + hit.type if hit.kind == 'log' else hit.type}", style=style)
        if hit.name:
            head.append(f" {hit.name}", style="bold")
        head.append(f"  {hit.agent_id}", style="dim")
        body = Text("            ", no_wrap=True, overflow="ellipsis")
        body.append_text(snippet_text(hit))
        lines += [head, body]
    return Group(*lines)


# -- stats -------------------------------------------------------------------------------------


def _key(row: StatsRow, by: str | None) -> Text:
    key = row.key
    if isinstance(key, dt.datetime):
        local = key.astimezone(dt.UTC)
        return Text(local.strftime("%Y-%m-%d" if by == "day" else "%Y-%m-%d %H:00"))
    return Text(str(key), style=STATUS_STYLE.get(str(key), "bold") if by == "status" else "bold")


def totals_view(stats: Stats) -> Table:
    """The totals of the range: runs, rates, durations, tool calls, tokens."""
    t = stats.totals
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    runs = Text(f"{_n(t.runs)}")
    for name, value in (("completed", t.completed), ("failed", t.failed),
                        ("interrupted", t.interrupted), ("running", t.running)):
        if value:
            runs.append(f"  {value:,} {name}", style=STATUS_STYLE.get(name, ""))
    grid.add_row("runs", runs)
    if t.success_rate is not None:
        grid.add_row("rates", f"{_pct(t.success_rate)} completed, {_pct(t.failure_rate)} "
                              f"failed, {_pct(t.interrupt_rate)} interrupted (of the runs "
                              "that stopped)")
    if t.run_p50_ms is not None:
        grid.add_row("run time", f"p50 {ms(t.run_p50_ms)}, p95 {ms(t.run_p95_ms)}, "
                                 f"p99 {ms(t.run_p99_ms)}")
    if t.tool_calls:
        grid.add_row("tool calls", f"{t.tool_calls:,}, {_n(t.tool_errors)} failed "
                                   f"({_pct(t.tool_error_rate)}); p50 {ms(t.tool_p50_ms)}, "
                                   f"p95 {ms(t.tool_p95_ms)}, p99 {ms(t.tool_p99_ms)}")
    if t.model_calls:
        grid.add_row("model calls", _n(t.model_calls))
    if t.total_tokens:
        grid.add_row("tokens", f"{t.total_tokens:,} ({_n(t.input_tokens)} in, "
                               f"{_n(t.output_tokens)} out)")
    return grid


def stats_table(stats: Stats) -> Table:
    """One row per group, with bars: runs (or calls) and tokens."""
    by, rows = stats.by, stats.groups
    table = _table(f"By {by}")
    table.add_column(by or "", no_wrap=True)
    if by == "tool":
        top = max((r.tool_calls or 0 for r in rows), default=0)
        for name in ("calls", "", "errors", "", "p50 · p95 · p99"):
            table.add_column(name, justify="left" if not name else "right", no_wrap=True)
        for r in rows:
            table.add_row(_key(r, by), _n(r.tool_calls), Text(bar(r.tool_calls, top), "cyan"),
                          _n(r.tool_errors), Text(_pct(r.tool_error_rate),
                                                  "red" if r.tool_errors else ""),
                          _three(r.tool_p50_ms, r.tool_p95_ms, r.tool_p99_ms))
        return table
    if by == "model":
        top = max((r.total_tokens or 0 for r in rows), default=0)
        for name in ("calls", "errors", "input", "output", "tokens", ""):
            table.add_column(name, justify="left" if not name else "right", no_wrap=True)
        for r in rows:
            table.add_row(_key(r, by), _n(r.model_calls), _n(r.model_errors),
                          _n(r.input_tokens), _n(r.output_tokens), _n(r.total_tokens),
                          Text(bar(r.total_tokens, top), "magenta"))
        return table
    top_runs = max((r.runs or 0 for r in rows), default=0)
    top_tokens = max((r.total_tokens or 0 for r in rows), default=0)
    tools = by != "status"
    names = ["runs", "", "ok", "fail", "wait", "p50 · p95 · p99"]
    if tools:
        names += ["tools (err)"]
    names += ["tokens", ""]
    for name in names:
        table.add_column(name, justify="left" if not name else "right", no_wrap=True)
    for r in rows:
        cells: list[Any] = [
            _key(r, by), _n(r.runs), Text(bar(r.runs, top_runs), "cyan"),
            Text(_pct(r.success_rate), "green"), Text(_pct(r.failure_rate), "red"),
            Text(_pct(r.interrupt_rate), "blue"), _three(r.run_p50_ms, r.run_p95_ms,
                                                         r.run_p99_ms),
        ]
        if tools:
            cells.append(Text(f"{_n(r.tool_calls)} ({_pct(r.tool_error_rate) or '-'})",
                              "red" if r.tool_errors else ""))
        cells += [_n(r.total_tokens), Text(bar(r.total_tokens, top_tokens, 8), "magenta")]
        table.add_row(*cells)
    return table


def _three(p50: float | None, p95: float | None, p99: float | None) -> str:
    if p50 is None:
        return ""
    return " · ".join(ms(v).removesuffix(" ms") for v in (p50, p95, p99)) + " ms"


def errors_table(stats: Stats) -> Table:
    """The most frequent errors, with a bar each."""
    table = _table("Top errors")
    table.add_column("count", justify="right", no_wrap=True)
    table.add_column("", no_wrap=True)
    table.add_column("where", no_wrap=True, style="dim")
    table.add_column("error", overflow="fold", style="red")
    table.add_column("last seen", no_wrap=True, style="dim")
    top = max((e.count for e in stats.top_errors), default=0)
    for e in stats.top_errors:
        where = "run" if e.kind == "run" else f"tool {e.name}"
        table.add_row(_n(e.count), Text(bar(e.count, top, 12), "red"), where,
                      clip(e.message, 160), when_short(e.last_seen))
    return table


def stats_view(stats: Stats, title: str) -> RenderableType:
    """Totals, the groups and the top errors."""
    parts: list[RenderableType] = [Text(title, style="bold"), totals_view(stats)]
    if stats.by is not None:
        parts += [Text(), stats_table(stats) if stats.groups else Text("No groups.", "dim")]
    if stats.top_errors:
        parts += [Text(), errors_table(stats)]
    return Group(*parts)


# -- retention ---------------------------------------------------------------------------------


def age_words(age: dt.timedelta | None) -> str:
    """An age as ``30d``, ``12h``, ``1d12h``; ``forever`` for None."""
    if age is None:
        return "forever"
    seconds, out = int(age.total_seconds()), ""
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out or "0s"


def policies_table(policies: Sequence[RetentionPolicy]) -> Table:
    """The stored policies, the default first: how long each kind is kept."""
    table = _table("Retention policies (how long rows are kept)")
    for name in ("agent", "results", "logs", "traces", "checkpoint threads", "updated"):
        table.add_column(name, no_wrap=True)
    for p in policies:
        table.add_row(Text("default" if p.agent_id is None else p.agent_id,
                           style="italic" if p.agent_id is None else "bold"),
                      *(age_words(a) for a in (p.results, p.logs, p.traces, p.checkpoints)),
                      when_short(p.updated_at))
    return table


def report_table(report: RetentionReport) -> Table:
    """What a retention run deleted (or would delete), per policy, with the totals."""
    verb = "would delete" if report.dry_run else "deleted"
    table = _table(f"Retention {'dry run' if report.dry_run else 'run'}: what it {verb}")
    table.add_column("policy", no_wrap=True)
    for name in ("results", "logs", "traces", "threads", "checkpoints"):
        table.add_column(name, justify="right", no_wrap=True)
    rows = [*report.policies, report.totals] if len(report.policies) > 1 else report.policies
    for n, c in enumerate(rows):
        total = n == len(report.policies)
        name = "total" if total else "default" if c.agent_id is None else c.agent_id
        table.add_row(Text(name, style="bold" if total else ""),
                      *(f"{getattr(c, k):,}" for k in ("results", "logs", "traces", "threads",
                                                       "checkpoints")))
    return table
