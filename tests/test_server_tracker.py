"""ExecutionTracker on its own, on SQLite and PostgreSQL: results and logs of an execution,
and the callback handler that makes its retried runs one execution."""

from __future__ import annotations

import uuid

import pytest
import server_graphs

from langchain_persist import ExecutionTracker, NotFoundError, PersistSaver


@pytest.fixture
def tracker(service):
    t = ExecutionTracker(service)
    yield t
    t.close()


async def test_start_progress_complete(service, tracker):
    row = await tracker.start_execution("agent-t", thread_id="t-1", quest_id="q-1",
                                        task="count to three", metadata={"owner": "me"})
    assert row.status == "running" and row.execution_id and row.metadata == {"owner": "me"}
    assert tracker.active == [row.execution_id]

    mid = await tracker.update_progress(row.execution_id, "counted one", progress=1 / 3,
                                        result="1")
    assert mid.status == "running" and mid.result == "1"
    assert mid.metadata["progress"] == pytest.approx(1 / 3)
    assert mid.metadata["last_progress"] == "counted one"

    done = await tracker.complete_execution(row.execution_id, "1 2 3", checkpoint_id="cp-9")
    assert (done.status, done.result, done.checkpoint_id) == ("completed", "1 2 3", "cp-9")
    assert done.completed_at is not None and done.quest_id == "q-1"
    assert tracker.active == []

    logs = service.get_execution_logs(row.execution_id)
    assert [(log.level, log.message) for log in logs] == [
        ("info", "execution started"), ("info", "counted one"), ("info", "execution completed"),
    ]
    assert logs[0].metadata == {"task": "count to three"}
    assert {log.source for log in logs} == {"execution-tracker"}


async def test_fail_records_the_error_and_the_thread_checkpoint(service, tracker):
    saver = PersistSaver(service.db.url)
    graph = server_graphs.agent.copy(update={"checkpointer": saver})
    graph.invoke({"messages": [("user", "hi")]}, {"configurable": {"thread_id": "t-2"}})
    row = await tracker.start_execution("agent-t", thread_id="t-2")

    failed = await tracker.fail_execution(row.execution_id, ValueError("bad input"))
    assert failed.status == "failed" and failed.error == "ValueError: bad input"
    assert failed.checkpoint_id == service.latest_checkpoint_id("t-2") is not None
    logs = service.get_execution_logs(row.execution_id)
    assert (logs[-1].level, logs[-1].message) == (
        "error", "execution failed: ValueError: bad input")


async def test_an_execution_started_elsewhere_can_be_finished(service, tracker):
    row = await tracker.start_execution("agent-t")
    other = ExecutionTracker(service)  # another process, or after a restart
    done = await other.complete_execution(row.execution_id, "ok")
    assert done.id == row.id and done.status == "completed"
    with pytest.raises(NotFoundError, match="start_execution"):
        await other.update_progress(str(uuid.uuid4()), "nothing")
    with pytest.raises(NotFoundError, match="start_execution"):
        other.callback_handler(row.execution_id)


async def test_the_handler_makes_retried_runs_one_execution(service, tracker):
    saver = PersistSaver(service.db.url)
    graph = server_graphs.agent.copy(update={"checkpointer": saver})
    server_graphs.FAILURES["tracked"] = 1
    row = await tracker.start_execution("agent-t", thread_id="t-3")
    config = {
        "callbacks": [tracker.callback_handler(row.execution_id)],
        "configurable": {"thread_id": "t-3"},
        "metadata": {"execution_id": row.execution_id},
    }
    with pytest.raises(RuntimeError, match="flaky failed"):
        await graph.ainvoke({"messages": [("user", "tracked :: flaky")]}, config)
    assert tracker.flush()
    assert service.get_result(row.id).status == "running"  # the tracker decides, not the run

    out = await graph.ainvoke(None, config)  # the retry: resume from the last checkpoint
    await tracker.complete_execution(row.execution_id, out["messages"][-1].content)
    assert await tracker.aflush()

    (result,) = service.get_agent_results("agent-t")
    assert result.id == row.id and result.status == "completed"
    assert result.result == "answer to tracked :: flaky"
    # the counters of both runs: a failed and a successful flaky call, two model calls
    assert (result.metadata["tool_calls"], result.metadata["llm_calls"]) == (2, 2)
    assert result.metadata["usage"] == {"input_tokens": 20, "output_tokens": 10,
                                        "total_tokens": 30}
    traces = service.get_execution_traces(row.execution_id)
    assert [t.type for t in traces if t.type.startswith("tool_")] == [
        "tool_start", "tool_error", "tool_start", "tool_end"]
