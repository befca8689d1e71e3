"""Where the database URL comes from, and connections that survive the server dropping them."""

from __future__ import annotations

import gc
import re
import sqlite3
import subprocess
import sys
import threading
import time
import weakref

import psycopg
import pytest
from typer.testing import CliRunner

from langchain_persist import ConfigurationError, ResultsPersistenceService, StorageError
from langchain_persist._cli.commands import app as cli
from langchain_persist._db import engine
from langchain_persist._db.engine import Database, resolve_url


def test_url_precedence(monkeypatch) -> None:
    monkeypatch.delenv("LANGCHAIN_PERSIST_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert resolve_url() == "sqlite:///langchain_persist.db"
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from-database-url.db")
    assert resolve_url() == "sqlite:///from-database-url.db"
    monkeypatch.setenv("LANGCHAIN_PERSIST_DATABASE_URL", "postgres://u@h/db")
    assert resolve_url() == "postgresql+psycopg://u@h/db"
    assert resolve_url("postgresql://u@h:5/db") == "postgresql+psycopg://u@h:5/db"
    assert resolve_url("runs/agent.db") == "sqlite:///runs/agent.db"


def test_default_is_a_sqlite_file_in_the_working_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LANGCHAIN_PERSIST_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    service = ResultsPersistenceService()
    service.save_result(agent_id="a")
    service.close()
    assert (tmp_path / "langchain_persist.db").stat().st_size > 0


@pytest.mark.parametrize(
    ("url", "message"),
    [("mysql://u@h/db", "runs on SQLite and PostgreSQL"), ("://nope", "cannot parse")],
)
def test_unsupported_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Database(url)


def test_sqlite_is_in_wal_mode_with_a_busy_timeout(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    with db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000


def test_a_sqlite_writer_gets_the_lock_another_process_frees(sqlite_url: str) -> None:
    """A write behind another process's write lock waits for it (trying every millisecond,
    `engine.begin_immediate`) and is stored once the lock is free; the connection keeps its
    busy timeout for reads; a lock held past the timeout is a `StorageError` naming the fix."""
    service = ResultsPersistenceService(sqlite_url)
    service.ping()
    path = sqlite_url.split(":///", 1)[1]
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\n"
         f"c = sqlite3.connect({path!r}, isolation_level=None)\n"
         "c.execute('BEGIN IMMEDIATE'); print('held', flush=True)\n"
         "sys.stdin.readline(); c.execute('COMMIT')"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout is not None and holder.stdin is not None
    assert holder.stdout.readline() == "held\n"
    threading.Timer(0.3, holder.stdin.close).start()  # the other process commits
    stored = service.save_result(agent_id="a", execution_id="behind-a-lock")
    assert holder.wait(10) == 0
    assert service.get_result(stored.id).execution_id == "behind-a-lock"
    with service.db.write() as conn:
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == engine.SQLITE_BUSY_TIMEOUT_MS
    service.save_result(agent_id="a", execution_id="done", status="completed")
    lock = sqlite3.connect(path, isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(engine, "SQLITE_BUSY_TIMEOUT_MS", 200)
            locked = r"is locked \(another connection held SQLite's write lock for over 0.2 s"
            with pytest.raises(StorageError, match=locked + ": is a long transaction"):
                service.save_result(agent_id="a", execution_id="never")
            cleanup = CliRunner().invoke(
                cli, ["cleanup", "--older-than", "0s", "--yes", "--url", sqlite_url])
            assert cleanup.exit_code == 1 and re.search(locked, " ".join(cleanup.output.split()))
    finally:
        lock.execute("COMMIT")
    assert sorted(r.execution_id for r in service.get_agent_results("a")) == [
        "behind-a-lock", "done"]
    service.close()


def test_pool_survives_dropped_connections(pg_url: str, pg_admin_url: str) -> None:
    service = ResultsPersistenceService(pg_url)
    first = service.save_result(agent_id="a")
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
            (name,),
        ).fetchone()
        assert killed and killed[0] >= 1
        for _ in range(100):  # until the backends are really gone, as after a restart
            left = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchone()
            if left and left[0] == 0:
                break
            time.sleep(0.05)
    assert service.get_result(first.id) == first
    assert service.save_result(agent_id="a").agent_id == "a"


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_a_lease_collected_while_another_database_opens_does_not_deadlock(tmp_path) -> None:
    """A Lease never closed is released by the garbage collector, which may run inside
    `acquire`, in the same thread, while that holds the registry's lock."""
    held = engine.acquire(f"sqlite:///{tmp_path / 'a.db'}")

    def open_another() -> None:
        owner = _Cycle()  # stands for a Lease never closed: garbage for the cyclic collector
        finalizers.append(weakref.finalize(owner, engine.release, held))  # as Lease does
        del owner

        def collect_in_init(frame, event, _arg) -> None:  # a collection while Database() runs
            if event == "call" and frame.f_code is engine.Database.__init__.__code__:
                sys.setprofile(None)
                gc.collect()

        sys.setprofile(collect_in_init)
        try:
            opened.append(engine.acquire(f"sqlite:///{tmp_path / 'b.db'}"))
        finally:
            sys.setprofile(None)

    finalizers: list[weakref.finalize] = []
    opened: list[Database] = []
    thread = threading.Thread(target=open_another, daemon=True)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "acquire deadlocked on its own lock"
    assert not finalizers[0].alive  # the collection ran, and released `held`
    assert held not in engine.open_databases() and opened[0] in engine.open_databases()
    engine.release(opened[0])
