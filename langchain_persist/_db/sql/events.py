"""SQL for the two event tables, `execution_logs` and `agent_traces`: append, page, expire."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Connection, Table, select

from ..._ids import uuid7, uuid7_hex
from ..._records import AgentTrace, ExecutionLog, Page
from ..schema import agent_traces, execution_logs
from . import search
from .paging import after_cursor, count_where, delete_batch, encode_cursor

RECORDS: dict[Table, type[ExecutionLog] | type[AgentTrace]] = {
    execution_logs: ExecutionLog,
    agent_traces: AgentTrace,
}


def insert_values(
    conn: Connection, table: Table, values: Sequence[Sequence[Any]], *,
    skip_existing: bool = False,
) -> int:
    """Append rows given as the driver takes them, in column order (see `EventFormat`), in one
    statement: ``COPY`` on PostgreSQL, one ``executemany`` on SQLite; return how many were
    added.

    Both store exactly what ``conn.execute(insert(table), rows)`` would, at a fraction of its
    per-row cost, which the background writer's sustained ingest needs (tens of thousands of
    rows per second).  ``skip_existing`` leaves out rows already stored (same key): what a
    replay of the writer's spool needs, at the cost of an ``INSERT`` per row on PostgreSQL.
    On SQLite the new rows are then added to the search index, in one statement.
    """
    if not values:
        return 0
    quote = conn.dialect.identifier_preparer.quote
    names = ", ".join(quote(c.name) for c in table.c)
    if conn.dialect.name == "postgresql" and not skip_existing:
        raw = conn.connection.dbapi_connection
        with raw.cursor() as cursor, cursor.copy(  # type: ignore[union-attr]
            f"COPY {quote(table.name)} ({names}) FROM STDIN"
        ) as copy:
            write = copy.write_row
            for row in values:
                write(row)
        return len(values)
    rows = [tuple(v) for v in values] if skip_existing else list(values)
    if conn.dialect.name == "postgresql":
        marks = ", ".join("%s" for _ in table.c)
        done = conn.exec_driver_sql(f"INSERT INTO {quote(table.name)} ({names}) VALUES "
                                    f"({marks}) ON CONFLICT DO NOTHING", rows)
        return done.rowcount if done.rowcount >= 0 else len(rows)
    # SQLite (one writer at a time: the new rows are those past the newest rowid before)
    newest = conn.exec_driver_sql(f"SELECT max(rowid) FROM {quote(table.name)}").scalar()
    marks = ", ".join("?" for _ in table.c)
    verb = "INSERT OR IGNORE" if skip_existing else "INSERT"
    done = conn.exec_driver_sql(f"{verb} INTO {quote(table.name)} ({names}) VALUES ({marks})",
                                rows)
    search.index_sqlite_rows(conn, table.name, after=newest or 0)
    return done.rowcount if done.rowcount >= 0 else len(rows)


class EventFormat(NamedTuple):
    """How a dialect's driver takes an event row's timestamp (seconds since the epoch, or a UTC
    datetime) and a new id: what the columns' own bind processing makes of them, at a fraction
    of its cost.  Event rows are built directly in this form (`TraceEvent.to_values`)."""

    timestamp: Callable[[float | dt.datetime], Any]
    new_id: Callable[[], str]
    from_spool: Callable[[list[Any]], tuple[Any, ...]]  # a row back from its JSON line
    # Under a sustained load, store the batches waiting in one transaction: on PostgreSQL,
    # where each commit waits for a WAL flush; not on SQLite, whose other writers (a run's
    # end, the saver) wait for the lock a longer transaction would hold.
    coalesce: bool


def event_format(dialect_name: str) -> EventFormat:
    """The `EventFormat` of ``"postgresql"`` or ``"sqlite"``."""
    if dialect_name == "postgresql":
        return _POSTGRES
    return _SQLITE


_second: tuple[int, str] = (0, "")


def _sqlite_timestamp(timestamp: float | dt.datetime) -> str:
    """The text SQLAlchemy stores on SQLite for this moment in UTC (``YYYY-MM-DD
    HH:MM:SS.ffffff``), rounded to the microsecond as ``datetime.fromtimestamp`` rounds it."""
    global _second
    if type(timestamp) is not float:
        return timestamp.strftime("%Y-%m-%d %H:%M:%S.%f")  # type: ignore[union-attr]
    whole = int(timestamp)
    micro = round((timestamp - whole) * 1e6)
    if micro == 1_000_000:
        whole, micro = whole + 1, 0
    second, text = _second
    if second != whole:  # one formatting per second of events
        text = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(whole))
        _second = (whole, text)
    return f"{text}.{micro:06d}"


def _postgres_timestamp(timestamp: float | dt.datetime) -> dt.datetime:
    if type(timestamp) is not float:
        return timestamp  # type: ignore[return-value]
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def _postgres_row(values: list[Any]) -> tuple[Any, ...]:
    values[1] = dt.datetime.fromisoformat(values[1])  # JSON wrote the timestamp as text
    return tuple(values)


_POSTGRES = EventFormat(_postgres_timestamp, uuid7, _postgres_row, coalesce=True)
_SQLITE = EventFormat(_sqlite_timestamp, uuid7_hex, tuple, coalesce=False)


def as_record(table: Table, values: Sequence[Any]) -> ExecutionLog | AgentTrace:
    """The record of a row given in the driver's form (see `EventFormat`): what reading the row
    back would give, without reading it back."""
    row = dict(zip(table.c.keys(), values, strict=True))
    at = row["timestamp"]
    row["timestamp"] = at if isinstance(at, dt.datetime) else dt.datetime.fromisoformat(at)
    row["id"] = str(uuid.UUID(row["id"]))
    row["metadata"] = orjson.loads(row["metadata"])
    return RECORDS[table].from_row(_Row(row))


class _Row(dict[str, Any]):
    _mapping = property(lambda self: self)


def list_events(
    conn: Connection,
    table: Table,
    execution_id: str,
    *,
    limit: int,
    cursor: str | None = None,
    since: dt.datetime | None = None,
) -> Page[Any]:
    """An execution's events oldest first (ties broken by the time-ordered id), from ``since``
    (inclusive) if given."""
    t, record = table, RECORDS[table]
    query = (
        select(t)
        .where(t.c.execution_id == execution_id)
        .order_by(t.c.timestamp, t.c.id)
        .limit(limit + 1)
    )
    if cursor:
        query = query.where(after_cursor(t.c.timestamp, t.c.id, cursor, descending=False))
    if since is not None:
        query = query.where(t.c.timestamp >= since)
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
