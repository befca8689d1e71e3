"""What the viewer's pages show, shaped from stored records: pure data, no HTTP, no HTML.

The templates (``server/templates/``) render these; the routes (`_ui_routes`) read the records
through the service and the saver and call these.  Everything here is plain Python so that it
can be tested without a browser.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._records import AgentResult, AgentTrace, ExecutionLog
from .._results.inspect import CheckpointSummary, Span, TraceNode, duration_ms, trace_tree

BAR_SCALE = 1000  # the waterfall's bars are drawn in a viewBox this wide
FOLD_CHARS = 280  # payloads longer than this (or of more lines) start folded
FOLD_LINES = 6
SLACK = dt.timedelta(milliseconds=5)  # clocks of a run's row and its checkpoints may differ

# status key -> (icon, short label, long label); the CSS class is the key.  Colour is never the
# only signal: every status shows its icon and its words.
STATUS = {
    "running": ("◔", "running", "running"),
    "completed": ("✔", "completed", "completed"),
    "failed": ("✘", "failed", "failed"),
    "interrupted": ("❚❚", "interrupted", "stopped at interrupt(): waiting for a human"),
}
CALL_STATE = {
    "ok": ("✔", "ok"),
    "error": ("✘", "raised"),
    "handled": ("⚠", "handled error"),
    "paused": ("❚❚", "paused at interrupt()"),
    "running": ("◔", "running"),
    "unfinished": ("…", "no end recorded"),
}
LOG_LEVEL = {"debug": "·", "info": "•", "warn": "⚠", "error": "✘"}
ROLE = {"human": ("☺", "user"), "ai": ("✦", "assistant"), "tool": ("⚒", "tool"),
        "system": ("⚙", "system")}


# -- small formats ---------------------------------------------------------------------------


def ms(value: float | None) -> str:
    """A duration in milliseconds, readable at any size."""
    if value is None:
        return "—"
    if value < 10:
        return f"{value:.1f} ms"
    if value < 10_000:
        return f"{value:,.0f} ms"
    return f"{value / 1000:,.1f} s"


def when(at: dt.datetime | str | None, *, precise: bool = False) -> str:
    """A stored (UTC) time in the server's local zone."""
    if at is None:
        return ""
    if isinstance(at, str):
        try:
            at = dt.datetime.fromisoformat(at)
        except ValueError:
            return at
    local = at.astimezone()
    if precise:
        return local.strftime("%H:%M:%S.%f")[:-3]
    today = dt.datetime.now().astimezone().date()
    return local.strftime("%H:%M:%S" if local.date() == today else "%Y-%m-%d %H:%M:%S")


def iso(at: dt.datetime | None) -> str:
    """A time as ISO 8601 (for ``<time datetime=...>``)."""
    return "" if at is None else at.isoformat()


def clip(text: Any, width: int = 120) -> str:
    """One line of at most ``width`` characters."""
    if text is None:
        return ""
    line = " ".join(str(text).split())
    return line if len(line) <= width else line[: width - 1] + "…"


def pretty(value: Any) -> str:
    """A stored value as readable text: JSON indented (a JSON string is parsed first)."""
    if value is None:
        return ""
    if isinstance(value, str):
        stripped = value.strip()
        if stripped[:1] in ("{", "["):
            try:
                value = json.loads(stripped)
            except ValueError:
                return value
        else:
            return value
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


@dataclass(frozen=True)
class Payload:
    """A value to show: its text, and whether it starts folded (and its one-line summary)."""

    text: str
    folded: bool
    summary: str

    @classmethod
    def of(cls, value: Any) -> Payload | None:
        """None for no value; folded when long."""
        if value is None or value == "":
            return None
        text = pretty(value)
        long = len(text) > FOLD_CHARS or text.count("\n") >= FOLD_LINES
        size = f"{len(text):,} characters" + (f", {text.count(chr(10)) + 1} lines"
                                              if "\n" in text else "")
        return cls(text, long, f"{clip(text, 90)} ({size})")


# -- runs ------------------------------------------------------------------------------------


def run_status(result: AgentResult) -> str:
    """The status key of a run: ``interrupted`` for a run that stopped at ``interrupt()``."""
    if result.status == "completed" and result.metadata.get("interrupted"):
        return "interrupted"
    return result.status


def run_started(result: AgentResult) -> dt.datetime:
    """When a run started: its row's creation, or its end less its duration if earlier (a
    handler may create the row once the run is under way)."""
    took = result.metadata.get("duration_ms")
    if result.completed_at is not None and isinstance(took, int | float):
        return min(result.created_at, result.completed_at - dt.timedelta(milliseconds=took))
    return result.created_at


def tokens(result: AgentResult) -> dict[str, int]:
    """The run's token usage (input, output, total), as the handler counted it."""
    usage = result.metadata.get("usage") or {}
    out = {k: v for k in ("input_tokens", "output_tokens", "total_tokens")
           if isinstance(v := usage.get(k), int)}
    if "total_tokens" not in out and out:
        out["total_tokens"] = out.get("input_tokens", 0) + out.get("output_tokens", 0)
    return out


@dataclass(frozen=True)
class RunRow:
    """A run as the runs list shows it."""

    result: AgentResult
    status: str
    started: dt.datetime
    duration_ms: float | None
    tokens: int | None
    outcome: str

    @property
    def running(self) -> bool:
        """Whether the run is still going (the page follows it live)."""
        return self.result.status == "running"


def run_row(result: AgentResult, now: dt.datetime | None = None) -> RunRow:
    """The list's view of a result: status, duration (so far, when running), tokens, outcome."""
    took = duration_ms(result)
    if took is None and result.status == "running":
        took = ((now or dt.datetime.now(dt.UTC)) - result.created_at).total_seconds() * 1000
    status = run_status(result)
    if result.error:
        outcome = result.error
    elif status == "interrupted":
        outcome = _question(result)
    else:
        outcome = result.result or ""
    return RunRow(result, status, run_started(result), took, tokens(result).get("total_tokens"),
                  clip(outcome, 140))


def _question(result: AgentResult) -> str:
    """What an interrupted run waits for (its question, when the server stored it)."""
    for item in result.metadata.get("interrupts") or ():
        value = item.get("value") if isinstance(item, dict) else None
        if value is not None:
            return "waiting for a human: " + clip(question(item), 100)
    return "stopped at interrupt(): waiting for a human"


# -- the waterfall ---------------------------------------------------------------------------


@dataclass
class Call:
    """One model or tool call of a run, placed on the run's time axis."""

    span: Span
    depth: int
    state: str
    offset_ms: float
    x: float  # where its bar starts and how wide it is, in BAR_SCALE units
    width: float
    input: Payload | None
    output: Payload | None
    tokens: dict[str, int] = field(default_factory=dict)

    @property
    def icon(self) -> str:
        """The state's icon."""
        return CALL_STATE[self.state][0]

    @property
    def label(self) -> str:
        """The state in words."""
        return CALL_STATE[self.state][1]

    @property
    def kind(self) -> str:
        """model, tool, node or event."""
        return {"llm": "model", "chain": "node"}.get(self.span.kind, self.span.kind)


@dataclass
class Step:
    """The calls of one graph step (a node's run), in the order they started."""

    label: str
    step: int | None
    node: str | None
    calls: list[Call]

    @property
    def anchor(self) -> str:
        """The id of its heading on the run page (``step-2``), which the thread page links."""
        return f"step-{self.step}" if self.step is not None else f"group-{id(self)}"

    @property
    def failed(self) -> bool:
        """Whether a call of this step raised."""
        return any(c.state == "error" for c in self.calls)


@dataclass
class Waterfall:
    """A run's calls by graph step, on one time axis from the run's start."""

    steps: list[Step]
    total_ms: float
    ticks: list[tuple[float, str]]  # (x in BAR_SCALE units, label)

    @property
    def calls(self) -> int:
        """How many calls the run made."""
        return sum(len(s.calls) for s in self.steps)


def waterfall(
    result: AgentResult | None, traces: Sequence[AgentTrace], now: dt.datetime | None = None
) -> Waterfall:
    """The run's calls grouped by graph step, their bars to scale on the run's time axis."""
    roots = trace_tree(traces)
    flat: list[tuple[TraceNode, int]] = []
    groups: list[tuple[TraceNode, list[tuple[TraceNode, int]]]] = []
    for root in roots:
        members: list[tuple[TraceNode, int]] = []
        _flatten(root.children if root.span is None else [root], 0, members)
        groups.append((root, members))
        flat.extend(members)
    spans = [node.span for node, _ in flat if node.span is not None]
    running = result is not None and result.status == "running"
    start = min([s.started for s in spans] + ([run_started(result)] if result else []),
                default=now or dt.datetime.now(dt.UTC))
    ends = [_end(s) for s in spans]
    if result is not None and result.completed_at is not None:
        ends.append(result.completed_at)
    if running:
        ends.append(now or dt.datetime.now(dt.UTC))
    end = max(ends, default=start)
    total = max((end - start).total_seconds() * 1000, 1.0)
    steps = []
    for root, members in groups:
        calls = [_call(node.span, depth, start, total, running)
                 for node, depth in members if node.span is not None]
        first = calls[0].span.metadata if calls else {}
        step = first.get("step")
        steps.append(Step(root.label, step if isinstance(step, int) else None,
                          first.get("node"), calls))
    ticks = [(BAR_SCALE * i / 4, ms(total * i / 4)) for i in range(5)]
    return Waterfall(steps, total, ticks)


def _flatten(nodes: Iterable[TraceNode], depth: int, out: list[tuple[TraceNode, int]]) -> None:
    for node in nodes:
        out.append((node, depth))
        _flatten(node.children, depth + 1, out)


def _end(span: Span) -> dt.datetime:
    return span.started + dt.timedelta(milliseconds=span.duration_ms or 0)


def _call(span: Span, depth: int, start: dt.datetime, total: float, running: bool) -> Call:
    offset = (span.started - start).total_seconds() * 1000
    duration = span.duration_ms or 0.0
    state = {"ok": "ok", "error": "error", "interrupted": "paused", "running": "running"}.get(
        span.status, "ok")
    if state == "error" and span.metadata.get("handled"):
        state = "handled"
    if state == "running" and not running:
        state = "unfinished"
    x = max(0.0, min(BAR_SCALE, offset / total * BAR_SCALE))
    width = max(2.0, min(BAR_SCALE - x, duration / total * BAR_SCALE))
    usage = span.metadata.get("usage") if isinstance(span.metadata.get("usage"), dict) else {}
    return Call(span, depth, state, offset, x, width, Payload.of(span.input),
                Payload.of(span.output), {k: v for k, v in usage.items() if isinstance(v, int)})


# -- logs ------------------------------------------------------------------------------------


def log_icon(log: ExecutionLog) -> str:
    """The icon of a log line's level (shown with the level's name)."""
    return LOG_LEVEL.get(log.level, "·")


# -- checkpoints -----------------------------------------------------------------------------


@dataclass
class Message:
    """A chat message of a checkpoint's state, ready to show."""

    role: str
    icon: str
    name: str | None
    text: str
    tool_calls: list[dict[str, str]]
    status: str | None

    @property
    def folded(self) -> bool:
        """Long messages start folded."""
        return len(self.text) > 4 * FOLD_CHARS


def messages(value: Any) -> list[Message] | None:
    """A channel's value as chat messages, or None when it is not a list of messages."""
    if not isinstance(value, list) or not value:
        return None
    out = []
    for item in value:
        if isinstance(item, list | tuple) and len(item) == 2 and all(
                isinstance(x, str) for x in item):
            role = {"user": "human", "assistant": "ai"}.get(item[0], item[0])
            out.append(_message(role, None, item[1], [], None))
        elif isinstance(item, dict) and "content" in item and "type" in item:
            calls = [{"name": str(c.get("name")), "args": pretty(c.get("args"))}
                     for c in item.get("tool_calls") or () if isinstance(c, dict)]
            out.append(_message(str(item["type"]).removesuffix("Chunk").lower(),
                                item.get("name"), item.get("content"), calls,
                                item.get("status")))
        else:
            return None
    return out


def _message(role: str, name: Any, content: Any, calls: list[dict[str, str]],
             status: Any) -> Message:
    icon, label = ROLE.get(role, ("·", role))
    if isinstance(content, list):  # content blocks: their text, else the JSON
        texts = [b.get("text") for b in content if isinstance(b, dict) and b.get("text")]
        content = "\n".join(texts) if texts else pretty(content)
    return Message(label, icon, None if name is None else str(name), pretty(content), calls,
                   None if status is None else str(status))


@dataclass
class Change:
    """How one channel differs from the previous checkpoint."""

    channel: str
    kind: str  # added | removed | changed | appended
    before: Payload | None = None
    after: Payload | None = None
    appended: list[Message] | None = None
    count: int = 0


def diff(before: dict[str, Any] | None, after: dict[str, Any]) -> list[Change]:
    """The channels that changed since ``before`` (lists that only grew show what was added)."""
    before = before or {}
    out = []
    for channel in sorted(set(before) | set(after)):
        old, new = before.get(channel), after.get(channel)
        if channel not in after:
            out.append(Change(channel, "removed", before=Payload.of(old)))
        elif channel not in before:
            out.append(Change(channel, "added", after=Payload.of(new),
                              appended=messages(new), count=_size(new)))
        elif old != new:
            if isinstance(old, list) and isinstance(new, list) and new[: len(old)] == old:
                tail = new[len(old):]
                out.append(Change(channel, "appended", after=Payload.of(tail),
                                  appended=messages(tail), count=len(tail)))
            else:
                out.append(Change(channel, "changed", before=Payload.of(old),
                                  after=Payload.of(new)))
    return out


def _size(value: Any) -> int:
    return len(value) if isinstance(value, list) else 1


@dataclass
class Checkpoint:
    """A checkpoint on the thread's timeline: its summary, its run, its marks."""

    summary: CheckpointSummary
    number: int  # 1.. oldest first
    run: AgentResult | None = None
    run_number: int | None = None
    children: int = 0

    @property
    def id(self) -> str:
        """The checkpoint id."""
        return self.summary.checkpoint_id

    @property
    def error(self) -> str | None:
        """The error a task of the next step raised here (a failed run's last checkpoint)."""
        for write in self.summary.pending_writes:
            if write["channel"] == "__error__":
                return clip(write.get("data", write["value"]), 300)
        return None

    @property
    def waiting(self) -> list[dict[str, Any]]:
        """The ``interrupt()`` calls here that no resume value answered yet."""
        return [i for i in self.summary.interrupts if not i["answered"]]

    @property
    def answered(self) -> list[dict[str, Any]]:
        """The ``interrupt()`` calls here that were answered."""
        return [i for i in self.summary.interrupts if i["answered"]]

    @property
    def resumes(self) -> list[Any]:
        """The values the interrupts here were resumed with."""
        return [w.get("data") for w in self.summary.pending_writes
                if w["channel"] == "__resume__" and not isinstance(w.get("data"), list)]


def question(interrupt: dict[str, Any]) -> str:
    """What an ``interrupt()`` asks: its ``question`` field, else its whole value."""
    value = interrupt.get("value")
    if isinstance(value, dict) and isinstance(value.get("question"), str):
        return value["question"]
    return pretty(value)


def timeline(
    summaries: Sequence[CheckpointSummary], runs: Sequence[AgentResult]
) -> list[Checkpoint]:
    """The thread's top-graph checkpoints, oldest first, each with the run that wrote it.

    A checkpoint belongs to the run named in its metadata (``execution_id``, as the server
    writes it), else to the run of the thread that was going when it was written (runs of a
    thread do not overlap).
    """
    top = sorted((s for s in summaries if not s.checkpoint_ns), key=lambda s: s.checkpoint_id)
    ordered = sorted(runs, key=run_started)
    number = {r.execution_id: i for i, r in enumerate(ordered, 1)}
    by_execution = {r.execution_id: r for r in ordered}
    children: dict[str | None, int] = {}
    for s in top:
        children[s.parent_checkpoint_id] = children.get(s.parent_checkpoint_id, 0) + 1
    out = []
    for i, s in enumerate(top, 1):
        run = by_execution.get(s.metadata.get("execution_id")) or _run_at(s.created_at, ordered)
        out.append(Checkpoint(s, i, run, number.get(run.execution_id) if run else None,
                              children.get(s.checkpoint_id, 0)))
    return out


def _run_at(ts: str | None, runs: Sequence[AgentResult]) -> AgentResult | None:
    if not ts:
        return None
    try:
        at = dt.datetime.fromisoformat(ts)
    except ValueError:
        return None
    if at.tzinfo is None:
        at = at.replace(tzinfo=dt.UTC)
    found = None
    for run in runs:  # oldest first: the last one started before the checkpoint
        if run_started(run) - SLACK <= at:
            found = run
    return found


def select(checkpoints: Sequence[Checkpoint], checkpoint_id: str | None, step: int | None,
           execution_id: str | None) -> Checkpoint | None:
    """The checkpoint a thread page shows: by id; else the one graph step ``step`` ran from
    (step - 1) in run ``execution_id``; else the newest."""
    if checkpoint_id:
        return next((c for c in checkpoints if c.id == checkpoint_id), None)
    if step is not None:
        matches = [c for c in checkpoints if c.summary.step == step - 1]
        mine = [c for c in matches if c.run is not None and c.run.execution_id == execution_id]
        if mine or matches:
            return (mine or matches)[-1]
    return checkpoints[-1] if checkpoints else None
