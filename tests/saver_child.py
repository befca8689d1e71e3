"""A separate process for the saver tests: fail a run, resume it, or get killed mid-run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TypedDict

sys.path.insert(0, str(Path(__file__).parent))

from langgraph.graph import END, START, StateGraph
from saver_graphs import agent_graph

from langchain_persist import PersistSaver


class State(TypedDict, total=False):
    """State of the flaky graph."""

    a: str
    b: str
    c: str


def flaky_graph(workdir: Path) -> StateGraph:
    """a and b run in one super-step; b fails the first time; c needs both."""

    def a(state: State) -> dict[str, Any]:
        count = workdir / "a.count"
        count.write_text(str(int(count.read_text() or 0) + 1) if count.exists() else "1")
        return {"a": "a done"}

    def b(state: State) -> dict[str, Any]:
        marker = workdir / "b.failed"
        if not marker.exists():
            marker.write_text("x")
            raise RuntimeError("b fails the first time")
        return {"b": "b done"}

    def c(state: State) -> dict[str, Any]:
        return {"c": f"{state['a']} + {state['b']}"}

    builder = StateGraph(State)
    for name, node in (("a", a), ("b", b), ("c", c)):
        builder.add_node(name, node)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    builder.add_edge(["a", "b"], "c")
    builder.add_edge("c", END)
    return builder


class ReportingSaver(PersistSaver):
    """Prints each checkpoint id once `put` has returned (that is, once it is committed)."""

    def put(self, config, checkpoint, metadata, new_versions):  # type: ignore[no-untyped-def]
        stored = super().put(config, checkpoint, metadata, new_versions)
        print(stored["configurable"]["checkpoint_id"], flush=True)
        return stored


def main() -> None:
    mode, url, thread = sys.argv[1:4]
    config = {"configurable": {"thread_id": thread}, "recursion_limit": 10_000}
    if mode in ("first", "resume"):
        graph = flaky_graph(Path(sys.argv[4])).compile(checkpointer=PersistSaver.from_url(url))
        try:
            out = graph.invoke({} if mode == "first" else None, config)
        except RuntimeError as exc:
            print(f"failed: {exc}")
            sys.exit(3)
        print(f"output: {out['c']}")
    elif mode == "agents":  # four 30-tool-call runs, threads "<thread>-0" to "<thread>-3"
        graph = agent_graph(30).compile(checkpointer=PersistSaver.from_url(url))
        for i in range(4):
            graph.invoke({"messages": [("user", "hi")]},
                         {**config, "configurable": {"thread_id": f"{thread}-{i}"}})
    elif mode == "long":
        graph = agent_graph(10_000).compile(checkpointer=ReportingSaver.from_url(url))
        graph.invoke({"messages": [("user", "go")]}, config, durability=sys.argv[4])


if __name__ == "__main__":
    main()
