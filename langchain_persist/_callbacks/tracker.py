"""`ExecutionTracker`: one execution's result row and log lines, from start to end.

The seed's execution tracker, async: `start_execution` creates the result row (status
``running``) and logs the start, `update_progress` logs a step and updates the row,
`complete_execution` and `fail_execution` finish it, with the thread's newest checkpoint, and
`interrupt_execution` stops it at an ``interrupt()`` (status ``interrupted``, until a later
execution of its thread ends).
Usable alone (around any work), and used by the HTTP server around each graph run.

An execution may span several graph runs (a retry resumes the graph from its last
checkpoint, as a new run).  `callback_handler` gives a `PersistCallbackHandler` whose runs all
write into the execution's one result row (output, token usage, counters) and trace into its
execution id, but never finish the row: only the tracker decides when the execution is over.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .._errors import NotFoundError, PersistenceError
from .._ids import uuid7
from .._records import AgentResult
from .._results.service import ResultsPersistenceService
from .handler import PersistCallbackHandler
from .writer import BackgroundWriter

_FINISHING = ("status", "error", "completed_at")
_UPDATABLE = ("status", "result", "metadata", "error", "checkpoint_id", "quest_id")


@dataclass(frozen=True, slots=True)
class _Tracked:
    """What the tracker keeps about an execution it started, until it finishes."""

    agent_id: str
    execution_id: str
    result_id: str
    thread_id: str | None


class ExecutionTracker:
    """Start, follow and finish executions: results and logs, persisted as they happen.

    Args:
        service: the `ResultsPersistenceService` to write through (else one for ``url``).
        url: the database URL, when no ``service`` is given.
        source: the ``source`` of the log lines it writes.

    Every method is async (the database work runs in a worker thread).  Result writes raise
    `PersistenceError` (they are blocking, as everywhere); log writes never raise.
    """

    def __init__(
        self,
        service: ResultsPersistenceService | None = None,
        *,
        url: str | None = None,
        source: str = "execution-tracker",
    ) -> None:
        self.service = service if service is not None else ResultsPersistenceService(url)
        self.source = source
        self._active: dict[str, _Tracked] = {}
        self._results = AttemptResults(self.service)
        self._writer: BackgroundWriter | None = None

    def __repr__(self) -> str:
        return f"ExecutionTracker({self.service!r}, active={len(self._active)})"

    @property
    def active(self) -> list[str]:
        """The ids of the executions this tracker started and has not finished."""
        return list(self._active)

    async def start_execution(
        self,
        agent_id: str,
        *,
        execution_id: str | None = None,
        thread_id: str | None = None,
        checkpoint_id: str | None = None,
        quest_id: str | None = None,
        task: Any = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AgentResult:
        """Create the execution's result row (``running``) and log its start; return the row.

        ``execution_id`` defaults to a new time-ordered id; ``task`` is logged with the start.
        """
        execution_id = execution_id or uuid7()
        row = await self.service.asave_result(
            agent_id=agent_id, execution_id=execution_id, thread_id=thread_id,
            checkpoint_id=checkpoint_id, quest_id=quest_id, metadata=metadata,
        )
        tracked = _Tracked(agent_id, execution_id, row.id, thread_id)
        self._active[execution_id] = tracked
        self._results.adopt(execution_id, row.id)
        await self._log(tracked, "info", "execution started",
                        None if task is None else {"task": task})
        return row

    async def update_progress(
        self,
        execution_id: str,
        message: str,
        *,
        progress: float | None = None,
        result: Any = None,
        metadata: Mapping[str, Any] | None = None,
        level: str = "info",
    ) -> AgentResult:
        """Log a progress message and record it (and a partial ``result``) on the result row.

        ``progress`` is a fraction from 0 to 1, when the caller knows one; ``metadata`` is
        merged into the row's metadata and logged with the message.
        """
        tracked = await self._find(execution_id)
        patch: dict[str, Any] = {**(metadata or {}), "last_progress": message}
        if progress is not None:
            patch["progress"] = progress
        row = await self.service.aupdate_result(tracked.result_id, result=result, metadata=patch)
        await self._log(tracked, level, message, patch)
        return row

    async def complete_execution(
        self,
        execution_id: str,
        output: Any = None,
        *,
        checkpoint_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AgentResult:
        """Mark the execution ``completed`` with its output, and log it.

        ``checkpoint_id`` defaults to the newest checkpoint of the execution's thread.
        """
        return await self._finish(
            execution_id, "completed", "execution completed", output=output,
            checkpoint_id=checkpoint_id, metadata=metadata,
        )

    async def fail_execution(
        self,
        execution_id: str,
        error: BaseException | str,
        *,
        result: Any = None,
        checkpoint_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AgentResult:
        """Mark the execution ``failed`` with the error (and any partial ``result``), and log it.

        ``checkpoint_id`` defaults to the newest checkpoint of the execution's thread: the one
        to resume from.
        """
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        return await self._finish(
            execution_id, "failed", f"execution failed: {text}", output=result, error=text,
            checkpoint_id=checkpoint_id, metadata=metadata,
        )

    async def interrupt_execution(
        self,
        execution_id: str,
        output: Any = None,
        *,
        interrupts: Any = None,
        checkpoint_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> AgentResult:
        """Mark the execution ``interrupted``: it stopped at an ``interrupt()`` and waits for
        input (``interrupts``: what it asks, stored in the metadata).  When a later execution
        of its thread ends, it becomes ``completed`` (or ``failed``, if that one failed).
        """
        meta = {**(metadata or {}), "interrupted": True}
        if interrupts is not None:
            meta["interrupts"] = interrupts
        return await self._finish(
            execution_id, "interrupted", "execution interrupted, waiting for input",
            output=output, checkpoint_id=checkpoint_id, metadata=meta,
        )

    def callback_handler(
        self, execution_id: str, *, source: str = "agent-callback"
    ) -> PersistCallbackHandler:
        """A handler for the graph runs of a started execution (pass it in ``callbacks``).

        Every root run it sees (a first run, then one per retry or resume) writes its output
        and counters into the execution's result row and traces under its execution id; the
        row's status is left to `complete_execution` and `fail_execution`.  Handlers share
        one background writer, stored by `flush` and `close`.
        """
        tracked = self._active.get(execution_id)
        if tracked is None:
            raise NotFoundError(
                f"execution {execution_id!r} was not started by this tracker: call "
                "start_execution first"
            )
        if self._writer is None:
            self._writer = BackgroundWriter(self.service, results=self._results)
        return PersistCallbackHandler(tracked.agent_id, writer=self._writer, source=source)

    def flush(self, timeout: float | None = 10.0) -> bool:
        """Wait until the traces and logs of every handler so far are stored."""
        return self._writer is None or self._writer.flush(timeout)

    async def aflush(self, timeout: float | None = 10.0) -> bool:
        """Async `flush`: wait, off the event loop, until traces and logs are stored."""
        return await asyncio.to_thread(self.flush, timeout)

    def close(self, timeout: float | None = 10.0) -> bool:
        """Store what the handlers queued and stop their writer."""
        return self._writer is None or self._writer.close(timeout)

    # -- plumbing -------------------------------------------------------------------------------

    async def _finish(
        self, execution_id: str, status: str, message: str, *, output: Any,
        checkpoint_id: str | None, metadata: Mapping[str, Any] | None, error: str | None = None,
    ) -> AgentResult:
        tracked = await self._find(execution_id)
        if checkpoint_id is None and tracked.thread_id:
            with contextlib.suppress(PersistenceError):  # a nicety; the update below reports
                checkpoint_id = await self.service.alatest_checkpoint_id(tracked.thread_id)
        row = await self.service.aupdate_result(
            tracked.result_id, status=status, result=output, error=error,
            checkpoint_id=checkpoint_id, metadata=metadata,
        )
        self._active.pop(execution_id, None)
        self._results.forget(execution_id)
        await self._log(tracked, "error" if error else "info", message,
                        {"checkpoint_id": row.checkpoint_id, **(metadata or {})})
        if tracked.thread_id:  # earlier executions of the thread that waited at an interrupt
            await self.service.aresolve_interrupted(
                tracked.thread_id, status="failed" if status == "failed" else "completed",
                resumed_by=execution_id, keep=row.id,
            )
        return row

    async def _find(self, execution_id: str) -> _Tracked:
        tracked = self._active.get(execution_id)
        if tracked is not None:
            return tracked
        # started elsewhere (another tracker or process, or before a restart): its newest row
        page = await self.service.afind_results(execution_id=execution_id, limit=1)
        if not page:
            raise NotFoundError(
                f"no execution {execution_id!r}: start it with start_execution first"
            )
        row = page[0]
        return _Tracked(row.agent_id, execution_id, row.id, row.thread_id)

    async def _log(
        self, tracked: _Tracked, level: str, message: str, metadata: Mapping[str, Any] | None
    ) -> None:
        await self.service.asave_log(
            agent_id=tracked.agent_id, execution_id=tracked.execution_id, message=message,
            level=level, source=self.source, metadata=metadata,
        )


class AttemptResults:
    """The `ResultStore` of the tracker's handlers: the service's, except for the result rows
    of the executions the tracker is running (see `adopt`).

    For those, a run's start adopts the execution's row instead of creating one; a run's end
    leaves the row's status (and error) alone, so a failed attempt that will be retried does
    not finish the execution; and the counters of a run (tokens, model and tool calls, steps,
    time) are added to those of the execution's earlier runs.  Writer threads call it while
    the tracker adopts and forgets rows on the event loop: each step is one dict operation.
    """

    def __init__(self, service: ResultsPersistenceService) -> None:
        self.service = service
        self._rows: dict[str, str] = {}  # execution id -> its result id, while it runs
        self._running: set[str] = set()  # the result ids of _rows
        self._earlier: dict[str, dict[str, Any]] = {}  # result id -> counters of ended runs

    def adopt(self, execution_id: str, result_id: str) -> None:
        """The runs of ``execution_id`` write into row ``result_id`` (until `forget`)."""
        self._rows[execution_id] = result_id
        self._running.add(result_id)

    def forget(self, execution_id: str) -> None:
        """The execution ended: its runs' writes go to the service as they are."""
        result_id = self._rows.pop(execution_id, None)
        if result_id is not None:
            self._running.discard(result_id)
            self._earlier.pop(result_id, None)

    def save_result(self, **fields: Any) -> AgentResult:
        """For a run of a tracked execution, update its row instead; otherwise create a row.

        The handler creates a run's row at its start, or, for a short run, writes the whole
        row at its end: either way the fields go into the execution's row.
        """
        result_id = self._rows.get(str(fields.get("execution_id")))
        if result_id is None:
            return self.service.save_result(**fields)
        return self.update_result(
            result_id, **{k: v for k, v in fields.items() if k in _UPDATABLE})

    def update_result(self, result_id: str, **fields: Any) -> AgentResult:
        """Update a row; for a tracked execution, keep output and counters but not the end."""
        if result_id not in self._running:
            return self.service.update_result(result_id, **fields)
        run_ended = fields.get("status") in ("completed", "failed")
        fields = {k: v for k, v in fields.items() if k not in _FINISHING}
        counters = fields.get("metadata")
        if counters and "llm_calls" in counters:  # the handler's summary of the run so far
            earlier = self._earlier.get(result_id)
            total = _added(earlier, counters) if earlier else dict(counters)
            fields["metadata"] = total
            if run_ended:
                self._earlier[result_id] = total
        return self.service.update_result(result_id, **fields)

    def latest_checkpoint_id(self, thread_id: str, checkpoint_ns: str = "") -> str | None:
        """The newest checkpoint id of a thread (the service's)."""
        return self.service.latest_checkpoint_id(thread_id, checkpoint_ns)

    def resolve_interrupted(
        self, thread_id: str, *, status: str, resumed_by: str | None = None,
        keep: str | None = None,
    ) -> list[str]:
        """The end of a run: for a run of a tracked execution, nothing (the tracker resolves
        the thread's interrupted executions when the execution ends); otherwise the
        service's."""
        if resumed_by in self._rows:
            return []
        return self.service.resolve_interrupted(
            thread_id, status=status, resumed_by=resumed_by, keep=keep)


def _added(earlier: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """The counters of a run added to those of the runs before it (other keys: the run's)."""
    total = dict(run)
    for key, value in earlier.items():
        now = run.get(key)
        if isinstance(value, dict) and isinstance(now, dict):
            total[key] = {k: value.get(k, 0) + now.get(k, 0) for k in {*value, *now}}
        elif isinstance(value, int | float) and isinstance(now, int | float):
            total[key] = round(value + now, 3)
    return total
