"""Retention policies: stored per agent and by default, applied in batches, dry runs exact, and
a thread waiting at an interrupt() never deleted."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
from typing import Any

import pytest
from langchain_core.messages import HumanMessage
from saver_graphs import agent_graph
from sqlalchemy import func, select, update

from langchain_persist import PersistSaver, ResultsPersistenceService, ValidationError
from langchain_persist._db.schema import (
    agent_results,
    agent_traces,
    checkpoint_state_values,
    checkpoint_state_writes,
    checkpoint_states,
    execution_logs,
)

DAY = dt.timedelta(days=1)
NOW = dt.datetime.now(dt.UTC)


def test_policies_are_stored_per_agent_and_by_default(service: ResultsPersistenceService) -> None:
    assert service.get_retention_policies() == []
    default = service.set_retention_policy(results=30 * DAY, logs=7 * DAY)
    assert default.agent_id is None and default.traces is None and default.logs == 7 * DAY
    # a new agent policy starts from the default's ages
    own = service.set_retention_policy("booker", traces=2 * DAY)
    assert (own.results, own.logs, own.traces, own.checkpoints) == (30 * DAY, 7 * DAY, 2 * DAY,
                                                                     None)
    service.set_retention_policy(logs=None, checkpoints=90 * DAY)  # the default changes...
    policies = service.get_retention_policies()
    assert [p.agent_id for p in policies] == [None, "booker"]
    assert policies[0].logs is None and policies[0].checkpoints == 90 * DAY
    assert policies[1].logs == 7 * DAY  # ...an agent's own policy does not
    assert service.delete_retention_policy("booker") is True
    assert service.delete_retention_policy("booker") is False
    assert [p.agent_id for p in service.get_retention_policies()] == [None]
    with pytest.raises(ValidationError, match="positive timedelta"):
        service.set_retention_policy(logs=-DAY)
    with pytest.raises(ValidationError, match="positive timedelta"):
        service.set_retention_policy(logs=30)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="default policy"):
        service.set_retention_policy("*", logs=DAY)


def _thread(url: str, service: ResultsPersistenceService, thread_id: str, agent: str,
            status: str, *, age: dt.timedelta) -> None:
    """A checkpoint thread written by PersistSaver, a run of it in ``status``, all ``age`` old."""
    saver = PersistSaver(url)
    graph = agent_graph(steps=2).compile(checkpointer=saver)
    graph.invoke({"messages": [HumanMessage("go")]},
                 {"configurable": {"thread_id": thread_id}})
    saver.close()
    then = NOW - age
    result = service.save_result(agent_id=agent, execution_id=f"run-{thread_id}",
                                 thread_id=thread_id, status=status)
    with service.db.write() as conn:
        conn.execute(update(checkpoint_states).where(checkpoint_states.c.thread_id == thread_id)
                     .values(created_at=then))
        conn.execute(update(agent_results).where(agent_results.c.id == result.id)
                     .values(created_at=then, updated_at=then,
                             completed_at=None if status == "running" else then))


def _counts(service: ResultsPersistenceService) -> dict[str, Any]:
    with service.db.read() as conn:
        def n(table: Any) -> int:
            return conn.execute(select(func.count()).select_from(table)).scalar_one()

        threads = conn.execute(select(func.count(func.distinct(
            checkpoint_states.c.thread_id)))).scalar_one()
        return {"results": n(agent_results), "logs": n(execution_logs),
                "traces": n(agent_traces), "threads": threads,
                "checkpoints": n(checkpoint_states), "values": n(checkpoint_state_values),
                "writes": n(checkpoint_state_writes)}


@pytest.fixture
def stored(db_url: str, service: ResultsPersistenceService) -> ResultsPersistenceService:
    """Three agents' rows, young and old; booker has a policy of its own."""
    for agent in ("planner", "booker", "support"):
        for days in (1, 5, 40):
            at = NOW - days * DAY
            service.save_logs(service.log_row(agent_id=agent, execution_id=f"{agent}-{days}",
                                              message=f"line {i}", timestamp=at)
                              for i in range(30))
            service.save_traces(service.trace_row(agent_id=agent, execution_id=f"{agent}-{days}",
                                                  type="tool_end", timestamp=at)
                                for _ in range(20))
    _thread(db_url, service, "old-done", "planner", "completed", age=60 * DAY)
    _thread(db_url, service, "old-failed", "support", "failed", age=60 * DAY)
    _thread(db_url, service, "old-waiting", "planner", "interrupted", age=60 * DAY)
    _thread(db_url, service, "old-running", "support", "running", age=60 * DAY)
    _thread(db_url, service, "young", "planner", "completed", age=2 * DAY)
    _thread(db_url, service, "booker-old", "booker", "completed", age=20 * DAY)
    service.set_retention_policy(results=30 * DAY, logs=30 * DAY, traces=3 * DAY,
                                 checkpoints=30 * DAY)
    service.set_retention_policy("booker", logs=2 * DAY, checkpoints=10 * DAY)
    return service


def test_a_dry_run_reports_exactly_what_a_run_then_deletes(stored) -> None:
    before = _counts(stored)
    dry = stored.apply_retention(dry_run=True, at=NOW)
    assert _counts(stored) == before  # nothing deleted
    progress: dict[str, int] = {}
    done = stored.apply_retention(
        at=NOW, on_progress=lambda kind, n: progress.__setitem__(kind, progress.get(kind, 0) + n))
    after = _counts(stored)
    assert {**done.to_dict(), "dry_run": True} == dry.to_dict()
    deleted = {k: before[k] - after[k] for k in ("results", "logs", "traces", "threads",
                                                  "checkpoints")}
    assert deleted == {k: v for k, v in done.to_dict()["totals"].items()}
    assert progress == {k: v for k, v in deleted.items() if k != "threads" and v}
    # what each policy deleted: the default (planner, support) and booker's own
    default, booker = done.policies
    assert (default.agent_id, booker.agent_id) == (None, "booker")
    assert (default.logs, default.traces) == (2 * 30, 2 * 2 * 20)  # 40d; 5d and 40d
    assert (booker.logs, booker.traces) == (2 * 30, 2 * 20)  # 5d and 40d; the same (3d, copied)
    assert (default.threads, booker.threads) == (2, 1)
    assert default.results == 2 and booker.results == 0  # old-done, old-failed
    assert stored.apply_retention(at=NOW).totals.to_dict() == {
        "agent_id": None, "results": 0, "logs": 0, "traces": 0, "threads": 0, "checkpoints": 0}


def test_a_thread_with_a_waiting_or_running_run_survives(db_url: str, stored) -> None:
    stored.apply_retention(at=NOW)
    saver = PersistSaver(db_url)
    left = {t for t in ("old-done", "old-failed", "old-waiting", "old-running", "young",
                        "booker-old") if saver.get_tuple({"configurable": {"thread_id": t}})}
    assert left == {"old-waiting", "old-running", "young"}
    # what survives is whole: it resumes
    graph = agent_graph(steps=2).compile(checkpointer=saver)
    state = graph.get_state({"configurable": {"thread_id": "old-waiting"}})
    assert state.values["messages"][-1].content == "done after 2 tool calls"
    counts = _counts(stored)
    with stored.db.read() as conn:  # no values or writes are left of the deleted threads
        orphans = conn.execute(select(func.count()).select_from(checkpoint_state_values).where(
            checkpoint_state_values.c.thread_id.in_(["old-done", "old-failed", "booker-old"])
        )).scalar_one()
    assert orphans == 0 and counts["values"] > 0
    # the waiting run's result stays too (interrupted results are never old), the running one
    statuses = {r.thread_id: r.status for r in stored.find_results(limit=100)}
    assert statuses["old-waiting"] == "interrupted" and statuses["old-running"] == "running"
    assert "old-done" not in statuses and "old-failed" not in statuses
    saver.close()


def test_without_policies_nothing_is_deleted(service: ResultsPersistenceService) -> None:
    service.save_log(agent_id="a", execution_id="e", message="old",
                     timestamp=NOW - 400 * DAY)
    report = service.apply_retention()
    assert report.policies == [] and service.get_execution_logs("e")[0].message == "old"


async def test_async_twins(stored) -> None:
    dry = await stored.aapply_retention(dry_run=True, at=NOW)
    assert dry.totals.logs == 4 * 30
    assert [p.agent_id for p in await stored.aget_retention_policies()] == [None, "booker"]


def test_many_rows_go_in_many_short_batches(service: ResultsPersistenceService) -> None:
    old = NOW - 10 * DAY
    service.save_traces(service.trace_row(agent_id="a", execution_id=f"e{i % 13}",
                                          type="tool_end", content=f"call {i}", timestamp=old)
                        for i in range(3_000))
    service.save_trace(agent_id="a", execution_id="e1", type="tool_end", content="young")
    service.set_retention_policy(traces=DAY)
    batches: list[int] = []
    done = service.apply_retention(on_progress=lambda kind, n: batches.append(n))
    assert done.totals.traces == 3_000 == sum(batches) and len(batches) > 1
    assert [t.content for t in service.get_execution_traces("e1")] == ["young"]
    assert service.search("call") == []  # the search index forgot them too
    if service.db.dialect == "sqlite":  # FTS5 merges as rows are written again
        with service.db.read() as conn:
            config = dict(conn.exec_driver_sql("SELECT k, v FROM agent_traces_search_config").all())
        assert (config.get("automerge"), config.get("crisismerge")) == (4, 16)
    service.save_log(agent_id="a", execution_id="e1", message="the database still writes")
    assert service.search("database writes")[0].kind == "log"


_CLEANUP_THEN_HANG = """
import sys, time
from langchain_persist import ResultsPersistenceService
def hang(kind, n):
    print("deleting", flush=True)
    time.sleep(3600)  # killed here, FTS5's merging off
ResultsPersistenceService(sys.argv[1]).apply_retention(on_progress=hang)
"""
_OPEN = "import sys\nfrom langchain_persist import ResultsPersistenceService\n" \
    "ResultsPersistenceService(sys.argv[1]).find_results(limit=1)"


def test_a_cleanup_killed_midway_leaves_no_search_index_unmerged(sqlite_url: str) -> None:
    """SIGKILL to a cleanup while it has FTS5's merging off: the next process to open the
    file turns it on again, but not while a cleanup still runs."""
    service = ResultsPersistenceService(sqlite_url)
    old = dt.datetime.now(dt.UTC) - 10 * DAY
    service.save_traces(service.trace_row(agent_id="a", execution_id="e", type="tool_end",
                                          content=f"call {i}", timestamp=old)
                        for i in range(1_000))
    service.set_retention_policy(traces=DAY)

    def merging() -> tuple[Any, Any]:
        with service.db.read() as conn:
            config = dict(conn.exec_driver_sql("SELECT k, v FROM agent_traces_search_config").all())
        return config.get("automerge"), config.get("crisismerge")

    def opened() -> str:
        done = subprocess.run([sys.executable, "-c", _OPEN, sqlite_url], capture_output=True,
                              text=True, timeout=120, check=True)
        return done.stderr

    cleanup = subprocess.Popen([sys.executable, "-c", _CLEANUP_THEN_HANG, sqlite_url],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert cleanup.stdout is not None and cleanup.stdout.readline() == "deleting\n"
        assert merging() == (0, 1000)
        assert "turned the search index's merging on again" not in opened()  # it still runs
        assert merging() == (0, 1000)
    finally:
        cleanup.send_signal(signal.SIGKILL)
        cleanup.wait(30)
    assert merging() == (0, 1000)  # left off by the dead cleanup
    assert "it is on again" in opened()
    assert merging() == (4, 16)
    assert opened() == ""  # said once: nothing left to turn on
    service.close()
