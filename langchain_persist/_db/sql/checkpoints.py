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
    Table,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    select,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from ..schema import checkpoint_state_values as v
from ..schema import checkpoint_state_writes as w
from ..schema import checkpoint_states as t
from ..schema import metadata
from .dialect import metadata_filter, upsert
from .prepared import prepared

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
WRITE_ONLY = (w.c.checkpoint_id, w.c.task_id, w.c.idx, w.c.task_path)


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

# The saver's hot paths: prepared statements on a raw cursor (see `_prepared`), compiled per
# number of rows or keys.  Lists of keys are rounded up to a power of two (the padding repeats
# the last key) so that few statements are ever compiled; rows to insert are not padded.


def _size(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _pad(items: Sequence[Any]) -> list[Any]:
    return [*items, *[items[-1]] * (_size(len(items)) - len(items))]


def _binds(table: Table, prefix: str) -> dict[str, Any]:
    return {c.name: bindparam(f"{prefix}{c.name}", type_=c.type) for c in table.c}


def _flat(table: Table, prefix: str, row: dict[str, Any]) -> dict[str, Any]:
    return {key: row.get(name) for key, name in _bind_names(table, prefix)}


@functools.lru_cache(maxsize=1024)
def _bind_names(table: Table, prefix: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{c.name}", c.name) for c in table.c)


def _insert_rows(dialect: str, table: Table, n: int, prefix: str, update: tuple[str, ...]) -> Any:
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(table).values([_binds(table, f"{prefix}{i}_") for i in range(n)])
    if not update:
        return stmt.on_conflict_do_nothing()
    return stmt.on_conflict_do_update(
        index_elements=[c.name for c in table.primary_key.columns],
        set_={name: stmt.excluded[name] for name in update},
    )


@prepared
def _put_statement(dialect: str, n_values: int) -> Any:
    """A checkpoint row, with (on PostgreSQL) its value rows in a CTE: one statement."""
    stmt = _insert_rows(dialect, t, 1, "c", _CHECKPOINT_UPDATE)
    if n_values:
        stmt = stmt.add_cte(_insert_rows(dialect, v, n_values, "v", ()).cte("new_values"))
    return stmt


@prepared
def _rows_statement(dialect: str, table_name: str, n: int, update: tuple[str, ...]) -> Any:
    """An INSERT of ``n`` rows of a table, skipping or updating rows whose key exists."""
    return _insert_rows(dialect, metadata.tables[table_name], n, "r", update)


def _rows_params(table: Table, prefix: str, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for i, row in enumerate(rows):  # never padded: a row twice is an error for DO UPDATE
        params.update(_flat(table, f"{prefix}{i}_", row))
    return params


def put_checkpoint(
    cur: Any, dialect: Any, row: dict[str, Any], values: list[dict[str, Any]]
) -> None:
    """Store a checkpoint row and the value rows of the channels it changed.

    On PostgreSQL this is one statement (atomic without a transaction); on SQLite the caller
    holds a transaction.
    """
    params = _flat(t, "c0_", row)
    if values and dialect.name == "postgresql":
        params.update(_rows_params(v, "v", values))
        _put_statement(dialect, len(values)).execute(cur, params)
        return
    if values:
        stmt = _rows_statement(dialect, v.name, len(values), ())
        stmt.execute(cur, _rows_params(v, "r", values))
    _put_statement(dialect, 0).execute(cur, params)


def put_writes(cur: Any, dialect: Any, rows: list[dict[str, Any]], *, replace: bool) -> None:
    """Store pending writes in one statement; ``replace`` overwrites writes of the same key."""
    stmt = _rows_statement(dialect, w.name, len(rows), _WRITE_UPDATE if replace else ())
    stmt.execute(cur, _rows_params(w, "r", rows))


@prepared
def _checkpoint_query(dialect: str, by_id: bool) -> Any:
    """A checkpoint row by id, or the latest of a thread's namespace."""
    query = select(*SAVER_COLUMNS).where(
        t.c.thread_id == bindparam("thread_id"),
        t.c.checkpoint_ns == bindparam("checkpoint_ns"),
        t.c.checkpoint.isnot(None),
    )
    if by_id:
        return query.where(t.c.checkpoint_id == bindparam("checkpoint_id"))
    # the whole primary key in the ORDER BY, so the planner walks it backwards and stops at
    # once, instead of walking the global checkpoint_id index and filtering on the thread
    return query.order_by(
        t.c.thread_id.desc(), t.c.checkpoint_ns.desc(), t.c.checkpoint_id.desc()
    ).limit(1)


def get_checkpoint(
    cur: Any, dialect: Any, thread_id: str, checkpoint_ns: str, checkpoint_id: str | None
) -> Any:
    """One checkpoint row by id, or the thread's latest in the namespace (None if none)."""
    params = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}
    if checkpoint_id:
        params["checkpoint_id"] = checkpoint_id
    rows = _checkpoint_query(dialect, bool(checkpoint_id)).fetch(cur, params)
    return rows[0] if rows else None


@prepared
def _values_and_writes_query(
    dialect: str, n_channels_read: int, n_ids: int, n_channels: int
) -> Any:
    """One statement for what a checkpoint read needs besides the checkpoint row:

    the value rows of ``n_channels_read`` channels between two versions each (the caller drops
    the versions it did not ask for), the base rows of those stored as tails, and the pending
    writes of ``n_ids`` checkpoints (of ``n_channels`` channels, if not 0).  Every part is a
    primary-key range, whatever the length of the thread or the table's statistics; a
    ``kind`` column tells values ("v") from writes ("w").
    """

    def in_thread(table: Any) -> Any:
        return (table.c.thread_id == bindparam("thread_id")) & (
            table.c.checkpoint_ns == bindparam("checkpoint_ns")
        )

    def value_row(kind: str, table: Any) -> list[Any]:
        return [
            literal(kind).label("kind"),
            *(table.c[c.name] for c in VALUE_COLUMNS),
            *(cast(null(), c.type).label(c.name) for c in WRITE_ONLY),
        ]

    def versions(table: Any, i: int) -> Any:  # an index range: a lookup, whatever the stats
        return (
            in_thread(table)
            & (table.c.channel == bindparam(f"c{i}"))
            & table.c.version.between(bindparam(f"lo{i}"), bindparam(f"hi{i}"))
        )

    tails = v.alias("tails")
    base = v.alias("base")
    base_of_tail = (
        (base.c.thread_id == tails.c.thread_id)
        & (base.c.checkpoint_ns == tails.c.checkpoint_ns)
        & (base.c.channel == tails.c.channel)
        & (base.c.version == tails.c.base_version)
    )
    if dialect == "postgresql":
        # a LATERAL lookup (LIMIT 1 keeps it from being flattened into a join) makes the base
        # a primary-key lookup per tail even before the planner has statistics
        base = select(*(base.c[c.name] for c in v.c)).where(base_of_tail).limit(1).lateral()
        bases_of = tails.join(base, true())
    else:
        bases_of = tails.join(base, base_of_tail)
    parts = []
    for i in range(n_channels_read):
        parts.append(select(*value_row("v", v)).where(versions(v, i)))
        parts.append(select(*value_row("v", base)).select_from(bases_of).where(versions(tails, i)))
    if n_ids:
        writes = select(
            literal("w").label("kind"),
            w.c.channel,
            cast(null(), v.c.version.type).label("version"),
            w.c.type,
            w.c.blob,
            cast(null(), v.c.base_version.type).label("base_version"),
            *(w.c[c.name] for c in WRITE_ONLY),
        ).where(in_thread(w), w.c.checkpoint_id.in_([bindparam(f"id{i}") for i in range(n_ids)]))
        if n_channels:
            writes = writes.where(w.c.channel.in_([bindparam(f"ch{i}") for i in range(n_channels)]))
        parts.append(writes)
    return union_all(*parts) if len(parts) > 1 else parts[0]


MAX_RANGES = 64  # channel ranges per statement (SQLite allows 500 SELECTs in a compound)


def get_values_and_writes(
    cur: Any,
    dialect: Any,
    thread_id: str,
    checkpoint_ns: str,
    keys: Iterable[tuple[str, str]],
    checkpoint_ids: Sequence[str],
    channels: Iterable[str] | None = None,
) -> tuple[dict[tuple[str, str], Any], list[Any]]:
    """Value rows by (channel, version), with the bases of tails, and the pending writes of
    some checkpoints (of some channels) in the order live execution applies them."""
    keys = set(keys)
    by_channel: dict[str, list[str]] = {}
    for channel, version in keys:
        by_channel.setdefault(channel, []).append(version)
    ranges = [(c, min(vs), max(vs)) for c, vs in sorted(by_channel.items())]
    rows: list[Any] = []
    ids = list(checkpoint_ids)
    for start in range(0, len(ranges), MAX_RANGES):
        rows += _read(
            cur,
            dialect,
            thread_id,
            checkpoint_ns,
            ranges[start : start + MAX_RANGES],
            ids if start == 0 else [],
            channels,
        )
    if not ranges and ids:
        rows += _read(cur, dialect, thread_id, checkpoint_ns, [], ids, channels)
    found = {(r.channel, r.version): r for r in rows if r.kind == "v"}
    # a range may bring versions of other branches: keep the asked ones and their bases
    wanted = set(keys)
    for channel, version in keys & found.keys():
        if found[channel, version].base_version:
            wanted.add((channel, found[channel, version].base_version))
    writes = sorted(
        (r for r in rows if r.kind == "w"),
        key=lambda r: (r.checkpoint_id, r.task_path, r.task_id, r.idx),
    )
    return {k: r for k, r in found.items() if k in wanted}, writes


def _read(
    cur: Any,
    dialect: Any,
    thread_id: str,
    checkpoint_ns: str,
    ranges: Sequence[tuple[str, str, str]],
    ids: Sequence[str],
    channels: Iterable[str] | None,
) -> list[Any]:
    params: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}
    n_ranges = n_ids = n_channels = 0
    if ranges:
        n_ranges = _size(len(ranges))
        for i, (channel, low, high) in enumerate(_pad(ranges)):
            params[f"c{i}"], params[f"lo{i}"], params[f"hi{i}"] = channel, low, high
    if ids:
        n_ids = _size(len(ids))
        params.update({f"id{i}": x for i, x in enumerate(_pad(ids))})
        if channels is not None:
            names = sorted(channels) or [""]
            n_channels = _size(len(names))
            params.update({f"ch{i}": x for i, x in enumerate(_pad(names))})
    return _values_and_writes_query(dialect, n_ranges, n_ids, n_channels).fetch(cur, params)


@prepared
def _ancestors_query(dialect: str, limit: int) -> Any:
    """A page of (checkpoint_id, parent, versions, metadata) at or before an id, newest first."""
    return (
        select(t.c.checkpoint_id, t.c.parent_checkpoint_id, t.c.versions, t.c.metadata)
        .where(
            t.c.thread_id == bindparam("thread_id"),
            t.c.checkpoint_ns == bindparam("checkpoint_ns"),
            t.c.checkpoint_id <= bindparam("from_id"),
            t.c.checkpoint.isnot(None),
        )
        .order_by(t.c.checkpoint_id.desc())
        .limit(limit)
    )


def ancestors(
    cur: Any, dialect: Any, thread_id: str, checkpoint_ns: str, from_id: str, limit: int
) -> list[Any]:
    """A page of checkpoints at or before ``from_id`` (to walk a parent chain)."""
    params = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "from_id": from_id}
    return _ancestors_query(dialect, limit).fetch(cur, params)


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


# -- deleting and copying -------------------------------------------------------------------


@prepared
def _delete_threads(dialect: str, table_name: str, n: int) -> Any:
    """The DELETE of ``n`` threads' rows of a table.  On PostgreSQL the statement for the
    checkpoint table deletes the values and writes too, in CTEs: one statement, atomic."""
    ids = [bindparam(f"t{i}") for i in range(n)]
    table = metadata.tables[table_name]
    stmt = delete(table).where(table.c.thread_id.in_(ids))
    if dialect == "postgresql" and table is t:
        for other in (v, w):
            gone = delete(other).where(other.c.thread_id.in_(ids)).cte(f"gone_{other.name}")
            stmt = stmt.add_cte(gone)
    return stmt


def delete_threads(cur: Any, dialect: Any, thread_ids: Sequence[str]) -> None:
    """Delete every row of some threads, in every namespace (one statement on PostgreSQL;
    on SQLite, three in the caller's transaction)."""
    ids = list(thread_ids)
    params = {f"t{i}": x for i, x in enumerate(_pad(ids))}
    for table in (t,) if dialect.name == "postgresql" else (t, v, w):
        _delete_threads(dialect, table.name, _size(len(ids))).execute(cur, params)


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
