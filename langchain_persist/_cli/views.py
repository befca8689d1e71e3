"""Rich renderings of what was stored: result tables, trace trees, logs, checkpoints, JSON."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from .._records import AgentResult, ExecutionLog
from .._results.inspect import (
    CheckpointSummary,
    Execution,
    Span,
    TraceNode,
    duration_ms,
    is_stale,
    trace_tree,
)
from .._sanitize import jsonable

STATUS_STYLE = {"running": "yellow", "completed": "green", "failed": "red", "interrupted": "blue"}
LEVEL_STYLE = {"debug": "dim", "info": "cyan", "warn": "yellow", "error": "bold red"}
SPAN_MARK = {
    "ok": ("✔", "green"),
    "error": ("✘", "red"),
    "interrupted": ("⏸", "yellow"),
    "running": ("…", "yellow"),
}
BAR_WIDTH = 16


# -- small formats ---------------------------------------------------------------------------


def when(at: dt.datetime | None, *, precise: bool = False) -> str:
    """A stored (UTC) time in the local zone: ``2026-11-26 16:40:27`` or ``16:40:27.914``."""
    if at is None:
        return ""
    local = at.astimezone()
    return local.strftime("%H:%M:%S.%f")[:-3] if precise else local.strftime("%Y-%m-%d %H:%M:%S")


def when_short(at: dt.datetime | None) -> str:
    """A stored time in the local zone, without the date when it is today."""
    if at is None:
        return ""
    local = at.astimezone()
    today = dt.datetime.now().astimezone().date()
    return local.strftime("%H:%M:%S" if local.date() == today else "%Y-%m-%d %H:%M")


def ms(value: float | None) -> str:
    """A duration in milliseconds, readable at any size."""
    if value is None:
        return ""
    if value < 10:
        return f"{value:.1f} ms"
    if value < 10_000:
        return f"{value:,.0f} ms"
    return f"{value / 1000:,.1f} s"


def status_text(status: str, note: str | None = None) -> Text:
    """A result status in its colour, with an optional dim note."""
    text = Text(status, style=STATUS_STYLE.get(status, ""))
    if note:
        text.append(f" ({note})", style="dim")
    return text


def clip(text: str | None, width: int = 70) -> str:
    """One line of at most ``width`` characters."""
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def to_json(data: Any) -> str:
    """Indented JSON of records, dicts and lists (datetimes as ISO 8601)."""
    return json.dumps(jsonable(data), indent=2, ensure_ascii=False)


def to_json_line(data: Any) -> str:
    """Compact one-line JSON (for JSON lines output)."""
    return json.dumps(jsonable(data), ensure_ascii=False, separators=(",", ":"))


# -- results ---------------------------------------------------------------------------------


def result_note(result: AgentResult, interrupted: bool = False) -> str | None:
    """A short explanation next to a status: that the run stopped to wait for a human (and
    whether a later run resumed it)."""
    if result.status == "interrupted":
        return "stopped at interrupt(): waiting for a human"
    if interrupted or result.metadata.get("interrupted"):
        by = result.metadata.get("resumed_by")
        return f"stopped at interrupt(); resumed by {by}" if by else "stopped at interrupt()"
    return None


def results_table(
    results: Sequence[AgentResult],
    *,
    title: str | None = None,
    interrupted: Iterable[str] = (),
    numbered: bool = False,
    context: bool = True,
) -> Group:
    """Results, two lines each: id, status, timing (agent, thread); then the outcome.

    ``numbered`` adds a run number; ``context=False`` leaves out agent and thread (when the
    caller already said which they are).  Lines are cut, never wrapped, so ids stay whole.
    """
    paused = set(interrupted)
    widths = (36, 9, 8, 8)
    lead = "run  " if numbered else ""
    header = Text(
        f"  {lead}{'execution id':<{widths[0]}}  {'status':<{widths[1]}}  "
        f"{'started':<{widths[2]}}  {'took':>{widths[3]}}",
        style="bold dim",
    )
    lines: list[RenderableType] = [Text(title, style="bold")] if title else []
    lines.append(_cut(header))
    for number, r in enumerate(results, 1):
        line = Text("  " + (f"{number:>3}  " if numbered else ""))
        line.append((r.execution_id or r.id).ljust(widths[0]), style="bold")
        line.append("  ")
        line.append(r.status.ljust(widths[1]), style=STATUS_STYLE.get(r.status, ""))
        line.append(f"  {when_short(r.created_at):<8}  ")
        line.append(f"{ms(duration_ms(r)) if r.completed_at else '':>8}", style="magenta")
        lines.append(_cut(line))
        below = Text(" " * (len(lead) + 4))
        if context:
            below.append(f"{r.agent_id}{f' · {r.thread_id}' if r.thread_id else ''}  ",
                         style="dim")
        lines.append(_cut(below + _outcome(r, r.execution_id in paused)))
    return Group(*lines)


def _outcome(r: AgentResult, interrupted: bool) -> Text:
    text = Text()
    if r.error:
        text.append(f"✘ {clip(r.error, 300)}", style="red")
    elif r.status == "interrupted" or interrupted or r.metadata.get("interrupted"):
        text.append(f"⏸ {result_note(r, True)}", style="yellow")
    elif r.status == "running" and is_stale(r):
        text.append(f"⚠ stale: running, but unchanged since {when_short(r.updated_at)}; its "
                    "process may have died (mark it with mark_stale_results)", style="red")
    elif r.status == "running":
        text.append(f"… {clip(r.result, 300)}" if r.result else "… running", style="yellow")
    else:
        text.append(f"✔ {clip(r.result, 300)}" if r.result else "✔ (no output)", style="green")
    return text


def _cut(text: Text) -> Text:
    text.no_wrap = True
    text.overflow = "ellipsis"
    return text


def _table(title: str | None = None) -> Table:
    return Table(
        title=title, title_justify="left", title_style="bold", box=box.SIMPLE_HEAD,
        header_style="bold dim", pad_edge=False,
    )


def result_details(result: AgentResult, interrupted: bool = False) -> Table:
    """Every field of one result, as a two-column grid."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    meta = result.metadata
    usage = meta.get("usage") or {}
    rows: list[tuple[str, Any]] = [
        ("execution", result.execution_id or ""),
        ("result id", result.id),
        ("agent", result.agent_id),
        ("thread", result.thread_id or ""),
        ("status", status_text(result.status, result_note(result, interrupted))),
        ("started", when(result.created_at)),
        ("finished", when(result.completed_at)),
        ("took", ms(duration_ms(result))),
        ("checkpoint", result.checkpoint_id or ""),
        ("quest", result.quest_id or ""),
        ("calls", _counts(meta, usage)),
        ("result", result.result or ""),
        ("error", Text(result.error, style="red") if result.error else ""),
    ]
    for name, value in rows:
        if value not in ("", None):
            grid.add_row(name, value)
    return grid


def _counts(meta: dict[str, Any], usage: dict[str, Any]) -> str:
    if "llm_calls" not in meta:
        return ""
    tokens = usage.get("total_tokens")
    parts = [_n(meta.get("llm_calls", 0), "model call"), _n(meta.get("tool_calls", 0), "tool call")]
    if meta.get("steps"):
        parts.append(_n(meta["steps"], "graph step"))
    if tokens:
        parts.append(_n(tokens, "token"))
    return ", ".join(parts)


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


# -- traces ----------------------------------------------------------------------------------


def trace_view(execution: Execution, *, title: str | None = None) -> Tree:
    """The execution's calls as a tree by parent run, with durations and a timeline bar."""
    nodes = trace_tree(execution.traces)
    start, end = _span_range(nodes)
    if execution.result is not None:
        start = min(start, execution.result.created_at) if start else execution.result.created_at
    label = Text(title or f"execution {execution.execution_id}", style="bold")
    if execution.result is not None:
        label.append("  ")
        label.append_text(status_text(execution.result.status))
        took = duration_ms(execution.result)
        if took is not None:
            label.append(f"  {ms(took)}", style="dim")
    tree = Tree(label, guide_style="dim")
    if not nodes:
        tree.add(Text("no traces stored", style="dim"))
    total = max(((end - start).total_seconds() * 1000) if start and end else 0.0, 1.0)
    pad = max((len(s.name) for s in _walk(nodes)), default=0)
    for node in nodes:
        _add_node(tree, node, start, total, pad)
    return tree


def _span_range(nodes: list[TraceNode]) -> tuple[dt.datetime | None, dt.datetime | None]:
    spans = list(_walk(nodes))
    if not spans:
        return None, None
    start = min(s.started for s in spans)
    end = max(s.started + dt.timedelta(milliseconds=s.duration_ms or 0) for s in spans)
    return start, end


def _walk(nodes: list[TraceNode]) -> Iterable[Span]:
    for node in nodes:
        if node.span is not None:
            yield node.span
        yield from _walk(node.children)


def _add_node(parent: Tree, node: TraceNode, start: Any, total: float, pad: int) -> None:
    if node.span is None:
        branch = parent.add(Text(node.label, style="bold blue"))
    else:
        branch = parent.add(span_label(node.span, start, total, pad))
    for child in node.children:
        _add_node(branch, child, start, total, pad)


def span_label(span: Span, start: dt.datetime | None, total: float, pad: int = 0) -> Text:
    """One line per call: mark, name, duration, timeline bar, input → output."""
    mark, style = SPAN_MARK.get(span.status, ("•", ""))
    text = Text(f"{mark} ", style=style, no_wrap=True, overflow="ellipsis")
    text.append(span.name.ljust(pad), style="bold" if span.kind == "tool" else "dim")
    text.append(f" {ms(span.duration_ms):>8} ", style="magenta")
    if start is not None:
        text.append(_bar(span, start, total), style=style or "white")
        text.append("  ")
    text.append_text(_span_io(span))
    return text


def _bar(span: Span, start: dt.datetime, total: float) -> str:
    offset = (span.started - start).total_seconds() * 1000
    first = min(BAR_WIDTH - 1, max(0, int(offset / total * BAR_WIDTH)))
    length = max(1, round((span.duration_ms or 0) / total * BAR_WIDTH))
    length = min(length, BAR_WIDTH - first)
    return "▏" + " " * first + "█" * length + " " * (BAR_WIDTH - first - length) + "▕"


def _span_io(span: Span) -> Text:
    text = Text()
    if span.kind == "llm":
        calls = span.metadata.get("tool_calls")
        if calls:
            text.append(f"asks for {', '.join(calls)}", style="dim")
        elif span.output:
            text.append(f"answers: {clip(span.output, 120)}", style="dim")
        return text
    if span.status == "interrupted":
        text.append("paused: interrupt() waits for a human", style="yellow")
        return text
    if span.status == "error" or not span.input:
        text.append(clip(span.output, 120), style="red" if span.status == "error" else "")
        return text
    text.append(clip(span.input, 40), style="dim")
    if span.output:
        text.append(" → ", style="dim")
        text.append(clip(span.output, 120))
    return text


# -- logs ------------------------------------------------------------------------------------


def logs_table(
    logs: Sequence[ExecutionLog],
    *,
    title: str | None = None,
    runs: dict[str, str] | None = None,
) -> Table:
    """Log lines, oldest first; ``runs`` names each execution id in a first column."""
    table = _table(title)
    if runs is not None:
        table.add_column("run", no_wrap=True)
    table.add_column("time", no_wrap=True)
    table.add_column("level")
    table.add_column("source", style="dim")
    table.add_column("message", overflow="fold")
    for log in logs:
        first = [runs.get(log.execution_id, log.execution_id)] if runs is not None else []
        table.add_row(
            *first,
            when(log.timestamp, precise=True),
            Text(log.level, style=LEVEL_STYLE.get(log.level, "")),
            log.source or "",
            log.message,
        )
    return table


def log_line(log: ExecutionLog) -> Text:
    """One log line for ``logs --follow``."""
    text = Text(f"{when(log.timestamp, precise=True)} ")
    text.append(f"{log.level:<5}", style=LEVEL_STYLE.get(log.level, ""))
    text.append(f" {log.message}")
    return text


# -- checkpoints -----------------------------------------------------------------------------


def checkpoints_table(
    checkpoints: Sequence[CheckpointSummary], *, title: str | None = None, width: int = 100
) -> Table:
    """A thread's checkpoints: step, state, what runs next and the writes kept for resume.

    ``width`` is the console's: each line of the last column is cut to fit it.
    """
    fit = max(30, width - 50)
    table = _table(title)
    table.add_column("step", justify="right", no_wrap=True)
    table.add_column("checkpoint id", no_wrap=True, min_width=36)
    table.add_column("state · next · pending writes", overflow="fold", ratio=1)
    for c in checkpoints:
        created = dt.datetime.fromisoformat(c.created_at) if c.created_at else None
        ns = f"ns {c.checkpoint_ns}\n" if c.checkpoint_ns else ""
        made = f"{c.source or ''} · {when(created, precise=True)}".strip(" ·")
        table.add_row(
            "" if c.step is None else str(c.step),
            Text(f"{ns}{c.checkpoint_id}\n") + Text(made, style="dim"),
            checkpoint_contents(c, fit),
        )
    return table


def checkpoint_contents(c: CheckpointSummary, width: int = 60) -> Text:
    """What a checkpoint holds, what it runs next, and its pending writes, one per line."""
    text = Text()
    state = ", ".join(f"{k}: {v}" for k, v in c.values.items())
    text.append(clip(state, width) or "(empty)")
    if c.next:
        text.append(f"\nnext: {clip(', '.join(c.next), width - 6)}", style="cyan")
    seen: set[str] = set()
    for w in c.pending_writes:
        channel, value = w["channel"], w["value"]
        if channel == "__pregel_tasks" or value in seen:
            continue
        seen.add(value)
        style = {"__error__": "red", "__interrupt__": "yellow", "__resume__": "yellow"}.get(
            channel, "green"
        )
        shown = value if channel.startswith("__") else f"{channel} ← {value}"
        text.append(f"\n+ {clip(shown, width - 2)}", style=style)
    return text


# -- a whole execution -----------------------------------------------------------------------


def execution_view(execution: Execution, interrupted: bool = False) -> RenderableType:
    """``runs show``: the result, the trace tree, the logs."""
    parts: list[RenderableType] = []
    if execution.result is not None:
        parts += [Text("Result", style="bold underline"), result_details(execution.result,
                                                                        interrupted), Text()]
    else:
        parts += [Text(f"No result row for {execution.execution_id} (only events were stored).",
                       style="dim"), Text()]
    parts += [Text("Traces", style="bold underline"), trace_view(execution), Text()]
    parts.append(logs_table(execution.logs, title="Logs") if execution.logs
                 else Text("No logs stored.", style="dim"))
    return Group(*parts)
