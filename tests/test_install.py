"""Installing the package: the handler and the saver need neither the CLI's stack nor the demo's,
and importing the package changes nothing process-wide."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

WITHOUT_EXTRAS = textwrap.dedent('''
    import importlib.util, sys
    for name in ("typer", "rich", "langchain"):
        assert importlib.util.find_spec(name) is None, f"{name} came with the core install"

    from typing import TypedDict
    from langchain_core.tools import tool
    from langgraph.graph import END, START, StateGraph
    from langchain_persist import PersistCallbackHandler, PersistSaver, ResultsPersistenceService

    url = sys.argv[1]

    @tool
    def double(x: int) -> int:
        """Double a number."""
        return 2 * x

    class State(TypedDict):
        x: int

    def step(state: State) -> State:
        return {"x": double.invoke({"x": state["x"]})}

    builder = StateGraph(State)
    builder.add_node("step", step)
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    with PersistSaver.from_url(url) as saver:
        graph = builder.compile(checkpointer=saver)
        handler = PersistCallbackHandler("core-only", url=url)
        config = {"configurable": {"thread_id": "t"}, "callbacks": [handler]}
        assert graph.invoke({"x": 21}, config) == {"x": 42}
        assert handler.flush(10)
        assert saver.get_tuple({"configurable": {"thread_id": "t"}}).checkpoint[
            "channel_values"]["x"] == 42
    service = ResultsPersistenceService(url)
    (result,) = service.get_agent_results("core-only")
    traces = service.get_execution_traces(result.execution_id)
    assert result.status == "completed"
    assert [t.type for t in traces if t.name == "double"] == ["tool_start", "tool_end"]
    print("core install ok")
''')


def test_handler_and_saver_work_without_the_cli_extra(tmp_path):
    venv = tmp_path / "venv"
    uv = [sys.executable, "-m", "uv"]
    subprocess.run([*uv, "venv", "-q", str(venv), "--python", sys.executable], check=True)
    python = venv / "bin" / "python"
    subprocess.run([*uv, "pip", "install", "-q", "--python", str(python), str(ROOT)],
                   check=True, capture_output=True)
    script = tmp_path / "core.py"
    script.write_text(WITHOUT_EXTRAS)
    run = subprocess.run([str(python), str(script), f"sqlite:///{tmp_path / 'core.db'}"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "core install ok" in run.stdout
    command = subprocess.run([str(venv / "bin" / "langchain-persist"), "runs", "list"],
                             capture_output=True, text=True, timeout=60)
    assert command.returncode == 1
    assert "pip install 'langchain-persist[cli]'" in command.stderr


IMPORT_CHANGES_NOTHING = textwrap.dedent('''
    import atexit, logging, signal, sys, threading
    # what the dependencies do on import is theirs: import them first
    import alembic.command, langchain_core.callbacks, langchain_core.tools, langgraph.graph
    import langgraph.checkpoint.serde.jsonplus, orjson, sqlalchemy.orm, zstandard
    before = (signal.getsignal(signal.SIGTERM), atexit._ncallbacks(),
              logging.getLogger("langchain_persist").filters,
              logging.getLogger("langchain_persist").handlers, logging.getLogger().handlers,
              threading.active_count())
    import langchain_persist, langchain_persist.testing
    langchain_persist.results_persistence  # the lazy singleton: made, not opened
    after = (signal.getsignal(signal.SIGTERM), atexit._ncallbacks(),
             logging.getLogger("langchain_persist").filters,
             logging.getLogger("langchain_persist").handlers, logging.getLogger().handlers,
             threading.active_count())
    assert before == after, (before, after)
    from langchain_persist import PersistCallbackHandler
    handler = PersistCallbackHandler("a", url=sys.argv[1])
    print(signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL, atexit._ncallbacks() > 0)
''')


def test_importing_changes_nothing_process_wide(tmp_path):
    """Importing is free of side effects; the first handler installs the documented exit and
    SIGTERM flushes, and LANGCHAIN_PERSIST_SIGTERM=off leaves SIGTERM alone."""
    script = tmp_path / "imports.py"
    script.write_text(IMPORT_CHANGES_NOTHING)
    url = f"sqlite:///{tmp_path / 'x.db'}"
    for env, expected in (({}, "True True"), ({"LANGCHAIN_PERSIST_SIGTERM": "off"}, "False True")):
        run = subprocess.run([sys.executable, str(script), url], capture_output=True, text=True,
                             timeout=60, env={"PATH": "/usr/bin:/bin", **env})
        assert run.returncode == 0, run.stderr
        assert run.stdout.split() == expected.split()
