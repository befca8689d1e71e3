"""What every route shares: the application's state, path parameters, and ownership checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import HTTPException, Path, Request
from langgraph.pregel import Pregel

from .._checkpoint.saver import PersistSaver
from .._errors import OwnershipError
from .._records import CheckpointState
from .._results.service import ResultsPersistenceService
from ._events import EventLogs
from ._graphs import TaskInput
from ._runs import Runner

AgentId = Annotated[str, Path(alias="agentId", min_length=1, max_length=255)]
ExecutionId = Annotated[str, Path(alias="executionId", min_length=1, max_length=255)]


@dataclass(frozen=True, slots=True)
class ServerState:
    """What the routes share: the graph, the stores, the runner and the defaults."""

    graph: Pregel
    saver: PersistSaver
    service: ResultsPersistenceService
    runner: Runner
    logs: EventLogs
    task_input: TaskInput
    has_messages: bool
    recursion_limit: int
    max_retries: int


def server(request: Request) -> ServerState:
    """The state `create_app` made for this application."""
    return request.app.state.persist  # type: ignore[no-any-return]


async def owned_checkpoint(
    s: ServerState, checkpoint_id: str, agent_id: str | None = None
) -> CheckpointState:
    """A checkpoint (of ``agent_id``, if given): 404 if unknown, 403 if another agent's."""
    try:
        checkpoint = await s.service.aget_checkpoint_state(checkpoint_id, agent_id=agent_id)
    except OwnershipError:
        raise HTTPException(403, f"checkpoint {checkpoint_id!r} belongs to another agent") from None
    if checkpoint is None:
        raise HTTPException(404, f"no checkpoint {checkpoint_id!r}")
    return checkpoint
