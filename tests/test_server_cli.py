"""``langchain-persist serve`` in a real process, the missing-extra message, and how graphs are
loaded and given the server's checkpointer."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import server_graphs
from langgraph.graph import START, StateGraph
from server_support import names, post_events, running_server
from typer.testing import CliRunner
from typing_extensions import TypedDict

from langchain_persist import ConfigurationError, PersistSaver
from langchain_persist._cli.commands import app as cli
from langchain_persist.server import create_app, load_graph
from langchain_persist.server._graphs import default_task_input, with_saver

TESTS = Path(__file__).parent


def test_serve_runs_a_graph_until_sigterm(sqlite_url):
    process = subprocess.Popen(
        [sys.executable, "-m", "langchain_persist._cli.commands", "serve", "--graph",
         "server_graphs:agent", "--url", sqlite_url, "--port", "0"],
        cwd=TESTS, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        port, lines = None, []
        timer = threading.Timer(60, process.kill)  # never hang the suite
        timer.start()
        for line in process.stderr:
            lines.append(line)
            if found := re.search(r"running on http://127\.0\.0\.1:(\d+)", line):
                port = int(found.group(1))
                break
        timer.cancel()
        assert port, "".join(lines)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            events = post_events(client, "/api/agents/execute",
                                 {"agentId": "cli-agent", "task": "cli :: echo"})
            assert names(events)[-1] == "complete"
            result = client.get(f"/api/results/{events[-1].data['resultId']}").json()
            assert result["status"] == "completed" and result["result"] == "answer to cli :: echo"
        process.send_signal(signal.SIGTERM)
        # uvicorn shuts down (lifespan included), then re-raises the signal to exit by it
        assert process.wait(30) == -signal.SIGTERM
        assert "Application shutdown complete" in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
        process.stderr.close()


def test_without_the_server_extra_the_error_says_what_to_install():
    code = ("import sys; sys.modules['sse_starlette'] = None\n"
            "from langchain_persist._cli.commands import app\n"
            "app(['serve', '--graph', 'x:y'])")
    cli_run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=120)
    assert cli_run.returncode == 1
    message = " ".join(cli_run.stderr.split())
    assert "needs the 'server' extra (sse_starlette is missing)" in message
    assert "pip install 'langchain-persist[server]'" in message


@pytest.mark.parametrize(("spec", "message"), [
    ("no_colon", "is not of the form module:attr"),
    ("no_such_module_here:graph", "cannot import module 'no_such_module_here'"),
    ("server_graphs:nothing", "has no attribute 'nothing'"),
    ("server_graphs:echo", "cannot serve a StructuredTool"),
    ("server_graphs:plan_of", "plan_of needs arguments"),
])
def test_serve_refuses_what_it_cannot_serve(spec, message, sqlite_url, monkeypatch):
    monkeypatch.chdir(TESTS)
    result = CliRunner().invoke(cli, ["serve", "--graph", spec, "--url", sqlite_url])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())


def test_graphs_are_found_by_name_and_given_the_server_saver(sqlite_url, monkeypatch):
    monkeypatch.chdir(TESTS)
    saver = PersistSaver(sqlite_url)
    assert load_graph("server_graphs:agent") is server_graphs.agent
    assert load_graph("server_graphs:agent.name") == "scripted-agent"  # a dotted attribute
    for target in (server_graphs.agent, server_graphs.task_graph, server_graphs.task_builder):
        graph, used = with_saver(target, lambda: saver)
        assert graph.checkpointer is saver and used is saver
    assert server_graphs.agent.checkpointer is None  # the original is left alone

    class Query(TypedDict):
        query: str

    builder = StateGraph(Query)
    builder.add_node("noop", lambda state: state)
    builder.add_edge(START, "noop")
    with pytest.raises(ConfigurationError, match="task_input=lambda"):
        default_task_input(with_saver(builder, lambda: saver)[0])
    with pytest.raises(ConfigurationError, match="returned a str"):
        with_saver(lambda: "not a graph", lambda: saver)
    app = create_app(builder, url=sqlite_url, task_input=lambda task: {"query": task})
    assert app.state.persist.task_input("q") == {"query": "q"}


def test_the_documented_example_behaves_as_docs_server_md_shows(sqlite_url, monkeypatch):
    monkeypatch.chdir(TESTS.parent / "docs")
    app = create_app(load_graph("server_example:graph"), url=sqlite_url, retry_delay=0)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        events = post_events(client, "/api/agents/execute", {
            "agentId": "travel-agent", "task": "Plan my weekend in Lisbon and book the flight."})
        assert names(events)[0] == "start" and names(events)[-1] == "complete"
        assert names(events) == [
            "start", "thinking", "tool_start", "tool_end",  # the weather
            "thinking", "tool_start", "tool_error", "retry", "tool_start", "tool_end",  # flights
            "thinking", "tool_start", "complete"]  # the booking waits at interrupt()
        done = events[-1].data
        assert done["interrupts"][0]["value"] == {"question": "Book TP 539?"}
        assert done["status"] == "interrupted"
        resumed = post_events(client, "/api/agents/travel-agent/resume", {
            "checkpointId": done["checkpointId"], "resume": {"approved": True}})
        assert resumed[-1].data["output"] == "Booked TP 539 for Saturday; Lisbon will be sunny."
        assert "".join(e.data["token"] for e in resumed if e.event == "token") == (
            resumed[-1].data["output"])
