"""SQL for the two event tables, `execution_logs` and `agent_traces`: append, page, expire."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Table, insert, select

from .._records import AgentTrace, ExecutionLog, Page
from .._schema import agent_traces, execution_logs
from ._paging import after_cursor, delete_batch, encode_cursor

RECORDS: dict[Table, type[ExecutionLog] | type[AgentTrace]] = {
    execution_logs: ExecutionLog,
    agent_traces: AgentTrace,
}


def insert_events(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Append rows (one statement, batched by the driver)."""
    if rows:
        conn.execute(insert(table), list(rows))


def list_events(
    conn: Connection, table: Table, execution_id: str, *, limit: int, cursor: str | None = None
) -> Page[Any]:
    """An execution's events oldest first (ties broken by the time-ordered id)."""
    t, record = table, RECORDS[table]
    query = (
        select(t)
        .where(t.c.execution_id == execution_id)
        .order_by(t.c.timestamp, t.c.id)
        .limit(limit + 1)
    )
    if cursor:
        query = query.where(after_cursor(t.c.timestamp, t.c.id, cursor, descending=False))
    rows = [record.from_row(r) for r in conn.execute(query)]
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(rows, encode_cursor(rows[-1].timestamp, rows[-1].id) if more else None)


def delete_before(conn: Connection, table: Table, cutoff: dt.datetime, batch: int) -> int:
    """Delete one batch of events older than ``cutoff``."""
    return delete_batch(conn, table, table.c.timestamp < cutoff, batch)
