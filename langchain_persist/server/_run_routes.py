"""Routes that run and watch: execute, resume, and the live events of an execution."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, HTTPException, Query, Request
from langchain_core.messages import HumanMessage
from langgraph.types import Command
from sse_starlette import EventSourceResponse, ServerSentEvent

from .._errors import OwnershipError
from .._ids import uuid7
from .._records import CheckpointState
from .._sanitize import dumps
from ._events import EventLog
from ._runs import RunPlan
from ._schemas import ExecuteRequest, ResumeRequest
from ._state import (
    AgentId,
    ExecutionId,
    ServerState,
    allow,
    execution_agent,
    owned_checkpoint,
    server,
)

router = APIRouter()
_SSE_DOC = {"content": {"text/event-stream": {}}, "description": "Server-sent events."}
PING_SECONDS = 15
EVENT_ID = re.compile(r"[0-9]{1,18}")
SHUTDOWN_GRACE = 3.0  # seconds a stream goes on once the server is told to stop (uvicorn: 5)


@router.post("/api/agents/execute", response_class=EventSourceResponse,
             responses={200: _SSE_DOC}, tags=["runs"])
async def execute(body: ExecuteRequest, request: Request) -> EventSourceResponse:
    """Run the graph on a task; stream ``start`` ... ``complete`` or ``error`` as SSE.

    A new thread unless ``threadId`` (one of the agent's threads) or ``checkpointId`` (one of
    the agent's checkpoints, to start from) is given.
    """
    s = server(request)
    allow(request, body.agent_id, f"agent {body.agent_id!r}")
    thread_id, checkpoint_id = body.thread_id, None
    if body.checkpoint_id is not None:
        checkpoint = await _own_checkpoint(request, s, body.checkpoint_id, body.agent_id)
        if thread_id is not None and thread_id != checkpoint.thread_id:
            raise HTTPException(422, f"checkpoint {checkpoint.checkpoint_id!r} is on thread "
                                f"{checkpoint.thread_id!r}, not {thread_id!r}: leave threadId "
                                "out, or give that thread")
        thread_id = checkpoint.thread_id
        checkpoint_id = await _unless_latest(s, checkpoint)
    elif thread_id is not None:
        await _own_thread(s, thread_id, body.agent_id)
    else:
        thread_id = uuid7()
    metadata: dict[str, Any] = {"kind": "execute"}
    if body.estimated_tokens is not None:
        metadata["estimated_tokens"] = body.estimated_tokens
    if body.checkpoint_id is not None:
        metadata["from_checkpoint_id"] = body.checkpoint_id
    log = await s.runner.start(RunPlan(
        agent_id=body.agent_id, thread_id=thread_id, input=s.task_input(body.task),
        recursion_limit=body.recursion_limit or s.recursion_limit,
        max_retries=s.max_retries if body.max_retries is None else body.max_retries,
        checkpoint_id=checkpoint_id, quest_id=body.quest_id, task=body.task, metadata=metadata,
    ))
    return _stream(log)


@router.post("/api/agents/{agentId:path}/resume", response_class=EventSourceResponse,
             responses={200: _SSE_DOC}, tags=["runs"])
async def resume(agent_id: AgentId, body: ResumeRequest, request: Request) -> EventSourceResponse:
    """Continue from one of the agent's checkpoints; stream the same events as execute.

    404 for an unknown checkpoint, 403 for another agent's.  A run that stopped at an
    ``interrupt()`` takes ``resume``; a failed run re-runs what did not finish; a finished
    run continues with ``additionalInstructions`` as a new user message.
    """
    s = server(request)
    allow(request, agent_id, f"agent {agent_id!r}")
    checkpoint = await _own_checkpoint(request, s, body.checkpoint_id, agent_id)
    checkpoint_id = await _unless_latest(s, checkpoint)
    config: dict[str, Any] = {"configurable": {"thread_id": checkpoint.thread_id}}
    if checkpoint_id is not None:
        config["configurable"]["checkpoint_id"] = checkpoint_id
    snapshot = await s.graph.aget_state(config)
    update = None
    if body.additional_instructions is not None:
        if not s.has_messages:
            raise HTTPException(422, "this graph's state has no 'messages', so "
                                "additionalInstructions cannot be added as a user message")
        update = {"messages": [HumanMessage(body.additional_instructions)]}
    interrupts = snapshot.interrupts
    if body.has_resume and not interrupts:
        raise HTTPException(409, f"checkpoint {body.checkpoint_id!r} is not waiting at an "
                            "interrupt: leave resume out")
    if interrupts and not body.has_resume:
        raise HTTPException(409, f"checkpoint {body.checkpoint_id!r} is waiting at an "
                            f"interrupt ({interrupts[0].value!r}): send its answer as resume")
    if body.has_resume:
        _storable(s, body.resume)
        run_input: Any = Command(resume=body.resume, update=update)
    elif snapshot.next:  # a run that failed or stopped: its unfinished tasks run again
        run_input = Command(update=update) if update else None
    elif update:  # a finished run: a new turn
        run_input = update
    else:
        raise HTTPException(409, f"checkpoint {body.checkpoint_id!r} ends a finished run and "
                            "nothing new was given: send additionalInstructions to go on")
    log = await s.runner.start(RunPlan(
        agent_id=agent_id, thread_id=checkpoint.thread_id, input=run_input,
        recursion_limit=body.recursion_limit or s.recursion_limit,
        max_retries=s.max_retries if body.max_retries is None else body.max_retries,
        checkpoint_id=checkpoint_id, task=body.additional_instructions,
        metadata={"kind": "resume", "resumed_from": body.checkpoint_id},
    ))
    return _stream(log)


@router.get("/api/executions/{executionId}/events", response_class=EventSourceResponse,
            responses={200: _SSE_DOC, 410: {"description": "Events no longer kept."}},
            tags=["runs"])
async def events(
    execution_id: ExecutionId,
    request: Request,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    after: Annotated[int | None, Query(alias="lastEventId", ge=0)] = None,
) -> EventSourceResponse:
    """Follow an execution's events: those kept so far, then live until it ends.

    Re-join with the ``Last-Event-ID`` header (or ``?lastEventId=``) to get only what came
    after that event.  Events are kept in this server's memory: after a restart, or once a
    finished execution is evicted, this answers 410 and the stored result, logs and traces
    remain readable.
    """
    s = server(request)
    log = s.logs.get(execution_id)
    if log is not None:
        allow(request, log.agent_id, f"execution {execution_id!r}")
    if log is None:
        if await execution_agent(request, s, execution_id):
            raise HTTPException(410, f"the events of execution {execution_id!r} are no "
                                "longer kept by this server (it restarted since, the run was "
                                "on another server, or the events were evicted): read "
                                f"/api/executions/{execution_id} and its /logs and /traces")
        raise HTTPException(404, f"no execution {execution_id!r}")
    if last_event_id is not None:
        if not EVENT_ID.fullmatch(last_event_id.strip()):
            raise HTTPException(422, f"Last-Event-ID {last_event_id[:40]!r} is not an id this "
                                "stream sent (a non-negative integer)")
        after = int(last_event_id)
    return _stream(log, after or 0)


def _stream(log: EventLog, after: int = 0) -> EventSourceResponse:
    headers = {"X-Execution-Id": log.execution_id}
    missed = log.missed(after)
    if missed:
        headers["X-Events-Missed"] = str(missed)
    stopping = anyio.Event()  # set by sse-starlette when the server shuts down
    return EventSourceResponse(_frames(log, after, stopping), headers=headers,
                               ping=PING_SECONDS, shutdown_event=stopping,
                               shutdown_grace_period=SHUTDOWN_GRACE + 0.5)


async def _frames(
    log: EventLog, after: int, stopping: anyio.Event
) -> AsyncIterator[ServerSentEvent]:
    async for event in log.follow(after, stop=stopping, grace=SHUTDOWN_GRACE):
        yield ServerSentEvent(data=event.data, event=event.name, id=str(event.id))
    if stopping.is_set() and not log.finished:  # the server stops before the run ends
        yield ServerSentEvent(event="error", data=dumps({
            "executionId": log.execution_id, "serverStopping": True,
            "message": "the server is shutting down: this stream ends here; the run is given "
            "until the server stops to finish, else it is marked failed and can be resumed "
            f"from its checkpoint; read GET /api/executions/{log.execution_id} later",
        }))


async def _own_checkpoint(
    request: Request, s: ServerState, checkpoint_id: str, agent_id: str
) -> CheckpointState:
    """The agent's checkpoint of the top graph: 404 if unknown, 403 if another agent's."""
    checkpoint = await owned_checkpoint(request, s, checkpoint_id, agent_id)
    if checkpoint.checkpoint_ns:
        raise HTTPException(422, f"checkpoint {checkpoint_id!r} is a subgraph's "
                            f"({checkpoint.checkpoint_ns!r}): give a checkpoint of the graph")
    return checkpoint


def _storable(s: ServerState, value: Any) -> None:
    """422 for a resume value the checkpoints cannot hold (checked before the run starts)."""
    try:
        s.saver.serde.dumps_typed(value)
    except Exception as exc:
        raise HTTPException(422, f"resume cannot be stored in a checkpoint: "
                            f"{type(exc).__name__}: {str(exc)[:200]!r}") from None


async def _own_thread(s: ServerState, thread_id: str, agent_id: str) -> None:
    """403 if the thread's newest checkpoint belongs to another agent."""
    latest = await s.service.alatest_checkpoint_id(thread_id)
    if latest is None:
        return
    try:
        await s.service.aget_checkpoint_state(latest, thread_id=thread_id, agent_id=agent_id)
    except OwnershipError:
        raise HTTPException(403, f"thread {thread_id!r} belongs to another agent") from None


async def _unless_latest(s: ServerState, checkpoint: CheckpointState) -> str | None:
    """The checkpoint id to run from, or None when it is the thread's newest (a plain resume)."""
    latest = await s.service.alatest_checkpoint_id(checkpoint.thread_id)
    return None if latest == checkpoint.checkpoint_id else checkpoint.checkpoint_id
