"""The saver's async path, its statements and its versions.

- On PostgreSQL the async methods await psycopg's async connections (no worker thread); their
  pools, one per event loop, are made on first use, closed by the last release, reaped when
  their loop is gone, and new in a forked child.
- `get_tuple` is one statement, a page of `list` one statement, and no statement's text
  depends on how many channels, writes or ids it handles.
- Channel versions sort above the versions they follow, whichever saver (or Agent Server)
  wrote the earlier ones.
"""

from __future__ import annotations

import asyncio
import faulthandler
import gc
import logging
import os
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from saver_graphs import agent_graph, approval_graph
from tcp_proxy import proxied

from langchain_persist import PersistSaver
from langchain_persist._db.sql.prepared import Prepared

sys.path.insert(0, str(Path(__file__).parent))


def _cfg(thread: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread}, "recursion_limit": 300}


class _NoThreads(ThreadPoolExecutor):
    """An executor that refuses work: set as the loop's default, any thread hop fails."""

    def submit(self, *args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"a worker thread was used: {args[:1]}")


async def _exercise(saver: PersistSaver, thread: str, *, no_threads: bool) -> None:
    """Every async method once, through a real graph (LangGraph runs sync nodes in worker
    threads) and then directly, with worker threads refused when ``no_threads``."""
    from langgraph.types import Command

    graph = approval_graph().compile(checkpointer=saver)
    out = await graph.ainvoke({"request": "deploy", "log": []}, _cfg(thread))
    assert out["__interrupt__"][0].value == {"question": "approve deploy?"}
    done = await graph.ainvoke(Command(resume="yes"), _cfg(thread))
    assert done["log"] == ["prepared deploy", "decision: yes", "acted"]
    if no_threads:
        asyncio.get_running_loop().set_default_executor(_NoThreads())
    latest_tuple = await saver.aget_tuple(_cfg(thread))
    assert latest_tuple is not None
    config = await saver.aput(latest_tuple.config, {**latest_tuple.checkpoint, "id": str(uuid6())},
                              {"step": 99}, {})
    await saver.aput_writes(config, [("log", ["later"])], "task-9")
    again = await saver.aget_tuple(config)
    assert again is not None and again.pending_writes == [("task-9", "log", ["later"])]
    seen = await saver.aget_delta_channel_history(config=config, channels=["log"])
    assert seen["log"]["writes"] == []
    history = [t async for t in saver.alist(_cfg(thread))]
    assert len(history) == len([s async for s in graph.aget_state_history(_cfg(thread))])
    (latest,) = [t async for t in await saver.aget_iter(_cfg(thread))]
    assert latest.config == history[0].config
    await saver.acopy_thread(thread, f"{thread}-copy")
    await saver.aprune([f"{thread}-copy"], strategy="keep_latest")
    assert len([t async for t in saver.alist(_cfg(f"{thread}-copy"))]) == 1
    await saver.adelete_for_runs(["no-such-run"])
    await saver.adelete_thread(thread)
    assert await saver.aget_tuple(_cfg(thread)) is None


async def test_async_methods_await_the_database_on_postgres(pg_url: str) -> None:
    saver = PersistSaver.from_url(pg_url)
    db = saver.db  # opened (and its schema checked) here, not in the loop
    assert db.async_pools == 0  # made on first async use only
    await _exercise(saver, "pg-async", no_threads=True)
    assert db.async_pools == 1
    await saver.aclose()  # the last user: the loop's pool is closed before it returns
    assert db.async_pools == 0


async def test_async_methods_on_sqlite(sqlite_url: str) -> None:
    """SQLite's driver blocks: the async methods run it in a worker thread."""
    saver = PersistSaver.from_url(sqlite_url)
    await _exercise(saver, "sqlite-async", no_threads=False)
    assert saver.db.async_pools == 0  # SQLite's driver blocks: no async pool
    await saver.aclose()


async def test_an_async_write_waiting_for_sqlite_does_not_block_the_loop(sqlite_url: str) -> None:
    """Another process holds the write lock: the write waits in a worker thread while the
    event loop goes on, and completes once the lock is released."""
    import sqlite3
    import threading

    saver = PersistSaver.from_url(sqlite_url)
    config = _put(saver, "locked", 2, 0)  # the schema and a first checkpoint
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), check_same_thread=False)
    other.isolation_level = None
    other.execute("BEGIN IMMEDIATE")  # another writer holds the database
    threading.Timer(0.5, lambda: other.execute("COMMIT")).start()
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    beat = asyncio.create_task(ticker())
    await saver.aput_writes(config, [("c0", "late")], "task-2")
    beat.cancel()
    assert ticks >= 20  # the loop ran all along the ~0.5 s wait
    found = await saver.aget_tuple(config)
    assert found is not None and ("task-2", "c0", "late") in (found.pending_writes or [])
    other.close()
    await saver.aclose()


def test_one_pool_per_event_loop_closed_with_its_loop(pg_url: str) -> None:
    saver = PersistSaver.from_url(pg_url)
    db = saver.db
    graph = agent_graph(2).compile(checkpointer=saver)

    async def run(thread: str) -> str:
        out = await graph.ainvoke({"messages": [("user", "hi")]}, _cfg(thread))
        return out["messages"][-1].content

    assert asyncio.run(run("a")) == "done after 2 tool calls"
    assert db.async_pools == 0  # asyncio.run's end cancelled the loop's tasks: the pool closed
    loop = asyncio.new_event_loop()  # a second loop, alive: its own pool
    assert loop.run_until_complete(run("b")) == "done after 2 tool calls"
    assert db.async_pools == 1
    assert saver.get_tuple(_cfg("a")) is not None and saver.get_tuple(_cfg("b")) is not None
    saver.close()  # the last user, from outside the loop: the live loop's pool closes too
    assert db.async_pools == 0
    loop.close()


def test_asyncio_run_closes_the_connections_of_its_pool(pg_url: str) -> None:
    """Each ``asyncio.run`` opens the pool of its loop; at its end the pool's connections
    close (not when the collector gets to them, which may be after the server ran out)."""
    saver = PersistSaver.from_url(pg_url)
    saver.get_tuple(_cfg("t0"))  # the schema made, by the sync pool
    database = pg_url.rsplit("/", 1)[1]

    async def read_concurrently() -> None:
        await asyncio.gather(*(saver.aget_tuple(_cfg(f"t{i}")) for i in range(4)))

    def connections() -> int:
        with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s",
                                (database,)).fetchone()[0]

    gc.disable()  # leaked connections would stay open until the collector ran
    try:
        counts = []
        for _ in range(6):
            asyncio.run(read_concurrently())
            counts.append(connections())
    finally:
        gc.enable()
    assert max(counts) <= counts[0] and counts[-1] <= 2, counts  # the sync pool's, at most
    saver.close()


def test_asyncio_run_returns_while_the_pool_is_still_connecting(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """``asyncio.run`` cancels every task at its end, and psycopg's pool workers swallow a
    cancellation that reaches them while they connect: before, ``asyncio.run`` then waited for
    them for ever (seen once in CI, and 7 times in 1,200 forked runs under load)."""
    with proxied(pg_url) as (through, proxy):
        saver = PersistSaver.from_url(through)
        graph = agent_graph(2).compile(checkpointer=saver)

        async def run_then_read_while_new_connections_hang() -> list[Any]:
            await graph.ainvoke({"messages": [("user", "hi")]}, _cfg("t"))
            proxy.freeze()  # the pool grows for these reads, and still connects at the end
            return await asyncio.gather(*(saver.aget_tuple(_cfg("t")) for _ in range(16)))

        results: list[list[Any]] = []
        runner = threading.Thread(
            target=lambda: results.append(asyncio.run(run_then_read_while_new_connections_hang())),
            daemon=True,
        )
        runner.start()
        runner.join(30)
        proxy.restore()
        assert not runner.is_alive(), "asyncio.run did not return"
        reads = results[0]
        assert len({t.checkpoint["id"] for t in reads}) == 1 and reads[0].checkpoint["id"]
        assert saver.db.async_pools == 0  # the loop's pool closed as the loop ended
        assert not [r for r in caplog.records if "error connecting" in r.getMessage()]
        saver.close()


def test_a_forked_child_gets_its_own_async_pool(pg_url: str) -> None:
    saver = PersistSaver.from_url(pg_url)
    graph = agent_graph(2).compile(checkpointer=saver)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(graph.ainvoke({"messages": [("user", "hi")]}, _cfg("parent")))
    assert saver.db.async_pools == 1
    errors = _Errors()  # asyncio's: a pending task collected says "Task was destroyed"
    logging.getLogger("asyncio").addHandler(errors)
    pid = os.fork()
    if pid == 0:  # the child: its own loop and pool; the parent's connections untouched
        code = 1
        try:
            faulthandler.dump_traceback_later(90, exit=True)  # a stuck child shows its stacks
            pools_at_fork = saver.db.async_pools
            out = asyncio.run(graph.ainvoke({"messages": [("user", "c")]}, _cfg("child")))
            gc.collect()
            ok = pools_at_fork == 0 and out["messages"][-1].content == "done after 2 tool calls"
            code = 0 if ok and not errors.messages else 2
        finally:
            os._exit(code)
    logging.getLogger("asyncio").removeHandler(errors)
    assert _wait_for(pid, 120) == 0
    # the parent's pool still works after the child exited
    again = loop.run_until_complete(graph.ainvoke({"messages": [("user", "p")]}, _cfg("p2")))
    assert again["messages"][-1].content == "done after 2 tool calls"
    assert saver.get_tuple(_cfg("child")) is not None
    saver.close()
    loop.close()


class _Errors(logging.Handler):
    """The messages of the error records a logger passed it."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _wait_for(pid: int, timeout: float) -> int:
    """The exit code of a forked child; one still running after ``timeout`` is killed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"the forked child {pid} did not finish in {timeout} s")


# -- statements --------------------------------------------------------------------------------


class _Counted:
    """Counts the statements prepared statements run (fetches and executes), by SQL text."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sql: list[str] = []
        for name in ("fetch", "execute", "execute_many", "afetch", "aexecute"):
            original = getattr(Prepared, name)
            monkeypatch.setattr(Prepared, name, self._counting(original))

    def _counting(self, original: Any) -> Any:
        counted = self

        def method(self: Prepared, *args: Any, **kwargs: Any) -> Any:
            counted.sql.append(self.sql)
            return original(self, *args, **kwargs)

        return method

    def take(self) -> list[str]:
        taken, self.sql = self.sql, []
        return taken


def _put(saver: PersistSaver, thread: str, channels: int, writes: int) -> dict[str, Any]:
    """A checkpoint with ``channels`` new channel values and ``writes`` pending writes."""
    checkpoint = empty_checkpoint()
    versions = {f"c{i}": saver.get_next_version(None, None) for i in range(channels)}
    checkpoint["channel_values"] = {f"c{i}": [i, "x" * 50] for i in range(channels)}
    checkpoint["channel_versions"] = versions
    config = saver.put({"configurable": {"thread_id": thread, "checkpoint_ns": ""}},
                       checkpoint, {"step": channels}, versions)
    saver.put_writes(config, [(f"c{i}", i) for i in range(writes)], "task-1")
    return config


def test_get_tuple_is_one_statement_whatever_the_size(db_url, monkeypatch):
    saver = PersistSaver.from_url(db_url)
    counted = _Counted(monkeypatch)
    texts: set[str] = set()
    for thread, channels, writes in (("small", 2, 1), ("large", 40, 30)):
        config = _put(saver, thread, channels, writes)
        texts |= set(counted.take())
        for lookup in (config, _cfg(thread)):  # by id, and the latest
            found = saver.get_tuple(lookup)
            assert len(counted.take()) == 1
            assert found is not None and len(found.checkpoint["channel_values"]) == channels
            assert len(found.pending_writes or []) == writes
        assert [t.config for t in saver.list(_cfg(thread))] == [config]
        texts |= set(counted.take())
    # a put, its writes and the reads: the same statements for 2 channels as for 40
    assert len(texts) == (4 if db_url.startswith("sqlite") else 3), texts
    saver.close()


def test_list_reads_a_page_per_statement(db_url, monkeypatch):
    saver = PersistSaver.from_url(db_url)
    graph = agent_graph(60).compile(checkpointer=saver)
    graph.invoke({"messages": [("user", "hi")]}, _cfg("long"))  # 123 checkpoints
    counted = _Counted(monkeypatch)
    listed = saver.list(_cfg("long"))
    first = next(listed)  # the first page only
    assert len(counted.take()) == 1 and first.metadata["step"] == 121
    rest = list(listed)
    assert len(counted.take()) == 1 and len(rest) == 122  # one more page: the last
    assert [t.metadata["step"] for t in rest][-1] == -1
    saver.close()


# -- versions ----------------------------------------------------------------------------------


class OldVersions(PersistSaver):
    """PersistSaver as it numbered versions before: 12-digit counters."""

    def get_next_version(self, current: Any, channel: None) -> str:  # type: ignore[override]
        number = 0 if current is None else int(str(current).split(".")[0])
        return f"{number + 1:012}.{random.getrandbits(64):016x}"


class AgentServerVersions(PersistSaver):
    """PersistSaver as the Agent Server drives it: its adapter replaces get_next_version."""

    def get_next_version(self, current: Any, channel: None) -> str:  # type: ignore[override]
        number = 0 if current is None else int(str(current).split(".")[0])
        return f"{number + 1:032}.{random.random():.16f}"


def test_versions_sort_above_the_ones_they_follow(sqlite_url):
    saver = PersistSaver.from_url(sqlite_url)
    old = "000000000007.00ff00ff00ff00ff"
    after_old = saver.get_next_version(old, None)
    assert after_old > old and saver.get_next_version(after_old, None) > after_old
    server = AgentServerVersions.get_next_version(saver, after_old, None)
    assert server > after_old  # the Agent Server continues from ours
    assert saver.get_next_version(server, None) > server  # and we from its
    assert saver.get_next_version(None, None) < after_old
    assert saver.get_next_version("3", None) > "3"  # any shorter counter
    assert saver.get_next_version(3, None).startswith("0" * 31 + "4.")  # an int counts as is
    saver.close()


@pytest.mark.parametrize("first, then", [(OldVersions, PersistSaver),
                                         (PersistSaver, AgentServerVersions)],
                         ids=["older-persist-then-now", "persist-then-agent-server"])
def test_a_thread_continued_by_another_numbering_takes_new_input(db_url, first, then):
    """A thread is run to its end by one saver, then given new input through another that
    numbers versions differently: the new input is seen (it was ignored when 32-digit
    versions followed 12-digit ones)."""
    from langgraph.types import Command

    builder = approval_graph()
    graph = builder.compile(checkpointer=first.from_url(db_url))
    graph.invoke({"request": "first", "log": []}, _cfg("mixed"))
    graph.invoke(Command(resume="ok"), _cfg("mixed"))
    later = builder.compile(checkpointer=then.from_url(db_url))
    out = later.invoke({"request": "second", "log": []}, _cfg("mixed"))
    assert out["__interrupt__"][0].value == {"question": "approve second?"}
    done = later.invoke(Command(resume="fine"), _cfg("mixed"))
    assert done["request"] == "second"
    assert done["log"][-3:] == ["prepared second", "decision: fine", "acted"]


def test_decompressed_blobs_are_remembered_by_content_and_bounded():
    """A blob read again is not decompressed again, a changed blob never answers for the old
    one, and the memo stays within its bytes."""
    import zstandard

    from langchain_persist._checkpoint.codec import Inflated, pack, unpack

    memo = Inflated(max_bytes=20_000)
    raw = b"\x92" + os.urandom(1500) * 3  # compressed, still over the memo's 512 bytes
    type_, blob = pack("msgpack", raw)
    assert type_ == "msgpack+zstd"
    assert unpack(type_, blob, memo) == ("msgpack", raw)
    assert unpack(type_, bytes(bytearray(blob)), memo)[1] is memo.inflate(blob)  # remembered
    other = b"\x92" + os.urandom(1500) * 3
    assert unpack(*pack("msgpack", other), memo) == ("msgpack", other)
    for _ in range(10):  # more than 20 kB decompressed: the oldest go
        memo.inflate(zstandard.ZstdCompressor().compress(os.urandom(1000) * 4))
    assert memo.inflate(blob) == raw and memo._bytes <= 20_000


def test_versions_read_back_exactly_and_are_stored_short(db_url):
    """Whatever form a version has, it reads back as given; a 32-digit counter is stored
    without its leading zeros."""
    saver = PersistSaver.from_url(db_url)
    ours = saver.get_next_version(None, None)
    given = {"a": ours, "b": "+odd", "c": "3", "d": "000000000012.00ff00ff00ff00ff"}
    checkpoint = empty_checkpoint()
    checkpoint["channel_values"] = {name: f"value of {name}" for name in given}
    checkpoint["channel_versions"] = given
    config = saver.put({"configurable": {"thread_id": "v", "checkpoint_ns": ""}},
                       checkpoint, {"step": 1}, given)
    found = saver.get_tuple(config)
    assert found is not None and found.checkpoint["channel_versions"] == given
    assert found.checkpoint["channel_values"] == checkpoint["channel_values"]
    with saver.db.read() as conn:
        stored = dict(conn.exec_driver_sql(
            "SELECT channel, version FROM checkpoint_state_values WHERE thread_id = 'v'").all())
    assert stored["a"] == "+1." + ours.split(".")[1]  # 32 digits, stored as one
    assert stored["b"] == "++odd" and stored["c"] == "3" and stored["d"] == given["d"]
    saver.close()
