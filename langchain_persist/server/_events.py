"""The live events of executions: numbered, kept in memory, followed by any number of clients.

Every event an execution publishes gets the next id of that execution (1, 2, 3, ...) and goes
into its `EventLog`, a bounded deque.  A client follows the log from any id: it first gets
what is kept after that id, then each new event as it comes, until the execution ends.  That
is how the execute and resume responses stream, how `GET /api/executions/{id}/events` joins a
run late, and how a client that lost its connection re-joins with ``Last-Event-ID`` without
missing anything (unless more than ``max_events`` events came in between: the response then
says how many were lost in its ``X-Events-Missed`` header).

The logs live in this process only.  `EventLogs` keeps every running execution's log and the
newest ``keep_finished`` finished ones; after a server restart (or once a finished log is
evicted) the live events are gone, while everything the run persisted (result, logs, traces,
checkpoints) stays readable through the read endpoints.

`EventLog.publish` may be called from any thread (LangChain calls sync callbacks from worker
threads); followers run on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

from .._sanitize import to_text

DEFAULT_MAX_EVENTS = 10_000
DEFAULT_KEEP_FINISHED = 100


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event: its id within the execution, its name and its JSON data."""

    id: int
    name: str
    data: str


class EventLog:
    """The events of one execution, numbered from 1; the newest ``max_events`` are kept."""

    def __init__(
        self, execution_id: str, loop: asyncio.AbstractEventLoop,
        max_events: int = DEFAULT_MAX_EVENTS, on_close: Any = None, agent_id: str | None = None,
    ) -> None:
        self.execution_id = execution_id
        self.agent_id = agent_id
        self._loop = loop
        self._events: deque[Event] = deque(maxlen=max_events)
        self._lock = threading.Lock()
        self._last_id = 0
        self._closed = False
        self._changed: asyncio.Future[None] = loop.create_future()
        self._on_close = on_close

    def __repr__(self) -> str:
        state = "finished" if self._closed else "running"
        return f"EventLog({self.execution_id!r}, {self._last_id} events, {state})"

    @property
    def finished(self) -> bool:
        """True once the execution has published its last event."""
        return self._closed

    @property
    def last_id(self) -> int:
        """The id of the newest event (0 before the first)."""
        return self._last_id

    def publish(self, name: str, data: Mapping[str, Any]) -> Event | None:
        """Add an event (from any thread) and wake the followers; None once closed."""
        with self._lock:
            if self._closed:
                return None
            self._last_id += 1
            event = Event(self._last_id, name, to_text(dict(data)))
            self._events.append(event)
        self._wake()
        return event

    def close(self) -> None:
        """No more events: followers end after the last one."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._wake()
        if self._on_close is not None:
            self._on_close(self)

    def missed(self, after: int) -> int:
        """How many events after id ``after`` are no longer kept."""
        with self._lock:
            oldest = self._events[0].id if self._events else self._last_id + 1
        return max(0, oldest - after - 1)

    async def follow(
        self, after: int = 0, stop: Any = None, grace: float = 0.0
    ) -> AsyncIterator[Event]:
        """The events after id ``after``, then each new one, until the execution ends; or,
        once ``stop`` (an event with ``wait()``: the server is shutting down) is set, for
        ``grace`` seconds more at most."""
        stopping = None if stop is None else asyncio.ensure_future(stop.wait())
        deadline = None
        try:
            while True:
                changed = self._changed  # taken before reading, so no wake-up is lost
                with self._lock:
                    batch = [e for e in self._events if e.id > after] if self._last_id > after \
                        else []
                    closed = self._closed
                for event in batch:
                    yield event
                    after = event.id
                if closed and not batch:
                    return
                if batch:
                    continue
                loop = asyncio.get_running_loop()
                if stopping is not None and stopping.done() and deadline is None:
                    deadline = loop.time() + grace
                waits: set[asyncio.Future[Any]] = {asyncio.ensure_future(asyncio.shield(changed))}
                if stopping is not None and not stopping.done():
                    waits.add(stopping)
                timeout = None if deadline is None else deadline - loop.time()
                if timeout is not None and timeout <= 0:
                    return
                _, pending = await asyncio.wait(waits, timeout=timeout,
                                                   return_when=asyncio.FIRST_COMPLETED)
                for waiter in pending - {stopping}:
                    waiter.cancel()
        finally:
            if stopping is not None:
                stopping.cancel()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody follows any more
            self._loop.call_soon_threadsafe(self._resolve)

    def _resolve(self) -> None:
        changed, self._changed = self._changed, self._loop.create_future()
        if not changed.done():
            changed.set_result(None)


class EventLogs:
    """The event logs of this server: every running execution's, and the newest finished ones."""

    def __init__(
        self, max_events: int = DEFAULT_MAX_EVENTS, keep_finished: int = DEFAULT_KEEP_FINISHED
    ) -> None:
        self.max_events = max_events
        self.keep_finished = keep_finished
        self._running: dict[str, EventLog] = {}
        self._finished: OrderedDict[str, EventLog] = OrderedDict()

    def open(self, execution_id: str, agent_id: str | None = None) -> EventLog:
        """A new log for an execution (of ``agent_id``) that starts now (on the event loop)."""
        log = EventLog(execution_id, asyncio.get_running_loop(), self.max_events,
                       on_close=self._retire, agent_id=agent_id)
        self._running[execution_id] = log
        return log

    def get(self, execution_id: str) -> EventLog | None:
        """The log of an execution, running or among the newest finished; else None."""
        return self._running.get(execution_id) or self._finished.get(execution_id)

    @property
    def running(self) -> list[str]:
        """The ids of the executions whose logs are still open."""
        return list(self._running)

    def _retire(self, log: EventLog) -> None:
        self._running.pop(log.execution_id, None)
        self._finished[log.execution_id] = log
        while len(self._finished) > self.keep_finished:
            self._finished.popitem(last=False)
