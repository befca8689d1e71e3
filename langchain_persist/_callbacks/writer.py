"""The background writer: a bounded queue that a daemon thread drains into batched inserts.

The caller's thread only puts a small immutable record on a queue (`BackgroundWriter.put`,
about a microsecond).  A daemon thread turns records into rows, directly in the form the
database driver takes (`TraceEvent.to_values`: the costly part), and stores them through an
`EventStore` (the service's `insert_events`), one statement per batch; result rows go through a
`ResultStore`.  A batch closes when it holds ``batch_size`` records, when ``flush_interval``
seconds have passed since its first record, or at a flush.

Never in the caller's way: a full queue drops the record (counted in `dropped`), a database
outage drops the batch (counted), and each episode is reported by ONE warning on the
``langchain_persist`` logger.  Nothing here imports LangChain.

Shutdown (see `shutdown`): `flush` waits until what was queued before it is stored; `close`
flushes and stops the thread; at exit and on SIGTERM every live writer is flushed.  A process
killed with SIGKILL loses what was queued but not yet written: at most the last
``flush_interval`` (plus one write).

Fork: in the child of an ``os.fork()`` a writer starts afresh on its first record (a new
thread, an empty queue, zero counters): what the parent had queued is the parent's to store,
so it is neither stored twice nor counted as lost.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any, NamedTuple

from .._db.schema import agent_traces, execution_logs
from .._errors import PersistenceError, ValidationError
from .._results.events import LogEvent, TraceEvent
from .._results.storage import EventStore, ResultStore
from . import shutdown
from .shutdown import SHUTDOWN_TIMEOUT

logger = logging.getLogger("langchain_persist")

DEFAULT_MAX_QUEUE = 100_000
DEFAULT_BATCH_SIZE = 500
DEFAULT_FLUSH_INTERVAL = 0.2
DEFAULT_MAX_BATCH_BYTES = 1 << 20
# Rows serialized between two voluntary releases of the GIL, so that the agent's threads never
# wait a whole switch interval (5 ms) behind a big batch.
_YIELD_EVERY = 128
_MAX_PENDING_RESULTS = 10_000
# where the writer finds a row's text, to keep batches under max_batch_bytes
_TRACE_CONTENT = list(agent_traces.c.keys()).index("content")
_LOG_MESSAGE = list(execution_logs.c.keys()).index("message")


class ResultOwner:
    """The caller's side of one result row, shared with the writer thread.

    ``result_id`` is set once the row exists; ``finished`` once the caller has written (or
    tried to write) the end of the run, after which background opens and progress are moot.
    ``row_lock`` makes "create the running row" and "finish the run" exclusive.
    """

    __slots__ = ("finished", "result_id", "row_lock")

    def __init__(self) -> None:
        self.finished = False
        self.result_id: str | None = None
        self.row_lock = threading.Lock()


class ResultWrite(NamedTuple):
    """A write to `agent_results` made in the background.

    ``kind`` is one of:

    - ``"open"``: create the ``running`` row (``fields`` are `save_result` arguments), unless
      the run has already finished: then the caller writes the whole row at once;
    - ``"progress"``: update the running row (``fields`` are `update_result` arguments, with
      ``status="running"``, so it can never change a finished result); only the newest
      progress of a result in a batch is written;
    - ``"final"``: the end of a run that the caller could not write: an update of
      ``result_id``, or `save_result` with ``create`` when the row never existed.  It is
      retried until it succeeds or the writer closes.
    """

    kind: str
    key: str
    fields: Mapping[str, Any]
    owner: ResultOwner | None = None
    result_id: str | None = None
    create: Mapping[str, Any] | None = None


class _Marker:
    """A flush (or stop) request travelling through the queue behind what came before it."""

    __slots__ = ("done", "stop")

    def __init__(self, *, stop: bool = False) -> None:
        self.done = threading.Event()
        self.stop = stop


class BackgroundWriter:
    """Stores trace, log and result-progress records in batches from a daemon thread.

    ``service`` stores the events (a `ResultsPersistenceService`, or any `EventStore`);
    ``results`` writes result rows (default: ``service``).  `put` never blocks and never
    raises.  `written` and `dropped` count records by kind (``traces``, ``logs``, ``results``);
    `dropped` also counts ``queue_full`` and ``closed`` (records put when the queue was full or
    the writer closed) among its kinds.  ``install_signal_handler=False`` (or
    ``LANGCHAIN_PERSIST_SIGTERM=off``) leaves SIGTERM alone (see `shutdown`).
    """

    def __init__(
        self,
        service: EventStore,
        *,
        results: ResultStore | None = None,
        max_queue: int = DEFAULT_MAX_QUEUE,
        batch_size: int = DEFAULT_BATCH_SIZE,
        flush_interval: float = DEFAULT_FLUSH_INTERVAL,
        max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
        install_signal_handler: bool = True,
    ) -> None:
        for name, value in (("max_queue", max_queue), ("batch_size", batch_size),
                            ("max_batch_bytes", max_batch_bytes)):
            if not isinstance(value, int) or value < 1:
                raise ValidationError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(flush_interval, int | float) or flush_interval <= 0:
            raise ValidationError(
                f"flush_interval must be a positive number of seconds, got {flush_interval!r}"
            )
        self.service = service
        self.results: ResultStore = results if results is not None else service  # type: ignore[assignment]
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = float(flush_interval)
        self.max_batch_bytes = max_batch_bytes
        self._closed = False
        self._start()
        shutdown.register(self, install_signal_handler)

    def _start(self) -> None:
        """A new queue, counters and thread (at creation, and in a forked child)."""
        self.written: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wake = threading.Event()  # a full batch, a flush or close: stop gathering
        self._pending: dict[str, ResultWrite] = {}  # final result writes awaiting a retry
        self._warned = False
        self._close_lock = threading.Lock()
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="langchain-persist-writer", daemon=True
        )
        self._thread.start()

    def after_fork(self) -> None:
        """In a forked child (called by `shutdown`): the parent's thread is gone and its queue
        is the parent's to store; start again on the first record."""
        self._thread = None

    def __repr__(self) -> str:
        return f"BackgroundWriter({self.service!r}, queued={self.queued})"

    @property
    def queued(self) -> int:
        """How many records wait in the queue (approximate)."""
        return self._queue.qsize()

    # -- the caller's side ---------------------------------------------------------------------

    def put(self, record: TraceEvent | LogEvent | ResultWrite) -> bool:
        """Queue a record; return False (and count it) if it was dropped. Never blocks."""
        if self._thread is None:  # the first record in a forked child
            self._restart()
        if self._closed:
            self.dropped["closed"] += 1
            return False
        size = self._queue.qsize()
        if size >= self.max_queue and not (
            type(record) is ResultWrite and record.kind == "final"
        ):
            self.dropped["queue_full"] += 1
            self._warn_once(
                f"the queue is full ({self.max_queue} records): the database is slower than "
                "the agent; raise max_queue or batch_size, or use PostgreSQL"
            )
            return False
        self._queue.put(record)
        if size + 1 >= self.batch_size and not self._wake.is_set():
            self._wake.set()
        return True

    def _restart(self) -> None:
        with shutdown.lock():
            if self._thread is None and not self._closed:
                self._start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued before this call is stored (or dropped).

        Returns False if ``timeout`` seconds passed first.  Final result writes that failed
        are retried once more.
        """
        if self._thread is None:  # a forked child that put nothing yet: nothing to wait for
            return True
        if self._closed:  # closing: wait for the thread to store the rest and end
            return self._join(timeout)
        if not self._thread.is_alive():
            return self._queue.qsize() == 0
        marker = _Marker()
        self._queue.put(marker)
        self._wake.set()
        return marker.done.wait(timeout)

    def close(self, timeout: float | None = SHUTDOWN_TIMEOUT) -> bool:
        """Store what is queued, then stop the thread; later records are dropped (counted).

        Returns False if ``timeout`` seconds passed first; the thread then goes on storing,
        and the at-exit hook still waits for it.
        """
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._queue.put(_Marker(stop=True))
                self._wake.set()
        return self._join(timeout)

    def _join(self, timeout: float | None) -> bool:
        thread = self._thread
        if thread is not None and thread.is_alive() and threading.current_thread() is not thread:
            thread.join(timeout)
        if thread is not None and thread.is_alive():
            return False
        shutdown.unregister(self)
        return True

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        """Wait for a first record, let a batch gather for ``flush_interval`` (less if it
        fills up or someone flushes), then take what is there without blocking: one wake-up
        per batch, not one per event, so the agent's threads are not interrupted per event."""
        source = self._queue
        while True:
            try:
                first = source.get(timeout=self.flush_interval if self._pending else None)
            except queue.Empty:
                self._retry_results()
                continue
            batch: list[Any] = []
            marker = first if type(first) is _Marker else None
            if marker is None:
                batch.append(first)
                if source.qsize() < self.batch_size - 1:
                    self._wake.wait(self.flush_interval)
                self._wake.clear()
                while len(batch) < self.batch_size:
                    try:
                        item = source.get_nowait()
                    except queue.Empty:
                        break
                    if type(item) is _Marker:
                        marker = item
                        break
                    batch.append(item)
            try:
                self._write(batch)
                if marker is not None or self._pending:
                    self._retry_results()
            except Exception:  # the writer thread must survive anything
                logger.exception("langchain-persist writer failed on a batch of %d", len(batch))
            if marker is not None:
                if marker.stop:
                    self._give_up_pending()
                    marker.done.set()
                    return
                marker.done.set()

    def _write(self, batch: list[Any]) -> None:
        traces: list[tuple[Any, ...]] = []
        logs: list[tuple[Any, ...]] = []
        opens: list[ResultWrite] = []
        progress: dict[str, ResultWrite] = {}
        size = 0
        service = self.service
        fmt, limit, max_text = service.event_format(), service.trace_content_limit, service.max_text
        for n, record in enumerate(batch, 1):
            kind = type(record)
            if kind is ResultWrite:
                if record.kind == "final":
                    self._pending[record.key] = record
                    progress.pop(record.key, None)
                elif record.kind == "open":
                    opens.append(record)
                elif record.key not in self._pending:
                    progress[record.key] = record  # newest progress wins
                continue
            try:
                row = (record.to_values(fmt, limit) if kind is TraceEvent
                       else record.to_values(fmt, limit, max_text))
            except Exception as exc:  # a bad record must not stop the batch
                self._count_drop("traces" if kind is TraceEvent else "logs", 1, exc)
                continue
            if kind is TraceEvent:
                traces.append(row)
                size += len(row[_TRACE_CONTENT] or "") + 200
            else:
                logs.append(row)
                size += len(row[_LOG_MESSAGE]) + 200
            if size >= self.max_batch_bytes:
                self._store(traces, logs)
                traces, logs, size = [], [], 0
            if n % _YIELD_EVERY == 0:
                time.sleep(0)  # let the agent's threads take the GIL
        self._store(traces, logs)
        for record in (*opens, *progress.values()):
            self._apply(record)

    def _store(self, traces: list[tuple[Any, ...]], logs: list[tuple[Any, ...]]) -> None:
        for kind, rows in (("traces", traces), ("logs", logs)):
            if not rows:
                continue
            try:
                done = self.service.insert_events(kind, rows)
            except PersistenceError as exc:  # the database is away (or its tables are)
                self._count_drop(kind, len(rows), exc)
                continue
            self.written[kind] += done.stored
            if done.refused:  # rows the database would not take: the others are stored
                self._count_drop(kind, done.refused, f"the database refused them: {done.reason}")
            self._recovered()

    def _apply(self, record: ResultWrite) -> bool:
        """Write one result change; True when it is done (stored, or can never be stored)."""
        owner = record.owner
        try:
            if record.kind == "open" and owner is not None:
                with owner.row_lock:
                    if owner.finished or owner.result_id is not None:
                        return True  # the caller writes the whole row at the end
                    owner.result_id = self.results.save_result(**record.fields).id
            elif record.kind == "progress" and owner is not None:
                if owner.finished or owner.result_id is None:
                    return True
                self.results.update_result(owner.result_id, **record.fields)
            elif record.result_id is not None:
                self.results.update_result(record.result_id, **record.fields)
            elif record.create is not None:
                self.results.save_result(**record.create)
        except ValidationError as exc:
            if record.kind == "open":  # an id refused: counted once here, as the end is
                self._count_drop("results", 1, exc)
            return True  # (progress that arrived after the run finished: nothing to do)
        except PersistenceError as exc:
            if record.kind != "final":
                self._count_drop("results", 1, exc)
            return False
        self.written["results"] += 1
        return True

    def _retry_results(self) -> None:
        for key, record in list(self._pending.items()):
            if self._apply(record):
                self._pending.pop(key, None)
            else:
                return  # still failing: try again after the next interval
        while len(self._pending) > _MAX_PENDING_RESULTS:
            self._pending.pop(next(iter(self._pending)))
            self.dropped["results"] += 1

    def _give_up_pending(self) -> None:
        if self._pending:
            self.dropped["results"] += len(self._pending)
            logger.error(
                "langchain-persist could not store the end of %d result(s) before closing "
                "(they stay 'running'; find and mark them later with "
                "service.mark_stale_results)", len(self._pending),
            )
            self._pending.clear()

    def _count_drop(self, kind: str, count: int, reason: object) -> None:
        self.dropped[kind] += count
        self._warn_once(f"could not store {kind}: {reason}")

    def _warn_once(self, reason: str) -> None:
        if not self._warned:
            self._warned = True
            logger.warning(
                "langchain-persist is dropping trace/log events: %s. The agent is not "
                "affected; counts are in handler.dropped. This is reported once until "
                "writes succeed again.", reason,
            )

    def _recovered(self) -> None:
        if self._warned and self._queue.qsize() < self.max_queue // 2:
            self._warned = False
            logger.warning(
                "langchain-persist stores events again (dropped so far: %s)", dict(self.dropped)
            )
