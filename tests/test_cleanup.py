"""Cleanup: batched deletes that keep what is young or still running."""

from __future__ import annotations

import datetime as dt

from langchain_persist import ResultsPersistenceService


def test_cleanup_100k_logs_and_traces(service: ResultsPersistenceService) -> None:
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    for start in range(0, 100_000, 10_000):
        service.save_logs(
            service.log_row(agent_id="a", execution_id=f"e{i % 97}", message=str(i), timestamp=old)
            for i in range(start, start + 10_000)
        )
    service.save_traces(
        service.trace_row(agent_id="a", execution_id="e1", type="tool_end", timestamp=old)
        for _ in range(3_000)
    )
    service.save_log(agent_id="a", execution_id="e1", message="young")
    service.save_trace(agent_id="a", execution_id="e1", type="tool_start")
    progress: list[int] = []
    assert service.cleanup_old_logs(dt.timedelta(days=30), on_progress=progress.append) == 100_000
    assert sum(progress) == 100_000 and max(progress) <= service.cleanup_batch_size
    assert len(progress) >= 100_000 // service.cleanup_batch_size  # batched, not one big delete
    assert service.cleanup_old_traces(old + dt.timedelta(seconds=1)) == 3_000
    assert [log.message for log in service.get_execution_logs("e1")] == ["young"]
    assert [t.type for t in service.get_execution_traces("e1")] == ["tool_start"]
    assert service.cleanup_old_logs(dt.timedelta(days=30)) == 0


def test_cleanup_results_only_when_finished(service: ResultsPersistenceService) -> None:
    running = service.save_result(agent_id="a")
    completed = service.save_result(agent_id="a")
    failed = service.save_result(agent_id="a")
    service.update_result(completed.id, status="completed")
    service.update_result(failed.id, status="failed", error="x")
    young = service.save_result(agent_id="a", status="completed")
    cut = young.created_at - dt.timedelta(microseconds=1)
    assert service.cleanup_old_results(cut) == 2
    assert {r.id for r in service.get_agent_results("a")} == {running.id, young.id}
    assert service.cleanup_old_results(dt.timedelta(0)) == 1  # young goes, running stays
    assert [r.id for r in service.get_agent_results("a")] == [running.id]
