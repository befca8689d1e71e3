"""PersistCallbackHandler on real graphs, agents, chains and tools, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import sqlite3
import time
import uuid
import warnings
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypedDict

import pytest
from handler_support import ScriptedChatModel, echo, explode, refuse
from langchain.agents import create_agent
from langchain_core.callbacks import dispatch_custom_event
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_core.tools import tool
from langgraph.errors import GraphRecursionError
from langgraph.graph import END, START, StateGraph

from langchain_persist import PersistCallbackHandler, ResultsPersistenceService
from langchain_persist._results.events import CONTEXT_KEYS


@pytest.fixture
def handler(service: ResultsPersistenceService) -> Any:
    h = PersistCallbackHandler("agent-1", service=service, flush_interval=0.05)
    yield h
    h.close()


def _agent(plan: Any, tools: Any = (echo, explode, refuse)) -> Any:
    return create_agent(ScriptedChatModel(plan=plan), list(tools))


def _stored(service: ResultsPersistenceService, handler: PersistCallbackHandler, run: Any) -> Any:
    """Flush, then the one result of this agent for ``run`` (a run id) and its traces and logs."""
    assert handler.flush(10)
    (result,) = service.find_results(execution_id=str(run))
    traces = service.get_execution_traces(result.execution_id)
    logs = service.get_execution_logs(result.execution_id)
    return result, traces, logs


def test_create_agent_run_is_recorded(service, handler):
    run = uuid.uuid4()
    agent = _agent([["echo"], ["echo", "echo"]])
    out = agent.invoke(
        {"messages": [("user", "hello")]},
        {"callbacks": [handler], "run_id": run, "configurable": {"thread_id": "t-1"},
         "metadata": {"quest_id": "quest-7"}},
    )
    assert out["messages"][-1].content == "answer to hello"

    result, traces, logs = _stored(service, handler, run)
    assert result.status == "completed"
    assert result.result == "answer to hello"
    assert (result.agent_id, result.thread_id, result.quest_id) == ("agent-1", "t-1", "quest-7")
    assert result.metadata["tool_calls"] == 3
    assert result.metadata["llm_calls"] == 3
    assert result.metadata["usage"] == {"input_tokens": 30, "output_tokens": 15,
                                        "total_tokens": 45}
    assert result.metadata["steps"] >= 5
    assert result.completed_at is not None

    tool_traces = [t for t in traces if t.type.startswith("tool_")]
    assert Counter(t.type for t in tool_traces) == {"tool_start": 3, "tool_end": 3}
    assert {t.name for t in tool_traces} == {"echo"}
    ends = [t for t in tool_traces if t.type == "tool_end"]
    assert {t.content for t in ends} == {"echo hello#0", "echo hello#1", "echo hello#2"}
    starts = {t.run_id: t for t in tool_traces if t.type == "tool_start"}
    for end in ends:
        start = starts[end.run_id]  # start and end of one call share its run id
        assert end.metadata["tool_call_id"] == start.metadata["tool_call_id"]
        assert end.duration is not None and end.duration >= 0
        assert end.parent_run_id and end.metadata["node"] == "tools"
        assert end.metadata["thread_id"] == "t-1" and isinstance(end.metadata["step"], int)
    assert '"text":"hello#0"' in starts[ends[0].run_id].content or any(
        '"hello#0"' in s.content for s in starts.values()
    )
    llm = [t for t in traces if t.type == "llm_end"]
    assert len(llm) == 3 and llm[-1].content == "answer to hello"
    assert llm[0].metadata["tool_calls"] == ["echo"]
    assert [entry.message for entry in logs] == [
        "execution started: LangGraph", "execution completed: LangGraph",
    ]
    assert "hello" in logs[0].metadata["detail"]
    assert handler.active_runs == 0
    assert not handler.dropped


def test_prebuilt_react_agent_is_recorded(service, handler):
    from langgraph.prebuilt import create_react_agent

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it moved to langchain.agents; still widely used
        agent = create_react_agent(ScriptedChatModel(plan=[["echo"]]), [echo])
    run = uuid.uuid4()
    out = agent.invoke({"messages": [("user", "hi")]}, {"callbacks": [handler], "run_id": run})
    assert out["messages"][-1].content == "answer to hi"
    result, traces, _ = _stored(service, handler, run)
    assert result.status == "completed" and result.result == "answer to hi"
    assert [t.type for t in traces if t.type.startswith("tool")] == ["tool_start", "tool_end"]
    assert traces[-1].type == "llm_end"


def test_plain_chain_is_one_execution(service, handler):
    prompt = ChatPromptTemplate.from_messages([("user", "say {word}")])
    model = GenericFakeChatModel(messages=iter([AIMessage(content="bird")]))
    chain = prompt | model | StrOutputParser()
    run = uuid.uuid4()
    assert chain.invoke({"word": "bird"}, {"callbacks": [handler], "run_id": run}) == "bird"
    result, traces, logs = _stored(service, handler, run)
    assert (result.status, result.result) == ("completed", "bird")
    assert [t.type for t in traces] == ["llm_end"]
    assert traces[0].content == "bird" and traces[0].name == "GenericFakeChatModel"
    assert len(logs) == 2


def test_tool_called_directly_is_traced_without_a_result(service, handler):
    run = uuid.uuid4()
    assert echo.invoke({"text": "x"}, {"callbacks": [handler], "run_id": run}) == "echo x"
    assert handler.flush(10)
    traces = service.get_execution_traces(str(run))
    assert [(t.type, t.name, t.run_id) for t in traces] == [
        ("tool_start", "echo", str(run)), ("tool_end", "echo", str(run)),
    ]
    assert traces[1].content == "echo x"
    assert not service.find_results(execution_id=str(run))
    assert handler.active_runs == 0


def test_handled_tool_error_is_an_error(service, handler):
    call = {"type": "tool_call", "id": "c-1", "name": "refuse", "args": {"text": "x"}}
    run = uuid.uuid4()
    message = refuse.invoke(call, {"callbacks": [handler], "run_id": run})
    assert message.status == "error"
    assert handler.flush(10)
    start, end = service.get_execution_traces(str(run))
    assert (start.type, end.type) == ("tool_start", "tool_error")
    assert end.content == "refused x"
    assert end.metadata["handled"] is True and end.metadata["tool_call_id"] == "c-1"


def test_agent_with_handled_tool_error_completes(service, handler):
    run = uuid.uuid4()
    out = _agent([["refuse"]]).invoke(
        {"messages": [("user", "q")]}, {"callbacks": [handler], "run_id": run}
    )
    assert out["messages"][-1].content == "answer to q"
    result, traces, _ = _stored(service, handler, run)
    assert result.status == "completed"
    tools = [(t.type, t.name) for t in traces if t.type.startswith("tool")]
    assert tools == [("tool_start", "refuse"), ("tool_error", "refuse")]


def test_tool_that_raises_fails_the_run(service, handler):
    run = uuid.uuid4()
    with pytest.raises(RuntimeError, match="exploded on q#0"):
        _agent([["explode"]]).invoke(
            {"messages": [("user", "q")]}, {"callbacks": [handler], "run_id": run}
        )
    result, traces, logs = _stored(service, handler, run)
    assert result.status == "failed"
    assert result.error == "RuntimeError: exploded on q#0"
    errors = [t for t in traces if t.type.endswith("error")]
    assert [(t.type, t.name) for t in errors] == [("tool_error", "explode")]  # traced once
    assert errors[0].content == "RuntimeError: exploded on q#0"
    assert logs[-1].level == "error" and "exploded" in logs[-1].message
    assert handler.active_runs == 0


def test_tool_raising_directly_is_traced(service, handler):
    run = uuid.uuid4()
    with pytest.raises(RuntimeError):
        explode.invoke({"text": "z"}, {"callbacks": [handler], "run_id": run})
    assert handler.flush(10)
    assert [t.type for t in service.get_execution_traces(str(run))] == ["tool_start", "tool_error"]


class _State(TypedDict):
    text: str


def test_nested_graph_belongs_to_the_outer_execution(service, handler):
    inner = StateGraph(_State)
    inner.add_node("shout", lambda s: {"text": echo.invoke({"text": s["text"]}).upper()})
    inner.add_edge(START, "shout")
    inner.add_edge("shout", END)
    sub = inner.compile()

    outer = StateGraph(_State)
    outer.add_node("call_sub", lambda s: sub.invoke(s))  # a graph called from a node
    outer.add_node("as_node", sub)  # and a graph as a node
    outer.add_edge(START, "call_sub")
    outer.add_edge("call_sub", "as_node")
    outer.add_edge("as_node", END)
    run = uuid.uuid4()
    out = outer.compile().invoke({"text": "a"}, {"callbacks": [handler], "run_id": run})
    assert out["text"] == "ECHO ECHO A"
    result, traces, _ = _stored(service, handler, run)
    assert result.result == '{"text":"ECHO ECHO A"}'
    assert [t.type for t in traces] == ["tool_start", "tool_end"] * 2
    assert len(service.find_results(agent_id="agent-1")) == 1


def test_twenty_concurrent_runs_share_one_handler(service, handler):
    agent = _agent([["echo", "echo"], ["echo"]])
    runs = {f"user-{i}": uuid.uuid4() for i in range(20)}

    def go(name: str) -> str:
        out = agent.invoke({"messages": [("user", name)]},
                           {"callbacks": [handler], "run_id": runs[name]})
        return out["messages"][-1].content

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(go, runs))
    assert answers == [f"answer to {name}" for name in runs]
    assert handler.flush(10)
    for name, run in runs.items():
        result, traces, logs = _stored(service, handler, run)
        assert result.status == "completed" and result.result == f"answer to {name}"
        tool_traces = [t for t in traces if t.type.startswith("tool")]
        assert len(tool_traces) == 6
        for t in tool_traces:  # every trace is attributed to its own execution
            assert f"{name}#" in t.content
        assert len(logs) == 2
    assert handler.active_runs == 0


async def test_async_runs_are_recorded(service, handler):
    agent = _agent([["echo"], ["refuse"]])
    runs = [uuid.uuid4() for _ in range(5)]
    outs = await asyncio.gather(*(
        agent.ainvoke({"messages": [("user", f"a{i}")]}, {"callbacks": [handler], "run_id": r})
        for i, r in enumerate(runs)
    ))
    assert [o["messages"][-1].content for o in outs] == [f"answer to a{i}" for i in range(5)]
    await asyncio.to_thread(handler.flush, 10)
    for i, run in enumerate(runs):
        (result,) = await service.afind_results(execution_id=str(run))
        assert result.status == "completed"
        traces = await service.aget_execution_traces(str(run))
        assert [t.type for t in traces if t.type.startswith("tool")] == [
            "tool_start", "tool_end", "tool_start", "tool_error",
        ]
        assert all(f"a{i}#" in t.content for t in traces if t.type == "tool_start")
    assert handler.active_runs == 0


def test_custom_events_retries_and_failure_are_logged(service, handler):
    attempts = []

    def flaky(x: int) -> int:
        attempts.append(x)
        if len(attempts) < 2:
            raise ValueError("flaky")
        dispatch_custom_event("progress", {"done": 50})
        return x

    chain = RunnableLambda(flaky).with_retry(stop_after_attempt=3, wait_exponential_jitter=False)
    run = uuid.uuid4()
    assert chain.invoke(1, {"callbacks": [handler], "run_id": run}) == 1
    result, traces, logs = _stored(service, handler, run)
    assert result.status == "completed" and result.result == "1"
    messages = [(entry.level, entry.message) for entry in logs]
    assert ("warn", "retrying flaky: attempt 2") in messages
    custom = [entry for entry in logs if entry.message == "custom event: progress"]
    assert custom and custom[0].metadata["detail"] == '{"done":50}'
    assert [t.type for t in traces] == ["chain_error"]  # the failed first attempt

    failing = RunnableLambda(lambda x: 1 / 0)
    run = uuid.uuid4()
    with pytest.raises(ZeroDivisionError):
        failing.invoke(1, {"callbacks": [handler], "run_id": run})
    result, _, logs = _stored(service, handler, run)
    assert result.status == "failed" and result.error.startswith("ZeroDivisionError")
    assert logs[-1].level == "error"


def test_recursion_limit_warning(service, handler):
    run = uuid.uuid4()
    with pytest.raises(GraphRecursionError):
        _agent([["echo"]] * 20).invoke(
            {"messages": [("user", "loop")]},
            {"callbacks": [handler], "run_id": run, "recursion_limit": 10},
        )
    result, _, logs = _stored(service, handler, run)
    assert result.status == "failed"
    levels = [(entry.level, entry.message.split(":")[0]) for entry in logs]
    assert ("warn", "run is near its recursion limit") in levels
    assert logs[-1].message.startswith("execution failed: recursion limit reached")


def test_execution_id_from_metadata_and_checkpoint_id(service, handler):
    service.save_checkpoint_state(agent_id="agent-1", checkpoint_id="1ef-0001", state={},
                                  thread_id="t-9")
    service.save_checkpoint_state(agent_id="agent-1", checkpoint_id="1ef-0002", state={},
                                  thread_id="t-9")
    _agent([["echo"]]).invoke(
        {"messages": [("user", "q")]},
        {"callbacks": [handler], "metadata": {"execution_id": "exec-42"},
         "configurable": {"thread_id": "t-9"}},
    )
    result, traces, _ = _stored(service, handler, "exec-42")
    assert result.checkpoint_id == "1ef-0002"
    assert len(traces) == 4


def test_mark_stale_results(service, handler):
    import datetime as dt

    left = service.save_result(agent_id="agent-1", execution_id="dead-run")
    done = service.save_result(agent_id="agent-1", execution_id="done-run", status="completed")
    assert service.mark_stale_results(dt.timedelta(hours=1)) == []
    marked = service.mark_stale_results(dt.timedelta(0), agent_id="agent-1")
    assert marked == [left.id]
    stale = service.get_result(left.id)
    assert stale.status == "failed" and stale.error.startswith("abandoned")
    assert service.get_result(done.id).status == "completed"


@pytest.mark.parametrize("raise_error", [False, True])
def test_a_bug_in_the_handler_never_reaches_the_agent(service, caplog, raise_error):
    class Buggy(PersistCallbackHandler):
        def _end_tool(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug in the handler")

    handler = Buggy("agent-1", service=service, raise_error=raise_error)
    run = uuid.uuid4()
    out = _agent([["echo"], ["echo"]]).invoke(
        {"messages": [("user", "hi")]}, {"callbacks": [handler], "run_id": run}
    )
    assert out["messages"][-1].content == "answer to hi"
    result, traces, _ = _stored(service, handler, run)
    assert result.status == "completed"  # the rest of the run is still recorded
    assert [t.type for t in traces if t.type.startswith("tool")] == ["tool_start"] * 2
    assert handler.internal_errors == 2
    reports = [r for r in caplog.records if "a bug in the handler" in str(r.exc_info)]
    assert len(reports) == 1
    assert "on_tool_end failed (reported once" in reports[0].getMessage()
    handler.close()


def test_bad_settings_name_the_fix(service):
    from langchain_persist import ValidationError

    with pytest.raises(ValidationError, match="agent_id"):
        PersistCallbackHandler("", service=service)
    with pytest.raises(ValidationError, match="flush_interval"):
        PersistCallbackHandler("a", service=service, flush_interval=0)


def test_bulk_rows_round_trip(service):
    """The writer's bulk path (COPY / executemany) stores awkward text and JSON exactly."""
    awkward = 'tab\there, newline\nthere, back\\slash, "quotes", NUL\x00, é, 🙂'
    rows = [
        service.trace_row(agent_id="a", execution_id="bulk", type="tool_end", name=f"n{i}",
                          content=awkward, metadata={"nested": {"list": [1, 2.5, None]},
                                                     "text": awkward}, duration=i / 3)
        for i in range(3)
    ]
    assert service.save_traces(rows) == 3
    stored = service.get_execution_traces("bulk")
    assert [t.name for t in stored] == ["n0", "n1", "n2"]
    assert stored[0].content == awkward.replace("\x00", "\ufffd")
    assert stored[1].metadata == {"nested": {"list": [1, 2.5, None]},
                                  "text": awkward.replace("\x00", "\ufffd")}
    assert stored[2].duration == pytest.approx(2 / 3)
    assert [t.id for t in stored] == [str(uuid.UUID(r[2])) for r in rows]  # the id column
    log = service.log_row(agent_id="a", execution_id="bulk", message=awkward, level="warning")
    assert service.save_logs([log]) == 1
    assert service.get_execution_logs("bulk")[0].message == awkward.replace("\x00", "\ufffd")


def test_event_rows_read_back_as_the_events_were(service):
    """Event rows are built once, in the driver's form (what the writer stores); read back,
    and as `save_trace` returns them, they hold exactly what happened: the moment to the
    microsecond (rounded as datetime rounds it), cleaned and truncated text, the run context."""
    from langchain_persist._db.schema import agent_traces
    from langchain_persist._db.sql.events import as_record
    from langchain_persist._results.events import LogEvent, TraceEvent

    awkward = 'tab\there, NUL\x00, "quotes", é, 🙂'
    clean = awkward.replace("\x00", "\ufffd")
    run, parent, thread = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    moments = [1_700_000_000.0, 1_700_000_000.9999996, 1_700_000_001.1234565, time.time()]
    context = {"langgraph_node": "tools", "langgraph_step": 3, "thread_id": thread,
               "langgraph_checkpoint_ns": "tools:x", "langgraph_path": ("__pregel_pull",)}
    fmt, limit = service.event_format(), service.trace_content_limit
    traces = [TraceEvent("a", run, "tool_end", "name\x00", awkward * 100, run, parent, 1.5, at,
                         context, {"tool_call_id": "c1", "handled": True}) for at in moments]
    logs = [LogEvent("a", run, "warn", awkward, "src", at, {"n": 1}, detail=awkward * 100)
            for at in moments]
    trace_rows = [e.to_values(fmt, limit) for e in traces]
    assert service.insert_events("traces", trace_rows).stored == 4
    assert service.insert_events("logs", [e.to_values(fmt, limit) for e in logs]).stored == 4

    stored = service.get_execution_traces(str(run))
    assert [t.timestamp for t in stored] == [dt.datetime.fromtimestamp(at, dt.UTC)
                                             for at in moments]
    assert [as_record(agent_traces, r) for r in trace_rows] == list(stored)
    first = stored[0]
    assert (first.agent_id, first.run_id, first.parent_run_id) == ("a", str(run), str(parent))
    assert (first.name, first.duration, first.type) == ("name\ufffd", 1.5, "tool_end")
    assert first.content == (clean * 100)[:limit]
    assert first.metadata == {
        "node": "tools", "step": 3, "thread_id": str(thread), "checkpoint_ns": "tools:x",
        "tool_call_id": "c1", "handled": True, "truncated": True,
        "content_length": len(awkward) * 100,
    }
    assert CONTEXT_KEYS["langgraph_node"] == "node"
    log = service.get_execution_logs(str(run))[0]
    assert (log.level, log.message, log.source) == ("warn", clean, "src")
    assert log.metadata == {"n": 1, "detail": (clean * 100)[:limit],
                            "detail_length": len(awkward) * 100}
    assert log.timestamp == dt.datetime.fromtimestamp(moments[0], dt.UTC)


def test_result_is_updated_while_the_run_goes(service, handler, monkeypatch):
    # progress is written once a run has lasted PROGRESS_EVERY (1 s), then as often: a run
    # of real model calls; this one is scripted, so its first call ends at once
    monkeypatch.setattr("langchain_persist._callbacks.handler.PROGRESS_EVERY", 0.0)
    seen = []

    @tool
    def check(text: str) -> str:
        """Look at the stored result in the middle of the run."""
        assert handler.flush(10)
        (row,) = service.find_results(agent_id="agent-1")
        seen.append(row)
        return "checked"

    run = uuid.uuid4()
    create_agent(ScriptedChatModel(plan=[["check"]]), [check]).invoke(
        {"messages": [("user", "q")]}, {"callbacks": [handler], "run_id": run}
    )
    (during,) = seen
    assert during.status == "running" and during.completed_at is None
    assert during.metadata["llm_calls"] == 1
    assert during.metadata["usage"]["total_tokens"] == 15
    result, _, _ = _stored(service, handler, run)
    assert result.status == "completed" and result.metadata["llm_calls"] == 2


def test_a_dropped_handler_stores_its_events_and_ends_its_thread(service):
    import gc

    handler = PersistCallbackHandler("agent-1", service=service)
    run = uuid.uuid4()
    echo.invoke({"text": "x"}, {"callbacks": [handler], "run_id": run})
    thread = handler.writer._thread
    del handler
    gc.collect()
    thread.join(10)
    assert not thread.is_alive()
    assert [t.type for t in service.get_execution_traces(str(run))] == ["tool_start", "tool_end"]


def test_streamed_run_is_recorded(service, handler):
    run = uuid.uuid4()
    chunks = list(_agent([["echo"]]).stream(
        {"messages": [("user", "s")]}, {"callbacks": [handler], "run_id": run},
        stream_mode="updates",
    ))
    assert chunks
    result, traces, _ = _stored(service, handler, run)
    assert result.status == "completed" and result.result == "answer to s"
    assert [t.type for t in traces if t.type.startswith("tool")] == ["tool_start", "tool_end"]


def _asking_graph() -> Any:
    """A one-node graph that asks a question with interrupt() (checkpointed in memory)."""
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import interrupt

    def ask(state: _State) -> dict[str, str]:
        return {"text": state["text"] + interrupt("which colour?")}

    builder = StateGraph(_State)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    return builder.compile(checkpointer=InMemorySaver())


def test_interrupted_run_is_marked_and_resumes_as_a_new_execution(service, handler):
    from langgraph.types import Command

    graph = _asking_graph()
    config = {"callbacks": [handler], "configurable": {"thread_id": "t-hitl"}}
    first, second = uuid.uuid4(), uuid.uuid4()
    out = graph.invoke({"text": "sky is "}, {**config, "run_id": first})
    assert "__interrupt__" in out
    paused, traces, logs = _stored(service, handler, first)
    assert paused.status == "interrupted" and paused.metadata["interrupted"] is True
    assert paused.completed_at is not None and paused.error is None
    assert not [t for t in traces if t.type.endswith("error")]  # an interrupt is no error
    assert logs[-1].message == "execution interrupted, waiting for input: LangGraph"
    assert service.find_results(status="interrupted", thread_id="t-hitl")[0].id == paused.id

    assert graph.invoke(Command(resume="blue"), {**config, "run_id": second}) == {
        "text": "sky is blue"
    }
    done, _, _ = _stored(service, handler, second)
    assert done.status == "completed" and done.result == '{"text":"sky is blue"}'
    resumed = service.get_result(paused.id)  # resumed: it waits no more
    assert resumed.status == "completed" and resumed.metadata["resumed_by"] == str(second)
    assert resumed.completed_at == paused.completed_at  # when the run itself stopped
    assert handler.active_runs == 0


def test_an_async_resume_ends_the_interrupted_run_without_a_write_on_the_loop(service, handler):
    """In an async run the end goes through the spool (no database I/O on the event loop), and
    it still resumes the thread's interrupted run once the writer has stored it."""
    from langgraph.types import Command

    graph = _asking_graph()
    config = {"callbacks": [handler], "configurable": {"thread_id": "t-hitl-async"}}
    first, second = uuid.uuid4(), uuid.uuid4()

    async def both() -> None:
        await graph.ainvoke({"text": "sky is "}, {**config, "run_id": first})
        assert await handler.aflush(10)
        await graph.ainvoke(Command(resume="blue"), {**config, "run_id": second})

    asyncio.run(both())
    done, _, _ = _stored(service, handler, second)
    paused, _, _ = _stored(service, handler, first)
    assert done.status == "completed" and done.result == '{"text":"sky is blue"}'
    assert paused.status == "completed" and paused.metadata["resumed_by"] == str(second)


@pytest.mark.parametrize("settings", [{"spool": False}, {"raise_error": True}],
                         ids=["no spool", "raise_error"])
def test_an_async_run_waits_for_its_writes_without_blocking_the_loop(sqlite_url, settings):
    """With no spool, or with raise_error=True, an async run's start or end writes to the
    database and waits for it: in a worker thread, so the loop goes on meanwhile (here, to
    free the write lock that the write waits for)."""
    service = ResultsPersistenceService(sqlite_url)
    handler = PersistCallbackHandler("a", service=service, **settings)
    assert service.find_results() == []  # (the schema is made before the lock is taken)
    run = uuid.uuid4()

    async def locked_while_running() -> bool:
        locker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
        locker.execute("BEGIN IMMEDIATE")  # another process's write lock, held
        task = asyncio.create_task(_agent([["echo"]]).ainvoke(
            {"messages": [("user", "hi")]}, {"callbacks": [handler], "run_id": run}))
        await asyncio.sleep(0.3)  # the run reaches its write, which waits for the lock
        waiting = not task.done()
        locker.execute("ROLLBACK")  # only if the loop is free: else not before the write failed
        locker.close()
        await task
        return waiting

    assert asyncio.run(locked_while_running())
    result, traces, _ = _stored(service, handler, run)
    assert result.status == "completed" and result.result == "answer to hi"
    assert [t.type for t in traces if t.type.startswith("tool")] == ["tool_start", "tool_end"]
    handler.close()
    service.close()


def test_an_interrupted_run_fails_when_its_resume_fails(service, handler):
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import Command, interrupt

    def ask(state: _State) -> dict[str, str]:
        answer = interrupt("which colour?")
        if answer == "none":
            raise ValueError("no colour given")
        return {"text": state["text"] + answer}

    builder = StateGraph(_State)
    builder.add_node("ask", ask)
    builder.add_edge(START, "ask")
    builder.add_edge("ask", END)
    graph = builder.compile(checkpointer=InMemorySaver())
    config = {"callbacks": [handler], "configurable": {"thread_id": "t-hitl-fail"}}
    first, second = uuid.uuid4(), uuid.uuid4()
    graph.invoke({"text": "sky is "}, {**config, "run_id": first})
    with pytest.raises(ValueError, match="no colour"):
        graph.invoke(Command(resume="none"), {**config, "run_id": second})
    paused, _, _ = _stored(service, handler, first)
    failed, _, _ = _stored(service, handler, second)
    assert failed.status == "failed"
    assert paused.status == "failed" and paused.metadata["resumed_by"] == str(second)
    assert paused.error is None  # its own run did not fail: the one that resumed it did


def test_interrupt_inside_a_tool_is_a_pause_not_an_error(service, handler):
    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.types import interrupt

    @tool
    def approve(text: str) -> str:
        """Ask a human before going on."""
        return f"approved: {interrupt({'question': text})}"

    agent = create_agent(ScriptedChatModel(plan=[["approve"]]), [approve],
                         checkpointer=InMemorySaver())
    run = uuid.uuid4()
    out = agent.invoke({"messages": [("user", "deploy")]},
                       {"callbacks": [handler], "configurable": {"thread_id": "t-tool-hitl"},
                        "run_id": run})
    assert "__interrupt__" in out
    result, traces, _ = _stored(service, handler, run)
    assert result.status == "interrupted" and result.error is None
    assert result.metadata["interrupted"] is True
    tool_traces = [(t.type, t.name) for t in traces if t.type.startswith("tool")]
    assert tool_traces == [("tool_start", "approve"), ("tool_interrupt", "approve")]
