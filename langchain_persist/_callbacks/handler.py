"""`PersistCallbackHandler`: records every run's result, tool traces and logs.

Pass it in run config (``{"callbacks": [handler]}``). The root run of each invocation is one
execution. A chain, graph or agent root gets an `agent_results` row: the background writer
creates it as ``running`` one flush interval after the start if the run still goes, and the
caller's thread writes the end of the run before ``invoke`` returns (an update, or the whole
row at once for a run shorter than the interval), so the row is durable when ``invoke`` returns
at the cost of one blocking write per run (``raise_error=True`` also makes the start blocking).
Every other event becomes a small immutable record on the `BackgroundWriter`'s queue, whose
threads put it on local disk within milliseconds (the spool) and store it in batches; a run's
end waits until its events are on local disk. The handler keeps one entry per run in
flight, keyed by run id, and forgets it when the run ends, so one handler serves any number of
concurrent runs, sync or async. Its callbacks run inline (``run_inline``: no thread hop per
event). In an async run nothing waits on the event loop: the end of the run goes to the spool
and the writer (``await handler.aflush()`` waits for it), from a worker thread, and the wait
for the run's events is awaited; with ``spool=False`` or ``raise_error=True`` the end (and
with ``raise_error``, the start) is written to the database from a worker thread, awaited.

What is recorded:

- results: status ``running`` → ``completed`` (final output), ``failed`` (error, partial
  output) or ``interrupted`` (stopped at an ``interrupt()`` to wait for input; when a later
  run of the thread ends, it becomes ``completed``, or ``failed`` if that run failed);
  metadata ``usage`` (tokens from ``usage_metadata``), ``steps``, ``llm_calls``,
  ``tool_calls``, ``duration_ms``, updated in the background after model calls (at most
  once a second per run);
  ``thread_id``, ``quest_id`` (run metadata) and ``checkpoint_id`` (the thread's newest
  checkpoint stored by `PersistSaver` when the run ends).
- traces: ``tool_start`` (input), ``tool_end`` (output), ``tool_error`` (an exception, or a
  handled error: a ``ToolMessage`` with ``status="error"``), with duration, run ids, the
  ``tool_call_id`` and the LangGraph ``node``, ``step``, ``thread_id`` and ``checkpoint_ns``;
  ``llm_end`` (text, token usage, tool calls asked for) and ``llm_error``; ``chain_error``
  once per error, where it was raised.  Chain inputs and outputs (LangGraph's whole state)
  are never serialized, except the root's final output.
- logs: execution start, completion and failure; retries; custom events; a warning when a
  LangGraph run nears its recursion limit.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import weakref
from collections import Counter
from collections.abc import Callable, Mapping
from types import MethodType
from typing import Any
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.runnables.config import var_child_runnable_config
from langgraph.errors import GraphBubbleUp, GraphInterrupt, GraphRecursionError

from .._errors import PersistenceError, ValidationError
from .._ids import uuid7
from .._results.events import LogEvent, TraceEvent
from .._results.service import ResultsPersistenceService
from .._sanitize import checked_id
from . import execution
from .execution import ExecutionState
from .outputs import error_text, final_output
from .spool import apply_end
from .writer import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_FLUSH_INTERVAL,
    DEFAULT_MAX_QUEUE,
    BackgroundWriter,
    Marker,
    ResultOwner,
    ResultWrite,
)

logger = logging.getLogger("langchain_persist")

PROGRESS_EVERY = 1.0  # seconds between two background updates of a running result
SPOOL_WAIT = 0.2  # seconds the end of a run waits, at most, for its events to be spooled
_RETRY_TAG = "retry:attempt:"


class _AwaitedOnLoop:
    """A callback with an async twin that LangChain awaits when the callback is called on an
    event loop (it awaits any coroutine function; ``only_if``: and the handler's flag of that
    name is set), and the plain method everywhere else: an async run's start and end wait for
    their writes without blocking the loop, and a sync run pays no coroutine."""

    def __init__(
        self, method: Callable[..., Any], twin: Callable[..., Any], only_if: str | None = None
    ) -> None:
        self.method, self.twin, self.only_if = method, twin, only_if  # only_if: a flag's name
        self.__doc__ = method.__doc__

    def __get__(self, handler: Any, owner: type | None = None) -> Any:
        if handler is None:
            return self.method
        awaited = asyncio._get_running_loop() is not None and (
            self.only_if is None or getattr(handler, self.only_if)
        )
        return MethodType(self.twin if awaited else self.method, handler)


class PersistCallbackHandler(BaseCallbackHandler):
    """A LangChain callback handler that stores runs, tool traces and logs in SQL.

    Args:
        agent_id: the agent the executions belong to; defaults to ``agent_id`` in the run
            metadata, else the root run's name.
        url: the database URL (default: ``LANGCHAIN_PERSIST_DATABASE_URL``, ``DATABASE_URL``,
            then a SQLite file here).  Ignored when ``service`` or ``writer`` is given.
        service: a `ResultsPersistenceService` to write through.
        writer: a `BackgroundWriter` to share with other handlers (else one of its own): the
            handler then writes through the writer's service and result store.
        max_queue, batch_size, flush_interval, spool: the writer's settings (``spool``: the
            directory of its local spool, True for the default, False for none).
        trace_llm: also record ``llm_end`` / ``llm_error`` traces.
        raise_error: write the ``running`` row on the caller's thread when the run starts,
            and raise out of the run when its result row cannot be written (`StorageError`,
            the seed's blocking rule) or an id is not one (`ValidationError`: an agent, thread
            or execution id with NUL or a lone surrogate is refused before the run starts).
            By default a failed end of run is logged at ERROR, counted in
            ``dropped["result_writes"]`` and retried in the background, and the agent goes
            on.  Trace and log events never raise.
        source: the ``source`` of the log lines.

    The execution id is the root run's id (choose it with ``config["run_id"]``), or
    ``execution_id`` from the run metadata (``config["metadata"]``).
    """

    run_inline = True

    def __init__(
        self,
        agent_id: str | None = None,
        url: str | None = None,
        service: ResultsPersistenceService | None = None,
        *,
        writer: BackgroundWriter | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        trace_llm: bool = True,
        raise_error: bool = False,
        source: str = "agent-callback",
        spool: bool | str | os.PathLike[str] = True,
    ) -> None:
        self.agent_id = checked_id("agent_id", agent_id, required=False)
        if writer is None:
            service = service if service is not None else ResultsPersistenceService(url)
            writer = BackgroundWriter(
                service, max_queue=max_queue, batch_size=batch_size,
                flush_interval=flush_interval, spool=spool,
            )
            # a handler dropped without close() still stores what it queued, then its
            # thread ends (without waiting here)
            weakref.finalize(self, writer.close, 0)
        elif service is not None and service is not writer.service:
            raise ValidationError(
                "pass a service or a writer, not both: the handler stores through the "
                "writer's service"
            )
        self.service = writer.service
        self.results = writer.results
        # ends of runs go to the spool only when they are plain rows (a tracker's handler
        # writes through its own ResultStore, which a replay elsewhere would not know)
        self._spools = writer.spool is not None and writer.results is writer.service
        self.writer = writer
        self.trace_llm = trace_llm
        self.raise_error = raise_error
        self.source = source
        self.internal_errors = 0
        self.result_errors = 0
        self._runs: dict[UUID, tuple[Any, ...]] = {}
        self._put = self.writer.put

    def __repr__(self) -> str:
        return f"PersistCallbackHandler(agent_id={self.agent_id!r}, service={self.service!r})"

    def _fault(self, callback: str, exc: Exception) -> None:
        """A callback failed: re-raise a requested result-write error; count anything else
        (a bug here must never reach the agent) and log the first one.

        Each callback catches inline rather than through a decorator: a wrapper's extra call
        costs about a microsecond per event, ten events per tool call in an agent run.
        """
        if isinstance(exc, PersistenceError) and self.raise_error:
            raise exc  # the seed's blocking result writes, and ids refused before the run
        self.internal_errors += 1
        if self.internal_errors == 1:
            logger.error("langchain-persist: %s failed (reported once; the agent goes on)",
                         callback, exc_info=exc)

    # -- public controls -----------------------------------------------------------------------

    @property
    def dropped(self) -> Counter[str]:
        """What could not be stored, by kind: ``traces``, ``logs``, ``results`` (progress),
        ``queue_full``, ``closed`` and ``result_writes`` (result rows the caller could not
        write; they are retried in the background)."""
        counts = Counter(self.writer.dropped)
        if self.result_errors:
            counts["result_writes"] = self.result_errors
        return counts

    @property
    def written(self) -> Counter[str]:
        """What the writer stored, by kind (``traces``, ``logs``, ``results``)."""
        return Counter(self.writer.written)

    @property
    def active_runs(self) -> int:
        """How many runs are in flight (0 when every run has ended)."""
        return len(self._runs)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every event so far is stored; False if ``timeout`` passed first."""
        return self.writer.flush(timeout)

    async def aflush(self, timeout: float | None = None) -> bool:
        """`flush` for async code: waits off the event loop."""
        return await asyncio.to_thread(self.writer.flush, timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Store what is queued and stop the writer thread."""
        return self.writer.close(timeout)

    # -- chains: only the root is serialized ---------------------------------------------------

    def on_chain_start(
        self,
        serialized: dict[str, Any] | None,
        inputs: Any,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Open an execution for a root run; otherwise remember the run's execution."""
        try:
            name = kwargs.get("name") or (serialized or {}).get("name")
            parent = self._runs.get(parent_run_id) if parent_run_id is not None else None
            if parent is None:
                ex = self._open(run_id, name, metadata, inputs)
                self._runs[run_id] = (ex, ex.started, name, metadata)
                return
            ex = parent[0]
            self._runs[run_id] = (ex, 0.0, name, metadata)
            self._follow(ex, name, metadata, tags, run_id)
            if metadata and ex.failed_tasks:
                self._node_retry(ex, name, metadata)
        except Exception as exc:
            self._fault("on_chain_start", exc)

    async def _aon_chain_start(self, serialized: Any, inputs: Any, **kwargs: Any) -> None:
        # (raise_error) a root's running row is written before it starts: in a worker thread
        parent = kwargs.get("parent_run_id")
        if parent is None or parent not in self._runs:
            await asyncio.to_thread(self._chain_start, serialized, inputs, **kwargs)
        else:
            self._chain_start(serialized, inputs, **kwargs)

    _chain_start = on_chain_start
    on_chain_start = _AwaitedOnLoop(  # type: ignore[assignment]
        on_chain_start, _aon_chain_start, only_if="raise_error"
    )

    def on_chain_end(
        self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Finish the execution when its root ends."""
        _wait(self._chain_end(outputs, run_id, _on_event_loop()))

    def on_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Fail the execution at its root; trace an error once, where it was raised."""
        _wait(self._chain_error(error, run_id, parent_run_id, _on_event_loop()))

    async def _aon_chain_end(
        self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        await self._aend(self._chain_end, run_id, outputs, run_id)

    async def _aon_chain_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        await self._aend(self._chain_error, run_id, error, run_id, parent_run_id)

    on_chain_end = _AwaitedOnLoop(on_chain_end, _aon_chain_end)  # type: ignore[assignment]
    on_chain_error = _AwaitedOnLoop(on_chain_error, _aon_chain_error)  # type: ignore[assignment]

    async def _aend(self, end: Callable[..., Marker | None], run_id: UUID, *args: Any) -> None:
        """``end(*args, in_async=True)`` (`_chain_end`, `_chain_error`) on an event loop, which
        it never blocks: a root run's end, which writes (to the spool, or to the database),
        runs in a worker thread, and the wait for its events to be spooled is awaited."""
        entry = self._runs.get(run_id)
        if entry is None or entry[0].root_run_id != run_id:
            end(*args, True)  # a nested run: nothing to write, nothing to wait for
            return
        spooled = await asyncio.to_thread(end, *args, True)
        if spooled is not None:
            await spooled.wait_async(SPOOL_WAIT)

    def _chain_end(self, outputs: Any, run_id: UUID, in_async: bool) -> Marker | None:
        try:
            entry = self._runs.pop(run_id, None)
            if entry is not None and entry[0].root_run_id == run_id:
                return self._finish(entry[0], in_async, outputs=outputs)
        except Exception as exc:
            self._fault("on_chain_end", exc)
        return None

    def _chain_error(
        self, error: BaseException, run_id: UUID, parent_run_id: UUID | None, in_async: bool
    ) -> Marker | None:
        try:
            entry = self._runs.pop(run_id, None)
            if entry is None:
                return None
            ex, _, name, metadata = entry[:4]
            if ex.root_run_id == run_id:
                return self._finish(ex, in_async, error=error)
            if isinstance(error, GraphBubbleUp):  # interrupts and commands, not failures
                if isinstance(error, GraphInterrupt):
                    ex.interrupted = True
                return None
            if metadata and name == metadata.get("langgraph_node"):
                task = metadata.get("langgraph_checkpoint_ns")
                if task:
                    ex.failed_tasks = {*(ex.failed_tasks or ()), task}
            if ex.last_error is not error:
                ex.last_error = error
                self._put(TraceEvent(
                    ex.agent_id, ex.execution_id, "chain_error", name, error_text(error), run_id,
                    parent_run_id, None, time.time(), metadata,
                ))
        except Exception as exc:
            self._fault("on_chain_error", exc)
        return None

    # -- tools ---------------------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any] | None,
        input_str: str,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Trace ``tool_start`` with the tool's input."""
        try:
            name = kwargs.get("name") or (serialized or {}).get("name")
            parent = self._runs.get(parent_run_id) if parent_run_id is not None else None
            ex = parent[0] if parent is not None else self._execution(run_id, name, metadata)
            call_id = kwargs.get("tool_call_id")
            extra = {"tool_call_id": call_id} if call_id else None
            now = time.time()
            self._runs[run_id] = (ex, now, name, metadata, extra)
            self._put(TraceEvent(
                ex.agent_id, ex.execution_id, "tool_start", name,
                input_str if inputs is None else inputs, run_id, parent_run_id, None, now,
                metadata, extra,
            ))
            if parent is not None:
                self._follow(ex, name, metadata, tags, run_id)
        except Exception as exc:
            self._fault("on_tool_start", exc)

    def on_tool_end(
        self, output: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Trace ``tool_end``, or ``tool_error`` for a ``ToolMessage`` with status error."""
        try:
            failed = getattr(output, "status", None) == "error"
            content = getattr(output, "content", None)
            self._end_tool(
                "tool_error" if failed else "tool_end", output if content is None else content,
                run_id, parent_run_id, handled=failed,
            )
        except Exception as exc:
            self._fault("on_tool_end", exc)

    def on_tool_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Trace ``tool_error`` with the exception (``tool_interrupt`` for an ``interrupt()``)."""
        try:
            paused = isinstance(error, GraphInterrupt)
            kind = "tool_error"
            if isinstance(error, GraphBubbleUp):  # interrupt() or a Command: not a failure
                kind = "tool_interrupt" if paused else "tool_end"
            ex = self._end_tool(kind, error_text(error), run_id, parent_run_id)
            if ex is not None:
                if paused:
                    ex.interrupted = True
                elif kind == "tool_error":
                    ex.last_error = error
        except Exception as exc:
            self._fault("on_tool_error", exc)

    def _end_tool(
        self, kind: str, content: Any, run_id: UUID, parent_run_id: UUID | None,
        *, handled: bool = False,
    ) -> ExecutionState | None:
        """Trace the end of a tool call and count it; the execution it belongs to, if known."""
        entry = self._runs.pop(run_id, None)
        if entry is None:
            return None
        ex, started, name, metadata, extra = entry
        if handled:
            extra = {**(extra or {}), "handled": True}
        now = time.time()
        with execution.COUNTING:
            ex.tool_calls += 1
        self._put(TraceEvent(
            ex.agent_id, ex.execution_id, kind, name, content, run_id, parent_run_id,
            (now - started) * 1000, now, metadata, extra,
        ))
        return ex

    # -- models --------------------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any] | None,
        messages: list[list[Any]],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember when the model call started (messages are not serialized)."""
        try:
            name = kwargs.get("name") or (serialized or {}).get("name")
            parent = self._runs.get(parent_run_id) if parent_run_id is not None else None
            ex = parent[0] if parent is not None else self._execution(run_id, name, metadata)
            self._runs[run_id] = (ex, time.time(), name, metadata, None)
            if parent is not None:
                self._follow(ex, name, metadata, tags, run_id)
        except Exception as exc:
            self._fault("on_chat_model_start", exc)

    def on_llm_start(
        self,
        serialized: dict[str, Any] | None,
        prompts: list[str],
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Remember when a (completion) model call started (`on_chat_model_start` catches its
        own faults)."""
        self.on_chat_model_start(
            serialized, [], run_id=run_id, parent_run_id=parent_run_id, tags=tags,
            metadata=metadata, **kwargs,
        )

    def on_llm_end(
        self, response: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Count tokens and calls, keep the text as partial output, trace ``llm_end``."""
        try:
            entry = self._runs.pop(run_id, None)
            if entry is None:
                return
            ex, started, name, metadata, _ = entry
            now = time.time()
            generations = response.generations
            gen = generations[0][0] if generations and generations[0] else None
            text = gen.text if gen is not None else None
            message = getattr(gen, "message", None)
            usage = getattr(message, "usage_metadata", None) or (
                (response.llm_output or {}).get("token_usage") if response.llm_output else None
            )
            calls = getattr(message, "tool_calls", None)
            with execution.COUNTING:
                ex.llm_calls += 1
                if usage:
                    if ex.usage is None:
                        ex.usage = {}
                    for key in ("input_tokens", "output_tokens", "total_tokens",
                                "prompt_tokens", "completion_tokens"):
                        value = usage.get(key)
                        if isinstance(value, int):
                            ex.usage[key] = ex.usage.get(key, 0) + value
                if text:
                    ex.partial = text
            if self.trace_llm:
                extra: dict[str, Any] = {}
                if usage:
                    extra["usage"] = usage
                if calls:
                    extra["tool_calls"] = [c.get("name") for c in calls]
                self._put(TraceEvent(
                    ex.agent_id, ex.execution_id, "llm_end", name, text, run_id, parent_run_id,
                    (now - started) * 1000, now, metadata, extra or None,
                ))
            if ex.opening and now - ex.progress_at >= PROGRESS_EVERY:
                ex.progress_at = now
                self._put(ResultWrite("progress", ex.execution_id, {
                    "status": "running", "result": ex.partial, "metadata": ex.summary(),
                }, ex.row))
        except Exception as exc:
            self._fault("on_llm_end", exc)

    def on_llm_error(
        self,
        error: BaseException,
        *,
        run_id: UUID,
        parent_run_id: UUID | None = None,
        **kwargs: Any,
    ) -> None:
        """Trace ``llm_error``."""
        try:
            entry = self._runs.pop(run_id, None)
            if entry is None:
                return
            ex, started, name, metadata, _ = entry
            now = time.time()
            ex.last_error = error
            if self.trace_llm:
                self._put(TraceEvent(
                    ex.agent_id, ex.execution_id, "llm_error", name, error_text(error), run_id,
                    parent_run_id, (now - started) * 1000, now, metadata,
                ))
        except Exception as exc:
            self._fault("on_llm_error", exc)

    # -- retries and custom events ------------------------------------------------------------

    def on_retry(
        self, retry_state: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        """Log a retry reported by a model integration (tenacity's ``RetryCallState``)."""
        try:
            entry = self._runs.get(run_id)
            if entry is None:
                return
            outcome = getattr(retry_state, "outcome", None)
            error = outcome.exception() if outcome is not None and outcome.failed else None
            attempt = getattr(retry_state, "attempt_number", None)
            self._log(
                entry[0], "warn", f"retrying {entry[2] or 'run'} after attempt {attempt}",
                {"attempt": attempt, "run_id": str(run_id),
                 "error": None if error is None else error_text(error)},
            )
        except Exception as exc:
            self._fault("on_retry", exc)

    def on_custom_event(
        self,
        name: str,
        data: Any,
        *,
        run_id: UUID,
        tags: list[str] | None = None,
        metadata: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        """Log a custom event (``dispatch_custom_event``) with its data."""
        try:
            entry = self._runs.get(run_id)
            if entry is None:
                return
            self._log(entry[0], "info", f"custom event: {name}",
                      {"event": name, "run_id": str(run_id)}, detail=data)
        except Exception as exc:
            self._fault("on_custom_event", exc)

    # -- the execution's life ------------------------------------------------------------------

    def _open(
        self, run_id: UUID, name: str | None, metadata: Mapping[str, Any] | None, inputs: Any
    ) -> ExecutionState:
        """Start an execution and its ``running`` result row.

        The row is created by the writer one flush interval after the start, if the run
        still goes (so a short run costs one blocking write, at its end); with
        ``raise_error=True`` it is created here, on the caller's thread, and a failure
        raises.
        """
        meta = metadata or {}
        ex = self._execution(run_id, name, meta)
        ex.execution_id = str(ex.execution_id)
        ex.row = row = ResultOwner()
        ex.progress_at = time.time()  # the first progress a second into the run, if it lasts
        quest_id = meta.get("quest_id")
        ex.opening = {  # (its id chosen now: the running row and the end make one row)
            "id": uuid7(), "agent_id": ex.agent_id, "execution_id": ex.execution_id,
            "thread_id": ex.thread_id,
            "quest_id": None if quest_id is None else str(quest_id),
            "metadata": {"run_name": name, "run_id": str(run_id)},
        }
        if self.raise_error:
            try:
                row.result_id = self.results.save_result(**ex.opening).id
            except PersistenceError as exc:
                self._result_failed("create", ex, exc)
        else:
            self._put(ResultWrite("open", ex.execution_id, ex.opening, row))
        self._log(ex, "info", f"execution started: {name or 'run'}",
                  {"run_id": str(run_id)}, detail=inputs)
        return ex

    def _finish(
        self,
        ex: ExecutionState,
        in_async: bool,
        *,
        outputs: Any = None,
        error: BaseException | None = None,
    ) -> Marker | None:
        """Complete or fail the execution's result, then log it.

        In a sync run: one blocking write.  In an async run: no database I/O; the end goes to
        the spool (local disk) and the writer stores it within a flush interval (``await
        handler.aflush()`` waits for it).  Returns what the run then waits for (at most
        ``SPOOL_WAIT``; None with no spool): the writer putting the run's events on local
        disk, so that what a run that returned recorded survives a SIGKILL.
        """
        row = ex.row
        assert row is not None
        row.finished = True  # (the writer may be creating the running row: see _end_change)
        summary = ex.summary()
        if ex.interrupted or (isinstance(outputs, Mapping) and "__interrupt__" in outputs):
            summary["interrupted"] = True
        fields: dict[str, Any] = {"metadata": summary}
        if error is None:
            status = "interrupted" if summary.get("interrupted") else "completed"
            fields.update(status=status, result=final_output(outputs))
        else:
            fields.update(status="failed", error=error_text(error), result=ex.partial)
        change = self._end_change(ex, fields)
        try:
            if self.raise_error or not in_async or not self._spool_end(ex, change):
                try:
                    apply_end(self.results, change)
                except PersistenceError as exc:
                    self._result_failed("finish", ex, exc, change)
        finally:
            self._finish_log(ex, error, summary)
        return self.writer.spooled() if self._spools else None

    def _end_change(self, ex: ExecutionState, fields: dict[str, Any]) -> dict[str, Any]:
        """The end of the run as one change for `apply_end`: an update of its row, or the
        whole row if the running row is not known to be written (with the running row's id:
        if the writer stores that row meanwhile, the end updates it); in a thread, it names
        the thread's newest checkpoint and resumes the thread's runs that waited at an
        interrupt()."""
        row = ex.row
        result_id = row.result_id if row is not None else None
        return {"result_id": result_id, "fields": fields,
                "create": self._whole_row(ex, fields) if result_id is None else None,
                "latest_of": ex.thread_id,
                "resumed_by": str(ex.execution_id) if ex.thread_id else None}

    @staticmethod
    def _whole_row(ex: ExecutionState, fields: dict[str, Any]) -> dict[str, Any]:
        """The whole row of a run whose running row is not known to be written."""
        row = {**ex.opening, **fields}
        row["metadata"] = {**ex.opening.get("metadata", {}), **fields.get("metadata", {})}
        return row

    def _spool_end(self, ex: ExecutionState, change: dict[str, Any]) -> bool:
        """Hand the end of the run to the writer, on local disk first (False: no spool)."""
        if not self._spools or not self.writer.spool_end(str(ex.execution_id), change):
            return False
        self._put(ResultWrite("final", str(ex.execution_id), change["fields"], change=change))
        return True

    def _finish_log(self, ex: ExecutionState, error: BaseException | None, summary: Any) -> None:
        if error is None and summary.get("interrupted"):
            self._log(ex, "info", f"execution interrupted, waiting for input: {ex.name or 'run'}",
                      summary)
        elif error is None:
            self._log(ex, "info", f"execution completed: {ex.name or 'run'}", summary)
        elif isinstance(error, GraphRecursionError):
            self._log(ex, "error", f"execution failed: recursion limit reached: {error}", summary)
        else:
            self._log(ex, "error", f"execution failed: {error_text(error)}", summary)

    def _result_failed(
        self, action: str, ex: ExecutionState, exc: PersistenceError,
        change: dict[str, Any] | None = None,
    ) -> None:
        """Report a result write that failed; its end goes to the spool (local disk) and is
        stored by the writer once the database is back, or by the next writer of the spool
        if this process dies."""
        self.result_errors += 1
        refused = isinstance(exc, ValidationError)  # never storable: counted, not retried
        spooled = change is not None and not refused and self._spool_end(ex, change)
        logger.error(
            "langchain-persist could not %s the result of execution %s: %s (the agent goes "
            "on; the end of the run is %s; pass raise_error=True to fail the run instead)",
            action, ex.execution_id, exc,
            "refused, counted in handler.dropped['results']" if refused
            else "on local disk, and stored as soon as the database is back" if spooled
            else "retried in the background",
        )
        if change is not None and not spooled:
            self._put(ResultWrite("final", ex.execution_id, change["fields"], change=change))
        if self.raise_error:
            raise exc

    def _execution(
        self, run_id: UUID, name: str | None, metadata: Mapping[str, Any] | None
    ) -> ExecutionState:
        """The execution a run without a known parent starts: a root run's (see `_open`), or
        that of a tool or model called on its own, traced without a result row."""
        meta = metadata or {}
        agent_id = self.agent_id or meta.get("agent_id") or name or "agent"
        execution_id = meta.get("execution_id") or run_id
        thread_id = meta.get("thread_id")
        return ExecutionState(
            str(agent_id), execution_id, run_id, name,
            None if thread_id is None else str(thread_id),
        )

    def _follow(
        self, ex: ExecutionState, name: str | None, metadata: Mapping[str, Any] | None,
        tags: list[str] | None, run_id: UUID,
    ) -> None:
        """Follow a nested run: the LangGraph step it is in, and a retry its tags announce."""
        if metadata:
            self._track(ex, metadata)
        if tags:
            self._retry_tag(ex, name, tags, run_id)

    def _track(self, ex: ExecutionState, metadata: Mapping[str, Any]) -> None:
        step = metadata.get("langgraph_step")
        if step is not None:
            if ex.limit is None:  # LangGraph shows its config to a node's inner runs only
                config = var_child_runnable_config.get()
                ex.limit = config.get("recursion_limit") if config else None
            if step != ex.last_step:
                self._step(ex, step, metadata)

    def _step(self, ex: ExecutionState, step: int, metadata: Mapping[str, Any]) -> None:
        """Follow the LangGraph super-step of the top graph; warn near the recursion limit."""
        if "|" in (metadata.get("langgraph_checkpoint_ns") or ""):
            return  # a subgraph counts its own steps
        if ex.first_step is None:
            ex.first_step = step
        ex.last_step = step if ex.last_step is None else max(ex.last_step, step)
        if ex.limit and not ex.near_limit:
            used = ex.last_step - ex.first_step + 1
            if used >= max(1, int(ex.limit * 0.8)):
                ex.near_limit = True
                self._log(ex, "warn", f"run is near its recursion limit: step {used} of "
                          f"{ex.limit}", {"step": used, "recursion_limit": ex.limit})

    def _node_retry(
        self, ex: ExecutionState, name: str | None, metadata: Mapping[str, Any]
    ) -> None:
        task = metadata.get("langgraph_checkpoint_ns")
        if ex.failed_tasks and task in ex.failed_tasks and name == metadata.get("langgraph_node"):
            ex.failed_tasks.discard(task)
            self._log(ex, "warn", f"retrying node {name}",
                      {"node": name, "step": metadata.get("langgraph_step")})

    def _retry_tag(
        self, ex: ExecutionState, name: str | None, tags: list[str], run_id: UUID
    ) -> None:
        for tag in tags:
            if tag.startswith(_RETRY_TAG):
                attempt = tag[len(_RETRY_TAG):]
                self._log(ex, "warn", f"retrying {name or 'run'}: attempt {attempt}",
                          {"attempt": int(attempt) if attempt.isdigit() else attempt,
                           "run_id": str(run_id)})
                return

    def _log(
        self, ex: ExecutionState, level: str, message: str,
        metadata: Mapping[str, Any] | None = None, detail: Any = None,
    ) -> None:
        self._put(LogEvent(ex.agent_id, ex.execution_id, level, message, self.source,
                           time.time(), metadata, detail))


def _on_event_loop() -> bool:
    """Whether this thread runs an event loop (a callback of an async run)."""
    return asyncio._get_running_loop() is not None


def _wait(spooled: Marker | None) -> None:
    """Wait (at most ``SPOOL_WAIT``) until a run's events are on local disk."""
    if spooled is not None:
        spooled.wait(SPOOL_WAIT)
