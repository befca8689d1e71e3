"""ResultsPersistenceService on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from pydantic import BaseModel

from langchain_persist import (
    NotFoundError,
    OwnershipError,
    ResultsPersistenceService,
    StorageError,
    ValidationError,
)


def test_seed_flow(service: ResultsPersistenceService) -> None:
    """The seed's 11-step test script: create, log, trace, update, checkpoint, complete, read."""
    # 1. create a result
    created = service.save_result(agent_id="agent-001", execution_id="exec-1", quest_id="q-7")
    assert created.status == "running" and created.completed_at is None
    # 2. execution logs
    for message in ("started", "thinking", "calling tool"):
        assert service.save_log(
            agent_id="agent-001", execution_id="exec-1", message=message, source="execute-route"
        )
    # 3. traces
    service.save_trace(
        agent_id="agent-001", execution_id="exec-1", type="tool_start", name="search",
        content={"query": "weather"},
    )
    service.save_trace(
        agent_id="agent-001", execution_id="exec-1", type="tool_end", name="search",
        content="sunny", duration=12.5,
    )
    # 4. incremental update
    partial = service.update_result(created.id, result="partial", metadata={"steps": 1})
    assert partial.result == "partial" and partial.status == "running"
    assert partial.updated_at >= created.updated_at
    # 5. checkpoint state
    service.save_checkpoint_state(
        agent_id="agent-001", checkpoint_id="checkpoint-001", thread_id="thread-1",
        state={"messages": ["hi"], "step": 1},
    )
    # 6. completion
    done = service.update_result(created.id, status="completed", result="final answer",
                                 metadata={"tokens": 42})
    assert done.status == "completed" and done.completed_at is not None
    assert done.metadata == {"steps": 1, "tokens": 42}  # merged, not replaced
    # 7. result retrieval
    assert service.get_result(created.id) == done
    # 8. checkpoint retrieval
    checkpoint = service.get_checkpoint_state("checkpoint-001")
    assert checkpoint is not None
    assert (checkpoint.agent_id, checkpoint.thread_id) == ("agent-001", "thread-1")
    assert checkpoint.state == {"messages": ["hi"], "step": 1}
    # 9. agent results listing
    assert [r.id for r in service.get_agent_results("agent-001")] == [created.id]
    # 10. execution logs, oldest first
    logs = service.get_execution_logs("exec-1")
    assert [log.message for log in logs] == ["started", "thinking", "calling tool"]
    assert {log.source for log in logs} == {"execute-route"}
    # 11. execution traces
    traces = service.get_execution_traces("exec-1")
    assert [(t.type, t.name) for t in traces] == [("tool_start", "search"), ("tool_end", "search")]
    assert traces[0].content == '{"query":"weather"}' and traces[1].duration == 12.5


async def test_async_twins(service: ResultsPersistenceService) -> None:
    created = await service.asave_result(agent_id="a", execution_id="e")
    await service.asave_log(agent_id="a", execution_id="e", message="m")
    await service.asave_trace(agent_id="a", execution_id="e", type="tool_end", content="x")
    await service.aupdate_result(created.id, status="failed", error="boom")
    got = await service.aget_result(created.id)
    assert got is not None and (got.status, got.error) == ("failed", "boom")
    assert len(await service.aget_execution_logs("e")) == 1
    assert len(await service.aget_execution_traces("e")) == 1
    assert [r.id for r in await service.aget_agent_results("a")] == [created.id]
    assert await service.acleanup_old_results(dt.timedelta(0)) == 1


def test_missing_ids(service: ResultsPersistenceService) -> None:
    assert service.get_result(str(uuid.uuid4())) is None
    assert service.get_result("not-a-uuid") is None
    assert service.get_checkpoint_state("nope") is None
    assert service.get_execution_logs("nope") == []
    with pytest.raises(NotFoundError, match="no result with id"):
        service.update_result(str(uuid.uuid4()), status="completed")
    with pytest.raises(NotFoundError):
        service.update_result("not-a-uuid", result="x")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"agent_id": ""}, "agent_id must be a non-empty string"),
        ({"agent_id": None}, "agent_id must be a non-empty string"),
        ({"agent_id": "a" * 300}, "limit is 255"),
        ({"agent_id": "a", "status": "done"}, "status must be one of running, completed, failed"),
        ({"agent_id": "a", "metadata": [1, 2]}, "metadata must be a mapping"),
    ],
)
def test_result_validation(service: ResultsPersistenceService, fields, message) -> None:
    with pytest.raises(ValidationError, match=message):
        service.save_result(**fields)
    assert service.find_results() == []  # nothing half-written


def test_status_moves(service: ResultsPersistenceService) -> None:
    result = service.save_result(agent_id="a")
    service.update_result(result.id, status="completed", result="ok")
    with pytest.raises(ValidationError, match="is completed; it cannot become failed"):
        service.update_result(result.id, status="failed")
    with pytest.raises(ValidationError, match="cannot become running"):
        service.update_result(result.id, status="running")
    assert service.get_result(result.id).status == "completed"  # type: ignore[union-attr]
    # fields other than the status can still change on a finished result
    assert service.update_result(result.id, metadata={"note": "x"}).metadata == {"note": "x"}


def test_update_is_a_top_level_merge(service: ResultsPersistenceService) -> None:
    """One statement on PostgreSQL, a read and a write on SQLite: the same rules on both."""
    result = service.save_result(agent_id="a", metadata={"usage": {"in": 1, "out": 2}, "k": 1})
    done = service.update_result(
        result.id, status="completed", metadata={"usage": {"in": 5}, "gone": None}
    )
    # a nested object is replaced, not merged; None is kept as a value
    assert done.metadata == {"usage": {"in": 5}, "k": 1, "gone": None}
    again = service.update_result(result.id, status="completed", result="second")
    assert again.completed_at == done.completed_at  # completed once, not twice
    assert again.result == "second" and again.updated_at >= done.updated_at
    with pytest.raises(NotFoundError):
        service.update_result(str(uuid.uuid4()), status="completed")
    with pytest.raises(NotFoundError):
        service.update_result("not-an-id", metadata={"x": 1})


def test_nul_bytes_and_unusual_metadata(service: ResultsPersistenceService) -> None:
    class Model(BaseModel):
        name: str
        when: dt.datetime

    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    uid = uuid.uuid4()
    metadata = {
        "when": when, "id": uid, "tags": {"b", "a"}, "model": Model(name="n\x00", when=when),
        "nan": float("nan"), "bytes": b"\x00\x01", "nested": {"k\x00": ["v\x00"]}, 7: "int key",
    }
    with pytest.raises(ValidationError, match=r"agent_id 'a.b' contains a NUL"):
        service.save_result(agent_id="a\x00b", execution_id="e")  # ids are refused, not rewritten
    result = service.save_result(agent_id="ab", result="out\x00put", metadata=metadata,
                                 execution_id="e")
    stored = service.get_result(result.id)
    assert stored is not None
    assert stored.agent_id == "ab" and stored.result == "out\ufffdput"
    assert stored.metadata["when"] == when.isoformat() and stored.metadata["id"] == str(uid)
    assert stored.metadata["tags"] == ["a", "b"]
    assert stored.metadata["model"] == {"name": "n\ufffd", "when": when.isoformat()}
    assert stored.metadata["nan"] == "nan" and stored.metadata["7"] == "int key"
    assert stored.metadata["nested"] == {"k\ufffd": ["v\ufffd"]}
    assert service.save_log(agent_id="a", execution_id="e", message="m\x00", metadata=metadata)
    assert service.save_trace(agent_id="a", execution_id="e", type="tool_end",
                              content=Model(name="x", when=when), metadata=metadata)
    assert service.get_execution_logs("e")[0].message == "m\ufffd"
    trace = service.get_execution_traces("e")[0]
    assert trace.content == f'{{"name":"x","when":"{when.isoformat()}"}}'
    assert service.dropped == {}


def test_trace_truncation(db_url: str) -> None:
    service = ResultsPersistenceService(db_url, trace_content_limit=10)
    service.save_trace(agent_id="a", execution_id="e", type="tool_end", content="0123456789ABC")
    service.save_trace(agent_id="a", execution_id="e", type="tool_end", content="short")
    long, short = service.get_execution_traces("e")
    assert long.content == "0123456789"
    assert long.metadata == {"truncated": True, "content_length": 13}
    assert (short.content, short.metadata) == ("short", {})


def test_default_trace_limit_is_1000(service: ResultsPersistenceService) -> None:
    service.save_trace(agent_id="a", execution_id="e", type="tool_end", content="x" * 5000)
    (trace,) = service.get_execution_traces("e")
    assert len(trace.content or "") == 1000 and trace.metadata["content_length"] == 5000


def test_bad_logs_and_traces_are_counted_not_raised(service: ResultsPersistenceService,
                                                    caplog) -> None:
    assert service.save_log(agent_id="a", execution_id="e", message="m", level="loud") is None
    assert service.save_log(agent_id="", execution_id="e", message="m") is None
    assert service.save_trace(agent_id="a", execution_id="e", type="") is None
    assert service.save_trace(agent_id="a", execution_id="e", type="t", duration=-1) is None
    assert service.dropped == {"logs": 2, "traces": 2}
    assert "dropped 1 logs row(s)" in caplog.text and "level must be one of" in caplog.text
    # aliases of the usual logging level names are accepted
    assert service.save_log(agent_id="a", execution_id="e", message="m", level="warning")
    assert service.get_execution_logs("e")[0].level == "warn"


def test_database_down_logs_drop_results_raise(tmp_path) -> None:
    service = ResultsPersistenceService("postgresql://postgres@127.0.0.1:1/nowhere")
    assert service.save_log(agent_id="a", execution_id="e", message="m") is None
    assert service.save_trace(agent_id="a", execution_id="e", type="tool_end") is None
    assert service.dropped == {"logs": 1, "traces": 1}
    with pytest.raises(StorageError, match=r"cannot reach .*127\.0\.0\.1:1.*could not save"):
        service.save_result(agent_id="a")


def test_checkpoint_ownership(service: ResultsPersistenceService) -> None:
    service.save_checkpoint_state(agent_id="a", checkpoint_id="c", thread_id="t", state={"v": 1})
    with pytest.raises(OwnershipError, match="belongs to agent 'a', not 'b'"):
        service.save_checkpoint_state(agent_id="b", checkpoint_id="c", thread_id="t", state={})
    with pytest.raises(OwnershipError):
        service.get_checkpoint_state("c", agent_id="b")
    assert service.get_checkpoint_state("c", agent_id="a").state == {"v": 1}  # type: ignore[union-attr]
    # the owner may replace its own checkpoint's state
    service.save_checkpoint_state(agent_id="a", checkpoint_id="c", thread_id="t", state={"v": 2})
    assert service.get_checkpoint_state("c").state == {"v": 2}  # type: ignore[union-attr]


def test_pagination_with_cursor(service: ResultsPersistenceService) -> None:
    ids = [service.save_result(agent_id="a").id for _ in range(7)]
    service.save_result(agent_id="other")
    seen, cursor = [], None
    while True:
        page = service.get_agent_results("a", limit=3, cursor=cursor)
        seen += [r.id for r in page]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids[::-1]  # newest first, every row once
    with pytest.raises(ValidationError, match="invalid cursor"):
        service.get_agent_results("a", cursor="garbage!")
    with pytest.raises(ValidationError, match="limit must be"):
        service.get_agent_results("a", limit=0)


def test_logs_keep_save_order_when_timestamps_tie(service: ResultsPersistenceService) -> None:
    at = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    rows = [service.log_row(agent_id="a", execution_id="e", message=str(i), timestamp=at)
            for i in range(50)]
    service.save_logs(rows[:25])
    for row in rows[25:]:
        service.save_logs([row])
    first = service.get_execution_logs("e", limit=20)
    rest = service.get_execution_logs("e", limit=100, cursor=first.next_cursor)
    assert [log.message for log in [*first, *rest]] == [str(i) for i in range(50)]
    assert rest.next_cursor is None
