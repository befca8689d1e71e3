"""The background writer: a bounded queue that a daemon thread drains into batched inserts.

The caller's thread only puts a small immutable record on a queue (`BackgroundWriter.put`,
about a microsecond).  A daemon thread turns records into rows, directly in the form the
database driver takes (`to_values`: the costly part), and hands them to the service's
`save_event_values`, one statement per batch.  A batch closes when it holds ``batch_size``
records, when ``flush_interval`` seconds have passed since its first record, or at a flush.

Never in the caller's way: a full queue drops the record (counted in `dropped`), a database
outage drops the batch (counted), and each episode is reported by ONE warning on the
``langchain_persist`` logger.  Nothing here imports LangChain.

Shutdown: `flush` waits until what was queued before it is stored; `close` flushes and stops
the thread; an ``atexit`` hook flushes every live writer at normal exit (also after an uncaught
exception).  For SIGTERM, the first writer made in the main thread installs a handler *only if
SIGTERM still has the default disposition*: it flushes every writer (bounded by
``SHUTDOWN_TIMEOUT``), restores the default disposition and re-sends SIGTERM to the process,
so the process still dies by SIGTERM, as it would have.  An application that installs its own
SIGTERM handler keeps it; if that handler exits through ``sys.exit``, the ``atexit`` flush
runs.  A process killed with SIGKILL loses what was queued but not yet written: at most the
last ``flush_interval`` (plus one write).
"""

from __future__ import annotations

import atexit
import logging
import os
import queue
import signal
import threading
import time
import weakref
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from .._db.schema import agent_traces, execution_logs
from .._db.sql.events import EventFormat
from .._errors import PersistenceError, ValidationError
from .._results.service import _key, _level
from .._sanitize import dumps, jsonable, to_text, truncate

if TYPE_CHECKING:
    from .._results.service import ResultsPersistenceService

logger = logging.getLogger("langchain_persist")

DEFAULT_MAX_QUEUE = 100_000
DEFAULT_BATCH_SIZE = 500
DEFAULT_FLUSH_INTERVAL = 0.2
DEFAULT_MAX_BATCH_BYTES = 1 << 20
SHUTDOWN_TIMEOUT = 10.0
# Rows serialized between two voluntary releases of the GIL, so that the agent's threads never
# wait a whole switch interval (5 ms) behind a big batch.
_YIELD_EVERY = 128
_MAX_PENDING_RESULTS = 10_000
# Run-metadata keys worth keeping on a trace (the rest of the run metadata is not stored).
CONTEXT_KEYS = {
    "langgraph_node": "node",
    "langgraph_step": "step",
    "thread_id": "thread_id",
    "langgraph_checkpoint_ns": "checkpoint_ns",
}


def _text(run_id: Any) -> str | None:
    return None if run_id is None else str(run_id)


class TraceEvent(NamedTuple):
    """A trace event as the caller saw it; turned into a row in the writer thread."""

    agent_id: str
    execution_id: Any  # a str, or a run's UUID
    type: str
    name: str | None
    content: Any
    run_id: Any
    parent_run_id: Any
    duration: float | None
    timestamp: float
    context: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] | None = None

    def to_values(self, fmt: EventFormat, limit: int) -> tuple[Any, ...]:
        """The `agent_traces` row as the driver takes it, in column order (raises
        `ValidationError`): what `ResultsPersistenceService.trace_row` and the columns' bind
        processing make of the event, at half their cost (its type and duration are the
        handler's own, so they are not checked again)."""
        meta: dict[str, Any] = {}
        if self.context:
            for key, alias in CONTEXT_KEYS.items():
                value = self.context.get(key)
                if value is not None:
                    meta[alias] = value
        if self.extra:
            meta.update(self.extra)
        content = self.content
        if content is not None:
            content, length = truncate(to_text(content), limit)
            if length is not None:
                meta["truncated"] = True
                meta["content_length"] = length
        return (
            _key("execution_id", str(self.execution_id)), fmt.timestamp(self.timestamp),
            fmt.new_id(), _key("agent_id", self.agent_id), _text(self.run_id),
            _text(self.parent_run_id), self.type, _key("name", self.name, required=False),
            content, dumps(jsonable(meta)), self.duration,
        )


class LogEvent(NamedTuple):
    """A log line; ``detail`` (any value) is stored as truncated text in its metadata."""

    agent_id: str
    execution_id: Any  # a str, or a run's UUID
    level: str
    message: str
    source: str | None
    timestamp: float
    metadata: Mapping[str, Any] | None = None
    detail: Any = None

    def to_values(self, fmt: EventFormat, limit: int) -> tuple[Any, ...]:
        """The `execution_logs` row as the driver takes it, in column order (raises
        `ValidationError`), as `ResultsPersistenceService.log_row` would make it."""
        meta = dict(self.metadata or {})
        if self.detail is not None:
            text, length = truncate(to_text(self.detail), limit)
            meta["detail"] = text
            if length is not None:
                meta["detail_length"] = length
        return (
            _key("execution_id", str(self.execution_id)), fmt.timestamp(self.timestamp),
            fmt.new_id(), _key("agent_id", self.agent_id), _level(self.level),
            to_text(self.message), _key("source", self.source, required=False),
            dumps(jsonable(meta)),
        )


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


_DROPPED = "langchain-persist dropped"


class _DropFilter(logging.Filter):
    """Holds back the service's per-batch "dropped" warnings raised in writer threads.

    The writer reports an outage with one warning of its own; this keeps the reason.
    """

    def __init__(self) -> None:
        super().__init__()
        self.threads: set[int] = set()
        self.last: dict[int, str] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.thread in self.threads and str(record.msg).startswith(_DROPPED):
            self.last[record.thread or 0] = str(record.args[-1]) if record.args else ""
            return False
        return True


_drop_filter = _DropFilter()
logger.addFilter(_drop_filter)


class BackgroundWriter:
    """Stores trace, log and result-progress records in batches from a daemon thread.

    `put` never blocks and never raises.  `written` and `dropped` count records by kind
    (``traces``, ``logs``, ``results``); `dropped` also counts ``queue_full`` and ``closed``
    (records put when the queue was full or the writer closed) among its kinds.
    """

    def __init__(
        self,
        service: ResultsPersistenceService,
        *,
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
        self.max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = float(flush_interval)
        self.max_batch_bytes = max_batch_bytes
        self.written: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wake = threading.Event()  # a full batch, a flush or close: stop gathering
        self._pending: dict[str, ResultWrite] = {}  # final result writes awaiting a retry
        self._closed = False
        self._warned = False
        self._close_lock = threading.Lock()
        self._thread = threading.Thread(
            target=self._run, name="langchain-persist-writer", daemon=True
        )
        self._thread.start()
        _register(self, install_signal_handler)

    def __repr__(self) -> str:
        return f"BackgroundWriter({self.service!r}, queued={self.queued})"

    @property
    def queued(self) -> int:
        """How many records wait in the queue (approximate)."""
        return self._queue.qsize()

    # -- the caller's side ---------------------------------------------------------------------

    def put(self, record: TraceEvent | LogEvent | ResultWrite) -> bool:
        """Queue a record; return False (and count it) if it was dropped. Never blocks."""
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

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued before this call is stored (or dropped).

        Returns False if ``timeout`` seconds passed first.  Final result writes that failed
        are retried once more.
        """
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
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        if self._thread.is_alive():
            return False
        _unregister(self)
        return True

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        """Wait for a first record, let a batch gather for ``flush_interval`` (less if it
        fills up or someone flushes), then take what is there without blocking: one wake-up
        per batch, not one per event, so the agent's threads are not interrupted per event."""
        _drop_filter.threads.add(threading.get_ident())
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
                    _drop_filter.threads.discard(threading.get_ident())
                    return
                marker.done.set()

    def _write(self, batch: list[Any]) -> None:
        traces: list[tuple[Any, ...]] = []
        logs: list[tuple[Any, ...]] = []
        opens: list[ResultWrite] = []
        progress: dict[str, ResultWrite] = {}
        size = 0
        fmt, limit = self.service.event_format(), self.service.trace_content_limit
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
                row = record.to_values(fmt, limit)
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
            stored = self.service.save_event_values(kind, rows)
            if stored:
                self.written[kind] += stored
                self._recovered()
            if stored < len(rows):
                reason = _drop_filter.last.pop(threading.get_ident(), "the database failed")
                self._count_drop(kind, len(rows) - stored, reason)

    def _apply(self, record: ResultWrite) -> bool:
        """Write one result change; True when it is done (stored, or can never be stored)."""
        owner = record.owner
        try:
            if record.kind == "open" and owner is not None:
                with owner.row_lock:
                    if owner.finished or owner.result_id is not None:
                        return True  # the caller writes the whole row at the end
                    owner.result_id = self.service.save_result(**record.fields).id
            elif record.kind == "progress" and owner is not None:
                if owner.finished or owner.result_id is None:
                    return True
                self.service.update_result(owner.result_id, **record.fields)
            elif record.result_id is not None:
                self.service.update_result(record.result_id, **record.fields)
            elif record.create is not None:
                self.service.save_result(**record.create)
        except ValidationError:
            return True  # progress that arrived after the run finished: nothing to do
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


# -- process-wide shutdown: atexit and SIGTERM --------------------------------------------------

_writers: weakref.WeakSet[BackgroundWriter] = weakref.WeakSet()
_hooks_lock = threading.Lock()
_hooks_installed = False
_sigterm_installed = False


def flush_all(timeout: float = SHUTDOWN_TIMEOUT) -> bool:
    """Flush every live writer of this process, within ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    ok = True
    for writer in list(_writers):
        ok = writer.flush(max(0.0, deadline - time.monotonic())) and ok
    return ok


def _at_exit() -> None:
    for writer in list(_writers):
        writer.close(SHUTDOWN_TIMEOUT)


def _on_sigterm(signum: int, _frame: Any) -> None:
    try:
        flush_all()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _register(writer: BackgroundWriter, install_signal_handler: bool) -> None:
    global _hooks_installed, _sigterm_installed
    with _hooks_lock:
        _writers.add(writer)
        if not _hooks_installed:
            atexit.register(_at_exit)
            _hooks_installed = True
        if (
            install_signal_handler
            and not _sigterm_installed
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        ):
            signal.signal(signal.SIGTERM, _on_sigterm)
            _sigterm_installed = True


def _unregister(writer: BackgroundWriter) -> None:
    with _hooks_lock:
        _writers.discard(writer)
