"""Routes that look across runs: full-text search over logs and traces, and statistics.

Scoped like the other reads: ``/api/search`` and ``/api/stats`` cover every agent (or the one
named by ``?agentId=``), ``/api/agents/{agentId}/search`` and ``/api/agents/{agentId}/stats``
only that agent's rows.  ``since`` and ``until`` take an ISO 8601 moment, and ``since`` also an
age back from now (``7d``, ``12h``).  Each search hit links to its execution.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Query, Request

from .._records import SearchHit
from .._results.validate import age_or_moment, cutoff
from ._schemas import camel_json, record_json
from ._state import AgentId, allow, scope_of, server

router = APIRouter(tags=["insight"])
Q = Annotated[str, Query(min_length=1, max_length=1000, description="What to look for.")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Cursor = Annotated[str | None, Query(max_length=1000)]
Status = Annotated[Literal["running", "completed", "failed", "interrupted"] | None, Query()]
Since = Annotated[str | None, Query(max_length=64, description="An age (7d) or an ISO moment.")]
Until = Annotated[str | None, Query(max_length=64, description="An ISO 8601 moment.")]
By = Annotated[Literal["agent", "tool", "model", "status", "hour", "day"] | None, Query()]
Types = Annotated[list[str] | None, Query(alias="type", description=(
    "Trace types (tool_error, llm_end, ...) or log for log lines; repeatable."))]


def _until(text: str | None) -> dt.datetime | None:
    """``until``: a moment, or an age back from now."""
    if text is None:
        return None
    return cutoff(age_or_moment(text), "until")


def _scoped(request: Request, agent_id: str | None, what: str) -> None:
    """403 unless the request's token may read ``what`` of ``agent_id`` (None: of every
    agent, which only a token allowed everything may)."""
    if agent_id is not None:
        allow(request, agent_id, f"the {what} of agent {agent_id!r}")
    elif not scope_of(request).everything:
        raise HTTPException(403, f"this token may use only some agents: ask for one agent's "
                                 f"{what} (/api/agents/{{agentId}}/{what})")


def _hit_json(hit: SearchHit, agent_id: str | None) -> dict[str, Any]:
    base = (f"/api/agents/{agent_id}/executions/{hit.execution_id}" if agent_id
            else f"/api/executions/{hit.execution_id}")
    return {**record_json(hit), "links": {
        "execution": f"/api/executions/{hit.execution_id}",
        "logs": f"{base}/logs", "traces": f"{base}/traces",
    }}


async def _search(
    request: Request, scope: str | None, q: str, *, agent_id: str | None,
    execution_id: str | None, thread_id: str | None, types: list[str] | None,
    status: str | None, since: str | None, until: str | None, limit: int, cursor: str | None,
) -> dict[str, Any]:
    _scoped(request, agent_id, "search")
    page = await server(request).service.asearch(
        q, agent_id=agent_id, execution_id=execution_id, thread_id=thread_id,
        types=types or None, status=status,
        since=None if since is None else age_or_moment(since), until=_until(until),
        limit=limit, cursor=cursor,
    )
    return {"items": [_hit_json(h, scope) for h in page], "nextCursor": page.next_cursor}


@router.get("/api/search")
async def search(
    request: Request, q: Q, agent_id: Annotated[str | None, Query(alias="agentId")] = None,
    execution_id: Annotated[str | None, Query(alias="executionId")] = None,
    thread_id: Annotated[str | None, Query(alias="threadId")] = None, types: Types = None,
    status: Status = None, since: Since = None, until: Until = None, limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """Logs and traces matching ``q``, newest first, a page at a time, each with the snippet
    that matched and links to its execution."""
    return await _search(request, None, q, agent_id=agent_id, execution_id=execution_id,
                         thread_id=thread_id, types=types, status=status, since=since,
                         until=until, limit=limit, cursor=cursor)


@router.get("/api/agents/{agentId:path}/search")
async def agent_search(
    agent_id: AgentId, request: Request, q: Q,
    execution_id: Annotated[str | None, Query(alias="executionId")] = None,
    thread_id: Annotated[str | None, Query(alias="threadId")] = None, types: Types = None,
    status: Status = None, since: Since = None, until: Until = None, limit: Limit = 50,
    cursor: Cursor = None,
) -> dict[str, Any]:
    """The agent's logs and traces matching ``q`` (never another agent's)."""
    return await _search(request, agent_id, q, agent_id=agent_id, execution_id=execution_id,
                         thread_id=thread_id, types=types, status=status, since=since,
                         until=until, limit=limit, cursor=cursor)


async def _stats(request: Request, agent_id: str | None, since: str | None, until: str | None,
                 by: str | None, top_errors: int) -> dict[str, Any]:
    _scoped(request, agent_id, "stats")
    found = await server(request).service.astats(
        agent_id=agent_id, since=None if since is None else age_or_moment(since),
        until=_until(until), by=by, top_errors=top_errors,
    )
    return camel_json(found.to_dict())


@router.get("/api/stats")
async def stats(
    request: Request, agent_id: Annotated[str | None, Query(alias="agentId")] = None,
    since: Since = "7d", until: Until = None, by: By = None,
    top_errors: Annotated[int, Query(alias="topErrors", ge=0, le=100)] = 10,
) -> dict[str, Any]:
    """Runs, rates, durations (p50, p95, p99), tool errors, tokens and top errors, over
    ``since`` (default: the last 7 days), grouped ``by`` agent, tool, model, status, hour or
    day."""
    return await _stats(request, agent_id, since, until, by, top_errors)


@router.get("/api/agents/{agentId:path}/stats")
async def agent_stats(
    agent_id: AgentId, request: Request, since: Since = "7d", until: Until = None,
    by: By = None, top_errors: Annotated[int, Query(alias="topErrors", ge=0, le=100)] = 10,
) -> dict[str, Any]:
    """The agent's statistics (see ``/api/stats``)."""
    return await _stats(request, agent_id, since, until, by, top_errors)
