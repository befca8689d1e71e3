"""SQL for the two event tables, `execution_logs` and `agent_traces`: append, page, expire."""

from __future__ import annotations

import datetime as dt
import functools
import operator
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import JSON, Connection, Table, select

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
    ingest needs (tens of thousands of rows per second).  Rows have every column as a key (as
    `ResultsPersistenceService.trace_row` and ``log_row`` make them).
    """
    if not rows:
        return
    encode = _encoder(conn.dialect, table)
    if conn.dialect.name == "postgresql":
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(c.name) for c in table.c)
        sql = f"COPY {quote(table.name)} ({names}) FROM STDIN"
        raw = conn.connection.dbapi_connection
        with raw.cursor() as cursor, cursor.copy(sql) as copy:  # type: ignore[union-attr]
            write = copy.write_row
            for r in rows:
                write(encode(r))
    else:
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(c.name) for c in table.c)
        marks = ", ".join("?" for _ in table.c)
        sql = f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})"
        conn.exec_driver_sql(sql, [encode(r) for r in rows])


@functools.cache
def _encoder(dialect: Any, table: Table) -> Callable[[dict[str, Any]], tuple[Any, ...]]:
    """A row's values in column order, each as the driver takes it.

    On SQLite that is the column type's own bind processing; ``COPY`` on PostgreSQL takes
    datetimes and ids as they are, and JSON as text.
    """
    get = operator.itemgetter(*(c.name for c in table.c))
    if dialect.name == "postgresql":
        steps = [(i, dumps) for i, c in enumerate(table.c) if isinstance(c.type, JSON)]
    else:
        steps = [
            (i, p) for i, c in enumerate(table.c)
            if (p := c.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        ]

    def encode(row: dict[str, Any]) -> tuple[Any, ...]:
        values = list(get(row))
        for i, step in steps:
            if values[i] is not None:
                values[i] = step(values[i])
        return tuple(values)

    return encode


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
