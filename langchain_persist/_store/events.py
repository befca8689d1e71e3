"""SQL for the two event tables, `execution_logs` and `agent_traces`: append, page, expire."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Connection, Table, insert, select

from .._records import AgentTrace, ExecutionLog, Page
from .._sanitize import dumps
from .._schema import agent_traces, execution_logs
from ._paging import after_cursor, count_where, delete_batch, encode_cursor

RECORDS: dict[Table, type[ExecutionLog] | type[AgentTrace]] = {
    execution_logs: ExecutionLog,
    agent_traces: AgentTrace,
}


def insert_events(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Append rows in one statement: ``COPY`` on PostgreSQL, one ``executemany`` on SQLite.

    Both store exactly what ``conn.execute(insert(table), rows)`` would (the columns' own bind
    processing), at a fraction of its per-row cost, which the background writer's sustained
    ingest needs (tens of thousands of rows per second).
    """
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _copy_rows(conn, table, rows)
    elif conn.dialect.name == "sqlite":
        sql, columns = _bulk_insert(conn.dialect, table)
        procs = [(c.name, p) for c, p in columns]
        conn.exec_driver_sql(sql, [
            tuple(r.get(name) if p is None else p(r.get(name)) for name, p in procs)
            for r in rows
        ])
    else:  # pragma: no cover - only SQLite and PostgreSQL are supported
        conn.execute(insert(table), list(rows))


@functools.cache
def _bulk_insert(dialect: Any, table: Table) -> tuple[str, list[tuple[Any, Any]]]:
    """The positional INSERT of every column, and each column's bind processor."""
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c.name) for c in table.c)
    marks = ", ".join("?" for _ in table.c)
    processors = [(c, c.type.dialect_impl(dialect).bind_processor(dialect)) for c in table.c]
    return f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})", processors


def _copy_rows(conn: Connection, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """``COPY ... FROM STDIN`` in the open transaction; JSON columns go as JSON text."""
    columns = [(c.name, isinstance(c.type, JSON)) for c in table.c]
    quote = conn.dialect.identifier_preparer.quote
    sql = f"COPY {quote(table.name)} ({', '.join(quote(n) for n, _ in columns)}) FROM STDIN"
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cursor, cursor.copy(sql) as copy:  # type: ignore[union-attr]
        write = copy.write_row
        for r in rows:
            write([
                dumps(v) if is_json and v is not None else v
                for (name, is_json) in columns
                for v in (r.get(name),)
            ])


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


def count_before(conn: Connection, table: Table, cutoff: dt.datetime) -> int:
    """How many events are older than ``cutoff``."""
    return count_where(conn, table, table.c.timestamp < cutoff)
