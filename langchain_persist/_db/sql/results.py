"""SQL for `agent_results`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, bindparam, case, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

from ..._records import AgentResult, Page
from ..schema import agent_results as t
from ..schema import checkpoint_states
from .paging import after_cursor, count_where, delete_batch, encode_cursor
from .prepared import prepared

FINISHED = ("completed", "failed")
STOPPED = (*FINISHED, "interrupted")  # a run that is no longer running: it has a completed_at

# Creating and finishing a result are blocking writes on the caller's thread (a callback
# handler writes one per run), so they are prepared statements on a raw cursor (see
# `_prepared`): on PostgreSQL one autocommitted round trip each.


def _bind(name: str) -> Any:
    return bindparam(name, type_=t.c[name].type)


@prepared
def _insert_statement(dialect: str, once: bool) -> Any:
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(t).values({c.name: _bind(c.name) for c in t.c})
    if once:
        stmt = stmt.on_conflict_do_nothing(index_elements=[t.c.id])
    return stmt.returning(*t.c)


def insert_result(
    cur: Any, dialect: Dialect, values: dict[str, Any], *, once: bool = False
) -> AgentResult:
    """Insert one result row and return it; with ``once``, a row of the same id already
    stored is returned as it is (a retried create makes no second row)."""
    rows = _insert_statement(dialect, once).fetch(cur, values)
    if rows:
        return AgentResult.from_row(rows[0])
    found = get_result(cur, dialect, values["id"])
    assert found is not None  # the conflict was on this id
    return found


@prepared
def _get_statement(dialect: str) -> Any:
    return select(t).where(t.c.id == _bind("id"))


def get_result(cur: Any, dialect: Dialect, result_id: str) -> AgentResult | None:
    """One result by id, or None."""
    rows = _get_statement(dialect).fetch(cur, {"id": result_id})
    return AgentResult.from_row(rows[0]) if rows else None


@prepared
def _update_statement(
    dialect: str, columns: tuple[str, ...], status: str | None, merge: bool
) -> Any:
    values = {name: _bind(name) for name in columns}
    where = t.c.id == _bind("id")
    if merge:  # PostgreSQL: a top-level merge of JSONB objects
        values["metadata"] = t.c.metadata.op("||")(_bind("metadata"))
    if status is not None:
        values["status"] = _bind("status")
        # a result moves from running to any status, from interrupted to completed or failed
        # (a later run resumed it), and stays what it is
        moves = (t.c.status == _bind("status")) | (t.c.status == "running")
        if status in FINISHED:
            moves |= t.c.status == "interrupted"
        where &= moves
        if status in STOPPED:  # when the run stopped: kept when it had stopped already
            values["completed_at"] = case(
                (t.c.status == "running", _bind("updated_at")), else_=t.c.completed_at
            )
    values["updated_at"] = _bind("updated_at")
    return update(t).where(where).values(values).returning(*t.c)


def update_result(
    cur: Any,
    dialect: Dialect,
    result_id: str,
    changes: dict[str, Any],
    *,
    status: str | None,
    patch: dict[str, Any],
    now: dt.datetime,
) -> AgentResult | None:
    """Set ``changes``, merge ``patch`` into the metadata and move to ``status`` (if given).

    One statement on PostgreSQL; on SQLite the metadata is merged in the transaction the caller
    holds.  None when no row changed: the id is unknown, or the row cannot move to ``status``
    (running may become anything, interrupted may become completed or failed; completed and
    failed are final).
    """
    merge = bool(patch) and dialect.name == "postgresql"
    if patch and not merge:
        current = get_result(cur, dialect, result_id)
        if current is None:
            return None
        changes = {**changes, "metadata": {**current.metadata, **patch}}
    stmt = _update_statement(dialect, tuple(sorted(changes)), status, merge)
    params = {**changes, "id": result_id, "status": status, "updated_at": now}
    if merge:
        params["metadata"] = patch
    rows = stmt.fetch(cur, params)
    return AgentResult.from_row(rows[0]) if rows else None


def resolve_interrupted(
    conn: Connection,
    thread_id: str,
    *,
    status: str,
    resumed_by: str | None,
    keep: str | None,
    now: dt.datetime,
) -> list[str]:
    """Move the ``interrupted`` results of a thread (all but ``keep``, a result id) to
    ``status``, noting ``resumed_by`` (an execution id) in their metadata; their ids.

    ``completed_at`` keeps the moment each run stopped; the metadata is merged row by row on
    SQLite, in the statement on PostgreSQL.
    """
    where = (t.c.thread_id == thread_id) & (t.c.status == "interrupted")
    if keep is not None:
        where &= t.c.id != keep
    patch = {"resumed_by": resumed_by}
    values: dict[str, Any] = {"status": status, "updated_at": now}
    if conn.dialect.name == "postgresql":
        patched = bindparam("patch", patch, type_=t.c.metadata.type)
        values["metadata"] = t.c.metadata.op("||")(patched)
        return [str(r.id) for r in conn.execute(update(t).where(where).values(values)
                                                .returning(t.c.id))]
    done = []
    for row in conn.execute(select(t.c.id, t.c.metadata).where(where)).all():
        conn.execute(update(t).where(t.c.id == row.id)
                     .values({**values, "metadata": {**row.metadata, **patch}}))
        done.append(str(row.id))
    return done


def list_results(
    conn: Connection,
    *,
    agent_id: str | None = None,
    execution_id: str | None = None,
    thread_id: str | None = None,
    status: str | None = None,
    limit: int,
    cursor: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
) -> Page[AgentResult]:
    """Results newest first, filtered (started in ``[since, until)``), one page at a time."""
    query = select(t).order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit + 1)
    if since is not None:
        query = query.where(t.c.created_at >= since)
    if until is not None:
        query = query.where(t.c.created_at < until)
    for column, value in (
        (t.c.agent_id, agent_id),
        (t.c.execution_id, execution_id),
        (t.c.thread_id, thread_id),
        (t.c.status, status),
    ):
        if value is not None:
            query = query.where(column == value)
    if cursor:
        query = query.where(after_cursor(t.c.created_at, t.c.id, cursor, descending=True))
    rows = [AgentResult.from_row(r) for r in conn.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].created_at, rows[-1].id) if more else None)


def delete_finished_before(conn: Connection, cutoff: dt.datetime, batch: int) -> int:
    """Delete one batch of completed or failed results that finished before ``cutoff``."""
    return delete_batch(conn, t, _finished_before(cutoff), batch)


def count_finished_before(conn: Connection, cutoff: dt.datetime) -> int:
    """How many completed or failed results finished before ``cutoff``."""
    return count_where(conn, t, _finished_before(cutoff))


def _finished_before(cutoff: dt.datetime) -> Any:
    return t.c.status.in_(FINISHED) & (t.c.completed_at < cutoff)


def mark_running_before(
    conn: Connection,
    cutoff: dt.datetime,
    values: dict[str, Any],
    *,
    agent_id: str | None = None,
) -> list[str]:
    """Set ``values`` on results still ``running`` and unchanged since ``cutoff``; their ids."""
    where = (t.c.status == "running") & (t.c.updated_at < cutoff)
    if agent_id is not None:
        where &= t.c.agent_id == agent_id
    rows = conn.execute(update(t).where(where).values(values).returning(t.c.id))
    return [str(r.id) for r in rows]


@prepared
def _latest_checkpoint_statement(dialect: str) -> Any:
    c = checkpoint_states.c
    return (
        select(c.checkpoint_id)
        .where(c.thread_id == bindparam("thread_id"), c.checkpoint_ns == bindparam("ns"))
        # the whole primary key, so that the planner walks it backwards and stops at once
        .order_by(c.thread_id.desc(), c.checkpoint_ns.desc(), c.checkpoint_id.desc())
        .limit(1)
    )


def latest_checkpoint_id(
    cur: Any, dialect: Dialect, thread_id: str, checkpoint_ns: str = ""
) -> str | None:
    """The newest checkpoint id of a thread, for a result's ``checkpoint_id``.

    LangGraph's checkpoint ids sort by creation time; rows are those `PersistSaver` (or
    `save_checkpoint_state`) wrote.
    """
    rows = _latest_checkpoint_statement(dialect).fetch(
        cur, {"thread_id": thread_id, "ns": checkpoint_ns}
    )
    return rows[0].checkpoint_id if rows else None
