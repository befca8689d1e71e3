"""Dry-run counts for cleanup, and results filtered by thread."""

from __future__ import annotations

import datetime as dt

from langchain_persist import ResultsPersistenceService


async def test_counts_match_what_cleanup_deletes(service: ResultsPersistenceService) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    service.save_logs(
        service.log_row(agent_id="a", execution_id="e", message=str(i), timestamp=old)
        for i in range(7)
    )
    service.save_log(agent_id="a", execution_id="e", message="young")
    service.save_traces(
        service.trace_row(agent_id="a", execution_id="e", type="tool_end", timestamp=old)
        for _ in range(3)
    )
    done = service.save_result(agent_id="a", status="completed")
    service.save_result(agent_id="a")  # running: never cleaned up
    now = done.completed_at + dt.timedelta(microseconds=1)

    assert service.count_old_logs(dt.timedelta(days=30)) == 7
    assert await service.acount_old_traces(dt.timedelta(days=30)) == 3
    assert service.count_old_results(now) == 1
    assert service.count_old_logs(dt.timedelta(days=30)) == 7  # counting deleted nothing
    assert service.cleanup_old_logs(dt.timedelta(days=30)) == 7
    assert service.cleanup_old_results(now) == 1
    assert service.count_old_logs(dt.timedelta(days=30)) == 0
    assert await service.acount_old_results(now) == 0


def test_find_results_by_thread(service: ResultsPersistenceService) -> None:
    a = service.save_result(agent_id="a", thread_id="t-1")
    b = service.save_result(agent_id="a", thread_id="t-1", status="completed")
    service.save_result(agent_id="a", thread_id="t-2")
    assert [r.id for r in service.find_results(thread_id="t-1")] == [b.id, a.id]
    assert [r.id for r in service.find_results(thread_id="t-1", status="running")] == [a.id]
