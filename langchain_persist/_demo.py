"""The main job: the seed's flow on the embedded SQLite default, and what was stored."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from ._ids import uuid7
from ._service import ResultsPersistenceService


def run_demo(url: str | None, console: Console) -> None:
    """Create a result, log and trace a tool call, checkpoint, complete, and print every table."""
    service = ResultsPersistenceService(url)
    execution_id = f"exec-{uuid7()[:13]}"
    result = service.save_result(agent_id="agent-001", execution_id=execution_id)
    service.save_log(
        agent_id="agent-001", execution_id=execution_id, message="execution started", source="demo"
    )
    service.save_trace(
        agent_id="agent-001",
        execution_id=execution_id,
        type="tool_start",
        name="get_weather",
        content={"city": "Paris"},
    )
    service.save_trace(
        agent_id="agent-001",
        execution_id=execution_id,
        type="tool_end",
        name="get_weather",
        content="18°C and sunny",
        duration=3.2,
    )
    service.save_checkpoint_state(
        agent_id="agent-001",
        checkpoint_id=f"ckpt-{execution_id}",
        thread_id="thread-demo",
        state={"step": 1},
    )
    service.update_result(
        result.id,
        status="completed",
        result="It is 18°C and sunny in Paris.",
        checkpoint_id=f"ckpt-{execution_id}",
    )
    service.save_log(
        agent_id="agent-001",
        execution_id=execution_id,
        message="execution completed",
        source="demo",
    )

    console.print(f"Stored in [bold]{service.db.url}[/]\n")
    stored = service.get_result(result.id)
    assert stored is not None
    table = Table("result id", "status", "result", "completed at", title="agent_results")
    table.add_row(stored.id, stored.status, stored.result, f"{stored.completed_at:%H:%M:%S}")
    console.print(table)
    table = Table("time", "type", "name", "content", "ms", title="agent_traces")
    for t in service.get_execution_traces(execution_id):
        table.add_row(
            f"{t.timestamp:%H:%M:%S.%f}",
            t.type,
            t.name,
            t.content,
            "" if t.duration is None else f"{t.duration:.1f}",
        )
    console.print(table)
    table = Table("time", "level", "source", "message", title="execution_logs")
    for log in service.get_execution_logs(execution_id):
        table.add_row(f"{log.timestamp:%H:%M:%S.%f}", log.level, log.source, log.message)
    console.print(table)
    checkpoint = service.get_checkpoint_state(f"ckpt-{execution_id}")
    assert checkpoint is not None
    table = Table("checkpoint id", "thread", "agent", "state", title="checkpoint_states")
    table.add_row(
        checkpoint.checkpoint_id, checkpoint.thread_id, checkpoint.agent_id, str(checkpoint.state)
    )
    console.print(table)
