"""A database at schema 0001 (before search, stats and the interrupted status), with data,
upgrades in place: its rows are indexed in batches with progress, found and counted."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid

from alembic import command
from sqlalchemy import insert, text

from langchain_persist import ResultsPersistenceService
from langchain_persist._db.backfill import pending
from langchain_persist._db.engine import acquire, release
from langchain_persist._db.migrate import (
    alembic_config,
    current_revision,
    head_revision,
    upgrade,
)
from langchain_persist._db.schema import agent_results, agent_traces, execution_logs


def _count(service: ResultsPersistenceService, query: str, **filters: object) -> int:
    """Every hit of a search, page after page."""
    total, cursor = 0, None
    while True:
        page = service.search(query, limit=5000, cursor=cursor, **filters)
        total += len(page)
        cursor = page.next_cursor
        if cursor is None:
            return total


CLI = [sys.executable, "-m", "langchain_persist._cli.commands"]
NOW = dt.datetime.now(dt.UTC)


def _old_database(url: str) -> None:
    """Schema 0001 and what the code of that time stored: runs, 12,000 traces, 300 logs."""
    db = acquire(url)
    upgrade(db, "0001")
    at = NOW - dt.timedelta(days=2)
    runs = []
    for i, (status, meta, thread) in enumerate([
        ("completed", {"duration_ms": 1200.0}, "t-1"),
        ("failed", {"duration_ms": 300.0}, "t-2"),
        ("completed", {"interrupted": True, "duration_ms": 50.0}, "t-3"),  # still waiting
        ("completed", {"interrupted": True, "duration_ms": 70.0}, "t-4"),  # resumed...
        ("completed", {"duration_ms": 90.0}, "t-4"),  # ...by this later run
    ]):
        created = at + dt.timedelta(minutes=i)
        runs.append({"id": str(uuid.uuid4()), "agent_id": "legacy", "execution_id": f"old-{i}",
                     "thread_id": thread, "checkpoint_id": None, "quest_id": None,
                     "result": "done", "metadata": meta, "status": status,
                     "error": "LegacyError: it broke" if status == "failed" else None,
                     "created_at": created, "updated_at": created, "completed_at": created})
    traces = [{"execution_id": f"old-{i % 5}", "timestamp": at, "id": str(uuid.uuid4()),
               "agent_id": "legacy", "run_id": None, "parent_run_id": None,
               "type": "tool_error" if i % 10 == 0 else "tool_end", "name": "legacy_tool",
               "content": f"requests.exceptions.ConnectTimeout: call {i} to api.example.com",
               "metadata": {}, "duration": float(i % 100)} for i in range(12_000)]
    logs = [{"execution_id": f"old-{i % 5}", "timestamp": at, "id": str(uuid.uuid4()),
             "agent_id": "legacy", "level": "info", "message": f"step {i}: übermäßig lang",
             "source": "old-handler", "metadata": {}} for i in range(300)]
    with db.write() as conn:
        conn.execute(insert(agent_results), runs)
        conn.execute(insert(agent_traces), traces)
        conn.execute(insert(execution_logs), logs)
    assert current_revision(db) == "0001"
    release(db)


def test_an_old_database_upgrades_and_its_rows_are_found_and_counted(db_url: str) -> None:
    _old_database(db_url)
    out = subprocess.run([*CLI, "db", "upgrade", "--url", db_url], capture_output=True,
                         text=True, timeout=300, env={"COLUMNS": "120", "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert "indexing traces" in out.stdout and "12000/12000" in out.stdout  # the progress
    assert "indexing logs" in out.stdout and "300/300" in out.stdout
    assert f"upgraded from 0001 to schema {head_revision()}" in out.stdout

    service = ResultsPersistenceService(db_url, migrate=False)
    assert service.unindexed() == {}
    assert _count(service, "ConnectTimeout api.example.com", agent_id="legacy") == 12_000
    assert len(service.search('"call 1234 to"', agent_id="legacy")) == 1
    assert len(service.search("übermäßig", types="log", limit=1000)) == 300
    stats = service.stats(agent_id="legacy", since=dt.timedelta(days=7), by="tool")
    assert stats.totals.runs == 5 and stats.totals.failed == 1
    assert stats.totals.tool_calls == 12_000 and stats.totals.tool_errors == 1_200
    assert stats.groups[0].key == "legacy_tool" and stats.groups[0].tool_p50_ms == 49.5
    statuses = [(r.thread_id, r.status) for r in reversed(service.find_results(
        agent_id="legacy"))]
    assert statuses == [("t-1", "completed"), ("t-2", "failed"), ("t-3", "interrupted"),
                        ("t-4", "completed"), ("t-4", "completed")]
    # new rows are indexed as they are written
    service.save_trace(agent_id="legacy", execution_id="new", type="tool_end",
                       content="a fresh ConnectTimeout")
    assert len(service.search("fresh ConnectTimeout")) == 1
    service.close()


def test_a_backfill_that_stopped_goes_on_where_it_stopped(db_url: str) -> None:
    _old_database(db_url)
    db = acquire(db_url)
    with db.write() as conn:  # the upgrade alone, as if the process died before the backfill
        command.upgrade(alembic_config(conn), "head")
    assert pending(db) == {"agent_traces": 12_000, "execution_logs": 300}
    service = ResultsPersistenceService(db_url, migrate=False)
    assert service.unindexed() == {"agent_traces": 12_000, "execution_logs": 300}
    assert service.search("ConnectTimeout") == []  # not indexed yet (the CLI warns)
    # old rows deleted before the backfill reaches them leave the index sound (SQLite)
    service.cleanup_old_logs(dt.timedelta(days=1))
    service.close()
    db.schema_checked = False
    ResultsPersistenceService(db_url).search("anything")  # first use: the backfill runs
    assert pending(db) == {}
    service = ResultsPersistenceService(db_url)
    assert _count(service, "ConnectTimeout") == 12_000
    assert service.search("übermäßig") == []
    if db.dialect == "sqlite":
        with db.write() as conn:  # FTS5's own check that the index matches the table
            conn.execute(text("INSERT INTO agent_traces_search(agent_traces_search) "
                              "VALUES('integrity-check')"))
            conn.execute(text("INSERT INTO execution_logs_search(execution_logs_search) "
                              "VALUES('integrity-check')"))
    service.close()
    release(db)
