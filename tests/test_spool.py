"""The spool: nothing the writer took is lost to a SIGKILL, an outage or a fork, nothing is
stored twice, and async runs do no database I/O on their event loop (issue 14)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from handler_support import ScriptedChatModel
from langchain.agents import create_agent
from langchain_core.tools import tool
from tcp_proxy import outage as tcp_outage
from typer.testing import CliRunner

from langchain_persist import PersistCallbackHandler, ResultsPersistenceService
from langchain_persist._callbacks.spool import Spool, apply_end, files, replay
from langchain_persist._cli.commands import app as cli

CHILD = [sys.executable, str(Path(__file__).parent / "spool_child.py")]


@pytest.fixture
def spool_dir(tmp_path, monkeypatch) -> Path:
    """Every writer of the test (and its children) spools here."""
    directory = tmp_path / "spool"
    monkeypatch.setenv("LANGCHAIN_PERSIST_SPOOL", str(directory))
    return directory


def _tool_ends(service: ResultsPersistenceService, run: str) -> Counter[str]:
    traces = service.get_execution_traces(run, limit=10_000)
    assert len({t.id for t in traces}) == len(traces)  # no row twice
    return Counter(t.metadata["tool_call_id"] for t in traces if t.type == "tool_end")


@pytest.mark.parametrize("how", ["sync, replayed by the next writer", "async, spool replay"])
def test_sigkill_after_300_tool_calls_loses_nothing(db_url, spool_dir, how):
    run = str(uuid.uuid4())
    child = subprocess.Popen([*CHILD, db_url, run, "300", how.split(",")[0]],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None and child.stdout.readline().strip() == "done"
    child.send_signal(signal.SIGKILL)  # no grace
    child.wait(30)
    service = ResultsPersistenceService(db_url)
    assert sum(_tool_ends(service, run).values()) < 300  # the database has not got them
    (left,) = files(spool_dir)
    assert not left.alive and left.waiting > 0
    if how.startswith("sync"):
        handler = PersistCallbackHandler("next", service=service)
        assert handler.flush(60)
        handler.close()
    else:
        result = CliRunner().invoke(cli, ["spool", "replay", "--url", db_url])
        assert result.exit_code == 0, result.output
        assert "Stored" in result.output and "from 1 file(s)" in result.output
    ends = _tool_ends(service, run)
    assert len(ends) == 300 and set(ends.values()) == {1}  # 300 of 300, each once
    (row,) = service.find_results(execution_id=run)
    assert row.status == "completed" and row.result == "answer to go"
    assert files(spool_dir) == [] or all(f.waiting == 0 for f in files(spool_dir))
    again = CliRunner().invoke(cli, ["spool", "replay", "--url", db_url])  # idempotent
    assert again.exit_code == 0 and sum(_tool_ends(service, run).values()) == 300
    service.close()


@contextlib.contextmanager
def _writes_wait(url: str) -> Iterator[None]:
    """Another connection holds the event tables' write lock: every insert into them waits
    (30 s on SQLite, for good on PostgreSQL), as on a database that hangs."""
    if url.startswith("sqlite"):
        lock = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # (readers go on: the file is in WAL mode)
    else:
        lock = psycopg.connect(url.replace("postgresql+psycopg", "postgresql"))
        lock.execute("LOCK TABLE agent_traces, execution_logs IN ACCESS EXCLUSIVE MODE")
    try:
        yield
    finally:
        lock.rollback()
        lock.close()


def test_a_database_that_hangs_holds_back_nothing_from_local_disk(db_url, spool_dir):
    """The writer's inserts wait on a lock (a flush interval of 50 ms: it tries within the run);
    the spooler never waits on the database, so an async run that returned has all of its
    events on local disk, and a SIGKILL then loses none of them."""
    service = ResultsPersistenceService(db_url)
    service.ping()  # (the tables exist before they are locked)
    run = str(uuid.uuid4())
    with _writes_wait(db_url):
        child = subprocess.Popen([*CHILD, db_url, run, "300", "async", "0.05"],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout is not None and child.stdout.readline().strip() == "done"
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert _tool_ends(service, run) == Counter()  # none got through the lock
    result = CliRunner().invoke(cli, ["spool", "replay", "--url", db_url])
    assert result.exit_code == 0, result.output
    ends = _tool_ends(service, run)
    assert len(ends) == 300 and set(ends.values()) == {1}
    (row,) = service.find_results(execution_id=run)
    assert row.status == "completed" and row.result == "answer to go"
    found = service.search("echo", execution_id=run, types="tool_end", limit=500)
    assert len(found) == 300  # replayed rows are searchable too
    service.close()


@pytest.fixture
def outage(db_url, monkeypatch) -> Any:
    """(the URL to use, cut, restore): see `tcp_proxy.outage`."""
    with tcp_outage(db_url, monkeypatch) as found:
        yield found


def test_a_30_second_outage_in_a_1000_call_run_loses_nothing(outage, spool_dir, caplog):
    url, cut, restore = outage
    service = ResultsPersistenceService(url)
    handler = PersistCallbackHandler("long", service=service, flush_interval=0.1)
    calls: list[int] = []
    back = threading.Timer(30.0, restore)

    @tool
    def step(text: str) -> str:
        """One step of a long run: the database goes away at the 100th, for 30 s."""
        calls.append(1)
        if len(calls) == 100:
            cut()
            back.start()
        time.sleep(0.02)
        return f"did {text}"

    agent = create_agent(ScriptedChatModel(plan=[["step"]] * 1000), [step])
    run = uuid.uuid4()
    with caplog.at_level(logging.WARNING, logger="langchain_persist"):
        out = agent.invoke({"messages": [("user", "go")]},
                           {"callbacks": [handler], "run_id": run, "recursion_limit": 10_000})
        assert out["messages"][-1].content == "answer to go"  # the run completed
        back.join()
        deadline = time.monotonic() + 60
        while handler.writer.backlog and time.monotonic() < deadline:
            handler.flush(10)
            time.sleep(0.2)
    assert handler.writer.backlog == 0
    assert set(handler.dropped) <= {"result_writes"}  # (the end, written later from the spool)
    assert any("they are kept" in r.getMessage() for r in caplog.records)
    ends = _tool_ends(service, str(run))
    assert len(ends) == 1000 and set(ends.values()) == {1}  # every one, once
    (row,) = service.find_results(execution_id=str(run))
    assert row.status == "completed" and row.metadata["tool_calls"] == 1000
    handler.close()
    service.close()


def test_a_spool_too_small_counts_what_it_drops(outage, spool_dir, caplog):
    url, cut, restore = outage
    service = ResultsPersistenceService(url)
    handler = PersistCallbackHandler(
        "small", writer=_writer(service, spool_bytes=20_000))
    agent = create_agent(ScriptedChatModel(plan=[["echo_"]] * 100), [_echo])
    run = uuid.uuid4()
    cut()
    with caplog.at_level(logging.WARNING, logger="langchain_persist"):
        agent.invoke({"messages": [("user", "go")]},
                     {"callbacks": [handler], "run_id": run, "recursion_limit": 10_000})
        assert handler.flush(10)
    dropped = handler.dropped
    assert dropped["spool_full"] > 0
    assert any("the spool is full" in r.getMessage() for r in caplog.records)
    restore()
    handler.writer._retry_at = 0
    assert handler.flush(30)
    stored = len(service.get_execution_traces(str(run), limit=10_000))
    assert stored + dropped["traces"] == 100 * 2 + 101  # each event stored, or counted
    handler.close()
    service.close()


def _writer(service: ResultsPersistenceService, **options: Any) -> Any:
    from langchain_persist import BackgroundWriter

    return BackgroundWriter(service, flush_interval=0.05, **options)


@tool
def _echo(text: str) -> str:
    """Return the text."""
    return f"echo {text}"


_echo.name = "echo_"


def test_async_runs_write_nothing_on_their_event_loop(db_url, spool_dir, monkeypatch):
    """In ``ainvoke`` the end of the run goes to the spool (durable when it returns), and the
    writer stores it: no database call runs on the loop's thread."""
    service = ResultsPersistenceService(db_url)
    handler = PersistCallbackHandler("async", service=service, flush_interval=0.05)
    on_loop: list[str] = []
    loop_thread: list[int] = []
    for name in ("save_result", "update_result", "latest_checkpoint_id", "insert_events"):
        original = getattr(service, name)

        def watched(*args: Any, __name: str = name, __original: Any = original,
                    **kwargs: Any) -> Any:
            if loop_thread and threading.get_ident() == loop_thread[0]:
                on_loop.append(__name)
            return __original(*args, **kwargs)

        monkeypatch.setattr(service, name, watched)

    async def runs() -> list[Any]:
        loop_thread.append(threading.get_ident())
        agent = create_agent(ScriptedChatModel(plan=[["echo_"]] * 3), [_echo])
        return await asyncio.gather(*(agent.ainvoke(
            {"messages": [("user", f"go {n}")]},
            {"callbacks": [handler], "configurable": {"thread_id": f"t{n}"}})
            for n in range(5)))

    outs = asyncio.run(runs())
    assert [o["messages"][-1].content for o in outs] == [f"answer to go {n}" for n in range(5)]
    assert on_loop == []
    assert handler.flush(10)
    rows = service.find_results(agent_id="async")
    assert len(rows) == 5 and {r.status for r in rows} == {"completed"}
    handler.close()
    service.close()


def test_a_forked_child_spools_into_its_own_file(db_url, spool_dir):
    service = ResultsPersistenceService(db_url)
    handler = PersistCallbackHandler("forked", service=service, flush_interval=3600)
    _echo.invoke({"text": "parent"}, {"callbacks": [handler],
                                       "metadata": {"execution_id": "parent"}})
    parent_file = handler.writer.spool.path
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for i in range(50):
                _echo.invoke({"text": f"child {i}"}, {"callbacks": [handler],
                                                       "metadata": {"execution_id": "child"}})
            ok = handler.writer.spool is not None and handler.writer.spool.path != parent_file
            code = 0 if ok and handler.flush(30) else 2
        finally:
            os._exit(code)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 0
    assert handler.flush(30)
    assert len(service.get_execution_traces("child")) == 100
    assert len(service.get_execution_traces("parent")) == 2  # stored once, by the parent
    handler.close()
    service.close()


def test_spool_status_says_what_waits(sqlite_url, spool_dir):
    empty = CliRunner().invoke(cli, ["spool", "status", "--url", sqlite_url])
    assert empty.exit_code == 0 and "nothing waits" in empty.output
    service = ResultsPersistenceService(sqlite_url)
    handler = PersistCallbackHandler("s", service=service, flush_interval=3600)
    _echo.invoke({"text": "x"}, {"callbacks": [handler]})
    spooled = handler.writer.spooled()
    assert spooled is not None and spooled.wait(5)
    shown = CliRunner().invoke(cli, ["spool", "status", "--url", sqlite_url, "--json"])
    assert shown.exit_code == 0 and '"alive": true' in shown.output
    handler.close()
    service.close()


def test_a_replay_stores_every_end_but_one_the_database_refuses(db_url, spool_dir, caplog):
    service = ResultsPersistenceService(db_url)
    dead = Spool(spool_dir, db_url)  # as a process killed with two run ends not yet stored
    for key, agent in (("bad", "agent\x00nul"), ("good", "agent")):
        dead.append_end(key, {"create": {"id": str(uuid.uuid4()), "agent_id": agent,
                                         "execution_id": key},
                              "fields": {"status": "completed", "result": key}})
    dead.forget_after_fork()  # as if killed: the file left as it is, its lock released
    done = replay(spool_dir, service, service, db_url)
    assert (done.ends, done.refused, done.files) == (1, 1, 1)
    (stored,) = service.find_results(limit=10)
    assert stored.execution_id == "good" and stored.result == "good"
    assert "NUL character" in caplog.text and list(files(spool_dir)) == []
    service.close()


def test_an_end_that_finds_its_running_row_updates_it(service):
    """The writer stores a run's running row while the run ends (the caller does not wait
    for it): the end, a whole row of the same id, completes that row; no second row."""
    opening = {"id": str(uuid.uuid4()), "agent_id": "a", "execution_id": "e"}
    service.save_result(**opening)  # the running row, stored first
    end = {"create": {**opening, "metadata": {"run_name": "r"}},
           "fields": {"status": "completed", "result": "done", "metadata": {"tool_calls": 2}}}
    apply_end(service, end)
    apply_end(service, end)  # (retried: nothing moves)
    (row,) = service.find_results(execution_id="e")
    assert (row.id, row.status, row.result) == (opening["id"], "completed", "done")
    assert row.metadata["tool_calls"] == 2 and row.completed_at is not None


def test_rows_stored_before_are_not_counted_again(service):
    """A replay (or a retry) finds some of its rows stored already: they are skipped, and
    only the rows it added count as stored (what ``handler.written`` adds up)."""
    rows = [service.trace_row(agent_id="a", execution_id="e", type="tool_end", content=i)
            for i in range(10)]
    assert service.insert_events("traces", rows[:4], skip_existing=True).stored == 4
    assert service.insert_events("traces", rows, skip_existing=True).stored == 6
    assert service.insert_events("traces", rows, skip_existing=True).stored == 0
    assert len(list(service.get_execution_traces("e"))) == 10
