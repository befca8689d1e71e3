"""SQL for the checkpoint tables: `checkpoint_states`, its values and its pending writes.

The service reads and writes JSON states here; `PersistSaver` stores LangGraph checkpoints
(the checkpoint row, one value row per channel version, one row per pending write) through the
plans below (see `..plans`), which its sync and async methods share.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import orjson
from sqlalchemy import (
    JSON,
    Connection,
    Integer,
    LargeBinary,
    Row,
    String,
    Table,
    Text,
    any_,
    bindparam,
    cast,
    column,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    text,
    true,
    tuple_,
    type_coerce,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from ..plans import Plan, execute, execute_many, fetch
from ..schema import checkpoint_state_values as v
from ..schema import checkpoint_state_writes as w
from ..schema import checkpoint_states as t
from ..schema import metadata
from .dialect import ordered_join, upsert
from .prepared import prepared, prepared_raw

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


# -- the saver: statements of one shape, run by plans --------------------------------------
#
# Every statement below has one shape whatever the number of channels, writes or ids it
# handles: lists travel as arrays on PostgreSQL (`unnest`, `= ANY`) and as JSON arrays on
# SQLite (`json_each`), so each driver caches the statement (psycopg parses it once, SQLite's
# statement cache keeps it) and PostgreSQL plans it once per connection (prepared).  The
# functions are plans (see `..plans`): they yield their statements and get the rows back, so
# the saver's sync and async methods run the very same ones.

_CHECKPOINT_UPDATE = ("type", "checkpoint", "versions", "metadata")
ONE = literal_column("1")  # a LIMIT written in the statement (a bound one is unknown to plans)
_WRITE_UPDATE = ("channel", "type", "blob", "task_path", "run_id")


def _bind(name: str, column: Any) -> Any:
    return bindparam(name, type_=column.type)


def _array(name: str, column: Any) -> Any:
    """A bound list of values of ``column`` (PostgreSQL)."""
    return bindparam(name, type_=postgresql.ARRAY(column.type))


def _json_list(name: str) -> Any:
    """A bound list, sent as a JSON array (SQLite reads it with ``json_each``)."""
    return bindparam(name, type_=JSON)


def _in_list(dialect: str, column: Any, name: str) -> Any:
    """``column`` is one of the bound list ``name``: one statement for any length."""
    if dialect == "postgresql":
        return column == any_(_array(name, column))
    items = func.json_each(_json_list(name)).table_valued("value")
    return column.in_(select(items.c.value))


def _upsert_one(dialect: str, table: Table, update_columns: tuple[str, ...]) -> Any:
    module = postgresql if dialect == "postgresql" else sqlite
    stmt = module.insert(table).values({c.name: _bind(c.name, c) for c in table.c})
    if not update_columns:
        return stmt.on_conflict_do_nothing()
    return stmt.on_conflict_do_update(
        index_elements=[c.name for c in table.primary_key.columns],
        set_={name: stmt.excluded[name] for name in update_columns},
    )


def _rows_in(names: tuple[str, ...], table: Table) -> tuple[Any, Any]:
    """Rows passed to PostgreSQL as two parameters, whatever their number: a JSON array of
    objects (``<prefix>rows``: each row's columns, and where its blob lies) read with
    ``json_to_recordset``, and one bytea (``<prefix>blobs``: every blob, end to end) that
    ``substring`` cuts.  psycopg adapts a string and a bytes in a few microseconds; lists
    (arrays) go through its Python list dumpers, ten to forty times slower."""
    prefix = table.name.rsplit("_", 1)[-1][0] + "_"  # v_ or w_
    columns = [column(n, table.c[n].type) for n in names] + [
        column("o", Integer()),
        column("n", Integer()),
    ]
    rows = (
        func.json_to_recordset(cast(bindparam(f"{prefix}rows", type_=Text), postgresql.JSON))
        .table_valued(*columns)
        .render_derived(name="r", with_types=True)
    )
    blob = func.substring(
        bindparam(f"{prefix}blobs", type_=LargeBinary), rows.c.o, rows.c.n
    ).label("blob")
    return rows, blob


def _rows_params(
    prefix: str, names: tuple[str, ...], rows: list[tuple[Any, ...]]
) -> dict[str, Any]:
    """The two parameters of `_rows_in` for rows of ``(*names, blob)``."""
    items, blobs, offset = [], [], 1
    for row in rows:
        item = dict(zip(names, row, strict=False))
        blob = row[len(names)]
        if blob is not None:
            item["o"], item["n"] = offset, len(blob)
            blobs.append(blob)
            offset += len(blob)
        items.append(item)
    return {f"{prefix}rows": orjson.dumps(items).decode(), f"{prefix}blobs": b"".join(blobs)}


_VALUE_COLUMNS = ("channel", "version", "type", "base_version")
_WRITE_COLUMNS = ("idx", "channel", "type")


@prepared
def _put_statement(dialect: str) -> Any:
    """A checkpoint row; on PostgreSQL with its value rows (`_rows_in`) in a CTE: one
    statement, atomic by itself."""
    stmt = _upsert_one(dialect, t, _CHECKPOINT_UPDATE)
    if dialect != "postgresql":
        return stmt
    rows, blob = _rows_in(_VALUE_COLUMNS, v)
    new_values = (
        postgresql.insert(v)
        .from_select(
            ["thread_id", "checkpoint_ns", *_VALUE_COLUMNS, "blob"],
            select(
                _bind("thread_id", v.c.thread_id),
                _bind("checkpoint_ns", v.c.checkpoint_ns),
                *(rows.c[n] for n in _VALUE_COLUMNS),
                blob,
            ).where(_base_stored(rows.c.channel, rows.c.base_version)),
        )
        .on_conflict_do_nothing()
    )
    return stmt.add_cte(new_values.cte("new_values"))


def _base_stored(channel: Any, base_version: Any) -> Any:
    """A value row is stored whole, or as a tail whose base row is there (the thread may have
    been deleted by another process since this one stored the base)."""
    base = v.alias("base")
    return base_version.is_(None) | exists().where(
        base.c.thread_id == _bind("thread_id", v.c.thread_id),
        base.c.checkpoint_ns == _bind("checkpoint_ns", v.c.checkpoint_ns),
        base.c.channel == channel,
        base.c.version == base_version,
    )


@prepared
def _value_statement(dialect: str, tail: bool) -> Any:
    """One value row (SQLite: run once per row, ``executemany``); a tail only if its base is
    stored."""
    if not tail:
        return _upsert_one(dialect, v, ())
    channel, base_version = _bind("channel", v.c.channel), _bind("base_version", v.c.base_version)
    return (
        sqlite.insert(v)
        .from_select(
            [c.name for c in v.c],
            select(*(_bind(c.name, c) for c in v.c)).where(_base_stored(channel, base_version)),
        )
        .on_conflict_do_nothing()
    )


def put_checkpoint(dialect: Any, row: dict[str, Any], values: list[tuple[Any, ...]]) -> Plan[None]:
    """Store a checkpoint row and the value rows of the channels it changed, each value a
    ``(channel, version, type, base_version, blob)``.  PostgreSQL: one statement; SQLite: the
    caller's transaction."""
    if dialect.name == "postgresql":
        params = {**row, **_rows_params("v_", _VALUE_COLUMNS, values)}
        yield execute(_put_statement(dialect), params)
        return
    thread_id, ns = row["thread_id"], row["checkpoint_ns"]
    for tail in (False, True):
        rows = [
            {"thread_id": thread_id, "checkpoint_ns": ns, "channel": c, "version": ver,
             "type": type_, "base_version": base, "blob": blob}
            for c, ver, type_, base, blob in values if (base is not None) is tail
        ]  # fmt: skip
        if rows:
            yield execute_many(_value_statement(dialect, tail), rows)
    yield execute(_put_statement(dialect), row)


@prepared
def _writes_statement(dialect: str, replace: bool) -> Any:
    """The pending writes of a task (PostgreSQL: `_rows_in`; SQLite: one row, run once per
    write); ``replace`` overwrites writes of the same key."""
    if dialect != "postgresql":
        return _upsert_one(dialect, w, _WRITE_UPDATE if replace else ())
    rows, blob = _rows_in(_WRITE_COLUMNS, w)
    scalars = ("thread_id", "checkpoint_ns", "checkpoint_id", "task_id", "task_path", "run_id")
    stmt = postgresql.insert(w).from_select(
        [*scalars, *_WRITE_COLUMNS, "blob"],
        select(*(_bind(n, w.c[n]) for n in scalars), *(rows.c[n] for n in _WRITE_COLUMNS), blob),
    )
    if not replace:
        return stmt.on_conflict_do_nothing()
    return stmt.on_conflict_do_update(
        index_elements=[c.name for c in w.primary_key.columns],
        set_={name: stmt.excluded[name] for name in _WRITE_UPDATE},
    )


def put_writes(
    dialect: Any, key: dict[str, Any], writes: list[tuple[int, str, str, bytes]], *, replace: bool
) -> Plan[None]:
    """Store a task's writes, each an ``(idx, channel, type, blob)``; ``key`` holds the
    thread, namespace, checkpoint, task, task path and run."""
    stmt = _writes_statement(dialect, replace)
    if dialect.name == "postgresql":
        yield execute(stmt, {**key, **_rows_params("w_", _WRITE_COLUMNS, writes)})
        return
    yield execute_many(
        stmt,
        [{**key, "idx": idx, "channel": c, "type": type_, "blob": blob}
         for idx, c, type_, blob in writes],
    )  # fmt: skip


# -- the saver's reads: a page of checkpoints with their values and writes, in one statement


class Stored(NamedTuple):
    """A checkpoint as stored, with what reading it needs: its value rows, each
    ``(channel, version, type, blob, base_version, base_type, base_blob)`` (the base of a
    list stored as a tail comes with it), and its pending writes, each ``(task_id, channel,
    type, blob, task_path, idx)`` in the order live execution applies them."""

    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    type: str
    checkpoint: bytes
    versions: dict[str, str]
    metadata: dict[str, Any]
    values: list[tuple[Any, ...]]
    writes: list[tuple[Any, ...]]


class PageQuery(NamedTuple):
    """Which checkpoints a page holds: the shape of the statement (what is given), the
    values come as parameters."""

    thread: bool = False
    ns: bool = False
    checkpoint_id: bool = False
    before: bool = False
    after: str = ""  # "" | "id" (within a thread's namespace) | "key" (across threads)
    filter: tuple[str, ...] = ()  # SQLite: per filtered key, "null" or "value"; PG: ("jsonb",)


def _checkpoints(dialect: str, q: PageQuery) -> Any:
    """The page's checkpoint rows, newest first."""
    query = select(*SAVER_COLUMNS).where(t.c.checkpoint.isnot(None))
    if q.thread:
        query = query.where(t.c.thread_id == _bind("thread_id", t.c.thread_id))
    if q.ns:
        query = query.where(t.c.checkpoint_ns == _bind("checkpoint_ns", t.c.checkpoint_ns))
    if q.checkpoint_id:
        query = query.where(t.c.checkpoint_id == _bind("checkpoint_id", t.c.checkpoint_id))
    if q.before:
        query = query.where(t.c.checkpoint_id < _bind("before", t.c.checkpoint_id))
    if q.after == "id":
        query = query.where(t.c.checkpoint_id < _bind("after_id", t.c.checkpoint_id))
    elif q.after == "key":
        key = tuple_(t.c.checkpoint_id, t.c.checkpoint_ns, t.c.thread_id)
        query = query.where(
            key
            < tuple_(
                _bind("after_id", t.c.checkpoint_id),
                _bind("after_ns", t.c.checkpoint_ns),
                _bind("after_thread", t.c.thread_id),
            )
        )
    if dialect == "postgresql" and q.filter:
        query = query.where(
            type_coerce(t.c.metadata, postgresql.JSONB).contains(
                bindparam("filter", type_=postgresql.JSONB)
            )
        )
    for i, kind in enumerate(q.filter if dialect != "postgresql" else ()):
        path = bindparam(f"path{i}", type_=String)
        if kind == "null":
            query = query.where(func.json_type(t.c.metadata, path) == "null")
        else:
            query = query.where(func.json_extract(t.c.metadata, path) == bindparam(f"value{i}"))
    if q.thread and q.ns:
        # the whole primary key in the ORDER BY, so the planner walks it backwards and stops
        # at once, instead of walking the global checkpoint_id index and filtering
        order = (t.c.thread_id.desc(), t.c.checkpoint_ns.desc(), t.c.checkpoint_id.desc())
    else:
        order = (t.c.checkpoint_id.desc(), t.c.checkpoint_ns.desc(), t.c.thread_id.desc())
    return query.order_by(*order).limit(bindparam("limit", type_=Integer))


@prepared_raw
def _page_query(dialect: str, q: PageQuery) -> Any:
    """A page of checkpoints with their values (and the bases of lists stored as tails) and
    their pending writes, in one statement.  Every lookup is a primary-key lookup, whatever
    the length of the thread or the table's statistics.

    PostgreSQL: one row per checkpoint, its values and writes as arrays (LATERAL lookups;
    LIMIT 1 keeps each a primary-key probe even before the planner has statistics).  SQLite:
    the checkpoint rows (kind 0), then value rows (1) and write rows (2) in a UNION ALL.
    """
    base = v.alias("b")
    if dialect == "postgresql":
        c = _checkpoints(dialect, q).subquery("c")
        keys = (
            func.jsonb_each_text(c.c.versions).table_valued("key", "value").render_derived(name="e")
        )
        x = (
            select(*(v.c[n] for n in ("channel", "version", "type", "blob", "base_version")))
            .where(
                v.c.thread_id == c.c.thread_id,
                v.c.checkpoint_ns == c.c.checkpoint_ns,
                v.c.channel == keys.c.key,
                v.c.version == keys.c.value,
            )
            .limit(ONE)
            .correlate(c, keys)
            .lateral("x")
        )
        b = (
            select(base.c.type, base.c.blob)
            .where(
                base.c.thread_id == c.c.thread_id,
                base.c.checkpoint_ns == c.c.checkpoint_ns,
                base.c.channel == x.c.channel,
                base.c.version == x.c.base_version,
            )
            .limit(ONE)
            .correlate(c, x)
            .lateral("bx")
        )
        values = (
            select(
                *(func.array_agg(x.c[n]).label(f"v_{n}") for n in
                  ("channel", "version", "type", "blob", "base_version")),
                func.array_agg(b.c.type).label("v_base_type"),
                func.array_agg(b.c.blob).label("v_base_blob"),
            )
            .select_from(keys.join(x, true()).outerjoin(b, true()))
            .correlate(c)
            .lateral("vals")
        )  # fmt: skip
        writes = (
            select(
                *(func.array_agg(w.c[n]).label(f"w_{n}") for n in
                  ("task_id", "channel", "type", "blob", "task_path", "idx")),
            )
            .where(
                w.c.thread_id == c.c.thread_id,
                w.c.checkpoint_ns == c.c.checkpoint_ns,
                w.c.checkpoint_id == c.c.checkpoint_id,
            )
            .lateral("wr")
        )  # fmt: skip
        return (
            select(c, values, writes)
            .select_from(c.join(values, true()).join(writes, true()))
            .order_by(*(c.c[col.key].desc() for col in (t.c.checkpoint_id, t.c.checkpoint_ns,
                                                        t.c.thread_id)))
        )  # fmt: skip
    c = _checkpoints(dialect, q).cte("c")
    keys = func.json_each(c.c.versions).table_valued("key", "value").alias("e")
    in_c = (c.c.thread_id, c.c.checkpoint_ns, c.c.checkpoint_id)
    checkpoints = select(
        literal(0).label("kind"), *in_c, c.c.parent_checkpoint_id, null(), c.c.type,
        c.c.checkpoint, c.c.versions, c.c.metadata, null(),
    )  # fmt: skip
    # c, then each of its versions, then the value row: the order kept (`ordered_join`)
    found = ordered_join(
        ordered_join(c, keys, true()),
        v,
        (v.c.thread_id == c.c.thread_id)
        & (v.c.checkpoint_ns == c.c.checkpoint_ns)
        & (v.c.channel == keys.c.key)
        & (v.c.version == keys.c.value),
    )
    values = select(
        literal(1), *in_c, v.c.channel, v.c.version, v.c.type, v.c.blob, v.c.base_version,
        base.c.type, base.c.blob,
    ).select_from(
        found.outerjoin(
            base,
            (base.c.thread_id == v.c.thread_id)
            & (base.c.checkpoint_ns == v.c.checkpoint_ns)
            & (base.c.channel == v.c.channel)
            & (base.c.version == v.c.base_version),
        )
    )  # fmt: skip
    writes = select(
        literal(2), *in_c, w.c.task_id, w.c.channel, w.c.type, w.c.blob, w.c.task_path,
        w.c.idx, null(),
    ).join_from(
        c,
        w,
        (w.c.thread_id == c.c.thread_id)
        & (w.c.checkpoint_ns == c.c.checkpoint_ns)
        & (w.c.checkpoint_id == c.c.checkpoint_id),
    )  # fmt: skip
    return union_all(checkpoints, values, writes)


def _write_order(write: tuple[Any, ...]) -> tuple[Any, ...]:
    return (write[4], write[0], write[5])  # task_path, task_id, idx


def _page_params(dialect: str, q: PageQuery, given: dict[str, Any]) -> dict[str, Any]:
    params = dict(given)
    filter = params.pop("filter", None)
    if q.filter and dialect == "postgresql":
        params["filter"] = filter
    elif q.filter:
        for i, (key, value) in enumerate(_sqlite_filter(filter)):
            params[f"path{i}"] = f'$."{key}"'
            if value is not None:
                params[f"value{i}"] = value
    return params


_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_\-]+")


def _sqlite_filter(filter: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """The filter's items SQLite can narrow on (simple keys, scalar values): ``json_extract``
    compares them; the rest are compared in Python, as everything is."""
    return [
        (key, value)
        for key, value in (filter or {}).items()
        if _SIMPLE_KEY.fullmatch(key)
        and (value is None or isinstance(value, bool | int | float | str))
    ]


def page_query(dialect: Any, **given: Any) -> PageQuery:
    """The shape of a page read from what is given (names as in `read_page`)."""
    filter = given.get("filter")
    if dialect.name == "postgresql":
        kinds: tuple[str, ...] = ("jsonb",) if filter else ()
    else:
        kinds = tuple("null" if value is None else "value" for _, value in _sqlite_filter(filter))
    after = given.get("after")
    return PageQuery(
        thread=given.get("thread_id") is not None,
        ns=given.get("checkpoint_ns") is not None,
        checkpoint_id=given.get("checkpoint_id") is not None,
        before=given.get("before") is not None,
        after="" if after is None else ("id" if len(after) == 1 else "key"),
        filter=kinds,
    )


def read_page(
    dialect: Any,
    *,
    limit: int,
    thread_id: str | None = None,
    checkpoint_ns: str | None = None,
    checkpoint_id: str | None = None,
    before: str | None = None,
    after: tuple[str, ...] | None = None,
    filter: dict[str, Any] | None = None,
) -> Plan[list[Stored]]:
    """Up to ``limit`` checkpoints, newest first (by checkpoint id, namespace, thread), with
    their values and pending writes, in one statement.  ``after`` continues a listing: the
    last ``(checkpoint_id,)`` of a thread's namespace, or ``(checkpoint_id, ns, thread)``."""
    q = page_query(
        dialect, thread_id=thread_id, checkpoint_ns=checkpoint_ns,
        checkpoint_id=checkpoint_id, before=before, after=after, filter=filter,
    )  # fmt: skip
    given: dict[str, Any] = {"limit": limit}
    for name, value in (("thread_id", thread_id), ("checkpoint_ns", checkpoint_ns),
                        ("checkpoint_id", checkpoint_id), ("before", before)):  # fmt: skip
        if value is not None:
            given[name] = value
    if after is not None:
        given["after_id"] = after[0]
        if len(after) > 1:
            given["after_ns"], given["after_thread"] = after[1], after[2]
    if filter:
        given["filter"] = filter
    rows = yield fetch(_page_query(dialect, q), _page_params(dialect.name, q, given))
    if dialect.name == "postgresql":
        return [_stored_pg(row) for row in rows]
    return _stored_sqlite(rows)


def _stored_pg(row: Any) -> Stored:
    (thread_id, ns, checkpoint_id, parent, type_, blob, versions, metadata,
     v_channel, v_version, v_type, v_blob, v_base, v_base_type, v_base_blob,
     w_task, w_channel, w_type, w_blob, w_path, w_idx) = row  # fmt: skip
    values = (
        list(zip(v_channel, v_version, v_type, v_blob, v_base, v_base_type, v_base_blob,
                 strict=True))
        if v_channel
        else []
    )  # fmt: skip
    writes = (
        sorted(zip(w_task, w_channel, w_type, w_blob, w_path, w_idx, strict=True),
               key=_write_order)
        if w_task
        else []
    )  # fmt: skip
    return Stored(thread_id, ns, checkpoint_id, parent, type_, blob, versions, metadata,
                  values, writes)  # fmt: skip


def _stored_sqlite(rows: list[Any]) -> list[Stored]:
    checkpoints: list[tuple[Any, ...]] = []
    values: dict[tuple[str, str, str], list[tuple[Any, ...]]] = defaultdict(list)
    writes: dict[tuple[str, str, str], list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        kind = row[0]
        if kind == 0:
            checkpoints.append(row)
        elif kind == 1:
            values[row[1], row[2], row[3]].append(row[4:])
        else:
            writes[row[1], row[2], row[3]].append(row[4:10])
    checkpoints.sort(key=lambda r: (r[3], r[2], r[1]), reverse=True)
    out = []
    for row in checkpoints:
        key = (row[1], row[2], row[3])
        out.append(
            Stored(
                row[1], row[2], row[3], row[4], row[6], row[7], orjson.loads(row[8]),
                orjson.loads(row[9]), values.get(key, []),
                sorted(writes.get(key, []), key=_write_order),
            )
        )  # fmt: skip
    return out


@prepared_raw
def _values_query(dialect: str) -> Any:
    """Value rows of a namespace by (channel, version), each with its base when it is stored
    as a tail: the keys are bound as two arrays (PostgreSQL) or one JSON array of pairs."""
    base = v.alias("b")
    columns = ("channel", "version", "type", "blob", "base_version")
    if dialect == "postgresql":
        keys = (
            func.unnest(_array("channels", v.c.channel), _array("versions", v.c.version))
            .table_valued("channel", "version")
            .render_derived(name="k")
        )
        x = (
            select(*(v.c[n] for n in columns))
            .where(
                v.c.thread_id == _bind("thread_id", v.c.thread_id),
                v.c.checkpoint_ns == _bind("checkpoint_ns", v.c.checkpoint_ns),
                v.c.channel == keys.c.channel,
                v.c.version == keys.c.version,
            )
            .limit(ONE)
            .correlate(keys)
            .lateral("x")
        )
        b = (
            select(base.c.type, base.c.blob)
            .where(
                base.c.thread_id == _bind("thread_id", v.c.thread_id),
                base.c.checkpoint_ns == _bind("checkpoint_ns", v.c.checkpoint_ns),
                base.c.channel == x.c.channel,
                base.c.version == x.c.base_version,
            )
            .limit(ONE)
            .correlate(x)
            .lateral("bx")
        )
        return select(x, b).select_from(keys.join(x, true()).outerjoin(b, true()))
    keys = func.json_each(_json_list("keys")).table_valued("value").alias("k")
    found = ordered_join(
        keys,
        v,
        (v.c.thread_id == _bind("thread_id", v.c.thread_id))
        & (v.c.checkpoint_ns == _bind("checkpoint_ns", v.c.checkpoint_ns))
        & (v.c.channel == func.json_extract(keys.c.value, "$[0]"))
        & (v.c.version == func.json_extract(keys.c.value, "$[1]")),
    )
    return select(*(v.c[n] for n in columns), base.c.type, base.c.blob).select_from(
        found.outerjoin(
            base,
            (base.c.thread_id == v.c.thread_id)
            & (base.c.checkpoint_ns == v.c.checkpoint_ns)
            & (base.c.channel == v.c.channel)
            & (base.c.version == v.c.base_version),
        )
    )


def read_values(
    dialect: Any, thread_id: str, checkpoint_ns: str, keys: Iterable[tuple[str, str]]
) -> Plan[list[tuple[Any, ...]]]:
    """Value rows by (channel, version), as in `Stored.values`."""
    keys = sorted(set(keys))
    if not keys:
        return []
    params: dict[str, Any] = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}
    if dialect.name == "postgresql":
        params["channels"] = [k[0] for k in keys]
        params["versions"] = [k[1] for k in keys]
    else:
        params["keys"] = [list(k) for k in keys]
    rows = yield fetch(_values_query(dialect), params)
    return [tuple(r) for r in rows]


@prepared_raw
def _writes_query(dialect: str) -> Any:
    """Pending writes of some checkpoints of a namespace, to some channels."""
    return select(
        w.c.checkpoint_id, w.c.task_id, w.c.channel, w.c.type, w.c.blob, w.c.task_path, w.c.idx
    ).where(
        w.c.thread_id == _bind("thread_id", w.c.thread_id),
        w.c.checkpoint_ns == _bind("checkpoint_ns", w.c.checkpoint_ns),
        _in_list(dialect, w.c.checkpoint_id, "ids"),
        _in_list(dialect, w.c.channel, "channels"),
    )


def read_writes(
    dialect: Any, thread_id: str, checkpoint_ns: str, ids: Sequence[str], channels: Sequence[str]
) -> Plan[dict[str, list[tuple[Any, ...]]]]:
    """Pending writes of some checkpoints to some channels, by checkpoint, each as in
    `Stored.writes` and in the same order."""
    params = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns,
              "ids": list(ids), "channels": list(channels)}  # fmt: skip
    rows = yield fetch(_writes_query(dialect), params)
    by_checkpoint: dict[str, list[tuple[Any, ...]]] = defaultdict(list)
    for row in rows:
        by_checkpoint[row[0]].append(tuple(row[1:]))
    for writes in by_checkpoint.values():
        writes.sort(key=_write_order)
    return by_checkpoint


@prepared
def _ancestors_query(dialect: str) -> Any:
    """A page of (checkpoint_id, parent, versions, metadata) at or before an id, newest first."""
    return (
        select(t.c.checkpoint_id, t.c.parent_checkpoint_id, t.c.versions, t.c.metadata)
        .where(
            t.c.thread_id == _bind("thread_id", t.c.thread_id),
            t.c.checkpoint_ns == _bind("checkpoint_ns", t.c.checkpoint_ns),
            t.c.checkpoint_id <= _bind("from_id", t.c.checkpoint_id),
            t.c.checkpoint.isnot(None),
        )
        .order_by(t.c.checkpoint_id.desc())
        .limit(bindparam("limit", type_=Integer))
    )


def ancestors(
    dialect: Any, thread_id: str, checkpoint_ns: str, from_id: str, limit: int
) -> Plan[list[Any]]:
    """A page of checkpoints at or before ``from_id`` (to walk a parent chain)."""
    params = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns, "from_id": from_id,
              "limit": limit}  # fmt: skip
    return (yield fetch(_ancestors_query(dialect), params))  # type: ignore[no-any-return]


# -- deleting and copying -------------------------------------------------------------------


@prepared
def _delete_threads(dialect: str, table_name: str) -> Any:
    """The DELETE of some threads' rows of a table.  On PostgreSQL the statement for the
    checkpoint table deletes the values and writes too, in CTEs: one statement, atomic."""
    table = metadata.tables[table_name]
    stmt = delete(table).where(_in_list(dialect, table.c.thread_id, "thread_ids"))
    if dialect == "postgresql" and table is t:
        for other in (v, w):
            gone = delete(other).where(_in_list(dialect, other.c.thread_id, "thread_ids"))
            stmt = stmt.add_cte(gone.cte(f"gone_{other.name}"))
    return stmt


def delete_threads(dialect: Any, thread_ids: Sequence[str]) -> Plan[None]:
    """Delete every row of some threads, in every namespace (one statement on PostgreSQL;
    on SQLite, three in the caller's transaction)."""
    params = {"thread_ids": list(thread_ids)}
    for table in (t,) if dialect.name == "postgresql" else (t, v, w):
        yield execute(_delete_threads(dialect, table.name), params)


@prepared
def _runs_checkpoints(dialect: str) -> Any:
    return select(t.c.thread_id, t.c.checkpoint_ns, t.c.checkpoint_id).where(
        _in_list(dialect, t.c.run_id, "run_ids")
    )


def checkpoints_of_runs(dialect: Any, run_ids: Sequence[str]) -> Plan[list[Any]]:
    """(thread_id, checkpoint_ns, checkpoint_id) of the checkpoints some runs wrote."""
    return (yield fetch(_runs_checkpoints(dialect), {"run_ids": list(run_ids)}))  # type: ignore[no-any-return]


@prepared
def _delete_runs_writes(dialect: str) -> Any:
    return delete(w).where(_in_list(dialect, w.c.run_id, "run_ids"))


def delete_writes_of_runs(dialect: Any, run_ids: Sequence[str]) -> Plan[None]:
    """Delete the pending writes some runs made, whatever checkpoint they were made against."""
    yield execute(_delete_runs_writes(dialect), {"run_ids": list(run_ids)})


@prepared
def _namespace_rows(dialect: str) -> Any:
    return (
        select(
            t.c.checkpoint_ns,
            t.c.checkpoint_id,
            t.c.parent_checkpoint_id,
            t.c.versions,
            t.c.metadata,
        )
        .where(t.c.thread_id == _bind("thread_id", t.c.thread_id), t.c.checkpoint.isnot(None))
        .order_by(t.c.checkpoint_ns, t.c.checkpoint_id)
    )


def namespace_rows(dialect: Any, thread_id: str) -> Plan[list[Any]]:
    """Every checkpoint of a thread: key, parent, versions and metadata (no blobs)."""
    return (yield fetch(_namespace_rows(dialect), {"thread_id": thread_id}))  # type: ignore[no-any-return]


def _in_namespace(table: Table) -> tuple[Any, Any]:
    return (
        table.c.thread_id == _bind("thread_id", table.c.thread_id),
        table.c.checkpoint_ns == _bind("checkpoint_ns", table.c.checkpoint_ns),
    )


@prepared
def _delete_checkpoints(dialect: str, table_name: str) -> Any:
    table = metadata.tables[table_name]
    return delete(table).where(
        *_in_namespace(table), _in_list(dialect, table.c.checkpoint_id, "checkpoint_ids")
    )


@prepared
def _detach_parents(dialect: str) -> Any:
    return (
        update(t)
        .where(*_in_namespace(t), _in_list(dialect, t.c.checkpoint_id, "checkpoint_ids"))
        .values(parent_checkpoint_id=None)
    )


@prepared
def _value_keys(dialect: str) -> Any:
    return select(v.c.channel, v.c.version, v.c.base_version).where(*_in_namespace(v))


@prepared
def _delete_values(dialect: str) -> Any:
    if dialect == "postgresql":
        keys = func.unnest(_array("channels", v.c.channel), _array("versions", v.c.version))
        pairs = keys.table_valued("channel", "version").render_derived(name="k")
        gone = tuple_(v.c.channel, v.c.version).in_(select(pairs.c.channel, pairs.c.version))
    else:
        pairs = func.json_each(_json_list("keys")).table_valued("value")
        gone = tuple_(v.c.channel, v.c.version).in_(
            select(
                func.json_extract(pairs.c.value, "$[0]"), func.json_extract(pairs.c.value, "$[1]")
            )
        )
    return delete(v).where(*_in_namespace(v), gone)


@prepared
def _one_snapshot(dialect: str) -> Any:
    return text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


def one_snapshot(dialect: Any) -> Plan[None]:
    """(First in a transaction) let it read one snapshot: on PostgreSQL a checkpoint that a
    run commits meanwhile is then not seen at all, rather than its values alone (SQLite's
    write transactions see one state already: writers wait for each other)."""
    if dialect.name == "postgresql":
        yield execute(_one_snapshot(dialect), {})


def remove_checkpoints(
    dialect: Any,
    thread_id: str,
    checkpoint_ns: str,
    gone: Sequence[str],
    kept: Sequence[Any],
) -> Plan[None]:
    """Delete checkpoints of a namespace with their pending writes, detach the kept ones
    from them, and drop the value rows nothing kept needs (the caller's transaction)."""
    key = {"thread_id": thread_id, "checkpoint_ns": checkpoint_ns}
    for table in (t, w):
        yield execute(
            _delete_checkpoints(dialect, table.name), {**key, "checkpoint_ids": list(gone)}
        )
    gone_set = set(gone)
    orphans = [r.checkpoint_id for r in kept if r.parent_checkpoint_id in gone_set]
    if orphans:
        yield execute(_detach_parents(dialect), {**key, "checkpoint_ids": orphans})
    used = {(ch, ver) for r in kept for ch, ver in r.versions.items()}
    rows = yield fetch(_value_keys(dialect), key)
    used |= {
        (r.channel, r.base_version)
        for r in rows
        if r.base_version and (r.channel, r.version) in used
    }
    unused = sorted((r.channel, r.version) for r in rows if (r.channel, r.version) not in used)
    if not unused:
        return
    if dialect.name == "postgresql":
        params = {**key, "channels": [k[0] for k in unused], "versions": [k[1] for k in unused]}
    else:
        params = {**key, "keys": [list(k) for k in unused]}
    yield execute(_delete_values(dialect), params)


@prepared
def _thread_exists(dialect: str) -> Any:
    return (
        select(t.c.checkpoint_id).where(t.c.thread_id == _bind("thread_id", t.c.thread_id)).limit(1)
    )


def thread_exists(dialect: Any, thread_id: str) -> Plan[bool]:
    """Whether a thread has any checkpoint."""
    return bool((yield fetch(_thread_exists(dialect), {"thread_id": thread_id})))


@prepared
def _copy_thread(dialect: str, table_name: str) -> Any:
    """Copy a thread's value or write rows to another thread id."""
    table = metadata.tables[table_name]
    columns = [c for c in table.c if c.name != "thread_id"]
    return insert(table).from_select(
        ["thread_id", *(c.name for c in columns)],
        select(_bind("target", table.c.thread_id), *columns).where(
            table.c.thread_id == _bind("source", table.c.thread_id)
        ),
    )


@prepared
def _state_rows(dialect: str) -> Any:
    return select(t).where(t.c.thread_id == _bind("thread_id", t.c.thread_id))


@prepared
def _insert_state(dialect: str) -> Any:
    return insert(t).values({c.name: _bind(c.name, c) for c in t.c})


def copy_thread(dialect: Any, source: str, target: str, new_id: Callable[[], str]) -> Plan[None]:
    """Copy every checkpoint, value and write of a thread to another thread id (each
    checkpoint row gets a new ``id`` from ``new_id``)."""
    rows = yield fetch(_state_rows(dialect), {"thread_id": source})
    if rows:
        yield execute_many(
            _insert_state(dialect),
            [{**r._asdict(), "thread_id": target, "id": new_id()} for r in rows],
        )
    for table in (v, w):
        yield execute(_copy_thread(dialect, table.name), {"source": source, "target": target})
