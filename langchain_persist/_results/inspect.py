"""Read back what was stored, shaped for people: executions, trace trees, checkpoint summaries.

Pure data (no Rich, no Typer): the CLI and the demo render it, and ``--json`` prints it.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._records import AgentResult, AgentTrace, ExecutionLog, Page
from .._sanitize import jsonable

if TYPE_CHECKING:
    from .._checkpoint.saver import PersistSaver
    from .service import ResultsPersistenceService

READ_PAGE = 1000
STALE_AFTER = dt.timedelta(minutes=15)  # a running result unchanged this long is flagged
OVERLAP = dt.timedelta(seconds=5)  # how far back `follow_logs` reads again for late lines


# -- executions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Execution:
    """One execution: its result row (if any), its traces and its logs, oldest first."""

    execution_id: str
    result: AgentResult | None
    traces: list[AgentTrace]
    logs: list[ExecutionLog]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data, with the trace tree."""
        return {
            "execution_id": self.execution_id,
            "result": None if self.result is None else jsonable(self.result.to_dict()),
            "trace_tree": [node.to_dict() for node in trace_tree(self.traces)],
            "traces": [jsonable(t.to_dict()) for t in self.traces],
            "logs": [jsonable(log.to_dict()) for log in self.logs],
        }


def find_execution(service: ResultsPersistenceService, key: str) -> Execution | None:
    """An execution by execution id (or by result id), or None when nothing was stored for it."""
    found = service.find_results(execution_id=key, limit=1)
    result = found[0] if found else service.get_result(key)
    execution_id = result.execution_id if result is not None and result.execution_id else key
    traces = list(read_all(service.get_execution_traces, execution_id))
    logs = list(read_all(service.get_execution_logs, execution_id))
    if result is None and not traces and not logs:
        return None
    return Execution(execution_id, result, traces, logs)


def read_all(read: Any, execution_id: str, since: dt.datetime | None = None) -> Iterator[Any]:
    """Every row of a paged read (``get_execution_logs`` / ``get_execution_traces``), from
    ``since`` if given."""
    cursor = None
    while True:
        page: Page[Any] = read(execution_id, READ_PAGE, cursor=cursor, since=since)
        yield from page
        if page.next_cursor is None:
            return
        cursor = page.next_cursor


def follow_logs(
    service: ResultsPersistenceService,
    execution_id: str,
    *,
    interval: float = 0.5,
    settle: float = 0.5,
) -> Iterator[ExecutionLog]:
    """An execution's logs, then new ones as they arrive, until it is no longer running.

    Polls every ``interval`` seconds.  Lines may be stored a little out of order (a background
    writer batches them), so each poll reads back ``OVERLAP`` behind the newest line seen and
    skips lines already given.  Once the execution finished, it polls until ``settle`` seconds
    pass with nothing new.  An execution with no result row is followed until interrupted.
    """
    seen: dict[str, dt.datetime] = {}
    since: dt.datetime | None = None
    quiet_since: float | None = None
    while True:
        fresh = [
            log for log in read_all(service.get_execution_logs, execution_id,
                                    None if since is None else since - OVERLAP)
            if log.id not in seen
        ]
        for log in fresh:
            seen[log.id] = log.timestamp
            yield log
        if seen:
            newest = max(seen.values())
            since = newest if since is None else max(since, newest)
            for key in [k for k, at in seen.items() if at < since - 2 * OVERLAP]:
                del seen[key]
        found = service.find_results(execution_id=execution_id, limit=1)
        if found and found[0].status != "running":
            now = time.monotonic()
            if fresh or quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= settle:
                return
        time.sleep(interval)


def is_stale(
    result: AgentResult, after: dt.timedelta = STALE_AFTER, now: dt.datetime | None = None
) -> bool:
    """Whether a result is still ``running`` with no update for ``after``: its process may
    have died (a kill -9, a lost machine), or its end could not be stored; see
    `ResultsPersistenceService.mark_stale_results`."""
    at = now or dt.datetime.now(dt.UTC)
    return result.status == "running" and at - result.updated_at > after


def duration_ms(result: AgentResult) -> float | None:
    """How long a finished execution took (its own count, else its timestamps)."""
    value = result.metadata.get("duration_ms")
    if isinstance(value, int | float):
        return float(value)
    if result.completed_at is not None:
        return (result.completed_at - result.created_at).total_seconds() * 1000
    return None


def was_interrupted(execution: Execution) -> bool:
    """Whether the execution stopped at an ``interrupt()`` (waiting for a human)."""
    if execution.result is not None and execution.result.metadata.get("interrupted"):
        return True
    return any(s.status == "interrupted" for s in spans(execution.traces))


# -- trace trees -----------------------------------------------------------------------------


@dataclass
class Span:
    """A call made during an execution, from its start and end traces merged by run id."""

    run_id: str
    parent_run_id: str | None
    kind: str  # tool | llm | chain | event
    name: str
    status: str  # ok | error | interrupted | running
    started: dt.datetime
    duration_ms: float | None = None
    input: str | None = None
    output: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def group(self) -> str | None:
        """The LangGraph step and node the call ran in, such as ``step 2 · tools``."""
        node, step = self.metadata.get("node"), self.metadata.get("step")
        if node is None:
            return None
        return f"step {step} · {node}" if step is not None else str(node)


@dataclass
class TraceNode:
    """A node of the trace tree: a group (a node run of the graph) or a span, with children."""

    label: str
    span: Span | None = None
    children: list[TraceNode] = field(default_factory=list)

    @property
    def started(self) -> dt.datetime:
        """When the first call under this node started."""
        if self.span is not None:
            return self.span.started
        return min(child.started for child in self.children)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, children included."""
        data: dict[str, Any] = {"label": self.label}
        if self.span is not None:
            data["span"] = jsonable(self.span.__dict__)
        data["children"] = [c.to_dict() for c in self.children]
        return data


_KINDS = {
    "tool_start": ("tool", "running"),
    "tool_end": ("tool", "ok"),
    "tool_error": ("tool", "error"),
    "tool_interrupt": ("tool", "interrupted"),
    "llm_start": ("llm", "running"),
    "llm_end": ("llm", "ok"),
    "llm_error": ("llm", "error"),
    "chain_error": ("chain", "error"),
}


def spans(traces: Iterable[AgentTrace]) -> list[Span]:
    """Merge start and end traces by run id into calls, in the order they started."""
    found: dict[str, Span] = {}
    for t in traces:
        kind, status = _KINDS.get(t.type, ("event", "ok"))
        key = t.run_id or t.id
        if kind == "chain" and key in found:
            key = t.id  # a node's error next to the calls it made
        span = found.get(key)
        if span is None:
            started = t.timestamp
            if t.duration is not None and not t.type.endswith("_start"):
                started = t.timestamp - dt.timedelta(milliseconds=t.duration)
            span = found[key] = Span(
                run_id=key, parent_run_id=t.parent_run_id, kind=kind,
                name=t.name or t.type, status=status, started=started,
            )
        span.metadata.update(t.metadata)
        if t.type.endswith("_start"):
            span.input = t.content
            continue
        span.status = status
        span.output = t.content
        if t.duration is not None:
            span.duration_ms = t.duration
    return sorted(found.values(), key=lambda s: s.started)


def trace_tree(traces: Iterable[AgentTrace]) -> list[TraceNode]:
    """The calls of an execution as a tree: by parent run, grouped by graph step and node."""
    calls = spans(traces)
    nodes = {s.run_id: TraceNode(s.name, s) for s in calls}
    roots: list[TraceNode] = []
    groups: dict[str, TraceNode] = {}
    for s in calls:
        parent = nodes.get(s.parent_run_id) if s.parent_run_id else None
        if parent is not None and parent.span is not s:
            parent.children.append(nodes[s.run_id])
            continue
        label = s.group or (f"run {s.parent_run_id[:8]}" if s.parent_run_id else None)
        if label is None:
            roots.append(nodes[s.run_id])
            continue
        group = groups.get(label)
        if group is None:
            group = groups[label] = TraceNode(label)
            roots.append(group)
        group.children.append(nodes[s.run_id])
    return sorted(roots, key=lambda n: n.started)


# -- checkpoints -----------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointSummary:
    """A checkpoint of a thread as a person reads it: where the graph was and what comes next."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    step: int | None
    source: str | None
    created_at: str | None
    values: dict[str, str]
    next: list[str]
    pending_writes: list[dict[str, Any]]
    metadata: dict[str, Any]
    state: Any = None
    interrupts: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return jsonable(self.__dict__)


def thread_checkpoints(
    saver: PersistSaver, thread_id: str, *, limit: int | None = None, state: bool = False
) -> list[CheckpointSummary]:
    """A thread's checkpoints, newest first (every namespace).

    ``state`` keeps the values, and each pending write's value as JSON (``data``).
    """
    out = []
    for tup in saver.list({"configurable": {"thread_id": thread_id}}, limit=limit):
        conf = tup.config["configurable"]
        parent = (tup.parent_config or {}).get("configurable", {})
        values = tup.checkpoint.get("channel_values", {})
        meta = dict(tup.metadata or {})
        writes = [w for w in tup.pending_writes or () if not w[1].startswith("branch:")]
        out.append(
            CheckpointSummary(
                thread_id=thread_id,
                checkpoint_ns=conf.get("checkpoint_ns", ""),
                checkpoint_id=conf["checkpoint_id"],
                parent_checkpoint_id=parent.get("checkpoint_id"),
                step=meta.get("step"),
                source=meta.get("source"),
                created_at=tup.checkpoint.get("ts"),
                values={k: describe(v) for k, v in values.items() if not _internal(k)},
                next=_next_nodes(values),
                pending_writes=[
                    {"task_id": task_id, "channel": channel, "value": describe(value, channel),
                     **({"data": jsonable(value)} if state else {})}
                    for task_id, channel, value in writes
                ],
                metadata=jsonable(meta),
                state=jsonable({k: v for k, v in values.items() if not _internal(k)})
                if state
                else None,
                interrupts=_interrupts(writes),
            )
        )
    return out


def _interrupts(writes: Sequence[tuple[str, str, Any]]) -> list[dict[str, Any]]:
    """The ``interrupt()`` calls pending at a checkpoint: id, value (JSON), task, and whether
    a resume value was written for its task since (``answered``)."""
    answered = {task_id for task_id, channel, _ in writes if channel == "__resume__"}
    return [
        {"id": getattr(i, "id", None), "value": jsonable(getattr(i, "value", i)),
         "task_id": task_id, "answered": task_id in answered}
        for task_id, channel, value in writes if channel == "__interrupt__"
        for i in _as_list(value)
    ]


def _internal(channel: str) -> bool:
    return channel.startswith(("branch:", "__")) or ":" in channel


def _next_nodes(values: Mapping[str, Any]) -> list[str]:
    """What the graph runs next from this checkpoint: triggered nodes and pending sends."""
    names = [k.removeprefix("branch:to:") for k in values if k.startswith("branch:to:")]
    for send in values.get("__pregel_tasks") or ():
        node = getattr(send, "node", None)
        calls = [c.get("name") for c in _as_list(getattr(send, "arg", None)) if isinstance(c, dict)]
        if node:
            names.append(f"{node}({', '.join(n for n in calls if n)})" if calls else node)
    if "__start__" in values:
        names.append("__start__")
    return names


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def describe(value: Any, channel: str | None = None, width: int = 80) -> str:
    """A short human description of a channel value or a pending write."""
    if channel == "__error__":
        return f"error: {_short(value, width)}"
    if channel == "__interrupt__":
        items = [getattr(i, "value", i) for i in _as_list(value)]
        return f"interrupt: {_short(items[0] if len(items) == 1 else items, width)}"
    if channel == "__resume__":
        items = _as_list(value)
        return f"resume: {_short(items[0] if len(items) == 1 else items, width)}"
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        items = list(value)
        if items and all(_is_message(m) for m in items):
            if len(items) > 1 or channel is None:
                return f"{len(items)} message{'s' if len(items) != 1 else ''}"
            return _message(items[0])
        return f"{len(items)} items" if len(items) != 1 else _short(items[0], width)
    return _short(value, width)


def _is_message(m: Any) -> bool:
    """A message, or a ``(role, text)`` pair as users pass them."""
    if isinstance(m, tuple | list):
        return len(m) == 2 and all(isinstance(x, str) for x in m)
    return hasattr(m, "type") and hasattr(m, "content")


def _message(m: Any) -> str:
    if isinstance(m, tuple | list):
        return f"{m[0]}: {_short(m[1], 40)}"
    calls = getattr(m, "tool_calls", None)
    if calls:
        return f"{m.type}: calls {', '.join(c['name'] for c in calls)}"
    name = getattr(m, "name", None) if m.type == "tool" else None
    text = m.content if isinstance(m.content, str) else str(m.content)
    return f"{m.type}{f'({name})' if name else ''}: {_short(text, 40)}"


def _short(value: Any, width: int) -> str:
    text = value if isinstance(value, str) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
