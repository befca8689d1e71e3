"""The pure parts of the CLI, without a database: ages, trace trees, descriptions."""

from __future__ import annotations

import datetime as dt
import io

import pytest
import typer
from langchain_core.messages import AIMessage, ToolMessage
from rich.console import Console

from langchain_persist import AgentTrace
from langchain_persist._cli.support import describe_age, parse_age
from langchain_persist._cli.views import trace_view
from langchain_persist._results.inspect import Execution, describe, spans, trace_tree

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.mark.parametrize(("text", "age", "words"), [
    ("30d", dt.timedelta(days=30), "30 days"),
    ("12h", dt.timedelta(hours=12), "12 hours"),
    ("15m", dt.timedelta(minutes=15), "15 minutes"),
    ("90s", dt.timedelta(seconds=90), "90 seconds"),
    ("2w", dt.timedelta(weeks=2), "14 days"),
    ("1d12h", dt.timedelta(hours=36), "36 hours"),
    ("1.5h", dt.timedelta(minutes=90), "90 minutes"),
])
def test_parse_age(text: str, age: dt.timedelta, words: str) -> None:
    assert parse_age(text) == age
    assert describe_age(age) == words


@pytest.mark.parametrize("text", ["", "30", "d", "30x", "30 days", "-1d", "1d 2"])
def test_parse_age_rejects(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="not an age"):
        parse_age(text)


def _trace(type_: str, name: str, run: str, parent: str | None, ms: float | None, at: float,
           content: str | None = None, **meta: object) -> AgentTrace:
    return AgentTrace(
        id=f"{run}-{type_}", agent_id="a", execution_id="e", run_id=run, parent_run_id=parent,
        type=type_, name=name, content=content, metadata=dict(meta),
        timestamp=T0 + dt.timedelta(milliseconds=at), duration=ms,
    )


TRACES = [
    _trace("llm_end", "model", "m1", "node-1", 2.0, 2, None, node="model", step=1,
           tool_calls=["search"]),
    _trace("tool_start", "search", "t1", "node-2", None, 3, '{"q":"x"}', node="tools", step=2),
    _trace("tool_start", "fetch", "t2", "t1", None, 4, "url", node="tools", step=2),
    _trace("tool_end", "fetch", "t2", "t1", 5.0, 9, "page", node="tools", step=2),
    _trace("tool_error", "search", "t1", "node-2", 8.0, 11, "ValueError: no", node="tools",
           step=2),
    _trace("tool_start", "approve", "t3", "node-3", None, 12, "{}", node="tools", step=3),
    _trace("tool_interrupt", "approve", "t3", "node-3", 0.5, 12.5, "GraphInterrupt: (...)",
           node="tools", step=3),
]


def test_spans_merge_start_and_end() -> None:
    by_name = {s.name: s for s in spans(TRACES)}
    assert by_name["search"].status == "error" and by_name["search"].duration_ms == 8.0
    assert by_name["search"].input == '{"q":"x"}' and by_name["search"].output == "ValueError: no"
    assert by_name["fetch"].status == "ok" and by_name["fetch"].parent_run_id == "t1"
    assert by_name["model"].started == T0  # an end-only trace started duration ago
    assert by_name["approve"].status == "interrupted"


def test_trace_tree_groups_by_step_and_nests_by_parent_run() -> None:
    tree = trace_tree(TRACES)
    assert [n.label for n in tree] == ["step 1 · model", "step 2 · tools", "step 3 · tools"]
    (search,) = tree[1].children
    assert search.label == "search" and [c.label for c in search.children] == ["fetch"]
    out = io.StringIO()
    Console(file=out, width=120).print(trace_view(Execution("e", None, TRACES, [])))
    text = out.getvalue()
    assert "✘ search" in text and "✔ fetch" in text and "⏸ approve" in text
    assert "asks for search" in text and "paused: interrupt() waits for a human" in text


def test_describe_channel_values_and_writes() -> None:
    call = AIMessage("", tool_calls=[{"name": "search", "args": {}, "id": "c1"}])
    assert describe([call, ToolMessage("ok", tool_call_id="c1")]) == "2 messages"
    assert describe([call], "messages") == "ai: calls search"
    assert describe([ToolMessage("found it", name="search", tool_call_id="c1")],
                    "messages") == "tool(search): found it"
    assert describe([("user", "hello")], "messages") == "user: hello"
    assert describe("ValueError('x')", "__error__") == "error: ValueError('x')"
    assert describe(["yes"], "__resume__") == "resume: yes"
