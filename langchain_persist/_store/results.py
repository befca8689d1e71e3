"""SQL for `agent_results`."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, insert, select, update

from .._records import AgentResult, Page
from .._schema import agent_results as t
from .._schema import checkpoint_states
from ._paging import after_cursor, count_where, delete_batch, encode_cursor

FINISHED = ("completed", "failed")


def insert_result(conn: Connection, values: dict[str, Any]) -> AgentResult:
    """Insert one result row and return it."""
    row = conn.execute(insert(t).values(values).returning(*t.c)).one()
    return AgentResult.from_row(row)


def get_result(conn: Connection, result_id: str, *, for_update: bool = False) -> AgentResult | None:
    """One result by id, or None."""
    query = select(t).where(t.c.id == result_id)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).one_or_none()
    return AgentResult.from_row(row) if row else None


def update_result(conn: Connection, result_id: str, values: dict[str, Any]) -> AgentResult:
    """Set ``values`` on one result and return the new row."""
    row = conn.execute(update(t).where(t.c.id == result_id).values(values).returning(*t.c)).one()
    return AgentResult.from_row(row)


def list_results(
    conn: Connection,
    *,
    agent_id: str | None = None,
    execution_id: str | None = None,
    thread_id: str | None = None,
    status: str | None = None,
    limit: int,
    cursor: str | None = None,
) -> Page[AgentResult]:
    """Results newest first, filtered, one page at a time."""
    query = select(t).order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit + 1)
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


def latest_checkpoint_id(conn: Connection, thread_id: str, checkpoint_ns: str = "") -> str | None:
    """The newest checkpoint id of a thread, for a result's ``checkpoint_id``.

    LangGraph's checkpoint ids sort by creation time; rows are those `PersistSaver` (or
    `save_checkpoint_state`) wrote.
    """
    c = checkpoint_states.c
    return conn.execute(
        select(c.checkpoint_id)
        .where(c.thread_id == thread_id, c.checkpoint_ns == checkpoint_ns)
        .order_by(c.checkpoint_id.desc())
        .limit(1)
    ).scalar_one_or_none()
