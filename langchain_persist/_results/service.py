"""`ResultsPersistenceService`: the seed's service, every method with its async twin."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Table
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from .._aio import async_twin
from .._checkpoint.codec import load_values
from .._db.engine import Database, get_database, resolve_url
from .._db.migrate import ensure_schema
from .._db.schema import LOG_LEVELS, RESULT_STATUSES, agent_traces, execution_logs
from .._db.sql import checkpoints, events, results
from .._db.sql.paging import as_utc
from .._errors import NotFoundError, OwnershipError, StorageError, ValidationError
from .._ids import uuid7
from .._records import AgentResult, AgentTrace, CheckpointState, ExecutionLog, Page
from .._sanitize import clean_text, jsonable, to_text, truncate

logger = logging.getLogger("langchain_persist")

DEFAULT_TRACE_CONTENT_LIMIT = 1000
DEFAULT_CLEANUP_BATCH = 5000
MAX_PAGE = 10_000
_LEVEL_ALIASES = {"warning": "warn", "critical": "error", "exception": "error"}
_EVENT_TABLES = {"traces": agent_traces, "logs": execution_logs}

Age = dt.datetime | dt.timedelta


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key(field: str, value: Any, *, required: bool = True) -> str | None:
    """Validate an id-like field: a non-empty string of at most 255 characters."""
    if type(value) is str and 0 < len(value) <= 255 and "\x00" not in value and not value.isspace():
        return value  # the common case, checked at a quarter of the cost
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{field} must be a non-empty string, got {value!r}")
    if len(value) > 255:
        raise ValidationError(f"{field} is {len(value)} characters long; the limit is 255")
    return clean_text(value)


def _level(value: str) -> str:
    """A log level, its common aliases (``warning``, ``critical``, ``exception``) mapped."""
    level = _LEVEL_ALIASES.get(value, value)
    if level not in LOG_LEVELS:
        raise ValidationError(f"level must be one of {', '.join(LOG_LEVELS)}; got {value!r}")
    return level


def _uuid(value: Any) -> str | None:
    """A result id in canonical form, or None when it cannot be one (so it matches no row)."""
    try:
        return str(uuid.UUID(str(value)))
    except ValueError:
        return None


def _status(value: str) -> str:
    if value not in RESULT_STATUSES:
        raise ValidationError(f"status must be one of {', '.join(RESULT_STATUSES)}; got {value!r}")
    return value


def _metadata(value: Mapping[str, Any] | None) -> dict[str, Any]:
    if value is None:
        return {}
    if type(value) is dict:
        return jsonable(value)
    if not isinstance(value, Mapping):
        raise ValidationError(f"metadata must be a mapping, got {type(value).__name__}")
    return jsonable(value)


def _limit(limit: int) -> int:
    if not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be an integer from 1 to {MAX_PAGE}, got {limit!r}")
    return limit


def _checkpoint_view(conn: Any, row: Any) -> dict[str, Any]:
    """The channel values of a checkpoint PersistSaver stored, as JSON (LangGraph's serializer)."""
    from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer

    values, _ = checkpoints.get_values_and_writes(
        conn.connection.cursor(), conn.dialect, row.thread_id, row.checkpoint_ns,
        row.versions.items(), [],
    )
    return jsonable(load_values(JsonPlusSerializer(), row.versions, values))


def cutoff(older_than: Age) -> dt.datetime:
    """The moment before which rows count as old: a datetime, or an age back from now."""
    if isinstance(older_than, dt.timedelta):
        if older_than < dt.timedelta(0):
            raise ValidationError(f"older_than must not be negative, got {older_than}")
        return _now() - older_than
    if isinstance(older_than, dt.datetime):
        return as_utc(older_than)
    raise ValidationError(
        f"older_than must be a datetime or a timedelta, got {type(older_than).__name__}"
    )


class ResultsPersistenceService:
    """Results, logs, traces and checkpoint states of agent runs, in SQLite or PostgreSQL.

    Result and checkpoint writes are blocking: a failure raises a `PersistenceError`.  Log and
    trace writes never raise: a row that cannot be written is counted in `dropped` and reported
    through the ``langchain_persist`` logger.  The database is opened (and its schema upgraded,
    unless ``migrate=False``) on first use.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        trace_content_limit: int = DEFAULT_TRACE_CONTENT_LIMIT,
        migrate: bool = True,
        cleanup_batch_size: int = DEFAULT_CLEANUP_BATCH,
    ) -> None:
        self._url = url
        self._db: Database | None = None
        self._open_lock = threading.Lock()
        self.migrate = migrate
        self.trace_content_limit = trace_content_limit
        self.cleanup_batch_size = cleanup_batch_size
        self.dropped: Counter[str] = Counter()

    def __repr__(self) -> str:
        return f"ResultsPersistenceService({self._db or self._url!r})"

    @property
    def db(self) -> Database:
        """The database, opened (and its schema checked) on first use."""
        if self._db is None:
            with self._open_lock:
                if self._db is None:
                    db = get_database(self._url)
                    ensure_schema(db, migrate=self.migrate)
                    self._db = db
        return self._db

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
    ) -> AgentResult:
        """Create a result record (status ``running`` unless told otherwise) and return it."""
        now = _now()
        values = {
            "id": uuid7(),
            "agent_id": _key("agent_id", agent_id),
            "execution_id": _key("execution_id", execution_id, required=False),
            "thread_id": _key("thread_id", thread_id, required=False),
            "checkpoint_id": _key("checkpoint_id", checkpoint_id, required=False),
            "quest_id": _key("quest_id", quest_id, required=False),
            "result": None if result is None else to_text(result),
            "metadata": _metadata(metadata),
            "status": _status(status),
            "error": None if error is None else to_text(error),
            "created_at": now,
            "updated_at": now,
            "completed_at": now if status != "running" else None,
        }
        with self._blocking("save the result"), self.db.cursor(write=True) as cur:
            return results.insert_result(cur, self.db.fast.dialect, values)

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
            name: _key(name, value)
            for name, value in (
                ("execution_id", execution_id),
                ("thread_id", thread_id),
                ("checkpoint_id", checkpoint_id),
                ("quest_id", quest_id),
            )
            if value is not None
        }
        if result is not None:
            changes["result"] = to_text(result)
        if error is not None:
            changes["error"] = to_text(error)
        patch = _metadata(metadata)
        if status is not None:
            _status(status)
        key = _uuid(result_id)
        dialect = self.db.fast.dialect
        with self._blocking("update the result"), self.db.cursor(write=True) as cur:
            updated = key and results.update_result(
                cur, dialect, key, changes, status=status, patch=patch, now=_now()
            )
            if updated:
                return updated
            current = key and results.get_result(cur, dialect, key)
            if not current:
                raise NotFoundError(f"no result with id {result_id!r}")
            raise ValidationError(
                f"result {result_id} is {current.status}; it cannot become {status} "
                "(save a new result for a new run)"
            )

    def get_result(self, result_id: str) -> AgentResult | None:
        """A result by id, or None."""
        key = _uuid(result_id)
        if key is None:
            return None
        with self.db.cursor() as cur:
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
        if status is not None:
            _status(status)
        with self.db.read() as conn:
            return results.list_results(
                conn, agent_id=agent_id, status=status, limit=_limit(limit), cursor=cursor
            )

    def find_results(
        self,
        *,
        agent_id: str | None = None,
        execution_id: str | None = None,
        thread_id: str | None = None,
        status: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Page[AgentResult]:
        """Results newest first, filtered by any of agent, execution, thread and status."""
        if status is not None:
            _status(status)
        with self.db.read() as conn:
            return results.list_results(
                conn,
                agent_id=agent_id,
                execution_id=execution_id,
                thread_id=thread_id,
                status=status,
                limit=_limit(limit),
                cursor=cursor,
            )

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
        when, now = cutoff(older_than), _now()
        values = {
            "status": "failed",
            "error": to_text(error),
            "completed_at": now,
            "updated_at": now,
        }
        with self._blocking("mark stale results"), self.db.write() as conn:
            return results.mark_running_before(conn, when, values, agent_id=agent_id)

    def latest_checkpoint_id(self, thread_id: str, checkpoint_ns: str = "") -> str | None:
        """The newest checkpoint id stored for a thread (by `PersistSaver`), or None."""
        with self.db.cursor() as cur:
            return results.latest_checkpoint_id(cur, self.db.fast.dialect, thread_id, checkpoint_ns)

    # -- logs and traces (never raise) --------------------------------------------------------

    def save_log(self, **fields: Any) -> ExecutionLog | None:
        """Save a log line (the fields of `log_row`); on any failure count it and return None."""
        return self._save_one(self.log_row, self.save_logs, ExecutionLog, "logs", fields)

    def save_trace(self, **fields: Any) -> AgentTrace | None:
        """Save a trace event (the fields of `trace_row`: content truncated); on any failure
        count it and return None."""
        return self._save_one(self.trace_row, self.save_traces, AgentTrace, "traces", fields)

    def _save_one(
        self,
        make_row: Callable[..., dict[str, Any]],
        save: Callable[[list[dict[str, Any]]], int],
        record: type[Any],
        kind: str,
        fields: dict[str, Any],
    ) -> Any:
        try:
            row = make_row(**fields)
        except (ValidationError, TypeError) as exc:  # TypeError: a field it does not take
            self._drop(kind, 1, exc)
            return None
        return record(**row) if save([row]) else None

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
    ) -> dict[str, Any]:
        """Validate a log line into a row for `save_logs` (raises `ValidationError`)."""
        return {
            "id": uuid7(),
            "agent_id": _key("agent_id", agent_id),
            "execution_id": _key("execution_id", execution_id),
            "level": _level(level),
            "message": to_text(message),
            "source": _key("source", source, required=False),
            "metadata": _metadata(metadata),
            "timestamp": as_utc(timestamp) if timestamp else _now(),
        }

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
    ) -> dict[str, Any]:
        """Validate a trace event into a row for `save_traces` (raises `ValidationError`)."""
        meta = _metadata(metadata)
        text = None
        if content is not None:
            text, length = truncate(to_text(content), self.trace_content_limit)
            if length is not None:
                meta = {**meta, "truncated": True, "content_length": length}
        if duration is not None and (not isinstance(duration, int | float) or duration < 0):
            raise ValidationError(f"duration must be a non-negative number of ms, got {duration!r}")
        if not isinstance(type, str) or not 0 < len(type) <= 32:
            raise ValidationError(f"type must be a name such as 'tool_start', got {type!r}")
        return {
            "id": uuid7(),
            "agent_id": _key("agent_id", agent_id),
            "execution_id": _key("execution_id", execution_id),
            "run_id": _key("run_id", None if run_id is None else str(run_id), required=False),
            "parent_run_id": _key(
                "parent_run_id",
                None if parent_run_id is None else str(parent_run_id),
                required=False,
            ),
            "type": type,
            "name": _key("name", name, required=False),
            "content": text,
            "metadata": meta,
            "duration": None if duration is None else float(duration),
            "timestamp": as_utc(timestamp) if timestamp else _now(),
        }

    def save_logs(self, rows: Iterable[dict[str, Any]]) -> int:
        """Save rows made by `log_row` in one statement; return how many were stored."""
        return self._append(execution_logs, "logs", list(rows))

    def save_traces(self, rows: Iterable[dict[str, Any]]) -> int:
        """Save rows made by `trace_row` in one statement; return how many were stored."""
        return self._append(agent_traces, "traces", list(rows))

    def event_format(self) -> events.EventFormat:
        """How this database's driver takes an event row's timestamp and id (for
        `save_event_values`)."""
        return events.event_format(self.db.dialect)

    def save_event_values(self, kind: str, values: list[tuple[Any, ...]]) -> int:
        """Save ``"traces"`` or ``"logs"`` rows already in the driver's form, in column order
        (as the background writer builds them), in one statement; return how many were
        stored."""
        return self._append(_EVENT_TABLES[kind], kind, values, encoded=True)

    def get_execution_logs(
        self, execution_id: str, limit: int = 1000, *, cursor: str | None = None
    ) -> Page[ExecutionLog]:
        """An execution's logs, oldest first, in the order they were saved."""
        with self.db.read() as conn:
            return events.list_events(
                conn, execution_logs, execution_id, limit=_limit(limit), cursor=cursor
            )

    def get_execution_traces(
        self, execution_id: str, limit: int = 1000, *, cursor: str | None = None
    ) -> Page[AgentTrace]:
        """An execution's traces, oldest first, in the order they were saved."""
        with self.db.read() as conn:
            return events.list_events(
                conn, agent_traces, execution_id, limit=_limit(limit), cursor=cursor
            )

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
            "agent_id": _key("agent_id", agent_id),
            "thread_id": _key("thread_id", thread_id),
            "checkpoint_ns": clean_text(checkpoint_ns),
            "checkpoint_id": _key("checkpoint_id", checkpoint_id),
            "parent_checkpoint_id": _key(
                "parent_checkpoint_id", parent_checkpoint_id, required=False
            ),
            "state": jsonable(state),
            "metadata": _metadata(metadata),
            "created_at": _now(),
        }
        with self._blocking("save the checkpoint state"), self.db.write() as conn:
            owner = checkpoints.owner_of(conn, thread_id, checkpoint_ns, checkpoint_id)
            if owner is not None and owner.agent_id not in (None, agent_id):
                raise OwnershipError(
                    f"checkpoint {checkpoint_id!r} belongs to agent {owner.agent_id!r}, "
                    f"not {agent_id!r}"
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
        with self.db.read() as conn:
            rows = checkpoints.find_state_rows(conn, checkpoint_id, thread_id=thread_id)
            if not rows:
                return None
            row = rows[0]
            if agent_id is not None and row.agent_id not in (None, agent_id):
                raise OwnershipError(
                    f"checkpoint {checkpoint_id!r} belongs to agent {row.agent_id!r}, "
                    f"not {agent_id!r}"
                )
            # a LangGraph checkpoint (written by PersistSaver): its channel values as JSON
            state = row.state if row.checkpoint is None else _checkpoint_view(conn, row)
        return dataclasses.replace(CheckpointState.from_row(row), state=state)

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

    def _append(self, table: Table, kind: str, rows: list[Any], *, encoded: bool = False) -> int:
        if not rows:
            return 0
        insert = events.insert_values if encoded else events.insert_events
        try:
            with self.db.write() as conn:
                insert(conn, table, rows)
        except Exception as exc:
            self._drop(kind, len(rows), exc)
            return 0
        return len(rows)

    def _drop(self, kind: str, count: int, exc: BaseException) -> None:
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
        """Turn a database failure of a blocking write into a `StorageError` naming the fix."""
        try:
            yield
        except (SQLAlchemyError, StorageError) as exc:
            cause = exc.__cause__ if isinstance(exc, StorageError) and exc.__cause__ else exc
            where = make_url(resolve_url(self._url)).render_as_string()
            raise StorageError(
                f"could not {action} in {where}: {type(cause).__name__}: "
                f"{(str(cause).strip() or '?').splitlines()[0]} (is the database up and its "
                "schema current? try `langchain-persist db check`)"
            ) from cause

    def close(self) -> None:
        """Release this service's pooled connections."""
        if self._db is not None:
            self._db.dispose()

    asave_result = async_twin(save_result)
    aupdate_result = async_twin(update_result)
    aget_result = async_twin(get_result)
    aget_agent_results = async_twin(get_agent_results)
    afind_results = async_twin(find_results)
    asave_log = async_twin(save_log)
    asave_trace = async_twin(save_trace)
    asave_logs = async_twin(save_logs)
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
