"""SQL for the checkpoint tables: `checkpoint_states`, its values and its pending writes.

The service reads and writes JSON states here; `PersistSaver` stores LangGraph checkpoints
(the checkpoint row, one value row per channel version, one row per pending write).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    Row,
    delete,
    func,
    insert,
    literal,
    select,
    tuple_,
    union_all,
    update,
)

from .._schema import checkpoint_state_values as v
from .._schema import checkpoint_state_writes as w
from .._schema import checkpoint_states as t
from ._dialect import bulk_insert, bulk_params, metadata_filter, upsert

KEY = ("thread_id", "checkpoint_ns", "checkpoint_id")
# the columns a checkpoint tuple is built from (everything but the service's JSON state)
SAVER_COLUMNS = (
    t.c.thread_id,
    t.c.checkpoint_ns,
    t.c.checkpoint_id,
    t.c.parent_checkpoint_id,
    t.c.type,
    t.c.checkpoint,
    t.c.versions,
    t.c.metadata,
)
VALUE_COLUMNS = (v.c.channel, v.c.version, v.c.type, v.c.blob, v.c.base_version)
WRITE_COLUMNS = (
    w.c.checkpoint_id,
    w.c.task_id,
    w.c.idx,
    w.c.channel,
    w.c.type,
    w.c.blob,
    w.c.task_path,
)


# -- the service's view ---------------------------------------------------------------------


def upsert_state(conn: Connection, values: dict[str, Any]) -> None:
    """Insert a checkpoint state, or replace the state and metadata of the same checkpoint."""
    stmt = upsert(conn, t).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(KEY),
        set_={"state": stmt.excluded.state, "metadata": stmt.excluded.metadata},
    )
    conn.execute(stmt)


def find_state_rows(
    conn: Connection, checkpoint_id: str, *, thread_id: str | None = None
) -> list[Row[Any]]:
    """Rows of a checkpoint id, newest first, with every column."""
    query = select(t).where(t.c.checkpoint_id == checkpoint_id).order_by(t.c.created_at.desc())
    if thread_id is not None:
        query = query.where(t.c.thread_id == thread_id)
    return list(conn.execute(query))


def owner_of(conn: Connection, thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> Any:
    """The agent_id stored on a checkpoint (a Row), or None when there is no such checkpoint."""
    return conn.execute(
        select(t.c.agent_id).where(
            t.c.thread_id == thread_id,
            t.c.checkpoint_ns == checkpoint_ns,
            t.c.checkpoint_id == checkpoint_id,
        )
    ).one_or_none()


# -- the saver's writes ---------------------------------------------------------------------


_CHECKPOINT_UPDATE = ("type", "checkpoint", "versions", "metadata")
_WRITE_UPDATE = ("channel", "type", "blob", "task_path", "run_id")


def put_checkpoint(conn: Connection, row: dict[str, Any], values: list[dict[str, Any]]) -> None:
    """Store a checkpoint row and the value rows of the channels it changed, atomically.

    On PostgreSQL this is one statement (the values go in a CTE), so it needs no transaction.
    """
    dialect = conn.dialect.name
    stmt = bulk_insert(dialect, t, _CHECKPOINT_UPDATE)
    params = bulk_params(dialect, t, [row])
    if dialect == "postgresql":
        stmt = _checkpoint_with_values(len(values) > 0)
        if values:
            params.update(bulk_params(dialect, v, values, prefix="v_"))
    elif values:
        conn.execute(bulk_insert(dialect, v), bulk_params(dialect, v, values))
    conn.execute(stmt, params)


@functools.cache
def _checkpoint_with_values(with_values: bool) -> Any:
    stmt = bulk_insert("postgresql", t, _CHECKPOINT_UPDATE)
    if with_values:
        stmt = stmt.add_cte(bulk_insert("postgresql", v, prefix="v_").cte("new_values"))
    return stmt


def put_writes(conn: Connection, rows: list[dict[str, Any]], *, replace: bool) -> None:
    """Store pending writes in one statement; ``replace`` overwrites writes of the same key."""
    dialect = conn.dialect.name
    stmt = bulk_insert(dialect, w, _WRITE_UPDATE if replace else ())
    conn.execute(stmt, bulk_params(dialect, w, rows))


# -- the saver's reads ----------------------------------------------------------------------


def get_checkpoint(
    conn: Connection, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
) -> Row[Any] | None:
    """One checkpoint row by id, or the thread's latest in the namespace."""
    query = select(*SAVER_COLUMNS).where(
        t.c.thread_id == thread_id, t.c.checkpoint_ns == checkpoint_ns, t.c.checkpoint.isnot(None)
    )
    if checkpoint_id:
        query = query.where(t.c.checkpoint_id == checkpoint_id)
    else:
        query = query.order_by(t.c.checkpoint_id.desc()).limit(1)
    return conn.execute(query).one_or_none()


def list_checkpoints(
    conn: Connection,
    *,
    thread_id: str | None,
    checkpoint_ns: str | None,
    checkpoint_id: str | None,
    before: str | None,
    filter: dict[str, Any] | None,
    after: tuple[str, str, str] | None,
    limit: int,
) -> list[Row[Any]]:
    """One page of checkpoint rows, newest first, after ``after`` (checkpoint_id, ns, thread)."""
    query = (
        select(*SAVER_COLUMNS)
        .where(t.c.checkpoint.isnot(None))
        .order_by(t.c.checkpoint_id.desc(), t.c.checkpoint_ns.desc(), t.c.thread_id.desc())
        .limit(limit)
    )
    for column, value in (
        (t.c.thread_id, thread_id),
        (t.c.checkpoint_ns, checkpoint_ns),
        (t.c.checkpoint_id, checkpoint_id),
    ):
        if value is not None:
            query = query.where(column == value)
    if before is not None:
        query = query.where(t.c.checkpoint_id < before)
    if after is not None and thread_id is not None and checkpoint_ns is not None:
        query = query.where(t.c.checkpoint_id < after[0])  # an index range within the thread
    elif after is not None:
        key = tuple_(t.c.checkpoint_id, t.c.checkpoint_ns, t.c.thread_id)
        query = query.where(key < tuple_(*after))
    if filter:
        query = query.where(*metadata_filter(conn, t.c.metadata, filter))
    return list(conn.execute(query))


def get_values(
    conn: Connection, thread_id: str, checkpoint_ns: str, keys: Iterable[tuple[str, str]]
) -> dict[tuple[str, str], Row[Any]]:
    """Value rows by (channel, version), with the base rows of those stored as tails.

    Two primary-key lookups in one statement, whatever the length of the thread.
    """
    keys = list(keys)
    if not keys:
        return {}
    tails = v.alias("tails")
    same_thread = (tails.c.thread_id == thread_id) & (tails.c.checkpoint_ns == checkpoint_ns)
    named = select(*VALUE_COLUMNS).where(
        v.c.thread_id == thread_id,
        v.c.checkpoint_ns == checkpoint_ns,
        tuple_(v.c.channel, v.c.version).in_(keys),
    )
    bases = (
        select(*VALUE_COLUMNS)
        .select_from(tails)
        .join(
            v,
            (v.c.thread_id == tails.c.thread_id)
            & (v.c.checkpoint_ns == tails.c.checkpoint_ns)
            & (v.c.channel == tails.c.channel)
            & (v.c.version == tails.c.base_version),
        )
        .where(same_thread, tuple_(tails.c.channel, tails.c.version).in_(keys))
    )
    rows = conn.execute(union_all(named, bases))
    return {(r.channel, r.version): r for r in rows}


def get_writes(
    conn: Connection,
    thread_id: str,
    checkpoint_ns: str,
    checkpoint_ids: Sequence[str],
    channels: Iterable[str] | None = None,
) -> list[Row[Any]]:
    """Pending writes of some checkpoints, in the order live execution applies them."""
    query = (
        select(*WRITE_COLUMNS)
        .where(
            w.c.thread_id == thread_id,
            w.c.checkpoint_ns == checkpoint_ns,
            w.c.checkpoint_id.in_(list(checkpoint_ids)),
        )
        .order_by(w.c.checkpoint_id, w.c.task_path, w.c.task_id, w.c.idx)
    )
    if channels is not None:
        query = query.where(w.c.channel.in_(list(channels)))
    return list(conn.execute(query))


def ancestors(
    conn: Connection, thread_id: str, checkpoint_ns: str, from_id: str, limit: int
) -> list[Row[Any]]:
    """A page of (checkpoint_id, parent_checkpoint_id, versions, metadata) at or before an id."""
    return list(
        conn.execute(
            select(t.c.checkpoint_id, t.c.parent_checkpoint_id, t.c.versions, t.c.metadata)
            .where(
                t.c.thread_id == thread_id,
                t.c.checkpoint_ns == checkpoint_ns,
                t.c.checkpoint_id <= from_id,
                t.c.checkpoint.isnot(None),
            )
            .order_by(t.c.checkpoint_id.desc())
            .limit(limit)
        )
    )


# -- deleting and copying -------------------------------------------------------------------


def delete_threads(conn: Connection, thread_ids: Sequence[str]) -> None:
    """Delete every row of some threads, in every namespace."""
    for table in (t, v, w):
        conn.execute(delete(table).where(table.c.thread_id.in_(list(thread_ids))))


def checkpoints_of_runs(conn: Connection, run_ids: Sequence[str]) -> list[Row[Any]]:
    """(thread_id, checkpoint_ns, checkpoint_id) of the checkpoints some runs wrote."""
    return list(
        conn.execute(
            select(t.c.thread_id, t.c.checkpoint_ns, t.c.checkpoint_id).where(
                t.c.run_id.in_(list(run_ids))
            )
        )
    )


def delete_writes_of_runs(conn: Connection, run_ids: Sequence[str]) -> None:
    """Delete the pending writes some runs made, whatever checkpoint they were made against."""
    conn.execute(delete(w).where(w.c.run_id.in_(list(run_ids))))


def namespace_rows(conn: Connection, thread_id: str) -> list[Row[Any]]:
    """Every checkpoint of a thread: key, parent, versions and metadata (no blobs)."""
    return list(
        conn.execute(
            select(
                t.c.checkpoint_ns,
                t.c.checkpoint_id,
                t.c.parent_checkpoint_id,
                t.c.versions,
                t.c.metadata,
            )
            .where(t.c.thread_id == thread_id, t.c.checkpoint.isnot(None))
            .order_by(t.c.checkpoint_ns, t.c.checkpoint_id)
        )
    )


def delete_checkpoints(
    conn: Connection, thread_id: str, checkpoint_ns: str, checkpoint_ids: Sequence[str]
) -> None:
    """Delete some checkpoints of a namespace with their pending writes."""
    for start in range(0, len(checkpoint_ids), 500):
        ids = list(checkpoint_ids[start : start + 500])
        for table in (t, w):
            conn.execute(
                delete(table).where(
                    table.c.thread_id == thread_id,
                    table.c.checkpoint_ns == checkpoint_ns,
                    table.c.checkpoint_id.in_(ids),
                )
            )


def detach_parents(
    conn: Connection, thread_id: str, checkpoint_ns: str, checkpoint_ids: Sequence[str]
) -> None:
    """Clear the parent of checkpoints whose parent was deleted."""
    for start in range(0, len(checkpoint_ids), 500):
        conn.execute(
            update(t)
            .where(
                t.c.thread_id == thread_id,
                t.c.checkpoint_ns == checkpoint_ns,
                t.c.checkpoint_id.in_(list(checkpoint_ids[start : start + 500])),
            )
            .values(parent_checkpoint_id=None)
        )


def value_keys(conn: Connection, thread_id: str, checkpoint_ns: str) -> list[Row[Any]]:
    """(channel, version, base_version) of every value row of a namespace."""
    return list(
        conn.execute(
            select(v.c.channel, v.c.version, v.c.base_version).where(
                v.c.thread_id == thread_id, v.c.checkpoint_ns == checkpoint_ns
            )
        )
    )


def delete_values(
    conn: Connection, thread_id: str, checkpoint_ns: str, keys: Sequence[tuple[str, str]]
) -> None:
    """Delete value rows by (channel, version)."""
    for start in range(0, len(keys), 500):
        conn.execute(
            delete(v).where(
                v.c.thread_id == thread_id,
                v.c.checkpoint_ns == checkpoint_ns,
                tuple_(v.c.channel, v.c.version).in_(list(keys[start : start + 500])),
            )
        )


def thread_exists(conn: Connection, thread_id: str) -> bool:
    """Whether a thread has any checkpoint."""
    query = select(func.count()).select_from(t).where(t.c.thread_id == thread_id)
    return bool(conn.execute(query).scalar())


def copy_rows(conn: Connection, source: str, target: str) -> None:
    """Copy a thread's values and writes to another thread id (checkpoints: `copy_states`)."""
    for table in (v, w):
        columns = [c for c in table.c if c.name != "thread_id"]
        conn.execute(
            insert(table).from_select(
                ["thread_id", *(c.name for c in columns)],
                select(literal(target, table.c.thread_id.type), *columns).where(
                    table.c.thread_id == source
                ),
            )
        )


def state_rows(conn: Connection, thread_id: str) -> list[dict[str, Any]]:
    """Every checkpoint row of a thread, as dicts."""
    return [dict(r._mapping) for r in conn.execute(select(t).where(t.c.thread_id == thread_id))]


def insert_states(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Insert checkpoint rows as they are."""
    if rows:
        conn.execute(insert(t), rows)
