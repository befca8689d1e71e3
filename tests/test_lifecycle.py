"""Process state with a lifecycle: databases recreated under one URL, fork, shared pools, and
checkpoints read with the serializer that wrote them (issue 12's defects, on both databases)."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from handler_support import echo
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.serde.encrypted import EncryptedSerializer
from pg_support import connect
from saver_graphs import agent_graph
from server_support import post_events, running_server
from typer.testing import CliRunner

from langchain_persist import (
    ConfigurationError,
    PersistCallbackHandler,
    PersistSaver,
    ResultsPersistenceService,
    SchemaError,
    SerializationError,
)
from langchain_persist._checkpoint.bases import Bases
from langchain_persist._cli.commands import app as cli
from langchain_persist._db.engine import open_databases, resolve_url
from langchain_persist.server import create_app

SECRET = "the-launch-code-is-0000"
KEY = b"k" * 16
serde = EncryptedSerializer.from_pycryptodome_aes(key=KEY)  # --serde test_lifecycle:serde


def _thread(saver: PersistSaver, thread_id: str, steps: int = 3) -> Any:
    graph = agent_graph(steps, text=SECRET).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": thread_id}}
    return graph.invoke({"messages": [("user", SECRET)]}, config)


def _recreate(url: str, request: Any) -> None:
    """Drop the database and make an empty one under the same URL (a reset script would)."""
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    name = url.rsplit("/", 1)[1]
    with connect(request.getfixturevalue("pg_admin_url")) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')


def _open_urls() -> set[str]:
    return {db.url for db in open_databases()}


# -- a database recreated under the same URL ------------------------------------------------


def test_a_recreated_database_is_set_up_again(db_url, request):
    saver = PersistSaver.from_url(db_url)
    _thread(saver, "before")
    saver.close()
    assert resolve_url(db_url) not in _open_urls()  # the last user closed it: forgotten
    _recreate(db_url, request)
    again = PersistSaver.from_url(db_url)
    assert again.get_tuple({"configurable": {"thread_id": "before"}}) is None
    assert _thread(again, "after")["messages"][-1].content == "done after 3 tool calls"
    again.close()


def test_a_database_recreated_while_in_use_is_rechecked_once(db_url, request):
    """Another object keeps the database open: the missing tables are noticed, the schema is
    created again, and the call goes on; with migrate=False the error names the fix."""
    holder = ResultsPersistenceService(db_url)
    saver = PersistSaver.from_url(db_url)
    _thread(saver, "before")
    holder.save_result(agent_id="a")
    _recreate(db_url, request)
    assert saver.get_tuple({"configurable": {"thread_id": "before"}}) is None
    assert _thread(saver, "after")["messages"][-1].content == "done after 3 tool calls"
    assert holder.get_agent_results("a") == []  # the new, empty database
    reader = ResultsPersistenceService(db_url, migrate=False)
    reader.db  # noqa: B018 - opened while the schema is there
    _recreate(db_url, request)
    with pytest.raises(SchemaError, match="langchain-persist db upgrade"):
        reader.get_agent_results("a")
    for obj in (holder, saver, reader):
        obj.close()


def test_close_releases_only_its_own_use(db_url):
    first, second = PersistSaver.from_url(db_url), PersistSaver.from_url(db_url)
    service = ResultsPersistenceService(db_url)
    assert first.db is second.db is service.db and first.db.refs == 3
    _thread(first, "t")
    first.close()
    assert second.get_tuple({"configurable": {"thread_id": "t"}}) is not None  # pool still open
    assert service.get_agent_results("nobody") == [] and second.db.refs == 2
    second.close()
    service.close()
    assert resolve_url(db_url) not in _open_urls()


def test_the_base_cache_is_bounded_and_goes_with_its_database(db_url):
    bases = Bases(max_bytes=100)
    bases.add([(("t", "", "a"), ("1", "msgpack", b"x" * 60))], ("t", "", "c1"))
    bases.add([(("t", "", "b"), ("1", "msgpack", b"y" * 60))], ("t", "", "c2"))
    assert bases.get(("t", "", "a")) is None and bases.get(("t", "", "b")) is not None
    assert bases.follows("t", "", "c2") and not bases.follows("t", "", "c1")
    saver = PersistSaver.from_url(db_url)
    _thread(saver, "t", steps=6)  # a growing messages list: stored as tails on a base
    db = saver.db
    assert db.caches["checkpoint-bases"].get(("t", "", "messages")) is not None
    saver.close()
    assert db.caches == {}


# -- fork --------------------------------------------------------------------------------------


def _in_child(work: Any) -> int:
    """Run ``work`` in a forked child; its exit status (0 when it returned True)."""
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            code = 0 if work() else 2
        finally:
            os._exit(code)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])


def test_a_forked_child_stores_its_events_and_not_its_parents(db_url):
    service = ResultsPersistenceService(db_url)
    handler = PersistCallbackHandler("forked", service=service, flush_interval=0.05)
    for i in range(10):  # queued in the parent, not yet stored when it forks
        echo.invoke({"text": f"parent {i}"}, {"callbacks": [handler],
                                              "metadata": {"execution_id": "parent"}})

    def child() -> bool:
        for i in range(50):
            echo.invoke({"text": f"child {i}"}, {"callbacks": [handler],
                                                 "metadata": {"execution_id": "child"}})
        return handler.flush(30) and not handler.dropped

    assert _in_child(child) == 0
    assert handler.flush(30)
    child_traces = service.get_execution_traces("child")
    parent_traces = service.get_execution_traces("parent")
    assert sum(t.type == "tool_end" for t in child_traces) == 50
    assert sum(t.type == "tool_end" for t in parent_traces) == 10  # stored once, by the parent
    assert len(parent_traces) == 20 and len(child_traces) == 100
    handler.close()


def test_a_saver_used_by_parent_and_forked_child(db_url):
    saver = PersistSaver.from_url(db_url)
    _thread(saver, "warm")  # the parent's pool holds connections when it forks
    graph = agent_graph(2).compile(checkpointer=saver)

    def runs(who: str) -> bool:
        for n in range(30):
            out = graph.invoke({"messages": [("user", "go")]},
                               {"configurable": {"thread_id": f"{who}-{n}"}})
            if out["messages"][-1].content != "done after 2 tool calls":
                return False
        return True

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with warnings.catch_warnings(record=True) as warned:
                warnings.simplefilter("always")
                ok = runs("child")
                gc.collect()  # the parent's connections, were they dropped, warn here
            code = 0 if ok else 2
            code = code or 3 * any(w.category is ResourceWarning for w in warned)
        finally:
            os._exit(code)
    assert runs("parent")
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    threads = {t.config["configurable"]["thread_id"] for t in saver.list(None)}
    assert {f"{who}-{n}" for who in ("parent", "child") for n in range(30)} <= threads
    saver.close()


# -- checkpoints read with the serializer that wrote them ---------------------------------------


def _plain_bytes(url: str) -> bytes:
    """Every checkpoint blob stored, concatenated (to look for plaintext)."""
    service = ResultsPersistenceService(url)
    with service.db.read() as conn:
        blobs = [r[0] for query in (
            "SELECT checkpoint FROM checkpoint_states WHERE checkpoint IS NOT NULL",
            "SELECT blob FROM checkpoint_state_values WHERE blob IS NOT NULL",
            "SELECT blob FROM checkpoint_state_writes WHERE blob IS NOT NULL",
        ) for r in conn.exec_driver_sql(query)]
    service.close()
    return b"".join(bytes(b) for b in blobs)


def test_encrypted_checkpoints_read_through_the_service_and_the_cli(db_url, monkeypatch):
    saver = PersistSaver.from_url(db_url, serde=serde)
    _thread(saver, "secret")
    assert SECRET.encode() not in _plain_bytes(db_url)
    checkpoint_id = saver.get_tuple({"configurable": {"thread_id": "secret"}}).config[
        "configurable"]["checkpoint_id"]

    state = ResultsPersistenceService(db_url, serde=serde).get_checkpoint_state(checkpoint_id)
    assert state is not None and SECRET in str(state.state["messages"][0])
    with pytest.raises(SerializationError, match=r"msgpack\+aes.*serde=") as caught:
        ResultsPersistenceService(db_url).get_checkpoint_state(checkpoint_id)
    assert "checkpoint" in str(caught.value) and "secret" in str(caught.value)

    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    good = CliRunner().invoke(cli, ["checkpoints", "secret", "--url", db_url, "--json", "--state",
                                    "--serde", "test_lifecycle:serde"])
    assert good.exit_code == 0, good.output
    assert SECRET in good.output
    bad = CliRunner().invoke(cli, ["checkpoints", "secret", "--url", db_url])
    assert bad.exit_code == 1
    assert "--serde" in bad.output and "Traceback" not in bad.output
    saver.close()


def test_the_server_keeps_the_graphs_encrypting_saver(db_url):
    saver = PersistSaver.from_url(db_url, serde=serde)
    graph = agent_graph(2, text=SECRET).compile(checkpointer=saver)
    app = create_app(graph, task_input=lambda task: {"messages": [("user", task)]})
    assert app.state.persist.saver is saver and app.state.persist.service.url == saver.url
    with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        events = post_events(client, "/api/agents/execute", {"agentId": "a", "task": SECRET})
        done = events[-1].data
        assert events[-1].event == "complete", done
        reply = client.get(f"/api/checkpoints/{done['checkpointId']}")
        assert reply.status_code == 200 and SECRET in reply.text
    assert SECRET.encode() not in _plain_bytes(db_url)  # no checkpoint value in plaintext
    saver.close()


def test_an_undecodable_checkpoint_is_a_clear_json_error(db_url):
    writer = PersistSaver.from_url(db_url, serde=serde)
    _thread(writer, "secret")
    checkpoint_id = writer.get_tuple({"configurable": {"thread_id": "secret"}}).config[
        "configurable"]["checkpoint_id"]
    app = create_app(agent_graph(1), url=db_url)  # a plain saver: it cannot read those
    resume = {"checkpointId": checkpoint_id, "additionalInstructions": "go on"}
    with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        replies = [client.get(f"/api/checkpoints/{checkpoint_id}"),
                   client.get(f"/api/agents/agent/checkpoints/{checkpoint_id}"),
                   client.post("/api/agents/agent/resume", json=resume)]
    for reply in replies:
        assert reply.status_code == 422, reply.request.url
        assert "serde" in reply.json()["detail"] and "Traceback" not in reply.text
    writer.close()


def test_a_graph_with_another_checkpointer_is_refused(sqlite_url):
    with pytest.raises(ConfigurationError, match=r"InMemorySaver.*PersistSaver"):
        create_app(agent_graph(1).compile(checkpointer=InMemorySaver()), url=sqlite_url)
    other = PersistSaver.from_url(sqlite_url)
    with pytest.raises(ConfigurationError, match="share one database"):
        create_app(agent_graph(1).compile(checkpointer=other), url=f"{sqlite_url}.other")
    other.close()


def test_the_serve_command_takes_a_serializer(sqlite_url, tmp_path):
    """``serve --serde`` gives the server's own saver the serializer (checked at start-up:
    a bad name fails with one line, before anything is served)."""
    result = CliRunner().invoke(cli, ["serve", "--graph", "server_graphs:agent", "--url",
                                      sqlite_url, "--serde", "no_such_module:serde"])
    assert result.exit_code == 1
    assert "cannot import module 'no_such_module' for --serde" in " ".join(result.output.split())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    code = ("from langchain_persist._checkpoint.codec import load_serde; "
            "s = load_serde('test_lifecycle:serde'); print(type(s).__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=60)
    assert out.stdout.strip() == "EncryptedSerializer", out.stderr

