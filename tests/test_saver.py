"""PersistSaver with real graphs: the same results as PostgresSaver, resume, time travel."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.types import Command, Interrupt
from psycopg.rows import dict_row
from saver_graphs import agent_graph, approval_graph, nested_graph

from langchain_persist import OwnershipError, PersistSaver, SerializationError, ValidationError


def _cfg(thread: str, **extra: Any) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread, **extra}, "recursion_limit": 200}


def _plain(value: Any) -> Any:
    """A value with messages as dicts without their random ids, to compare two runs."""
    if isinstance(value, BaseMessage):
        return value.model_dump(exclude={"id"})
    if isinstance(value, Interrupt):
        return ("interrupt", _plain(value.value))
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _snapshot(graph: Any, config: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What a user sees of a thread's history, without the ids that differ between savers."""
    return [
        (_plain(s.values), s.next, s.metadata["step"], s.metadata["source"], len(s.tasks),
         _plain([t.interrupts for t in s.tasks]))
        for s in graph.get_state_history(config)
    ]


@pytest.fixture
def postgres_saver(pg_url: str):
    """LangGraph's own PostgresSaver, the reference, in a fresh database."""
    with PostgresSaver.from_conn_string(pg_url) as saver:
        saver.setup()
        yield saver


def test_same_history_as_postgres_saver(db_url: str, postgres_saver: PostgresSaver) -> None:
    ours = PersistSaver.from_url(db_url)
    for builder, first, then in (
        (agent_graph(12), {"messages": [("user", "hi")]}, None),
        (approval_graph(), {"request": "deploy", "log": []}, Command(resume="yes")),
        (nested_graph(), {"request": "nested", "log": []}, Command(resume="ok")),
    ):
        results = []
        for saver in (postgres_saver, ours):
            graph = builder.compile(checkpointer=saver)
            config = _cfg(f"diff-{id(builder)}")
            outputs = [graph.invoke(first, config)]
            if then is not None:
                outputs.append(graph.invoke(then, config))
            state = graph.get_state(config, subgraphs=True)
            listed = [
                (t.metadata["step"], t.metadata["source"], sorted(t.checkpoint["channel_values"]))
                for t in saver.list(config)
            ]
            seen = (_plain(outputs), _plain(state.values), state.next, _snapshot(graph, config))
            results.append((*seen, listed))
        assert results[0] == results[1]


def test_sync_api_round_trip(db_url: str) -> None:
    saver = PersistSaver.from_url(db_url)
    graph = agent_graph(5).compile(checkpointer=saver)
    graph.invoke({"messages": [("user", "hi")]}, _cfg("t1"))
    latest = saver.get_tuple(_cfg("t1"))
    assert latest is not None and len(latest.checkpoint["channel_values"]["messages"]) == 12
    history = list(saver.list(_cfg("t1")))
    assert history[0].config == latest.config
    assert [t.metadata["step"] for t in history] == list(range(11, -2, -1))
    assert [t.metadata["step"] for t in saver.list(_cfg("t1"), limit=3)] == [11, 10, 9]
    before = list(saver.list(_cfg("t1"), before=history[2].config, limit=2))
    assert [t.config for t in before] == [history[3].config, history[4].config]
    assert [t.metadata["step"] for t in saver.list(None, filter={"source": "input"})] == [-1]
    assert [t.metadata["step"] for t in saver.list(_cfg("t1"), filter={"step": 4})] == [4]
    by_id = saver.get_tuple(history[5].config)
    assert by_id is not None and by_id.checkpoint == history[5].checkpoint
    assert by_id.parent_config == history[6].config

    saver.copy_thread("t1", "t2")
    assert [t.checkpoint for t in saver.list(_cfg("t2"))] == [t.checkpoint for t in history]
    with pytest.raises(ValidationError, match="already has checkpoints"):
        saver.copy_thread("t1", "t2")
    saver.prune(["t2"], strategy="keep_latest")
    (kept,) = saver.list(_cfg("t2"))
    assert kept.checkpoint == latest.checkpoint and kept.parent_config is None
    graph.invoke({"messages": [("user", "again")]}, _cfg("t2"))  # the pruned thread goes on
    assert len(graph.get_state(_cfg("t2")).values["messages"]) == 14
    saver.delete_thread("t1")
    assert saver.get_tuple(_cfg("t1")) is None and list(saver.list(_cfg("t1"))) == []
    assert saver.get_tuple(_cfg("t2")) is not None


def test_sync_put_writes_and_delete_for_runs(db_url: str) -> None:
    saver = PersistSaver.from_url(db_url)
    graph = approval_graph().compile(checkpointer=saver)
    graph.invoke({"request": "a", "log": []}, {**_cfg("runs"), "run_id": _uuid(1)})
    paused = saver.get_tuple(_cfg("runs"))
    assert paused is not None
    assert [w[1] for w in paused.pending_writes or []] == ["__interrupt__"]
    first_run = [t.config for t in saver.list(_cfg("runs"))]
    graph.invoke(Command(resume="yes"), {**_cfg("runs"), "run_id": _uuid(2)})
    assert len(list(saver.list(_cfg("runs")))) > len(first_run)
    saver.delete_for_runs([_uuid(2)])
    assert [t.config for t in saver.list(_cfg("runs"))] == first_run
    # the thread is back where run 1 left it: paused at the approval, and can be resumed again
    assert graph.get_state(_cfg("runs")).next == ("approve",)
    assert graph.invoke(Command(resume="no"), _cfg("runs"))["log"][-2:] == ["decision: no",
                                                                              "acted"]


def _uuid(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


def test_interrupt_and_resume_with_a_new_saver(db_url: str) -> None:
    graph = approval_graph().compile(checkpointer=PersistSaver.from_url(db_url))
    out = graph.invoke({"request": "deploy", "log": []}, _cfg("approval"))
    assert out["__interrupt__"][0].value == {"question": "approve deploy?"}
    # a new saver (as a restarted server would have) resumes the same thread
    again = approval_graph().compile(checkpointer=PersistSaver.from_url(db_url))
    assert again.get_state(_cfg("approval")).next == ("approve",)
    done = again.invoke(Command(resume="approved"), _cfg("approval"))
    assert done["log"] == ["prepared deploy", "decision: approved", "acted"]


def test_time_travel_and_fork(db_url: str) -> None:
    graph = agent_graph(4).compile(checkpointer=PersistSaver.from_url(db_url))
    graph.invoke({"messages": [("user", "hi")]}, _cfg("tt"))
    history = list(graph.get_state_history(_cfg("tt")))
    early = next(s for s in history if s.metadata["step"] == 3)
    assert len(early.values["messages"]) == 4
    # replay from the earlier checkpoint: the thread forks and runs to the end again
    replayed = graph.invoke(None, early.config)
    assert len(replayed["messages"]) == 10
    # fork by editing the past state
    forked = graph.update_state(early.config, {"messages": [("user", "change of plan")]})
    assert graph.get_state(forked).values["messages"][-1].content == "change of plan"
    assert len(list(graph.get_state_history(_cfg("tt")))) > len(history)
    # the original branch is untouched
    assert graph.get_state(history[0].config).values == history[0].values


def test_subgraph_namespaces(db_url: str) -> None:
    saver = PersistSaver.from_url(db_url)
    graph = nested_graph().compile(checkpointer=saver)
    graph.invoke({"request": "x", "log": []}, _cfg("nested"))
    state = graph.get_state(_cfg("nested"), subgraphs=True)
    child = state.tasks[0].state
    assert child.next == ("approve",) and child.config["configurable"]["checkpoint_ns"]
    namespaces = {t.config["configurable"]["checkpoint_ns"] for t in saver.list({
        "configurable": {"thread_id": "nested"}})}
    assert "" in namespaces and any(ns.startswith("child:") for ns in namespaces)
    out = graph.invoke(Command(resume="fine"), _cfg("nested"))
    assert out["log"][-3:] == ["decision: fine", "acted", "parent after"]


def test_storage_keeps_only_appended_messages(db_url: str) -> None:
    saver = PersistSaver.from_url(db_url)
    graph = agent_graph(40).compile(checkpointer=saver)
    out = graph.invoke({"messages": [("user", "hi")]}, _cfg("tails"))
    with saver.db.read() as conn:
        kinds = conn.exec_driver_sql(
            "SELECT base_version IS NOT NULL, count(*) FROM checkpoint_state_values "
            "WHERE channel = 'messages' GROUP BY 1"
        ).all()
    counts = dict(kinds)
    assert counts[True] > 2 * counts[False]  # most versions are stored as tails
    # and every version reads back whole, from this saver and from a new one
    for reader in (saver, PersistSaver.from_url(db_url)):
        history = list(reader.list(_cfg("tails")))
        assert history[0].checkpoint["channel_values"]["messages"] == out["messages"]
        lengths = [len(t.checkpoint["channel_values"].get("messages", [])) for t in history]
        assert lengths == sorted(lengths, reverse=True) and lengths[0] == 82


def test_unserializable_value_names_channel_and_type(db_url: str) -> None:
    class Opaque:
        pass

    def node(state: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [], "extra": Opaque()}

    from typing import TypedDict

    class State(TypedDict):
        messages: list
        extra: Any

    from langgraph.graph import START, StateGraph

    builder = StateGraph(State)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    graph = builder.compile(checkpointer=PersistSaver.from_url(db_url))
    with pytest.raises(SerializationError, match=r"channel 'extra'.*Opaque"):
        graph.invoke({"messages": []}, _cfg("bad"))


def test_missing_thread_id_is_a_clear_error(db_url: str) -> None:
    saver = PersistSaver.from_url(db_url)
    with pytest.raises(ValidationError, match="thread_id"):
        saver.get_tuple({"configurable": {}})
    with pytest.raises(ValidationError, match="strategy must be one of keep_latest, delete"):
        saver.prune(["t"], strategy="all")


async def test_32_async_runs_and_8_threads(db_url: str) -> None:
    saver = PersistSaver.from_url(db_url)
    graph = agent_graph(6).compile(checkpointer=saver)
    outs = await asyncio.gather(*(graph.ainvoke({"messages": [("user", f"run {i}")]},
                                                _cfg(f"async-{i}")) for i in range(32)))
    assert all(len(o["messages"]) == 14 for o in outs)

    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            out = graph.invoke({"messages": [("user", f"t {i}")]}, _cfg(f"thread-{i}"))
            assert len(out["messages"]) == 14
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        await asyncio.to_thread(t.join)
    assert errors == []
    for i in range(32):
        state = await graph.aget_state(_cfg(f"async-{i}"))
        assert state.values["messages"][0].content == f"run {i}"
        assert len([s async for s in graph.aget_state_history(_cfg(f"async-{i}"))]) == 15


def test_postgres_saver_tables_coexist(pg_url: str, postgres_saver: PostgresSaver) -> None:
    PersistSaver.from_url(pg_url)  # same database as LangGraph's own saver: no clash
    with postgres_saver.conn.cursor(row_factory=dict_row) as cur:
        tables = {r["tablename"] for r in cur.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"checkpoints", "checkpoint_blobs", "checkpoint_writes", "checkpoint_states",
            "checkpoint_state_values", "checkpoint_state_writes"} <= tables


def test_checkpoint_state_door(db_url: str) -> None:
    """What the saver stores, the service reads back: one storage, two doors."""
    from langchain_persist import ResultsPersistenceService

    graph = agent_graph(2).compile(checkpointer=PersistSaver.from_url(db_url))
    config = _cfg("door", agent_id="agent-7")
    graph.invoke({"messages": [("user", "hello")]}, config)
    latest = graph.get_state(config).config["configurable"]["checkpoint_id"]
    service = ResultsPersistenceService(db_url)
    state = service.get_checkpoint_state(latest)
    assert state is not None
    assert (state.agent_id, state.thread_id, state.checkpoint_id) == ("agent-7", "door", latest)
    assert state.metadata["step"] == 5 and state.created_at.tzinfo is not None
    messages = state.state["messages"]
    assert [m["type"] for m in messages] == ["human", "ai", "tool", "ai", "tool", "ai"]
    assert messages[0]["content"] == "hello"
    assert messages[-1]["content"] == "done after 2 tool calls"
    with pytest.raises(OwnershipError):
        service.get_checkpoint_state(latest, agent_id="someone-else")


def test_delete_by_another_saver_of_the_process_keeps_lists_whole(db_url: str) -> None:
    """Lists are stored as what was appended to a base; a thread deleted through another saver
    of the same process must not leave the first one appending to a base that is gone."""
    from langchain_core.messages import AIMessage
    from langgraph.checkpoint.base import empty_checkpoint

    runner, admin = PersistSaver.from_url(db_url), PersistSaver.from_url(db_url)
    messages = [AIMessage("x" * 300, id=f"m{i}") for i in range(10)]

    def put(n: int, version: str) -> dict[str, Any]:
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"messages": messages[:n]}
        checkpoint["channel_versions"] = {"messages": version}
        config = {"configurable": {"thread_id": "shared", "checkpoint_ns": ""}}
        return runner.put(config, checkpoint, {"step": n}, {"messages": version})

    put(8, runner.get_next_version(None, None))  # stored whole: the base of what follows
    admin.delete_thread("shared")
    latest = put(9, runner.get_next_version(None, None))  # extends the base that is gone
    fresh = PersistSaver.from_url(db_url).get_tuple(latest)
    assert fresh is not None
    assert fresh.checkpoint["channel_values"]["messages"] == messages[:9]


def test_put_writes_replaces_several_special_writes(db_url: str) -> None:
    """Writes to special channels (errors, interrupts, resumes) replace what a retry left."""
    from langgraph.checkpoint.base import empty_checkpoint

    saver = PersistSaver.from_url(db_url)
    config = saver.put(_cfg("special") | {"configurable": {"thread_id": "special",
                                                            "checkpoint_ns": ""}},
                       empty_checkpoint(), {"step": -1}, {})
    for attempt in ("first", "second"):
        saver.put_writes(config, [("__error__", f"{attempt} error"),
                                  ("__interrupt__", f"{attempt} question"),
                                  ("__resume__", f"{attempt} answer")], "task-1")
    stored = saver.get_tuple(config)
    assert stored is not None
    assert sorted(w[1:] for w in stored.pending_writes or []) == [
        ("__error__", "second error"), ("__interrupt__", "second question"),
        ("__resume__", "second answer"),
    ]
