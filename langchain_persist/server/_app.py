"""`create_app`: the FastAPI application that runs, resumes and shows one LangGraph graph."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from .._callbacks.tracker import ExecutionTracker
from .._checkpoint.saver import PersistSaver
from .._db.engine import resolve_url
from .._errors import (
    ConfigurationError,
    NotFoundError,
    OwnershipError,
    PersistenceError,
    SchemaError,
    SerializationError,
    StorageError,
    ValidationError,
)
from .._results.service import ResultsPersistenceService
from .._sanitize import jsonable
from ._events import DEFAULT_KEEP_FINISHED, DEFAULT_MAX_EVENTS, EventLogs
from ._graphs import TaskInput, default_task_input, has_messages, with_saver
from ._guards import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_MAX_BODY_BYTES,
    BearerToken,
    BodyLimit,
    load_tokens,
)
from ._insight_routes import router as insight_router
from ._read_routes import router as read_router
from ._retention import RetentionSchedule
from ._run_routes import router as run_router
from ._runs import Runner, ThreadBusy
from ._state import ServerState
from ._ui_app import install_ui

READ_THREADS = 4
_STATUS = {
    NotFoundError: 404, OwnershipError: 403, ValidationError: 422, SerializationError: 422,
    StorageError: 503, SchemaError: 503,
}


def create_app(
    graph: Any,
    *,
    url: str | None = None,
    service: ResultsPersistenceService | None = None,
    serde: Any = None,
    api_token: str | None = None,
    api_tokens: Mapping[str, Any] | str | None = None,
    recursion_limit: int = 100,
    max_retries: int = 2,
    retry_delay: float = 1.0,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    max_events: int = DEFAULT_MAX_EVENTS,
    keep_finished: int = DEFAULT_KEEP_FINISHED,
    task_input: TaskInput | None = None,
    shutdown_timeout: float = 30.0,
    ui: bool = True,
    retention_interval: float | None = 3600.0,
) -> FastAPI:
    """The HTTP service for ``graph``: execute and resume with SSE, watch, read what was stored.

    It also serves the viewer at ``/`` (unless ``ui=False``): runs, traces, checkpoints, with
    resume, answer and fork through the endpoints above.

    Args:
        graph: a compiled graph, a `StateGraph`, or a function returning one.  A graph
            compiled with a `PersistSaver` keeps it (its database and its serializer); one
            without a checkpointer gets a `PersistSaver` on ``url`` with ``serde``; one with
            another kind of checkpointer is refused (`ConfigurationError`).
        url: the database URL (default: the graph's `PersistSaver`'s, else
            ``LANGCHAIN_PERSIST_DATABASE_URL``, ``DATABASE_URL``, ``./langchain_persist.db``).
        service: the `ResultsPersistenceService` to store results, logs and traces with (on
            the same database as the checkpoints, with the saver's serializer).
        serde: the serializer of the saver the server makes, e.g. an
            ``EncryptedSerializer`` (a graph's own `PersistSaver` keeps its own).
        api_token: a bearer token that may use every agent; default
            ``$LANGCHAIN_PERSIST_API_TOKEN``.
        api_tokens: bearer tokens scoped to agents (names or patterns): a mapping, a JSON
            object or a JSON file's path; default ``$LANGCHAIN_PERSIST_API_TOKENS``.  With no
            token at all, every request is let in.
        recursion_limit, max_retries: the defaults of a request that names none.
        retry_delay: seconds before a retry (times the retry's number).
        max_body_bytes: the largest request body accepted (413 above).
        body_timeout: seconds a request body may take to arrive (408 after).
        max_events: the events kept per execution for late and returning followers.
        keep_finished: how many finished executions keep their events in memory.
        task_input: how a task becomes the graph's input (default: a user message when the
            state has ``messages``, else ``{"task": task}``).
        shutdown_timeout: seconds that running executions get to finish at shutdown; those
            still running are then stopped and marked failed, resumable from their checkpoint.
        retention_interval: seconds between two applications of the stored retention
            policies (`ResultsPersistenceService.apply_retention`): at startup, then on this
            schedule; None or 0 never applies them.
    """
    url = service.url if service is not None else url
    compiled, saver = with_saver(graph, lambda: PersistSaver(url, serde=serde))
    if url is not None and resolve_url(url) != saver.url:
        raise ConfigurationError(
            f"the graph's PersistSaver stores checkpoints in {saver!r}, but the server was "
            f"given {resolve_url(url)!r}: results and checkpoints must share one database "
            "(leave --url out, or compile the graph with the same URL)"
        )
    if serde is not None and saver.serde is not serde:
        raise ConfigurationError(
            "the graph's PersistSaver has a serializer of its own, which the server keeps: "
            "leave serde (--serde) out"
        )
    tokens = load_tokens(api_token, api_tokens)
    if service is None:  # reads on threads of their own, apart from the graph's sync work
        reads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="langchain-persist-read")
        service = ResultsPersistenceService(saver.url, serde=saver.serde, executor=reads)
    tracker = ExecutionTracker(service, source="agent-server")
    logs = EventLogs(max_events=max_events, keep_finished=keep_finished)
    runner = Runner(compiled, tracker, logs, retry_delay=retry_delay)
    state = ServerState(
        graph=compiled, saver=saver, service=service, runner=runner, logs=logs,
        task_input=task_input or default_task_input(compiled),
        has_messages=has_messages(compiled), recursion_limit=recursion_limit,
        max_retries=max_retries,
    )

    retention = RetentionSchedule(service, retention_interval)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        retention.start()
        yield
        await retention.stop()
        await runner.drain(shutdown_timeout)
        await asyncio.to_thread(tracker.close)
        if service.executor is not None:
            service.executor.shutdown(wait=False)

    app = FastAPI(
        title="langchain-persist agent service",
        summary=f"Runs the graph {compiled.name!r}: execute, resume, watch, read.",
        lifespan=lifespan,
    )
    app.state.persist = state
    app.state.retention = retention
    app.include_router(run_router)
    app.include_router(read_router)
    app.include_router(insight_router)
    app.add_exception_handler(PersistenceError, _persistence_error)
    app.add_exception_handler(ThreadBusy, _thread_busy)
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes, timeout=body_timeout)
    if tokens:
        app.add_middleware(BearerToken, tokens=tokens)  # added last: it runs first
    if ui:  # after the middleware above: the viewer's token prompt runs before it
        install_ui(app, service, saver, graph=compiled.name or "graph", tokens=bool(tokens))
    return app


async def _invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422, with the offending input made storable text: a lone surrogate in a body
    must not turn the answer into a 500."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    return JSONResponse({"detail": jsonable(list(errors))}, status_code=422)


async def _persistence_error(request: Request, exc: Exception) -> JSONResponse:
    status = next((code for kind, code in _STATUS.items() if isinstance(exc, kind)), 500)
    return JSONResponse({"detail": jsonable(str(exc))}, status_code=status)


async def _thread_busy(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=409)
