"""DeltaChannel: history replay, and prune / delete_for_runs that never break it."""

from __future__ import annotations

from typing import Annotated, Any, TypedDict

import pytest
from langgraph.channels.delta import DeltaChannel
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, StateGraph

from langchain_persist import PersistSaver, ValidationError


def _append(state: list[str], writes: list[list[str]]) -> list[str]:
    return [*state, *(item for write in writes for item in write)]


class State(TypedDict):
    """A log kept by a DeltaChannel that snapshots every 4 updates."""

    items: Annotated[list[str], DeltaChannel(_append, snapshot_frequency=4)]
    target: int


def _graph(saver: Any) -> Any:
    def step(state: State) -> dict[str, Any]:
        return {"items": [f"item {len(state['items'])}"]}

    def more(state: State) -> str:
        return "step" if len(state["items"]) < state["target"] else END

    builder = StateGraph(State)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_conditional_edges("step", more, ["step", END])
    return builder.compile(checkpointer=saver)


def _cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}, "recursion_limit": 200}


def _history(graph: Any, thread: str) -> list[tuple[list[str], int]]:
    return [(s.values.get("items", []), s.metadata["step"])
            for s in graph.get_state_history(_cfg(thread))]


def test_delta_channel_matches_in_memory_saver(db_url: str) -> None:
    reference = _graph(InMemorySaver())
    reference.invoke({"items": [], "target": 11}, _cfg("d"))
    ours = _graph(PersistSaver.from_url(db_url))
    ours.invoke({"items": [], "target": 11}, _cfg("d"))
    assert _history(ours, "d") == _history(reference, "d")
    fresh = _graph(PersistSaver.from_url(db_url))  # a new process would start like this
    assert fresh.get_state(_cfg("d")).values["items"] == [f"item {i}" for i in range(11)]
    fresh.invoke({"target": 15}, _cfg("d"))
    assert fresh.get_state(_cfg("d")).values["items"][-1] == "item 14"


def test_prune_keeps_what_the_latest_checkpoint_replays(db_url: str) -> None:
    saver = PersistSaver.from_url(db_url)
    graph = _graph(saver)
    graph.invoke({"items": [], "target": 10}, _cfg("p"))
    expected = graph.get_state(_cfg("p")).values
    before = len(list(saver.list(_cfg("p"))))
    saver.prune(["p"], strategy="keep_latest")
    after = len(list(saver.list(_cfg("p"))))
    assert 1 < after < before  # the head and its ancestors back to the last snapshot
    fresh = _graph(PersistSaver.from_url(db_url))
    assert fresh.get_state(_cfg("p")).values == expected
    fresh.invoke({"target": 12}, _cfg("p"))
    assert fresh.get_state(_cfg("p")).values["items"] == [f"item {i}" for i in range(12)]


def test_delete_for_runs_refuses_to_break_a_later_run(db_url: str) -> None:
    saver = PersistSaver.from_url(db_url)
    graph = _graph(saver)
    first, second = "00000000-0000-4000-8000-000000000001", "00000000-0000-4000-8000-000000000002"
    graph.invoke({"items": [], "target": 6}, {**_cfg("r"), "run_id": first})
    graph.invoke({"target": 7}, {**_cfg("r"), "run_id": second})
    count = len(list(saver.list(_cfg("r"))))
    with pytest.raises(ValidationError, match="rebuild a DeltaChannel"):
        saver.delete_for_runs([first])
    assert len(list(saver.list(_cfg("r")))) == count  # nothing was deleted
    saver.delete_for_runs([second])  # the latest run can go: nothing later depends on it
    assert graph.get_state(_cfg("r")).values["items"] == [f"item {i}" for i in range(6)]
