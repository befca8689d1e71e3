"""`ResultsPersistenceService`: the seed's service, every method with its async twin."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor
from contextlib import contextmanager
from typing import Any, NamedTuple

from sqlalchemy import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from .._aio import async_twin
from .._checkpoint.codec import load_values
from .._db.engine import is_outage
from .._db.lease import Lease, Leased, recheck_schema
from .._db.plans import run_on
from .._db.schema import agent_traces, execution_logs
from .._db.sql import checkpoints, events, results
from .._db.sql.paging import as_utc
from .._errors import (
    NotFoundError,
    OwnershipError,
    PersistenceError,
    StorageError,
    ValidationError,
)
from .._ids import uuid7
from .._records import AgentResult, AgentTrace, CheckpointState, ExecutionLog, Page
from .._sanitize import bounded, jsonable, shown, to_text
from . import validate as check
from .events import DEFAULT_MAX_TEXT, LogEvent, TraceEvent
from .validate import Age, cutoff, now

logger = logging.getLogger("langchain_persist")

DEFAULT_TRACE_CONTENT_LIMIT = 1000
DEFAULT_CLEANUP_BATCH = 5000
EVENT_TABLES = {"traces": agent_traces, "logs": execution_logs}
Row = tuple[Any, ...]


def default_serde() -> Any:
    """LangGraph's default serializer, as `PersistSaver` uses it when given none."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    return JsonPlusSerializer()


class ResultsPersistenceService(Leased):
    """Results, logs, traces and checkpoint states of agent runs, in SQLite or PostgreSQL.

    Result and checkpoint writes are blocking: a failure raises a `PersistenceError`.  Log and
    trace writes never raise: a row that cannot be written is counted in `dropped` and reported
    through the ``langchain_persist`` logger.  The database is opened (and its schema upgraded,
    unless ``migrate=False``) on first use, and released by `close`.

    ``serde`` decodes the checkpoints `PersistSaver` wrote (`get_checkpoint_state`): pass the
    saver's own serializer (an ``EncryptedSerializer``, say); LangGraph's default otherwise.

    Every text and JSON value is made safe to store the same way on both databases (NUL and
    lone surrogates become U+FFFD, objects plain JSON); ids are refused instead (`ValidationError`);
    a result, an error or a log message longer than ``max_text`` characters is cut with a marker
    saying how long it was, and trace contents at ``trace_content_limit``.  Everything raised is
    a `PersistenceError`; reads with an id no row can have find nothing.

    The ``a``-prefixed twins run in ``executor`` when given (a server keeps its reads apart
    from the graph's work that way), else in the event loop's default executor.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        trace_content_limit: int = DEFAULT_TRACE_CONTENT_LIMIT,
        migrate: bool = True,
        cleanup_batch_size: int = DEFAULT_CLEANUP_BATCH,
        serde: Any = None,
        max_text: int = DEFAULT_MAX_TEXT,
        executor: Executor | None = None,
    ) -> None:
        self._lease = Lease(url, migrate=migrate)
        self.max_text = max_text
        self.executor = executor
        self.migrate = migrate
        self.trace_content_limit = trace_content_limit
        self.cleanup_batch_size = cleanup_batch_size
        self.serde = serde if serde is not None else default_serde()
        self.dropped: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"ResultsPersistenceService({self._lease!r})"

    @functools.cached_property
    def dialect(self) -> str:
        """``"sqlite"`` or ``"postgresql"`` (from the URL: opens nothing)."""
        return make_url(self.url).get_backend_name()

    def _text(self, value: Any) -> str | None:
        """A result, error or message as storable text, cut at ``max_text``."""
        return None if value is None else bounded(to_text(value), self.max_text)

    # -- results (blocking) -------------------------------------------------------------------

    def save_result(
        self,
        *,
        agent_id: str,
        execution_id: str | None = None,
        thread_id: str | None = None,
        checkpoint_id: str | None = None,
        quest_id: str | None = None,
        result: Any = None,
        metadata: Mapping[str, Any] | None = None,
        status: str = "running",
        error: str | None = None,
        id: str | None = None,
    ) -> AgentResult:
        """Create a result record (status ``running`` unless told otherwise) and return it.

        ``id`` names the row (a UUID; default: a new time-ordered one): a create retried with
        the same id returns the row the first attempt stored, and makes no second one.
        """
        at = now()
        given = None if id is None else check.result_id(id)
        if id is not None and given is None:
            raise ValidationError(f"id must be a UUID, got {shown(id)}")
        values = {
            "id": given or uuid7(),
            "agent_id": check.key("agent_id", agent_id),
            "execution_id": check.key("execution_id", execution_id, required=False),
            "thread_id": check.key("thread_id", thread_id, required=False),
            "checkpoint_id": check.key("checkpoint_id", checkpoint_id, required=False),
            "quest_id": check.key("quest_id", quest_id, required=False),
            "result": self._text(result),
            "metadata": check.metadata(metadata),
            "status": check.status(status),
            "error": self._text(error),
            "created_at": at,
            "updated_at": at,
            "completed_at": at if status != "running" else None,
        }
        with self._blocking("save the result"), self.db.cursor(write=True) as cur:
            return results.insert_result(cur, self.db.fast.dialect, values, once=id is not None)

    def update_result(
        self,
        result_id: str,
        *,
        status: str | None = None,
        result: Any = None,
        metadata: Mapping[str, Any] | None = None,
        error: str | None = None,
        execution_id: str | None = None,
        thread_id: str | None = None,
        checkpoint_id: str | None = None,
        quest_id: str | None = None,
    ) -> AgentResult:
        """Update a result incrementally and return it.

        Only the fields given change; ``metadata`` is merged into the stored metadata (top-level
        keys).  Moving to ``completed`` or ``failed`` sets ``completed_at``; a finished result
        cannot move again (`ValidationError`), and an unknown id raises `NotFoundError`.
        """
        changes: dict[str, Any] = {
            name: check.key(name, value)
            for name, value in (
                ("execution_id", execution_id),
                ("thread_id", thread_id),
                ("checkpoint_id", checkpoint_id),
                ("quest_id", quest_id),
            )
            if value is not None
        }
        if result is not None:
            changes["result"] = self._text(result)
        if error is not None:
            changes["error"] = self._text(error)
        patch = check.metadata(metadata)
        if status is not None:
            check.status(status)
        key = check.result_id(result_id)
        dialect = self.db.fast.dialect
        with self._blocking("update the result"), self.db.cursor(write=True) as cur:
            updated = key and results.update_result(
                cur, dialect, key, changes, status=status, patch=patch, now=now()
            )
            if updated:
                return updated
            current = key and results.get_result(cur, dialect, key)
            if not current:
                raise NotFoundError(f"no result with id {shown(result_id)}")
            raise ValidationError(
                f"result {result_id} is {current.status}; it cannot become {status} "
                "(save a new result for a new run)"
            )

    def get_result(self, result_id: str) -> AgentResult | None:
        """A result by id, or None."""
        key = check.result_id(result_id)
        if key is None:
            return None
        with self._blocking("read the result"), self.db.cursor() as cur:
            return results.get_result(cur, self.db.fast.dialect, key)

    def get_agent_results(
        self,
        agent_id: str,
        limit: int = 50,
        *,
        status: str | None = None,
        cursor: str | None = None,
    ) -> Page[AgentResult]:
        """An agent's results, newest first; pass ``page.next_cursor`` to get the next page."""
        return self.find_results(agent_id=agent_id, status=status, limit=limit, cursor=cursor)

    def find_results(
        self,
        *,
        agent_id: str | None = None,
        execution_id: str | None = None,
        thread_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> Page[AgentResult]:
        """Results newest first, filtered by any of agent, execution, thread and status, and
        by start time: from ``since`` (included) to ``until`` (excluded)."""
        if status is not None:
            check.status(status)
        size = check.limit(limit)
        keys = {"agent_id": agent_id, "execution_id": execution_id, "thread_id": thread_id}
        found = {name: check.lookup(value) for name, value in keys.items() if value is not None}
        if None in found.values():
            return Page([])  # an id no row can have
        with self._blocking("read the results"), self.db.read() as conn:
            return results.list_results(
                conn, **found, status=status, limit=size, cursor=cursor,
                since=check.moment("since", since), until=check.moment("until", until))

    def mark_stale_results(
        self,
        older_than: Age,
        *,
        agent_id: str | None = None,
        error: str = "abandoned: the process running it stopped before it finished",
    ) -> list[str]:
        """Mark ``failed`` the results still ``running`` with no update since ``older_than``.

        For results left ``running`` by a process that died (kill -9, a lost machine): a live
        run updates its result as it goes, so pick an age longer than its slowest step.
        Returns the ids of the results it marked.
        """
        when, at = cutoff(older_than), now()
        values = {
            "status": "failed",
            "error": to_text(error),
            "completed_at": at,
            "updated_at": at,
        }
        with self._blocking("mark stale results"), self.db.write() as conn:
            return results.mark_running_before(conn, when, values, agent_id=agent_id)

    def ping(self) -> None:
        """Reach the database as a writer would (a SQLite file locked by another process does
        not count as reachable); raise `StorageError` naming the fix when it cannot (a health
        check)."""
        with self._blocking("reach the database"), self.db.write() as conn:
            conn.exec_driver_sql("SELECT 1")

    def latest_checkpoint_id(self, thread_id: str, checkpoint_ns: str = "") -> str | None:
        """The newest checkpoint id stored for a thread (by `PersistSaver`), or None."""
        thread = check.lookup(thread_id)
        if thread is None or (checkpoint_ns and check.lookup(checkpoint_ns) is None):
            return None
        with self._blocking("read the thread's checkpoints"), self.db.cursor() as cur:
            return results.latest_checkpoint_id(cur, self.db.fast.dialect, thread, checkpoint_ns)

    # -- logs and traces (never raise) --------------------------------------------------------

    def save_log(self, **fields: Any) -> ExecutionLog | None:
        """Save a log line (the fields of `log_row`); on any failure count it and return None."""
        return self._save_one(self.log_row, "logs", fields)  # type: ignore[return-value]

    def save_trace(self, **fields: Any) -> AgentTrace | None:
        """Save a trace event (the fields of `trace_row`: content truncated); on any failure
        count it and return None."""
        return self._save_one(self.trace_row, "traces", fields)  # type: ignore[return-value]

    def _save_one(
        self, make_row: Callable[..., Row], kind: str, fields: dict[str, Any]
    ) -> ExecutionLog | AgentTrace | None:
        try:
            row = make_row(**fields)
        except Exception as exc:  # a bad value, a field it does not take: never raised
            self._drop(kind, 1, exc)
            return None
        if not self._save_rows(kind, [row]):
            return None
        return events.as_record(EVENT_TABLES[kind], row)

    def log_row(
        self,
        *,
        agent_id: str,
        execution_id: str,
        message: Any,
        level: str = "info",
        source: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp: dt.datetime | None = None,
    ) -> Row:
        """Validate a log line into a row for `save_logs` (raises `ValidationError`)."""
        event = LogEvent(
            agent_id, execution_id, level, message, source,
            as_utc(timestamp) if timestamp else now(), check.metadata(metadata),
        )
        return event.to_values(self.event_format(), self.trace_content_limit, self.max_text)

    def trace_row(
        self,
        *,
        agent_id: str,
        execution_id: str,
        type: str,
        content: Any = None,
        name: str | None = None,
        run_id: str | None = None,
        parent_run_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        duration: float | None = None,
        timestamp: dt.datetime | None = None,
    ) -> Row:
        """Validate a trace event into a row for `save_traces` (raises `ValidationError`)."""
        event = TraceEvent(
            agent_id, execution_id, check.trace_type(type), name, content,
            check.key("run_id", None if run_id is None else str(run_id), required=False),
            check.key("parent_run_id", None if parent_run_id is None else str(parent_run_id),
                      required=False),
            check.duration(duration), as_utc(timestamp) if timestamp else now(),
            extra=check.metadata(metadata),
        )
        return event.to_values(self.event_format(), self.trace_content_limit)

    def save_logs(self, rows: Iterable[Row]) -> int:
        """Save rows made by `log_row` in one statement; return how many were stored."""
        return self._save_rows("logs", list(rows))

    def save_traces(self, rows: Iterable[Row]) -> int:
        """Save rows made by `trace_row` in one statement; return how many were stored."""
        return self._save_rows("traces", list(rows))

    def event_format(self) -> events.EventFormat:
        """The form this database's driver takes event rows in (see `TraceEvent.to_values`)."""
        return events.event_format(self.dialect)

    @recheck_schema
    def insert_events(
        self, kind: str, rows: list[Row], *, skip_existing: bool = False
    ) -> Inserted:
        """Store ``"traces"`` or ``"logs"`` rows (made by `trace_row`, `log_row` or
        ``to_values``), in one statement when the database takes them all.

        A row the database refuses is found by halving the batch, stored apart from the rest
        and reported in the result (never costing the others); a database that cannot be
        reached raises `StorageError`.  ``skip_existing`` leaves out rows already stored (a
        retry, or a replay of the writer's spool, stores each row once).  The background
        writer's path.
        """
        if not rows:
            return Inserted(0, 0, None)
        try:
            self._insert(kind, rows, skip_existing)
            return Inserted(len(rows), 0, None)
        except _Refused as exc:
            if len(rows) == 1:
                return Inserted(0, 1, _first_line(exc.__cause__ or exc))
        half = len(rows) // 2
        first = self.insert_events(kind, rows[:half], skip_existing=skip_existing)
        second = self.insert_events(kind, rows[half:], skip_existing=skip_existing)
        return Inserted(first.stored + second.stored, first.refused + second.refused,
                        first.reason or second.reason)

    def _insert(self, kind: str, rows: list[Row], skip_existing: bool) -> None:
        try:
            with self.db.write() as conn:
                events.insert_values(conn, EVENT_TABLES[kind], rows,
                                     skip_existing=skip_existing)
        except PersistenceError:  # StorageError, MissingTableError: not the rows' fault
            raise
        except Exception as exc:
            if not is_outage(exc):
                raise _Refused(f"the database refused a {kind} row") from exc
            raise StorageError(f"could not store {len(rows)} {kind} row(s) in {self!r}: "
                               f"{type(exc).__name__}: {_first_line(exc)}") from exc

    def get_execution_logs(
        self,
        execution_id: str,
        limit: int = 1000,
        *,
        cursor: str | None = None,
        since: dt.datetime | None = None,
    ) -> Page[ExecutionLog]:
        """An execution's logs, oldest first, in the order they were saved (from ``since``)."""
        return self._events(execution_logs, execution_id, limit, cursor, since)

    def get_execution_traces(
        self,
        execution_id: str,
        limit: int = 1000,
        *,
        cursor: str | None = None,
        since: dt.datetime | None = None,
    ) -> Page[AgentTrace]:
        """An execution's traces, oldest first, in the order they were saved (from ``since``)."""
        return self._events(agent_traces, execution_id, limit, cursor, since)

    def _events(
        self, table: Table, execution_id: str, limit: int, cursor: str | None,
        since: dt.datetime | None,
    ) -> Page[Any]:
        size, key = check.limit(limit), check.lookup(execution_id)
        if key is None:
            return Page([])
        with self._blocking(f"read the {table.name}"), self.db.read() as conn:
            return events.list_events(conn, table, key, limit=size, cursor=cursor,
                                      since=check.moment("since", since))

    # -- checkpoints (blocking) ---------------------------------------------------------------

    def save_checkpoint_state(
        self,
        *,
        agent_id: str,
        checkpoint_id: str,
        state: Any,
        thread_id: str,
        checkpoint_ns: str = "",
        parent_checkpoint_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> CheckpointState:
        """Save (or replace) the JSON state of a checkpoint, for resume.

        Raises `OwnershipError` if the checkpoint exists and belongs to another agent.
        """
        values = {
            "id": uuid7(),
            "agent_id": check.key("agent_id", agent_id),
            "thread_id": check.key("thread_id", thread_id),
            "checkpoint_ns": check.namespace(checkpoint_ns),
            "checkpoint_id": check.key("checkpoint_id", checkpoint_id),
            "parent_checkpoint_id": check.key(
                "parent_checkpoint_id", parent_checkpoint_id, required=False
            ),
            "state": jsonable(state),
            "metadata": check.metadata(metadata),
            "created_at": now(),
        }
        with self._blocking("save the checkpoint state"), self.db.write() as conn:
            owner = checkpoints.owner_of(conn, thread_id, checkpoint_ns, checkpoint_id)
            if owner is not None and owner.agent_id not in (None, agent_id):
                raise OwnershipError(
                    f"checkpoint {shown(checkpoint_id)} belongs to agent {owner.agent_id!r}, "
                    f"not {shown(agent_id)}"
                )
            checkpoints.upsert_state(conn, values)
        return self.get_checkpoint_state(checkpoint_id, thread_id=thread_id)  # type: ignore[return-value]

    def get_checkpoint_state(
        self,
        checkpoint_id: str,
        *,
        thread_id: str | None = None,
        agent_id: str | None = None,
    ) -> CheckpointState | None:
        """A checkpoint by id (the newest if several threads share the id), or None.

        With ``agent_id``, a checkpoint of another agent raises `OwnershipError`.
        """
        key, thread = check.lookup(checkpoint_id), check.lookup(thread_id)
        if key is None or (thread_id is not None and thread is None):
            return None
        with self._blocking("read the checkpoint"), self.db.read() as conn:
            rows = checkpoints.find_state_rows(conn, key, thread_id=thread)
            if not rows:
                return None
            row = rows[0]
            if agent_id is not None and row.agent_id not in (None, agent_id):
                raise OwnershipError(
                    f"checkpoint {shown(checkpoint_id)} belongs to agent {row.agent_id!r}, "
                    f"not {shown(agent_id)}"
                )
            # a LangGraph checkpoint (written by PersistSaver): its channel values as JSON
            state = row.state if row.checkpoint is None else self._checkpoint_values(conn, row)
        return dataclasses.replace(CheckpointState.from_row(row), state=state)

    def _checkpoint_values(self, conn: Any, row: Any) -> dict[str, Any]:
        """The channel values of a checkpoint `PersistSaver` stored, as JSON, decoded with
        ``serde`` (raises `SerializationError` naming the fix when it cannot)."""
        values = run_on(
            conn.connection.cursor(),
            checkpoints.read_values(
                conn.dialect, row.thread_id, row.checkpoint_ns, row.versions.items()
            ),
        )
        where = f"checkpoint {row.checkpoint_id!r} of thread {row.thread_id!r}"
        return jsonable(load_values(self.serde, values, where=where))  # type: ignore[no-any-return]

    # -- cleanup ------------------------------------------------------------------------------

    def cleanup_old_results(
        self, older_than: Age, *, on_progress: Callable[[int], None] | None = None
    ) -> int:
        """Delete completed and failed results that finished before ``older_than``."""
        when = cutoff(older_than)
        return self._cleanup(
            lambda conn, n: results.delete_finished_before(conn, when, n), on_progress
        )

    def cleanup_old_logs(
        self, older_than: Age, *, on_progress: Callable[[int], None] | None = None
    ) -> int:
        """Delete logs older than ``older_than`` (a datetime, or an age as a timedelta)."""
        when = cutoff(older_than)
        return self._cleanup(
            lambda conn, n: events.delete_before(conn, execution_logs, when, n), on_progress
        )

    def cleanup_old_traces(
        self, older_than: Age, *, on_progress: Callable[[int], None] | None = None
    ) -> int:
        """Delete traces older than ``older_than`` (a datetime, or an age as a timedelta)."""
        when = cutoff(older_than)
        return self._cleanup(
            lambda conn, n: events.delete_before(conn, agent_traces, when, n), on_progress
        )

    def count_old_results(self, older_than: Age) -> int:
        """How many results `cleanup_old_results` would delete now (a dry run)."""
        when = cutoff(older_than)
        with self.db.read() as conn:
            return results.count_finished_before(conn, when)

    def count_old_logs(self, older_than: Age) -> int:
        """How many logs `cleanup_old_logs` would delete now (a dry run)."""
        when = cutoff(older_than)
        with self.db.read() as conn:
            return events.count_before(conn, execution_logs, when)

    def count_old_traces(self, older_than: Age) -> int:
        """How many traces `cleanup_old_traces` would delete now (a dry run)."""
        when = cutoff(older_than)
        with self.db.read() as conn:
            return events.count_before(conn, agent_traces, when)

    # -- plumbing -----------------------------------------------------------------------------

    def _cleanup(self, delete_batch: Callable[[Any, int], int], on_progress: Any) -> int:
        """Delete in batches, one short transaction each, until a batch comes back short."""
        total, size = 0, self.cleanup_batch_size
        while True:
            with self._blocking("clean up"), self.db.write() as conn:
                gone = delete_batch(conn, size)
            total += gone
            if on_progress is not None and gone:
                on_progress(gone)
            if gone < size:
                return total

    def _save_rows(self, kind: str, rows: list[Row]) -> int:
        try:
            done = self.insert_events(kind, rows)
        except Exception as exc:
            self._drop(kind, len(rows), exc)
            return 0
        if done.refused:
            self._drop(kind, done.refused, done.reason or "refused by the database")
        return done.stored

    def _drop(self, kind: str, count: int, exc: BaseException | str) -> None:
        self.dropped[kind] += count
        logger.warning(
            "langchain-persist dropped %d %s row(s) (%d so far): %s",
            count,
            kind,
            self.dropped[kind],
            exc,
        )

    @contextmanager
    def _blocking(self, action: str) -> Iterator[None]:
        """Turn a database failure into a `StorageError` naming the fix."""
        try:
            yield
        except (SQLAlchemyError, StorageError) as exc:
            cause = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ else exc
            driver = getattr(cause, "orig", None) or cause
            where = make_url(self.url).render_as_string()
            if is_outage(cause):
                raise StorageError(
                    f"cannot reach {where}: {_first_line(driver)} (could not {action}; is the "
                    "server running and the URL right? pass --url or set "
                    "LANGCHAIN_PERSIST_DATABASE_URL)"
                ) from cause
            raise StorageError(
                f"could not {action} in {where}: {type(driver).__name__}: "
                f"{_first_line(driver)} (is its schema current? try `langchain-persist db "
                "check`)"
            ) from cause

    asave_result = async_twin(save_result)
    aupdate_result = async_twin(update_result)
    aget_result = async_twin(get_result)
    aget_agent_results = async_twin(get_agent_results)
    afind_results = async_twin(find_results)
    asave_log = async_twin(save_log)
    asave_trace = async_twin(save_trace)
    asave_logs = async_twin(save_logs)
    ainsert_events = async_twin(insert_events)
    asave_traces = async_twin(save_traces)
    aget_execution_logs = async_twin(get_execution_logs)
    aget_execution_traces = async_twin(get_execution_traces)
    asave_checkpoint_state = async_twin(save_checkpoint_state)
    aget_checkpoint_state = async_twin(get_checkpoint_state)
    acleanup_old_results = async_twin(cleanup_old_results)
    acleanup_old_logs = async_twin(cleanup_old_logs)
    acleanup_old_traces = async_twin(cleanup_old_traces)
    acount_old_results = async_twin(count_old_results)
    acount_old_logs = async_twin(count_old_logs)
    acount_old_traces = async_twin(count_old_traces)
    amark_stale_results = async_twin(mark_stale_results)
    alatest_checkpoint_id = async_twin(latest_checkpoint_id)
    aping = async_twin(ping)


class Inserted(NamedTuple):
    """What `insert_events` did: rows stored, rows the database refused, and why."""

    stored: int
    refused: int
    reason: str | None


class _Refused(Exception):
    """The database is there but refused a row (a constraint, a value it cannot hold)."""


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or "?").splitlines()[0]
