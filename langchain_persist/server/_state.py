"""What every route shares: the application's state, path parameters, and ownership checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import HTTPException, Path, Request
from langgraph.pregel import Pregel
from pydantic import AfterValidator

from .._checkpoint.saver import PersistSaver
from .._errors import OwnershipError
from .._records import CheckpointState
from .._results.service import ResultsPersistenceService
from ._events import EventLogs
from ._graphs import TaskInput
from ._guards import EVERYTHING, Scope
from ._runs import Runner
from ._schemas import plain_id

AgentId = Annotated[
    str, Path(alias="agentId", min_length=1, max_length=255), AfterValidator(plain_id),
]
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


def scope_of(request: Request) -> Scope:
    """What the request's bearer token may use (everything when the server needs none)."""
    return getattr(request.state, "scope", EVERYTHING)  # type: ignore[no-any-return]


def allow(request: Request, agent_id: str | None, what: str) -> None:
    """403 unless the request's token may use ``agent_id`` (None: a record of no agent, which
    only a token allowed everything may use)."""
    if not scope_of(request).allows(agent_id):  # (not naming the owner: another tenant's)
        raise HTTPException(403, f"this token may not use {what}")


async def owned_checkpoint(
    request: Request, s: ServerState, checkpoint_id: str, agent_id: str | None = None
) -> CheckpointState:
    """A checkpoint the token may use (of ``agent_id``, if given): 404 if unknown, 403 if
    another agent's."""
    try:
        checkpoint = await s.service.aget_checkpoint_state(checkpoint_id, agent_id=agent_id)
    except OwnershipError:
        raise HTTPException(403, f"checkpoint {checkpoint_id!r} belongs to another agent") from None
    if checkpoint is None:
        raise HTTPException(404, f"no checkpoint {checkpoint_id!r}")
    allow(request, checkpoint.agent_id, f"checkpoint {checkpoint_id!r}")
    return checkpoint


async def execution_agent(request: Request, s: ServerState, execution_id: str) -> str | None:
    """The agent of an execution the token may use: its result row's, else its first log or
    trace line's; 404 if nothing is stored for it, 403 if another agent's."""
    page = await s.service.afind_results(execution_id=execution_id, limit=1)
    agent_id = page[0].agent_id if page else None
    if agent_id is None:
        for read in (s.service.aget_execution_logs, s.service.aget_execution_traces):
            first = await read(execution_id, 1)
            if first:
                agent_id = first[0].agent_id
                break
        else:
            raise HTTPException(404, f"no execution {execution_id!r}")
    allow(request, agent_id, f"execution {execution_id!r}")
    return agent_id
