"""Run the graph for the server: one background task per execution, its events into its log.

An execution is one or more runs of the graph on one thread: the first run, then, after a
failure, up to ``max_retries`` retries that each resume the graph from the thread's last
checkpoint (input ``None``: the steps that finished are not run again).  The run is a task of
its own, so it goes on and is persisted when the client that started it disconnects; the
execute and resume responses are only followers of its `EventLog`.

A database outage is not the run's failure: the run waits for the database (up to
``outage_timeout`` seconds, said on the stream as a ``warning``) and then resumes from its last
checkpoint, which every acknowledged step reached.  The end of an execution whose result row
cannot be written is written in the background once the database is back (for up to
``end_retry_timeout`` seconds), so that no row stays ``running`` after its run is over.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from langgraph.errors import GraphRecursionError
from langgraph.pregel import Pregel

from .._callbacks.outputs import final_output
from .._callbacks.tracker import ExecutionTracker
from .._db.engine import is_outage
from .._errors import PersistenceError
from .._ids import uuid7
from .._records import AgentResult
from .._sanitize import jsonable
from ._events import EventLog, EventLogs
from ._stream import RunEvents, interrupts_of, token_of

logger = logging.getLogger("langchain_persist")

T = TypeVar("T")
OUTAGE_TIMEOUT = 60.0  # seconds a run waits for its database to come back
END_RETRY_TIMEOUT = 900.0  # seconds the end of an execution is retried in the background


class ThreadBusy(Exception):
    """The thread is already being run by another execution of this server."""

    def __init__(self, thread_id: str, execution_id: str) -> None:
        super().__init__(
            f"thread {thread_id!r} is running execution {execution_id!r}: wait until it ends "
            f"(follow GET /api/executions/{execution_id}/events), or use another thread"
        )
        self.thread_id = thread_id
        self.execution_id = execution_id


@dataclass(frozen=True, slots=True)
class RunPlan:
    """What an execution runs: on which thread, from which input, within which limits."""

    agent_id: str
    thread_id: str
    input: Any  # the first run's input: a state update, a Command, or None to resume
    recursion_limit: int
    max_retries: int
    checkpoint_id: str | None = None  # run from this (older) checkpoint, not the thread's last
    quest_id: str | None = None
    task: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


class Runner:
    """Starts executions of one graph and keeps them running in the background."""

    def __init__(
        self, graph: Pregel, tracker: ExecutionTracker, logs: EventLogs, *,
        retry_delay: float = 1.0, outage_timeout: float = OUTAGE_TIMEOUT,
        end_retry_timeout: float = END_RETRY_TIMEOUT,
    ) -> None:
        self.graph = graph
        self.tracker = tracker
        self.service = tracker.service
        self.logs = logs
        self.retry_delay = retry_delay
        self.outage_timeout = outage_timeout
        self.end_retry_timeout = end_retry_timeout
        self._busy: dict[str, str] = {}  # thread id -> the execution running it
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def running(self) -> int:
        """How many executions are running."""
        return len(self._tasks)

    async def start(self, plan: RunPlan) -> EventLog:
        """Create the execution's result row, publish ``start`` and run it in the background.

        Raises `ThreadBusy` when another execution runs the thread, and `PersistenceError`
        when the result row cannot be created.
        """
        execution_id = uuid7()
        running = self._busy.setdefault(plan.thread_id, execution_id)  # no await before this
        if running != execution_id:
            raise ThreadBusy(plan.thread_id, running)
        try:
            row = await self.tracker.start_execution(
                plan.agent_id, execution_id=execution_id, thread_id=plan.thread_id,
                checkpoint_id=plan.checkpoint_id, quest_id=plan.quest_id, task=plan.task,
                metadata={**plan.metadata, "recursion_limit": plan.recursion_limit,
                          "max_retries": plan.max_retries},
            )
        except BaseException:
            self._busy.pop(plan.thread_id, None)
            raise
        log = self.logs.open(execution_id, plan.agent_id)
        log.publish("start", {
            "executionId": execution_id, "resultId": row.id, "threadId": plan.thread_id,
            "agentId": plan.agent_id, "checkpointId": plan.checkpoint_id,
        })
        task = asyncio.create_task(self._execute(plan, row, log), name=f"execution {execution_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return log

    async def drain(self, timeout: float) -> None:
        """Let running executions finish for up to ``timeout`` seconds, then stop them.

        A stopped execution is marked failed with the checkpoint to resume it from.
        """
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=10)

    # -- one execution ----------------------------------------------------------------------------

    async def _execute(self, plan: RunPlan, row: AgentResult, log: EventLog) -> None:
        execution_id = log.execution_id
        events = RunEvents(log, recursion_limit=plan.recursion_limit,
                           content_limit=self.service.trace_content_limit)
        configurable: dict[str, Any] = {"thread_id": plan.thread_id, "agent_id": plan.agent_id}
        if plan.checkpoint_id:
            configurable["checkpoint_id"] = plan.checkpoint_id
        meta = {"execution_id": execution_id, "agent_id": plan.agent_id,
                "thread_id": plan.thread_id}
        if plan.quest_id:
            meta["quest_id"] = plan.quest_id
        config: dict[str, Any] = {
            "callbacks": [self.tracker.callback_handler(execution_id), events],
            "configurable": configurable, "metadata": meta,
            "recursion_limit": plan.recursion_limit,
        }
        attempt, run_input = 1, plan.input
        try:
            before = await self._through_outages(
                log, lambda: self.service.alatest_checkpoint_id(plan.thread_id))
            while True:
                events.begin_attempt()
                try:
                    await self._run_once(run_input, config, log)
                except GraphRecursionError as exc:  # retrying would hit the same limit
                    await self._failed(plan, row, log, exc, attempt)
                    return
                except Exception as exc:
                    if is_outage(exc):  # not the run's failure: wait, then go on from there
                        if not await self._database_back(log, exc):
                            await self._failed(plan, row, log, _outage_text(exc, self), attempt)
                            return
                        run_input = None
                        configurable.pop("checkpoint_id", None)
                        continue
                    if attempt > plan.max_retries:
                        await self._failed(plan, row, log, exc, attempt)
                        return
                    attempt += 1
                    last = await self.service.alatest_checkpoint_id(plan.thread_id)
                    if last != before:  # resume from where the failed run stopped
                        run_input = None
                        configurable.pop("checkpoint_id", None)
                    await self._retrying(plan, log, exc, attempt, last)
                    continue
                await self._completed(plan, row, log, attempt)
                return
        except asyncio.CancelledError:
            await self._failed(
                plan, row, log, "the server stopped before the run finished: resume it from "
                f"its checkpointId with POST /api/agents/{plan.agent_id}/resume", attempt,
            )
            raise
        except Exception as exc:  # the database stayed away, or a bug: say so, store the end
            logger.exception("langchain-persist server: execution %s broke", execution_id)
            await self._failed(plan, row, log, _outage_text(exc, self) if is_outage(exc)
                               else exc, attempt)
        finally:
            if self._busy.get(plan.thread_id) == execution_id:
                del self._busy[plan.thread_id]
            log.close()

    async def _database_back(self, log: EventLog, error: BaseException) -> bool:
        """Wait (up to ``outage_timeout``) until the database answers again; say so."""
        log.publish("warning", {
            "executionId": log.execution_id, "kind": "outage",
            "message": f"the database is unreachable ({_first_line(error)}): the run waits for "
            f"it, up to {self.outage_timeout:g} s, then resumes from its last checkpoint",
        })
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + self.outage_timeout, 0.2
        while loop.time() < deadline:
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 2.0)
            try:
                await self.service.aping()
            except PersistenceError:
                continue
            log.publish("warning", {"executionId": log.execution_id, "kind": "recovered",
                                    "message": "the database is back: the run resumes from its "
                                    "last checkpoint"})
            return True
        return False

    async def _through_outages(self, log: EventLog, read: Callable[[], Awaitable[T]]) -> T:
        """``read()``, waited for through outages of up to ``outage_timeout`` each."""
        while True:
            try:
                return await read()
            except Exception as exc:
                if not is_outage(exc) or not await self._database_back(log, exc):
                    raise

    async def _store_end(self, log: EventLog, write: Callable[[], Awaitable[Any]]) -> bool:
        """Write the end of an execution now; while the database is away, say so on the
        stream and write it in the background once it is back.  True if written now."""
        try:
            await write()
            return True
        except PersistenceError as exc:
            if not is_outage(exc):
                raise
            log.publish("warning", {
                "executionId": log.execution_id, "kind": "outage",
                "message": f"the database is unreachable ({_first_line(exc)}): the end of "
                "the run is stored as soon as it is back",
            })
        task = asyncio.create_task(self._retry_end(log.execution_id, write))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return False

    async def _retry_end(self, execution_id: str, write: Callable[[], Awaitable[Any]]) -> None:
        loop = asyncio.get_running_loop()
        deadline, delay = loop.time() + self.end_retry_timeout, 0.5
        while True:
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)
            try:
                await write()
                return
            except PersistenceError as exc:
                if not is_outage(exc) or loop.time() > deadline:
                    logger.error("langchain-persist server: could not store the end of "
                                 "execution %s: %s (it stays 'running'; mark it with "
                                 "service.mark_stale_results)", execution_id, exc)
                    return

    async def _run_once(self, run_input: Any, config: dict[str, Any], log: EventLog) -> None:
        """One run of the graph, its model tokens published as ``token`` events."""
        async for chunk, meta in self.graph.astream(run_input, config, stream_mode="messages"):
            token = token_of(chunk)
            if token:
                log.publish("token", {"executionId": log.execution_id, "token": token,
                                      "node": meta.get("langgraph_node")})

    async def _retrying(
        self, plan: RunPlan, log: EventLog, error: BaseException, attempt: int,
        checkpoint_id: str | None,
    ) -> None:
        text = f"{type(error).__name__}: {error}"
        log.publish("retry", {
            "executionId": log.execution_id, "attempt": attempt,
            "maxAttempts": plan.max_retries + 1, "error": text, "checkpointId": checkpoint_id,
        })
        try:
            await self.tracker.update_progress(
                log.execution_id, f"retrying: attempt {attempt} of {plan.max_retries + 1} "
                f"resumes from checkpoint {checkpoint_id} after {text}", level="warn",
                metadata={"attempt": attempt, "retry_error": text},
            )
        except PersistenceError:  # progress is a nicety; the end of the run is what counts
            logger.warning("langchain-persist server: could not record retry of %s",
                           log.execution_id, exc_info=True)
        if self.retry_delay:
            await asyncio.sleep(self.retry_delay * (attempt - 1))

    async def _completed(
        self, plan: RunPlan, row: AgentResult, log: EventLog, attempt: int
    ) -> None:
        config = {"configurable": {"thread_id": plan.thread_id}}
        state = await self._through_outages(log, lambda: self.graph.aget_state(config))
        output = final_output(state.values)
        checkpoint_id = state.config["configurable"].get("checkpoint_id")
        interrupts = interrupts_of(state)
        meta: dict[str, Any] = {"attempts": attempt}
        if interrupts:  # the run waits for input: interrupted, until a resume ends
            end = functools.partial(
                self.tracker.interrupt_execution, log.execution_id, output,
                interrupts=interrupts, checkpoint_id=checkpoint_id, metadata=meta,
            )
        else:
            end = functools.partial(
                self.tracker.complete_execution, log.execution_id, output,
                checkpoint_id=checkpoint_id, metadata=meta,
            )
        await self.tracker.aflush()  # a client that sees the run completed sees all its traces
        stored = await self._store_end(log, end)
        data = {
            "executionId": log.execution_id, "output": jsonable(output), "resultId": row.id,
            "threadId": plan.thread_id, "checkpointId": checkpoint_id, "attempts": attempt,
            "status": "interrupted" if interrupts else "completed", "stored": stored,
        }
        if interrupts:
            data["interrupts"] = interrupts
        log.publish("complete", data)

    async def _failed(
        self, plan: RunPlan, row: AgentResult, log: EventLog, error: BaseException | str,
        attempt: int,
    ) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        checkpoint_id = None
        with contextlib.suppress(PersistenceError):  # the row says it: this is a nicety
            checkpoint_id = await self.service.alatest_checkpoint_id(plan.thread_id)
        try:
            await self.tracker.aflush()
            stored = await self._store_end(log, lambda: self.tracker.fail_execution(
                log.execution_id, text, checkpoint_id=checkpoint_id,
                metadata={"attempts": attempt},
            ))
        except PersistenceError as exc:
            text, stored = f"{text} (and the failure could not be stored: {exc})", False
        log.publish("error", {
            "executionId": log.execution_id, "message": text, "resultId": row.id,
            "threadId": plan.thread_id, "checkpointId": checkpoint_id, "attempts": attempt,
            "stored": stored,
        })

def _first_line(error: BaseException) -> str:
    return (str(error).strip() or type(error).__name__).splitlines()[0]


def _outage_text(error: BaseException, runner: Runner) -> str:
    return (f"the database was unreachable for more than {runner.outage_timeout:g} s "
            f"({_first_line(error)}): resume the run from its checkpoint once it is back")
