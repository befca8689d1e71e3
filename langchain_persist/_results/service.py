"""`ResultsPersistenceService`: the seed's service, every method with its async twin."""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import logging
import time
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
from .._db import backfill
from .._db.engine import is_locked, is_outage, locked_hint
from .._db.lease import Lease, Leased, recheck_schema
from .._db.plans import run_on
from .._db.schema import DEFAULT_POLICY, agent_traces, execution_logs
from .._db.sql import checkpoints, events, results
from .._db.sql import retention as retention_sql
from .._db.sql import search as search_sql
from .._db.sql import stats as stats_sql
from .._db.sql.dialect import custom_plans
from .._db.sql.paging import as_utc, encode_cursor
from .._errors import (
    NotFoundError,
    OwnershipError,
    PersistenceError,
    StorageError,
    ValidationError,
)
from .._ids import uuid7
from .._records import (
    AgentResult,
    AgentTrace,
    CheckpointState,
    ErrorCount,
    ExecutionLog,
    Page,
    RetentionCounts,
    RetentionPolicy,
    RetentionReport,
    SearchHit,
    Stats,
    StatsRow,
    compress_text,
)
from .._sanitize import bounded, jsonable, shown, to_text
from . import validate as check
from .events import DEFAULT_MAX_TEXT, LogEvent, TraceEvent
from .validate import Age, cutoff, now

logger = logging.getLogger("langchain_persist")

DEFAULT_TRACE_CONTENT_LIMIT = 1000
DEFAULT_CLEANUP_BATCH = 5000
RESULT_COMPRESS_OVER = 4096  # characters: a longer result is stored compressed on SQLite
RETENTION_BATCH_SECONDS = 0.01  # how long one retention transaction should hold its locks
# After each retention batch the database is left to others this many times as long as the
# batch took.  SQLite has one writer at a time, and writers in other processes poll for the
# lock at growing intervals: most of the time must be free for them to find it free.
# PostgreSQL writers never wait for the deleted rows' locks, but share its WAL and disks.
RETENTION_PAUSE = {"sqlite": 4.0, "postgresql": 2.0}
UNCHANGED: Any = object()
"""`set_retention_policy`: leave this age as it is."""
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

    On SQLite, a result longer than ``result_compress_over`` characters is stored compressed
    (zstd; None never compresses); PostgreSQL compresses long values itself (TOAST).
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
        result_compress_over: int | None = RESULT_COMPRESS_OVER,
    ) -> None:
        self._lease = Lease(url, migrate=migrate)
        self.max_text = max_text
        self.executor = executor
        self.migrate = migrate
        self.trace_content_limit = trace_content_limit
        self.cleanup_batch_size = cleanup_batch_size
        self.serde = serde if serde is not None else default_serde()
        self.result_compress_over = result_compress_over
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
            **self._result_columns(self._text(result)),
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
        keys).  Moving from ``running`` to ``completed``, ``failed`` or ``interrupted`` sets
        ``completed_at`` (when the run stopped); an ``interrupted`` result may then become
        ``completed`` or ``failed`` (see `resolve_interrupted`); a finished result cannot move
        again (`ValidationError`), and an unknown id raises `NotFoundError`.
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
            changes.update(self._result_columns(self._text(result)))
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

    def _result_columns(self, text: str | None) -> dict[str, Any]:
        """Where a result's text goes: ``result``, or compressed in ``result_zstd`` (long
        text, on SQLite)."""
        limit = self.result_compress_over
        if text is not None and limit is not None and len(text) > limit and (
            self.dialect == "sqlite"
        ):
            return {"result": None, "result_zstd": compress_text(text)}
        return {"result": text, "result_zstd": None}

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

    def resolve_interrupted(
        self,
        thread_id: str,
        *,
        status: str,
        resumed_by: str | None = None,
        keep: str | None = None,
    ) -> list[str]:
        """A later run of ``thread_id`` ended: its ``interrupted`` results are waiting no more.

        They move to ``status`` (``completed`` or ``failed``: how the run that resumed them
        ended; pass ``completed`` when it stopped at another interrupt), with ``resumed_by``
        (that run's execution id) in their metadata; ``keep`` is a result id left alone (the
        resuming run's own).  ``completed_at`` stays when each run stopped.  Returns the ids of
        the results it moved.  The callback handler and the execution tracker call it when a
        run ends.
        """
        if type(status) is not str or status not in results.FINISHED:
            raise ValidationError(
                f"an interrupted result can become completed or failed, not {shown(status)}"
            )
        key = check.key("thread_id", thread_id)
        resumed_by = check.key("resumed_by", resumed_by, required=False)
        keep = None if keep is None else check.result_id(keep)
        with self._blocking("resolve interrupted results"), self.db.write() as conn:
            return results.resolve_interrupted(
                conn, key, status=status, resumed_by=resumed_by, keep=keep, now=now()
            )

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
            return Inserted(self._insert(kind, rows, skip_existing), 0, None)
        except _Refused as exc:
            if len(rows) == 1:
                return Inserted(0, 1, _first_line(exc.__cause__ or exc))
        half = len(rows) // 2
        first = self.insert_events(kind, rows[:half], skip_existing=skip_existing)
        second = self.insert_events(kind, rows[half:], skip_existing=skip_existing)
        return Inserted(first.stored + second.stored, first.refused + second.refused,
                        first.reason or second.reason)

    def _insert(self, kind: str, rows: list[Row], skip_existing: bool) -> int:
        try:
            with self.db.write() as conn:
                return events.insert_values(conn, EVENT_TABLES[kind], rows,
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

    # -- search ------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        agent_id: str | None = None,
        execution_id: str | None = None,
        thread_id: str | None = None,
        types: str | Iterable[str] | None = None,
        status: str | None = None,
        since: Age | None = None,
        until: dt.datetime | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[SearchHit]:
        """Logs and traces whose text matches ``query``, newest first, one page at a time.

        The text searched is a trace's name (the tool or model) and content (its input,
        output or error) and a log's message.  ``query`` is words that must all appear, in
        any case: ``timeout``, ``rate limit``; words joined by punctuation or in quotes must
        appear in that order (``rate-limit``, ``openai.RateLimitError``, ``"rate limit
        exceeded"``); a trailing ``*`` matches a prefix (``Timeout*``).  Punctuation is not
        searched by itself: ``HTTP 429: Too Many`` finds ``http 429 too many``.

        Filters: the hit's agent, execution, thread (its run's), ``types`` (trace types such
        as ``tool_error``, and ``"log"`` for log lines), ``status`` (its run's status),
        ``since`` (a datetime, or an age: ``timedelta(days=7)`` is the last 7 days) and
        ``until`` (a datetime, exclusive).  Each `SearchHit` has a snippet of its text around
        the match and the ``execution_id`` of its run.  Pass ``page.next_cursor`` back as
        ``cursor`` for the next page.
        """
        terms = search_sql.parse_query(query)
        keys = {"agent_id": agent_id, "execution_id": execution_id, "thread_id": thread_id}
        found = {name: check.lookup(value) for name, value in keys.items() if value is not None}
        filters = search_sql.Filters(
            **found, status=None if status is None else check.status(status),
            types=_types(types), since=None if since is None else cutoff(since, "since"),
            until=check.moment("until", until),
        )
        size = check.limit(limit)
        if None in found.values():
            return Page([])  # an id no row can have
        with self._blocking("search"), self.db.read() as conn, custom_plans(conn):
            rows = search_sql.search(conn, terms, filters, limit=size + 1, cursor=cursor)
        hits = []
        for row in rows[:size]:
            text, highlights = search_sql.snippet(row.text, terms)
            hits.append(SearchHit.from_row({**row._mapping, "id": str(row.id),
                                            "snippet": text, "highlights": highlights}))
        last = hits[-1] if len(rows) > size else None
        return Page(hits, None if last is None else encode_cursor(last.timestamp, last.id))

    def unindexed(self) -> dict[str, int]:
        """Rows stored before the search index existed and not indexed yet (by table), which
        `search` cannot find: ``langchain-persist db upgrade`` indexes them."""
        return backfill.pending(self.db)

    # -- statistics --------------------------------------------------------------------------

    def stats(
        self,
        *,
        agent_id: str | None = None,
        since: Age | None = None,
        until: dt.datetime | None = None,
        by: str | None = None,
        top_errors: int = 10,
    ) -> Stats:
        """Statistics of runs, tool calls and model calls, computed by the database.

        ``agent_id`` narrows them to one agent; ``since`` (a datetime, or an age:
        ``timedelta(days=7)`` is the last 7 days) and ``until`` (exclusive) to a time range.
        ``by`` groups them by ``"agent"``, ``"tool"``, ``"model"``, ``"status"``, ``"hour"``
        or ``"day"`` (UTC), or not at all (None: the totals alone).  Each `StatsRow` has the
        runs by status and the success, failure and interrupt rates; p50, p95 and p99
        durations of runs and of tool calls; tool calls and their error rate; model calls and
        tokens; `Stats.top_errors` has the ``top_errors`` most frequent errors of failed runs
        and tool calls.
        """
        if by is not None and by not in stats_sql.GROUPINGS:
            raise ValidationError(
                f"by must be one of {', '.join(stats_sql.GROUPINGS)} (or None), got {shown(by)}"
            )
        if type(top_errors) is not int or top_errors < 0:
            raise ValidationError(f"top_errors must be a count, got {shown(top_errors)}")
        agent = None if agent_id is None else check.lookup(agent_id)
        scope = stats_sql.Scope(
            agent_id=agent, since=None if since is None else cutoff(since, "since"),
            until=check.moment("until", until),
        )
        if agent_id is not None and agent is None:  # an id no row can have: nothing counted
            return Stats(by=by, agent_id=None, since=scope.since, until=scope.until,
                         totals=_stats_row(None, None, {}), groups=[], top_errors=[])
        with self._blocking("compute statistics"), self.db.read() as conn, custom_plans(conn):
            totals = _stats_rows(conn, scope, None).get("", {})
            groups = _stats_rows(conn, scope, by) if by is not None else {}
            errors = stats_sql.top_errors(conn, scope, top_errors) if top_errors else []
        rows = [_stats_row(by, key, found) for key, found in groups.items()]
        if by in ("hour", "day"):
            rows.sort(key=lambda r: r.key)  # type: ignore[arg-type, return-value]
        else:
            rows.sort(key=lambda r: -(r.runs if r.runs is not None else r.tool_calls
                                      if r.tool_calls is not None else r.model_calls or 0))
        return Stats(
            by=by, agent_id=agent_id, since=scope.since, until=scope.until,
            totals=_stats_row(None, None, totals), groups=rows,
            top_errors=[ErrorCount.from_row(e) for e in errors],
        )

    # -- retention policies --------------------------------------------------------------------

    def set_retention_policy(
        self,
        agent_id: str | None = None,
        *,
        results: dt.timedelta | None = UNCHANGED,
        logs: dt.timedelta | None = UNCHANGED,
        traces: dt.timedelta | None = UNCHANGED,
        checkpoints: dt.timedelta | None = UNCHANGED,
    ) -> RetentionPolicy:
        """Store how long an agent's rows are kept (``agent_id`` None: the default policy, for
        every agent without one of its own); return the policy.

        Each age is a timedelta, or None to keep that kind forever; an age not given stays as
        it was (a new agent policy starts from the default's ages, a new default from keeping
        everything).  ``results`` counts from when a run finished (running and interrupted
        results are never deleted), ``logs`` and ``traces`` from when they were written, and
        ``checkpoints`` from a thread's last activity (a thread with a running or interrupted
        run is never deleted).  `apply_retention` deletes what the policies make old.
        """
        key = DEFAULT_POLICY if agent_id is None else _policy_agent(agent_id)
        given = {"results": results, "logs": logs, "traces": traces, "checkpoints": checkpoints}
        for kind, age in given.items():
            if age is not UNCHANGED and age is not None and (
                not isinstance(age, dt.timedelta) or age <= dt.timedelta(0)
            ):
                raise ValidationError(
                    f"{kind} must be a positive timedelta, or None to keep them forever; "
                    f"got {shown(age)}"
                )
        with self._blocking("store the retention policy"), self.db.write() as conn:
            current = retention_sql.get_policy(conn, key)
            if current is None and key != DEFAULT_POLICY:
                current = retention_sql.get_policy(conn, DEFAULT_POLICY)
            values: dict[str, Any] = {"agent_id": key, "updated_at": now()}
            for kind, age in given.items():
                column = f"keep_{kind}"
                if age is UNCHANGED:
                    values[column] = None if current is None else getattr(current, column)
                else:
                    values[column] = None if age is None else age.total_seconds()
            retention_sql.put_policy(conn, values)
            return _policy(retention_sql.get_policy(conn, key))

    def get_retention_policies(self) -> list[RetentionPolicy]:
        """The stored retention policies, the default (``agent_id`` None) first."""
        with self.db.read() as conn:
            return [_policy(row) for row in retention_sql.list_policies(conn)]

    def delete_retention_policy(self, agent_id: str | None = None) -> bool:
        """Remove an agent's policy (it follows the default again), or the default (None:
        agents without a policy keep everything); whether there was one."""
        key = DEFAULT_POLICY if agent_id is None else _policy_agent(agent_id)
        with self._blocking("remove the retention policy"), self.db.write() as conn:
            return retention_sql.delete_policy(conn, key)

    def apply_retention(
        self,
        *,
        dry_run: bool = False,
        at: dt.datetime | None = None,
        on_progress: Callable[[str, int], None] | None = None,
    ) -> RetentionReport:
        """Delete what the retention policies make old (see `set_retention_policy`), and
        report how much, per policy.

        Ages count back from ``at`` (default: now).  Deletes go in short transactions, each
        sized to hold its locks for about ``RETENTION_BATCH_SECONDS``, with a pause after each
        (see ``RETENTION_PAUSE``) so that writers find the database free: writers never wait
        long.  ``on_progress(kind, n)`` is called after each batch (``results``, ``logs``,
        ``traces``, ``checkpoints``).  ``dry_run=True`` deletes nothing and counts what a run
        at the same ``at`` would delete.  A thread goes with its checkpoint values and pending
        writes.
        """
        at = now() if at is None else as_utc(at)
        with self.db.read() as conn:
            scopes = retention_sql.scopes(retention_sql.list_policies(conn), at)
        counted = []
        for scope in scopes:
            counts: dict[str, int] = {}
            for kind in ("results", "logs", "traces"):
                when = scope.cutoffs[kind]
                if when is None:
                    continue
                if dry_run:
                    with self.db.read() as conn:
                        counts[kind] = retention_sql.count_old(conn, kind, scope, when)
                    continue
                table, _ = retention_sql.old_rows(kind, scope, when)
                last: list[Any] = [None]  # the key the next batch starts after

                def step(conn: Any, n: int, kind: str = kind, when: Any = when,
                         scope: Any = scope, last: list[Any] = last) -> int:
                    gone, last[0] = retention_sql.delete_old_batch(
                        conn, kind, scope, when, n, last[0])
                    return gone

                with self._merging_later(table) as tidy:
                    counts[kind] = self._in_batches(step, _progress(on_progress, kind),
                                                    between=tidy)
            when = scope.cutoffs["checkpoints"]
            if when is not None:
                counts.update(self._old_threads(scope, when, dry_run, on_progress))
            counted.append(RetentionCounts(scope.agent_id, **counts))
        return RetentionReport(at=at, dry_run=dry_run, policies=counted)

    def _old_threads(
        self, scope: Any, when: dt.datetime, dry_run: bool, on_progress: Any
    ) -> dict[str, int]:
        """Delete (or count) a scope's old checkpoint threads."""
        with self.db.read() as conn:
            ids = retention_sql.old_thread_ids(conn, scope, when)
            if dry_run:
                return {"threads": len(ids),
                        "checkpoints": retention_sql.count_checkpoints(conn, ids)}
        gone: set[str] = set()
        total = 0
        for start in range(0, len(ids), 100):
            chunk = ids[start:start + 100]

            def step(conn: Any, n: int, chunk: list[str] = chunk) -> int:
                threads, count = retention_sql.delete_old_checkpoints(conn, scope, when, chunk, n)
                gone.update(threads)
                return count

            total += self._in_batches(step, _progress(on_progress, "checkpoints"))
            self._in_batches(
                lambda conn, n, chunk=chunk: retention_sql.delete_orphans(conn, chunk, n), None)
        return {"threads": len(gone), "checkpoints": total}

    @contextmanager
    def _merging_later(self, table: Any) -> Iterator[Callable[[Any], Any] | None]:
        """On SQLite, while many rows of a searched table go: FTS5's own merging off (see
        `retention_sql.CLEANUP_MERGING`), a small merge step between batches (yielded, for
        `_in_batches`) so that segments do not pile up, the rest of the merging done at the
        end in small steps, each a short transaction, and FTS5's merging on again.  Left to
        FTS5, a merge falls into whichever write, a batch or a writer's insert, finds too many
        segments, and holds the lock for it: 100 to 340 ms."""
        fts = retention_sql.fts_table(table) if self.dialect == "sqlite" else None
        if fts is None:
            yield None
            return
        with retention_sql.cleaning(self.db.engine.url.database):  # (if killed: see migrate)
            with self._blocking("apply retention"), self.db.write() as conn:
                retention_sql.set_merging(conn, fts, retention_sql.CLEANUP_MERGING)
            try:
                yield lambda conn: retention_sql.merge_step(conn, fts)
                self._in_batches(
                    lambda conn, n: n if retention_sql.merge_step(conn, fts) else 0, None,
                    size=1,
                )  # fmt: skip
            finally:  # on again once the merging is done (or a batch failed)
                with self._blocking("apply retention"), self.db.write() as conn:
                    retention_sql.set_merging(conn, fts, retention_sql.FTS5_MERGING)

    def _in_batches(
        self, step: Callable[[Any, int], int], on_progress: Callable[[int], None] | None,
        *, size: int | None = None, between: Callable[[Any], Any] | None = None,
    ) -> int:
        """Run ``step(conn, size)`` (it deletes up to ``size`` rows) in one short transaction
        after another until it deletes fewer than ``size``; sizes adapt so that each lasts
        about ``RETENTION_BATCH_SECONDS``; the database is then left to others for
        ``RETENTION_PAUSE`` times as long (on SQLite, the WAL is checkpointed meanwhile, by this
        connection, so that a writer's commit does not do it, and ``between`` runs in a short
        transaction of its own)."""
        fixed = size is not None
        total, size = 0, size or min(200, self.cleanup_batch_size)
        sqlite = self.dialect == "sqlite"
        pause = RETENTION_PAUSE.get(self.dialect, 1.0)
        while True:
            started = time.monotonic()
            with self._blocking("apply retention"), self.db.write() as conn:
                gone = step(conn, size)
            took = time.monotonic() - started
            total += gone
            if on_progress is not None and gone:
                on_progress(gone)
            if gone < size:
                return total
            if not fixed:
                size = max(20, min(self.cleanup_batch_size,
                                   int(size * RETENTION_BATCH_SECONDS / max(took, 1e-4))))
            resume = started + took * (1 + pause)
            if sqlite:
                with self.db.cursor() as cur:
                    cur.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            if between is not None:
                with self._blocking("apply retention"), self.db.write() as conn:
                    between(conn)
            time.sleep(max(0.0, resume - time.monotonic()))

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
        """Delete completed and failed results that finished before ``older_than`` (running and
        interrupted results stay)."""
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
            if is_locked(cause):
                raise StorageError(
                    f"could not {action}: {where} is locked ({locked_hint()})"
                ) from cause
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
    aresolve_interrupted = async_twin(resolve_interrupted)
    asearch = async_twin(search)
    astats = async_twin(stats)
    aset_retention_policy = async_twin(set_retention_policy)
    aget_retention_policies = async_twin(get_retention_policies)
    adelete_retention_policy = async_twin(delete_retention_policy)
    aapply_retention = async_twin(apply_retention)
    aunindexed = async_twin(unindexed)
    alatest_checkpoint_id = async_twin(latest_checkpoint_id)
    aping = async_twin(ping)


class Inserted(NamedTuple):
    """What `insert_events` did: rows stored, rows the database refused, and why."""

    stored: int
    refused: int
    reason: str | None


class _Refused(Exception):
    """The database is there but refused a row (a constraint, a value it cannot hold)."""


def _stats_rows(conn: Any, scope: Any, by: str | None) -> dict[Any, dict[str, Any]]:
    """The figures of each group, from the sources that apply to the grouping."""
    found: dict[Any, dict[str, Any]] = {}
    sources = stats_sql.SOURCES[by]
    if "runs" in sources:
        for row in stats_sql.run_stats(conn, scope, by):
            p50, p95, p99 = stats_sql.percentiles_of(row)
            figures = {name: row._mapping[name] for name in (
                "runs", "completed", "failed", "interrupted", "running", "input_tokens",
                "output_tokens", "total_tokens")}
            found.setdefault(row.key, {}).update(
                figures, run_p50_ms=p50, run_p95_ms=p95, run_p99_ms=p99)
    if "tools" in sources:
        for row in stats_sql.tool_stats(conn, scope, by):
            p50, p95, p99 = stats_sql.percentiles_of(row)
            found.setdefault(row.key, {}).update(
                tool_calls=row.calls, tool_errors=row.errors, tool_p50_ms=p50,
                tool_p95_ms=p95, tool_p99_ms=p99)
    if "models" in sources:
        for row in stats_sql.model_stats(conn, scope, by):
            figures = {"model_calls": row.calls, "model_errors": row.errors}
            if by == "model":  # tokens of the model's calls (else: of the runs)
                figures.update(input_tokens=row.input_tokens, output_tokens=row.output_tokens,
                               total_tokens=row.total_tokens)
            found.setdefault(row.key, {}).update(figures)
    return found


def _stats_row(by: str | None, key: Any, figures: dict[str, Any]) -> StatsRow:
    """A group's figures with their rates, zeros where a source that applies found nothing."""
    sources = stats_sql.SOURCES[by]
    values = dict(figures)
    if "runs" in sources:
        for name in ("runs", "completed", "failed", "interrupted", "running", "input_tokens",
                     "output_tokens", "total_tokens"):
            values[name] = int(values.get(name) or 0)
        stopped = values["completed"] + values["failed"] + values["interrupted"]
        if stopped:
            values.update(success_rate=values["completed"] / stopped,
                          failure_rate=values["failed"] / stopped,
                          interrupt_rate=values["interrupted"] / stopped)
    if "tools" in sources:
        values["tool_calls"] = int(values.get("tool_calls") or 0)
        values["tool_errors"] = int(values.get("tool_errors") or 0)
        if values["tool_calls"]:
            values["tool_error_rate"] = values["tool_errors"] / values["tool_calls"]
    if "models" in sources:
        values["model_calls"] = int(values.get("model_calls") or 0)
        values["model_errors"] = int(values.get("model_errors") or 0)
        if by == "model":
            for name in ("input_tokens", "output_tokens", "total_tokens"):
                values[name] = int(values.get(name) or 0)
    if by in ("hour", "day") and key is not None:
        key = stats_sql.bucket_start(key)
    return StatsRow(key=key, **values)


def _policy_agent(agent_id: str) -> str:
    key = check.key("agent_id", agent_id)
    if key == DEFAULT_POLICY:
        raise ValidationError(
            f"{DEFAULT_POLICY!r} names the default policy: pass agent_id=None for it"
        )
    return key  # type: ignore[return-value]


def _policy(row: Any) -> RetentionPolicy:
    def age(seconds: float | None) -> dt.timedelta | None:
        return None if seconds is None else dt.timedelta(seconds=seconds)

    return RetentionPolicy(
        agent_id=None if row.agent_id == DEFAULT_POLICY else row.agent_id,
        results=age(row.keep_results), logs=age(row.keep_logs), traces=age(row.keep_traces),
        checkpoints=age(row.keep_checkpoints), updated_at=as_utc(row.updated_at),
    )


def _progress(
    on_progress: Callable[[str, int], None] | None, kind: str
) -> Callable[[int], None] | None:
    return None if on_progress is None else (lambda n: on_progress(kind, n))


def _types(types: str | Iterable[str] | None) -> tuple[str, ...] | None:
    """The ``types`` filter of `search`: trace types, and ``"log"`` for log lines."""
    if types is None:
        return None
    try:
        chosen = (types,) if isinstance(types, str) else tuple(types)
    except TypeError:
        raise ValidationError(
            f"types must be a trace type, \"log\", or a list of them; got {shown(types)}"
        ) from None
    return tuple(t if t == "log" else check.trace_type(t) for t in chosen)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip() or "?").splitlines()[0]
