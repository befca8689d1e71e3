"""`create_app`: the FastAPI application that runs, resumes and shows one LangGraph graph."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from langgraph.pregel import Pregel

from .._callbacks.tracker import ExecutionTracker
from .._checkpoint.saver import PersistSaver
from .._errors import (
    NotFoundError,
    OwnershipError,
    PersistenceError,
    StorageError,
    ValidationError,
)
from .._results.service import ResultsPersistenceService
from ._events import DEFAULT_KEEP_FINISHED, DEFAULT_MAX_EVENTS, EventLogs
from ._graphs import TaskInput, default_task_input, has_messages, with_checkpointer
from ._guards import DEFAULT_MAX_BODY_BYTES, TOKEN_VARIABLE, BearerToken, BodyLimit
from ._read_routes import router as read_router
from ._run_routes import router as run_router
from ._runs import Runner, ThreadBusy

_STATUS = {NotFoundError: 404, OwnershipError: 403, ValidationError: 422, StorageError: 503}


@dataclass(frozen=True, slots=True)
class ServerState:
    """What the routes share: the graph, the stores, the runner and the defaults."""

    graph: Pregel
    service: ResultsPersistenceService
    runner: Runner
    logs: EventLogs
    task_input: TaskInput
    has_messages: bool
    recursion_limit: int
    max_retries: int


def create_app(
    graph: Any,
    *,
    url: str | None = None,
    service: ResultsPersistenceService | None = None,
    api_token: str | None = None,
    recursion_limit: int = 100,
    max_retries: int = 2,
    retry_delay: float = 1.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_events: int = DEFAULT_MAX_EVENTS,
    keep_finished: int = DEFAULT_KEEP_FINISHED,
    task_input: TaskInput | None = None,
    shutdown_timeout: float = 30.0,
) -> FastAPI:
    """The HTTP service for ``graph``: execute and resume with SSE, watch, read what was stored.

    Args:
        graph: a compiled graph, a `StateGraph`, or a function returning one; it is given
            the server's own `PersistSaver` on the database.
        url: the database URL (default: ``LANGCHAIN_PERSIST_DATABASE_URL``, ``DATABASE_URL``,
            then ``./langchain_persist.db``); ignored when ``service`` is given.
        service: the `ResultsPersistenceService` to store results, logs and traces with.
        api_token: the bearer token every request must carry; default
            ``$LANGCHAIN_PERSIST_API_TOKEN``; no token, no check.
        recursion_limit, max_retries: the defaults of a request that names none.
        retry_delay: seconds before a retry (times the retry's number).
        max_body_bytes: the largest request body accepted (413 above).
        max_events: the events kept per execution for late and returning followers.
        keep_finished: how many finished executions keep their events in memory.
        task_input: how a task becomes the graph's input (default: a user message when the
            state has ``messages``, else ``{"task": task}``).
        shutdown_timeout: seconds that running executions get to finish at shutdown; those
            still running are then stopped and marked failed, resumable from their checkpoint.
    """
    service = service if service is not None else ResultsPersistenceService(url)
    saver = PersistSaver(service.db.url)
    compiled = with_checkpointer(graph, saver)
    tracker = ExecutionTracker(service, source="agent-server")
    logs = EventLogs(max_events=max_events, keep_finished=keep_finished)
    runner = Runner(compiled, tracker, logs, retry_delay=retry_delay)
    state = ServerState(
        graph=compiled, service=service, runner=runner, logs=logs,
        task_input=task_input or default_task_input(compiled),
        has_messages=has_messages(compiled), recursion_limit=recursion_limit,
        max_retries=max_retries,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await runner.drain(shutdown_timeout)
        await asyncio.to_thread(tracker.close)

    app = FastAPI(
        title="langchain-persist agent service",
        summary=f"Runs the graph {compiled.name!r}: execute, resume, watch, read.",
        lifespan=lifespan,
    )
    app.state.persist = state
    app.include_router(run_router)
    app.include_router(read_router)
    app.add_exception_handler(PersistenceError, _persistence_error)
    app.add_exception_handler(ThreadBusy, _thread_busy)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    token = api_token or os.environ.get(TOKEN_VARIABLE) or None
    if token:
        app.add_middleware(BearerToken, token=token)  # added last: it runs first
    return app


async def _persistence_error(request: Request, exc: Exception) -> JSONResponse:
    status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 500)
    return JSONResponse({"detail": str(exc)}, status_code=status)


async def _thread_busy(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)
