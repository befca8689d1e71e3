"""Routes that read what was stored: results, logs, traces and checkpoints.

Lists are pages: ``{"items": [...], "nextCursor": ...}``; pass ``nextCursor`` back as
``?cursor=`` for the next page (None on the last).  Under ``/api/agents/{agentId}/`` every read
is scoped to that agent: another agent's record is refused with 403.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Request
from fastapi.responses import JSONResponse

from .._errors import PersistenceError
from .._records import AgentResult
from ._schemas import page_json, record_json
from ._state import (
    AgentId,
    ExecutionId,
    ServerState,
    allow,
    execution_agent,
    owned_checkpoint,
    server,
)

router = APIRouter(tags=["reads"])
ResultId = Annotated[str, Path(alias="resultId", min_length=1, max_length=255)]
CheckpointId = Annotated[str, Path(alias="checkpointId", min_length=1, max_length=255)]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=1000)]
Status = Annotated[Literal["running", "completed", "failed", "interrupted"] | None, Query()]
Kind = Literal["logs", "traces"]
HEALTH_TIMEOUT = 5.0  # seconds the health check waits for the database


@router.get("/api/health", responses={503: {"description": "The database is unreachable."}})
async def health(request: Request) -> JSONResponse:
    """Whether the server can reach its database (503 while it cannot), its graph and its
    running executions."""
    s = server(request)
    body: dict[str, Any] = {"graph": s.graph.name, "database": s.service.dialect,
                            "running": s.runner.running}
    try:
        await asyncio.wait_for(s.service.aping(), HEALTH_TIMEOUT)
    except (PersistenceError, TimeoutError) as exc:
        reason = str(exc) or f"no answer within {HEALTH_TIMEOUT:g} s"
        return JSONResponse({"status": "unavailable", **body, "databaseReachable": False,
                             "databaseError": reason}, status_code=503)
    return JSONResponse({"status": "ok", **body, "databaseReachable": True})


@router.get("/api/results/{resultId}")
async def get_result(result_id: ResultId, request: Request) -> dict[str, Any]:
    """A result by id."""
    result = await _result(server(request), result_id)
    allow(request, result.agent_id, f"result {result_id!r}")
    return record_json(result)


@router.get("/api/agents/{agentId:path}/results")
async def agent_results(
    agent_id: AgentId, request: Request, limit: Limit = 50, cursor: Cursor = None,
    status: Status = None,
) -> dict[str, Any]:
    """The agent's results, newest first, a page at a time."""
    allow(request, agent_id, f"the results of agent {agent_id!r}")
    page = await server(request).service.aget_agent_results(
        agent_id, limit, status=status, cursor=cursor)
    return page_json(page)


@router.get("/api/agents/{agentId:path}/results/{resultId}")
async def agent_result(agent_id: AgentId, result_id: ResultId, request: Request) -> dict[str, Any]:
    """One of the agent's results (403 if another agent's)."""
    allow(request, agent_id, f"the results of agent {agent_id!r}")
    result = await _result(server(request), result_id)
    if result.agent_id != agent_id:
        raise HTTPException(403, f"result {result_id!r} belongs to another agent")
    return record_json(result)


@router.get("/api/executions/{executionId}")
async def execution(execution_id: ExecutionId, request: Request) -> dict[str, Any]:
    """An execution: its result, and whether this server is running it (with its last event)."""
    s = server(request)
    page = await s.service.afind_results(execution_id=execution_id, limit=1)
    if not page:
        raise HTTPException(404, f"no execution {execution_id!r}")
    allow(request, page[0].agent_id, f"execution {execution_id!r}")
    log = s.logs.get(execution_id)
    return {"executionId": execution_id, "result": record_json(page[0]),
            "running": log is not None and not log.finished,
            "lastEventId": None if log is None else log.last_id}


@router.get("/api/executions/{executionId}/logs")
async def execution_logs(
    execution_id: ExecutionId, request: Request, limit: Limit = 100, cursor: Cursor = None,
) -> dict[str, Any]:
    """The execution's log lines, oldest first, a page at a time."""
    s = server(request)
    await execution_agent(request, s, execution_id)
    return await _events(s, "logs", execution_id, limit, cursor)


@router.get("/api/executions/{executionId}/traces")
async def execution_traces(
    execution_id: ExecutionId, request: Request, limit: Limit = 100, cursor: Cursor = None,
) -> dict[str, Any]:
    """The execution's traces (tool_start, tool_end, tool_error, ...), oldest first."""
    s = server(request)
    await execution_agent(request, s, execution_id)
    return await _events(s, "traces", execution_id, limit, cursor)


@router.get("/api/agents/{agentId:path}/executions/{executionId}/logs")
async def agent_execution_logs(
    agent_id: AgentId, execution_id: ExecutionId, request: Request, limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The log lines of one of the agent's executions (404 unknown, 403 another agent's)."""
    s = server(request)
    await _own_execution(request, s, execution_id, agent_id)
    return await _events(s, "logs", execution_id, limit, cursor)


@router.get("/api/agents/{agentId:path}/executions/{executionId}/traces")
async def agent_execution_traces(
    agent_id: AgentId, execution_id: ExecutionId, request: Request, limit: Limit = 100,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The traces of one of the agent's executions (404 unknown, 403 another agent's)."""
    s = server(request)
    await _own_execution(request, s, execution_id, agent_id)
    return await _events(s, "traces", execution_id, limit, cursor)


@router.get("/api/checkpoints/{checkpointId}")
async def get_checkpoint(checkpoint_id: CheckpointId, request: Request) -> dict[str, Any]:
    """A checkpoint: its agent, thread, parent, metadata and state as JSON."""
    return record_json(await owned_checkpoint(request, server(request), checkpoint_id))


@router.get("/api/agents/{agentId:path}/checkpoints/{checkpointId}")
async def agent_checkpoint(
    agent_id: AgentId, checkpoint_id: CheckpointId, request: Request
) -> dict[str, Any]:
    """One of the agent's checkpoints (404 unknown, 403 another agent's)."""
    allow(request, agent_id, f"the checkpoints of agent {agent_id!r}")
    return record_json(await owned_checkpoint(request, server(request), checkpoint_id, agent_id))


async def _result(s: ServerState, result_id: str) -> AgentResult:
    result = await s.service.aget_result(result_id)
    if result is None:
        raise HTTPException(404, f"no result {result_id!r}")
    return result


async def _own_execution(
    request: Request, s: ServerState, execution_id: str, agent_id: str
) -> None:
    allow(request, agent_id, f"the executions of agent {agent_id!r}")
    if await execution_agent(request, s, execution_id) != agent_id:
        raise HTTPException(403, f"execution {execution_id!r} belongs to another agent")


async def _events(
    s: ServerState, kind: Kind, execution_id: str, limit: int, cursor: str | None
) -> dict[str, Any]:
    read = s.service.aget_execution_logs if kind == "logs" else s.service.aget_execution_traces
    return page_json(await read(execution_id, limit, cursor=cursor))
