"""The background writer: two daemon threads drain a bounded queue to disk and the database.

The caller's thread only puts a small immutable record on a queue (`BackgroundWriter.put`,
about a microsecond).  A daemon thread (the spooler) turns records into rows, directly in the
form the database driver takes (`TraceEvent.to_values`: the costly part), and appends them
within a few milliseconds to the process's spool file on local disk (see `spool`); it never
touches the database, so a slow, locked or hung database never holds the spool back.  A second
daemon thread (the storer) stores the rows through an `EventStore` (the service's
`insert_events`), one statement per batch; result rows go through a `ResultStore`.  A batch is
stored when it holds ``batch_size`` rows, when ``flush_interval`` seconds have passed since its
first row, or at a flush.

Never in the caller's way: a full queue drops the record (counted in `dropped`).  While the
database is away the writer keeps spooling, retries with backoff, and stores the backlog from
the spool once it is back (each row once); with no spool, an outage drops the batch (counted).
Each episode is reported by ONE warning on the ``langchain_persist`` logger.  Nothing here
imports LangChain.

Shutdown (see `shutdown`): `flush` waits until what was queued before it is stored (or spooled,
while the database is away); `close` flushes and stops the thread; at exit and on SIGTERM every
live writer is flushed.  A process killed with SIGKILL loses only what the writer had not yet
spooled: the last few milliseconds; the next writer on the same spool directory stores the rest.

Fork: in the child of an ``os.fork()`` a writer starts afresh on its first record (new
threads, an empty queue, zero counters): what the parent had queued is the parent's to store,
so it is neither stored twice nor counted as lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from .._db.schema import agent_traces, execution_logs
from .._errors import PersistenceError, ValidationError
from .._results.events import LogEvent, TraceEvent
from .._results.storage import EventStore, ResultStore
from .._sanitize import jsonable
from . import shutdown
from .shutdown import SHUTDOWN_TIMEOUT
from .spool import DEFAULT_MAX_BYTES, KINDS, Spool, apply_end, default_directory, replay

logger = logging.getLogger("langchain_persist")

DEFAULT_MAX_QUEUE = 100_000
DEFAULT_BATCH_SIZE = 500
DEFAULT_FLUSH_INTERVAL = 0.2
DEFAULT_MAX_BATCH_BYTES = 1 << 20
# Seconds the writer lets records gather before it spools them: what a SIGKILL in the middle
# of a run may lose (a run that returned waited for its events). Every batch costs the agent
# GIL time with cold caches: 5 ms rather than 2 saved ~40 us a tool call (benchmarks/README).
SPOOL_DELAY = 0.005
MAX_BACKOFF = 10.0  # seconds between two attempts while the database is away
_CODE = {TraceEvent: b"t", LogEvent: b"l"}
_KIND = {TraceEvent: "traces", LogEvent: "logs"}
# Rows serialized between two voluntary releases of the GIL, so that the agent's threads never
# wait a whole switch interval (5 ms) behind a big batch.
_YIELD_EVERY = 32
_MAX_PENDING_RESULTS = 10_000
# where the writer finds a row's text, to keep batches under max_batch_bytes
_TRACE_CONTENT = list(agent_traces.c.keys()).index("content")
_LOG_MESSAGE = list(execution_logs.c.keys()).index("message")


class ResultOwner:
    """The caller's side of one result row, shared with the writer thread.

    ``result_id`` is set once the row exists; ``finished`` once the caller has written (or
    tried to write) the end of the run, after which background opens and progress are moot.
    The running row and the end of the run name the same row id, so whichever is stored
    second finds the other's row (the caller never waits for the writer).
    """

    __slots__ = ("finished", "result_id")

    def __init__(self) -> None:
        self.finished = False
        self.result_id: str | None = None


class ResultWrite(NamedTuple):
    """A write to `agent_results` made in the background.

    ``kind`` is one of:

    - ``"open"``: create the ``running`` row (``fields`` are `save_result` arguments), unless
      the run has already finished: then the caller writes the whole row at once;
    - ``"progress"``: update the running row (``fields`` are `update_result` arguments, with
      ``status="running"``, so it can never change a finished result); only the newest
      progress of a result in a batch is written;
    - ``"final"``: the end of a run that the caller could not write, ``change`` (see
      `apply_end`).  It is retried until it succeeds or the writer closes (and it waits in
      the spool).
    """

    kind: str
    key: str
    fields: Mapping[str, Any]
    owner: ResultOwner | None = None
    change: Mapping[str, Any] | None = None


class _Taken(NamedTuple):
    """What the spooler hands the storer for a batch of records: the rows (None: they are only
    in the spool, to be read back from there), the result writes, how many rows, and where the
    rows' lines are in the spool (its generation, start and end offsets; None with no spool)."""

    rows: list[tuple[str, tuple[Any, ...]]] | None
    writes: list[ResultWrite]
    count: int
    span: tuple[int, int, int] | None


class Marker:
    """A flush (or stop) request travelling through the queue behind what came before it; a
    ``spooled`` one is done as soon as what came before is on local disk.  A thread waits for
    it (`wait`); an event loop awaits it (`wait_async`) without blocking."""

    __slots__ = ("_waiter", "done", "spooled", "stop")

    def __init__(self, *, stop: bool = False, spooled: bool = False) -> None:
        self.done = threading.Event()
        self.stop = stop
        self.spooled = spooled
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def set(self) -> None:
        """(The writer's threads) the request is done: wake whoever waits."""
        self.done.set()
        waiter = self._waiter
        if waiter is not None:
            loop, future = waiter
            with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits
                loop.call_soon_threadsafe(_resolve, future)

    def wait(self, timeout: float | None) -> bool:
        """Block until done; False if ``timeout`` seconds passed first."""
        return self.done.wait(timeout)

    async def wait_async(self, timeout: float | None) -> bool:
        """`wait` on an event loop: the loop goes on meanwhile."""
        if self.done.is_set():
            return True
        future = asyncio.get_running_loop().create_future()
        self._waiter = (future.get_loop(), future)
        if self.done.is_set():  # set before the waiter was seen
            return True
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        return True


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class BackgroundWriter:
    """Stores trace, log and result-progress records in batches from a daemon thread.

    ``service`` stores the events (a `ResultsPersistenceService`, or any `EventStore`);
    ``results`` writes result rows (default: ``service``).  ``spool``: True for the default
    spool directory (see `spool.default_directory`), a directory, or False for none;
    ``spool_bytes`` bounds what waits in it.  `put` never blocks and never raises.  `written`
    and `dropped` count records by kind (``traces``, ``logs``, ``results``); `dropped` also
    counts ``queue_full``, ``spool_full`` and ``closed`` among its kinds.
    ``install_signal_handler=False`` (or ``LANGCHAIN_PERSIST_SIGTERM=off``) leaves SIGTERM
    alone (see `shutdown`).
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
        spool: bool | str | os.PathLike[str] = True,
        spool_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        for name, value in (("max_queue", max_queue), ("batch_size", batch_size),
                            ("max_batch_bytes", max_batch_bytes), ("spool_bytes", spool_bytes)):
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
        url = getattr(service, "url", None)
        if spool is True:
            self.spool_directory = default_directory(url) if url else None
        else:
            self.spool_directory = Path(spool).expanduser() if spool else None
        self.spool_bytes = spool_bytes
        self._closed = False
        self._start()
        shutdown.register(self, install_signal_handler)

    def _start(self) -> None:
        """A new queue, counters, spool file and thread (at creation, in a forked child)."""
        self.written: Counter[str] = Counter()
        self.dropped: Counter[str] = Counter()
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wake = threading.Event()  # a full batch, a flush or close: stop gathering
        self._handoff: queue.SimpleQueue[Any] = queue.SimpleQueue()  # spooler -> storer
        self._sent = self._received = 0  # rows the spooler handed over, and the storer took
        self._kept = (0, 0)  # (spool generation, offset) past the rows the storer keeps
        self._drained = (-1, 0)  # (spool generation, offset) the last backlog was read to
        self._pending: dict[str, ResultWrite] = {}  # final result writes awaiting a retry
        self._opens: list[tuple[float, ResultWrite]] = []  # running rows to write, when due
        self._rows: dict[str, list[tuple[Any, ...]]] = {"traces": [], "logs": []}
        self._rows_bytes = 0
        self._rows_since: float | None = None  # when the oldest row not yet stored came
        self._backlog: int | None = None  # spool offset to store from, the database being away
        self._retry_at = 0.0
        self._backoff = 0.0
        self._orphans = True  # a dead process's spool may wait in the directory
        self._warned: set[str] = set()
        self._close_lock = threading.Lock()
        self.spool: Spool | None = None
        if self.spool_directory is not None:
            try:
                self.spool = Spool(self.spool_directory, self.service.url,  # type: ignore[attr-defined]
                                   self.spool_bytes)
            except (OSError, PersistenceError) as exc:
                logger.warning("langchain-persist writes without a spool: %s", exc)
        self._thread: threading.Thread | None = threading.Thread(
            target=self._run, name="langchain-persist-writer", daemon=True
        )
        self._thread.start()
        threading.Thread(target=self._spool_run, name="langchain-persist-spooler",
                         daemon=True).start()

    def after_fork(self) -> None:
        """In a forked child (called by `shutdown`): the parent's threads are gone and its
        queue and spool file are the parent's to store; start again on the first record."""
        if self.spool is not None:
            self.spool.forget_after_fork()
        self._thread = None

    def __repr__(self) -> str:
        return f"BackgroundWriter({self.service!r}, queued={self.queued})"

    @property
    def queued(self) -> int:
        """How many records wait in the queue (approximate)."""
        return self._queue.qsize()

    @property
    def backlog(self) -> int:
        """Bytes spooled and not yet stored (0 with no spool)."""
        return self.spool.waiting if self.spool is not None else 0

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

    def spool_end(self, key: str, change: Mapping[str, Any]) -> bool:
        """Put the end of a run on local disk now (the caller's thread: it is one line), to be
        stored by this writer, or replayed by the next one if this process dies; False with
        no spool."""
        if self.spool is None:
            return False
        self.spool.append_end(key, jsonable(dict(change)))
        return True

    def spooled(self) -> Marker | None:
        """A marker done once every record queued before this call is on local disk (None with
        no spool): a caller that wants its events to survive a SIGKILL waits for it."""
        if self.spool is None or self._thread is None or self._closed:
            return None
        marker = Marker(spooled=True)
        self._queue.put(marker)
        self._wake.set()
        return marker

    def _restart(self) -> None:
        with shutdown.lock():
            if self._thread is None and not self._closed:
                self._start()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every record queued before this call is stored, or dropped, or, while
        the database is away, spooled (see `backlog`).

        Returns False if ``timeout`` seconds passed first.  Final result writes that failed
        are retried once more.
        """
        if self._thread is None:  # a forked child that put nothing yet: nothing to wait for
            return True
        if self._closed:  # closing: wait for the thread to store the rest and end
            return self._join(timeout)
        if not self._thread.is_alive():
            return self._queue.qsize() == 0
        marker = Marker()
        self._queue.put(marker)
        self._wake.set()
        return marker.wait(timeout)

    def close(self, timeout: float | None = SHUTDOWN_TIMEOUT) -> bool:
        """Store what is queued, then stop the thread; later records are dropped (counted).

        Returns False if ``timeout`` seconds passed first; the thread then goes on storing,
        and the at-exit hook still waits for it.  What the database did not take stays in the
        spool, for the next writer of the same directory.
        """
        with self._close_lock:
            if not self._closed:
                self._closed = True
                self._queue.put(Marker(stop=True))
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

    # -- the writer's threads ------------------------------------------------------------------

    def _spool_run(self) -> None:
        """The spooler: take records as they come (letting them gather for a couple of
        milliseconds), put their rows on local disk and hand them to the storer."""
        source, handoff = self._queue, self._handoff
        while True:
            first = source.get()
            batch: list[Any] = []
            marker = first if type(first) is Marker else None
            if marker is None:
                batch.append(first)
                if source.qsize() < self.batch_size - 1:
                    self._wake.wait(SPOOL_DELAY)
                self._wake.clear()
                while len(batch) < self.batch_size:
                    try:
                        item = source.get_nowait()
                    except queue.Empty:
                        break
                    if type(item) is Marker:
                        marker = item
                        break
                    batch.append(item)
            try:
                taken = self._take(batch)
                if taken is not None:
                    handoff.put(taken)
            except Exception:  # the spooler must survive anything
                logger.exception("langchain-persist writer failed on a batch of %d", len(batch))
            if marker is not None and marker.spooled:
                marker.set()  # on local disk: the caller may go on
            elif marker is not None:
                handoff.put(marker)  # a flush or a stop, for the storer
                if marker.stop:
                    return

    def _run(self) -> None:
        """The storer: keep the spooler's rows and store them when a batch is full or old
        enough, or at a flush; write results; store a backlog once the database is back."""
        source = self._handoff
        while True:
            try:
                item = source.get(timeout=self._timeout())
            except queue.Empty:
                item = None
            marker = item if type(item) is Marker else None
            try:
                if marker is not None:
                    self._open_rows()
                    if self._orphans:
                        self._replay_orphans()
                    self._store(force=True)
                    self._retry_results()
                else:
                    if item is not None:
                        self._keep(item)
                    self._due()
            except Exception:  # the storer must survive anything
                logger.exception("langchain-persist writer failed")
                self._retry_at = time.monotonic() + MAX_BACKOFF
            if marker is not None:
                if marker.stop:
                    self._give_up_pending()
                    if self.spool is not None:
                        self.spool.close()
                    marker.set()
                    return
                marker.set()

    def _timeout(self) -> float | None:
        """How long the thread may sleep: until rows get old, or the next retry."""
        deadlines = []
        if self._rows_since is not None:
            deadlines.append(self._rows_since + self.flush_interval)
        if self._backlog is not None or self._pending or self._orphans:
            deadlines.append(self._retry_at)
        if self._opens:
            deadlines.append(self._opens[0][0])
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _due(self) -> None:
        """Store what is due: rows old enough, a backlog, ends of runs, a dead process's spool."""
        now = time.monotonic()
        if self._opens and self._opens[0][0] <= now:
            self._open_rows(now)
        if self._rows_since is not None and now - self._rows_since >= self.flush_interval:
            self._store()
        if now >= self._retry_at:
            if self._backlog is not None:
                self._store(force=True)
            if self._pending:
                self._retry_results()
            if self._orphans:
                self._replay_orphans()

    def _take(self, batch: list[Any]) -> _Taken | None:
        """(The spooler) the rows of the records, on local disk, with the result writes."""
        rows: list[tuple[str, tuple[Any, ...]]] = []
        lines: list[bytes] = []
        writes: list[ResultWrite] = []
        service, spooling = self.service, self.spool is not None
        fmt, limit, max_text = service.event_format(), service.trace_content_limit, service.max_text
        dumps, option = orjson.dumps, orjson.OPT_NON_STR_KEYS
        for n, record in enumerate(batch, 1):
            kind = type(record)
            if kind is ResultWrite:
                writes.append(record)
                continue
            try:
                row = (record.to_values(fmt, limit) if kind is TraceEvent
                       else record.to_values(fmt, limit, max_text))
                if spooling:
                    lines.append(b'["' + _CODE[kind] + b'",' + dumps(row, option=option)[1:]
                                 + b"\n")
            except Exception as exc:  # a bad record must not stop the batch
                self._count_drop(_KIND[kind], 1, exc)
                continue
            rows.append((_KIND[kind], row))
            if n % _YIELD_EVERY == 0:
                time.sleep(0)  # let the agent's threads take the GIL
        span = None
        behind = self._sent - self._received >= self.max_queue  # the storer waits on the database
        if rows and spooling:
            span = self.spool.append(lines)  # type: ignore[union-attr]
            if span is None:
                rows = self._dropped_rows(rows, "spool_full", f"the spool is full ("
                                          f"{self.spool_bytes} bytes waiting): the database "
                                          "has been away, or slower than the agent, too long;"
                                          " raise spool_bytes")
        elif rows and behind:
            rows = self._dropped_rows(rows, "queue_full", f"the queue is full ({self.max_queue} "
                                      "records): the database is slower than the agent; raise "
                                      "max_queue or batch_size, or use PostgreSQL")
        if not rows and not writes:
            return None
        self._sent += len(rows)
        return _Taken(None if span is not None and behind else rows, writes, len(rows), span)

    def _dropped_rows(self, rows: list[tuple[str, Any]], why: str, reason: str) -> list[Any]:
        for kind_name, _ in rows:
            self.dropped[kind_name] += 1
        self.dropped[why] += len(rows)
        self._warn_once(reason)
        return []

    def _keep(self, taken: _Taken) -> None:
        """(The storer) keep a batch's rows for the next store, unless they are to be read back
        from the spool (a backlog) or were already (a drain read past them); apply its result
        writes."""
        self._received += taken.count
        span, (drained_generation, drained_to) = taken.span, self._drained
        if span is not None and span[0] == drained_generation and span[1] < drained_to:
            if span[2] > drained_to:  # a drain read part of them: read them again
                self._in_backlog(span[1])
        elif taken.rows is None:  # the storer was behind: they are only on local disk
            self._in_backlog(self.spool.done)  # type: ignore[union-attr]
        elif taken.rows and self._backlog is None:
            for kind_name, row in taken.rows:
                self._rows[kind_name].append(row)
                self._rows_bytes += _size(kind_name, row)
            if span is not None:
                self._kept = (span[0], span[2])
            if self._rows_since is None:
                self._rows_since = time.monotonic()
            if self._rows_bytes >= self.max_batch_bytes or (
                sum(len(r) for r in self._rows.values()) >= self.batch_size
                and not (self._handoff.qsize() and self.service.event_format().coalesce)
            ):  # (PostgreSQL: more batches waiting are stored with these, one commit)
                self._store()
        progress: dict[str, ResultWrite] = {}
        for record in taken.writes:
            if record.kind == "final":
                self._pending[record.key] = record
                progress.pop(record.key, None)
            elif record.kind == "open":
                self._opens.append((time.monotonic() + self.flush_interval, record))
            elif record.key not in self._pending:
                progress[record.key] = record  # newest progress wins
        if progress:  # a run with progress to show has its running row written first
            self._open_rows(time.monotonic(), progress.keys())
        for record in progress.values():
            self._apply(record)

    def _in_backlog(self, offset: int) -> None:
        """Store from the spool, from ``offset`` on, rather than from the rows kept (they are
        in the spool past ``offset``: kept, they would be stored twice)."""
        self._backlog = offset if self._backlog is None else min(self._backlog, offset)
        self._rows = {"traces": [], "logs": []}
        self._rows_bytes, self._rows_since = 0, None

    def _open_rows(self, now: float | None = None, keys: Iterable[str] = ()) -> None:
        """Write the running rows of runs opened a flush interval ago (or of ``keys``; all of
        them, at a flush) and still going: a run that ends sooner is written once, whole, by
        its end."""
        wanted = set(keys)
        due = [r for at, r in self._opens if now is None or at <= now or r.key in wanted]
        self._opens = [(at, r) for at, r in self._opens
                       if not (now is None or at <= now or r.key in wanted)]
        for record in due:
            self._apply(record)

    def _store(self, *, force: bool = False) -> None:
        """Store the rows kept (or, after an outage, the spool's backlog); on an outage keep
        them in the spool for later (or, with no spool, drop them, counted)."""
        if self._backlog is not None:
            if force or time.monotonic() >= self._retry_at:
                self._drain_backlog()
            return
        rows, self._rows = self._rows, {"traces": [], "logs": []}
        self._rows_bytes, self._rows_since = 0, None
        stored = False
        for kind, batch in rows.items():
            if not batch:
                continue
            try:
                done = self.service.insert_events(kind, batch)
            except PersistenceError as exc:  # the database is away (or its tables are)
                if self.spool is None:
                    self._count_drop(kind, len(batch), exc)
                    continue
                self._outage(exc)
                return
            self._counted(kind, done)
            stored = True
        if self.spool is not None and self._kept[0] == self.spool.generation:
            self.spool.stored(self._kept[1])
        if stored:
            self._recovered()

    def _drain_backlog(self) -> None:
        """Store the spool's lines from the backlog's start, a batch at a time, each row once."""
        assert self.spool is not None and self._backlog is not None
        restore = self.service.event_format().from_spool
        batch: dict[str, list[tuple[Any, ...]]] = {"traces": [], "logs": []}
        offset = start = self._backlog
        generation = self.spool.generation
        try:
            for offset, line in self.spool.lines_from(start):
                kind = KINDS.get(line[0]) if isinstance(line, list) and line else None
                if kind is not None:
                    batch[kind].append(restore(line[1:]))
                if sum(len(b) for b in batch.values()) >= self.batch_size:
                    self._store_again(batch)
                    self._backlog = offset
                    self.spool.stored(offset)
            self._store_again(batch)
        except PersistenceError as exc:
            self._outage(exc)
            return
        self._backlog, self._backoff = None, 0.0
        self._drained = (generation, max(offset, start))
        self.spool.stored(max(offset, start))
        self._recovered()

    def _store_again(self, batch: dict[str, list[tuple[Any, ...]]]) -> None:
        for kind, rows in batch.items():
            if rows:
                self._counted(kind, self.service.insert_events(kind, rows, skip_existing=True))
                rows.clear()

    def _counted(self, kind: str, done: Any) -> None:
        self.written[kind] += done.stored
        if done.refused:  # rows the database would not take: the others are stored
            self._count_drop(kind, done.refused, f"the database refused them: {done.reason}")

    def _outage(self, exc: BaseException) -> None:
        """The database is away: keep what is spooled for later, and try again after a while."""
        self._in_backlog(self.spool.done if self.spool is not None else 0)
        self._backoff = min(MAX_BACKOFF, max(self.flush_interval, self._backoff * 2))
        self._retry_at = time.monotonic() + self._backoff
        self._warn_once(f"the database is away, events wait in the spool ({exc})", spooled=True)

    def _replay_orphans(self) -> None:
        """Store what dead processes left in the spool directory (once it can be reached)."""
        if self.spool is None:
            self._orphans = False
            return
        try:
            done = replay(self.spool.directory, self.service, self.service,  # type: ignore[arg-type]
                          self.service.url)  # type: ignore[attr-defined]
        except PersistenceError as exc:
            self._outage(exc)
            return
        self._orphans = False
        if done.ends or any(done.rows.values()):
            logger.warning("langchain-persist stored what %d stopped process(es) left in the "
                           "spool: %s rows, %d ends of runs", done.files, dict(done.rows),
                           done.ends)

    def _apply(self, record: ResultWrite) -> bool:
        """Write one result change; True when it is done (stored, or can never be stored)."""
        owner = record.owner
        try:
            if record.kind == "open" and owner is not None:
                if owner.finished or owner.result_id is not None:
                    return True  # the caller writes the whole row at the end
                owner.result_id = self.results.save_result(**record.fields).id
            elif record.kind == "progress" and owner is not None:
                if owner.finished or owner.result_id is None:
                    return True
                self.results.update_result(owner.result_id, **record.fields)
            else:
                apply_end(self.results, dict(record.change or {}))
                if self.spool is not None:
                    self.spool.end_stored(record.key)
        except ValidationError as exc:
            # an id refused: the row can never be stored; counted once, when its end is (an
            # opening refused is followed by its end; progress after the end does nothing)
            if record.kind == "final":
                self._count_drop("results", 1, exc)
                if self.spool is not None:
                    self.spool.end_stored(record.key)  # nothing for a replay to try again
            return True
        except PersistenceError:
            # an opening or a progress that could not be written is not retried: the end of the
            # run (retried, and spooled) writes the whole row
            return record.kind != "final"
        self.written["results"] += 1
        return True

    def _retry_results(self) -> None:
        for key, record in list(self._pending.items()):
            if self._apply(record):
                self._pending.pop(key, None)
            else:
                self._backoff = min(MAX_BACKOFF, max(self.flush_interval, self._backoff * 2))
                self._retry_at = time.monotonic() + self._backoff
                return  # still failing: try again later
        while len(self._pending) > _MAX_PENDING_RESULTS:
            self._pending.pop(next(iter(self._pending)))
            self.dropped["results"] += 1

    def _give_up_pending(self) -> None:
        if self._pending and self.spool is not None:
            logger.error(
                "langchain-persist could not store the end of %d result(s) before closing: "
                "they wait in the spool %s, for the next writer of this database (or "
                "`langchain-persist spool replay`)", len(self._pending), self.spool.path,
            )
            self._pending.clear()
        elif self._pending:
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

    def _warn_once(self, reason: str, *, spooled: bool = False) -> None:
        """Say it once an episode: that events wait in the spool, and (apart) that some are
        lost."""
        what = "kept" if spooled else "dropped"
        if what not in self._warned:
            self._warned.add(what)
            logger.warning(
                "langchain-persist %s: %s. The agent is not affected; counts are in "
                "handler.dropped. This is reported once until writes succeed again.",
                "cannot store events now (they are kept)" if spooled
                else "is dropping trace/log events", reason,
            )

    def _recovered(self) -> None:
        if self._warned and self._queue.qsize() < self.max_queue // 2:
            self._warned = set()
            logger.warning(
                "langchain-persist stores events again (dropped so far: %s)", dict(self.dropped)
            )


def _size(kind: str, row: tuple[Any, ...]) -> int:
    """About how many bytes a row adds to a batch (its text, and the rest)."""
    text = row[_TRACE_CONTENT] if kind == "traces" else row[_LOG_MESSAGE]
    return len(text or "") + 200
