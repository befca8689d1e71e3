"""Retention policies: how long each agent's rows are kept, and what they make old.

A policy gives an age for each kind of row (results, logs, traces, checkpoint threads), or
NULL to keep it forever; it belongs to one agent, or is the default (``DEFAULT_POLICY``) of
every agent without one.  Each policy is a *scope* of rows: an agent's, or, for the default,
every agent's that has no policy of its own.  Within a scope a row is old when:

- a result: it finished (completed or failed) before its age (running and interrupted
  results are never old);
- a log or a trace: it was written before its age;
- a checkpoint thread: its last activity (its newest checkpoint, and the last update of any
  result of the thread) is older than its age, and no run of it is running or interrupted.
  A thread's agent is the one its checkpoints name, else that of its newest result.

Deleting goes batch by batch (see `delete_batch`); a thread's checkpoints go first, then its
checkpoint values and writes once it has no checkpoint left.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    delete,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.sql.elements import ColumnElement

from ..schema import (
    DEFAULT_POLICY,
    SEARCHED,
    agent_results,
    agent_traces,
    checkpoint_state_values,
    checkpoint_state_writes,
    checkpoint_states,
    execution_logs,
    retention_policies,
)
from .dialect import upsert
from .paging import count_where, delete_batch
from .results import FINISHED

KINDS = ("results", "logs", "traces", "checkpoints")
EVENT_TABLES = {"logs": execution_logs, "traces": agent_traces}
ACTIVE = ("running", "interrupted")  # a thread with such a run is never deleted


@dataclass(frozen=True, slots=True)
class Scope:
    """The rows one policy governs, and the moment before which each kind is old (None: kept)."""

    agent_id: str | None  # None: the default policy's scope
    others: tuple[str, ...]  # for the default: the agents that have a policy of their own
    cutoffs: dict[str, dt.datetime | None]

    def owns(self, column: Any) -> ColumnElement[bool]:
        """The condition on an agent column for the rows of this scope."""
        if self.agent_id is not None:
            return column == self.agent_id  # type: ignore[no-any-return]
        if not self.others:
            return column.is_not(None)  # type: ignore[no-any-return]
        return column.not_in(self.others)  # type: ignore[no-any-return]


# -- policies ----------------------------------------------------------------------------------


def list_policies(conn: Connection) -> list[Any]:
    """Every stored policy, the default first."""
    p = retention_policies.c
    rows = list(conn.execute(select(retention_policies).order_by(p.agent_id)))
    return sorted(rows, key=lambda r: r.agent_id != DEFAULT_POLICY)


def get_policy(conn: Connection, agent_id: str) -> Any:
    """One stored policy, or None."""
    p = retention_policies.c
    return conn.execute(select(retention_policies).where(p.agent_id == agent_id)).one_or_none()


def put_policy(conn: Connection, values: dict[str, Any]) -> None:
    """Create or replace a policy (``values`` has every column)."""
    stmt = upsert(conn, retention_policies).values(values)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=["agent_id"],
        set_={k: stmt.excluded[k] for k in values if k != "agent_id"},
    ))


def delete_policy(conn: Connection, agent_id: str) -> bool:
    """Remove a policy; whether there was one."""
    p = retention_policies.c
    return bool(conn.execute(delete(retention_policies).where(p.agent_id == agent_id)).rowcount)


def scopes(policies: Sequence[Any], at: dt.datetime) -> list[Scope]:
    """The scopes of the stored policies, with each kind's cutoff at the moment ``at``."""
    own = tuple(sorted(p.agent_id for p in policies if p.agent_id != DEFAULT_POLICY))
    found = []
    for policy in policies:
        cutoffs = {}
        for kind in KINDS:
            seconds = getattr(policy, f"keep_{kind}")
            cutoffs[kind] = None if seconds is None else at - dt.timedelta(seconds=seconds)
        default = policy.agent_id == DEFAULT_POLICY
        found.append(Scope(None if default else policy.agent_id, own if default else (),
                           cutoffs))
    return found


# -- what is old -------------------------------------------------------------------------------


def old_rows(kind: str, scope: Scope, cutoff: dt.datetime) -> tuple[Table, ColumnElement[bool]]:
    """The table of ``kind`` (results, logs or traces) and the condition of its old rows."""
    if kind == "results":
        r = agent_results.c
        return agent_results, (
            scope.owns(r.agent_id) & r.status.in_(FINISHED) & (r.completed_at < cutoff)
        )
    table = EVENT_TABLES[kind]
    return table, scope.owns(table.c.agent_id) & (table.c.timestamp < cutoff)


def old_threads(scope: Scope, cutoff: dt.datetime, among: Sequence[str] | None = None) -> Any:
    """A query of the ids of the scope's checkpoint threads that are old (see the module), of
    all threads or ``among`` some."""
    cs, r = checkpoint_states.c, agent_results.c
    grouped = select(
        cs.thread_id, func.max(cs.created_at).label("last_at"),
        func.max(cs.agent_id).label("agent_id"),
    ).group_by(cs.thread_id)
    if among is not None:
        grouped = grouped.where(cs.thread_id.in_(list(among)))
    threads = grouped.subquery()
    newest_result_agent = (
        select(r.agent_id).where(r.thread_id == threads.c.thread_id)
        .order_by(r.created_at.desc()).limit(1).scalar_subquery()
    )
    owner = func.coalesce(threads.c.agent_id, newest_result_agent)
    owned = scope.owns(owner)
    if scope.agent_id is None:  # the default also governs threads no agent is known for
        owned = or_(owner.is_(None), owned)
    recent_result = exists().where(r.thread_id == threads.c.thread_id, r.updated_at >= cutoff)
    active = exists().where(r.thread_id == threads.c.thread_id, r.status.in_(ACTIVE))
    return select(threads.c.thread_id).where(
        threads.c.last_at < cutoff, owned, ~recent_result, ~active
    ).order_by(threads.c.thread_id)


def old_thread_ids(conn: Connection, scope: Scope, cutoff: dt.datetime) -> list[str]:
    """The ids of the scope's old checkpoint threads."""
    return [row.thread_id for row in conn.execute(old_threads(scope, cutoff))]


def count_checkpoints(conn: Connection, thread_ids: Sequence[str]) -> int:
    """How many checkpoints some threads have."""
    cs = checkpoint_states.c
    total = 0
    for start in range(0, len(thread_ids), 500):
        chunk = list(thread_ids[start:start + 500])
        total += count_where(conn, checkpoint_states, cs.thread_id.in_(chunk))
    return total


def count_old(conn: Connection, kind: str, scope: Scope, cutoff: dt.datetime) -> int:
    """How many old rows of ``kind`` (results, logs or traces) the scope has."""
    table, where = old_rows(kind, scope, cutoff)
    return count_where(conn, table, where)


def delete_old_checkpoints(
    conn: Connection, scope: Scope, cutoff: dt.datetime, thread_ids: Sequence[str], size: int
) -> tuple[list[str], int]:
    """Delete up to ``size`` checkpoints of those of ``thread_ids`` that are still old: (those
    threads, how many checkpoints went).  Their values and writes go by `delete_orphans`."""
    ids = [row.thread_id for row in conn.execute(old_threads(scope, cutoff, thread_ids))]
    if not ids:
        return [], 0
    cs = checkpoint_states.c
    return ids, delete_batch(conn, checkpoint_states, cs.thread_id.in_(ids), size)


def delete_orphans(conn: Connection, thread_ids: Sequence[str], size: int) -> int:
    """Delete up to ``size`` checkpoint values and writes of threads that have no checkpoint
    left (among ``thread_ids``)."""
    gone = 0
    for table in (checkpoint_state_writes, checkpoint_state_values):
        left = size - gone
        if left <= 0:
            break
        orphan = ~exists().where(checkpoint_states.c.thread_id == table.c.thread_id)
        gone += delete_batch(conn, table, table.c.thread_id.in_(list(thread_ids)) & orphan, left)
    return gone


# -- SQLite's search index while many rows go -----------------------------------------------
#
# FTS5 merges the segments of its index as rows are written (``automerge``), and a delete is a
# write: during a large cleanup some batches would do a merge besides, holding the write lock
# ten times longer than the others.  And once a level of the index holds ``crisismerge``
# segments (16), the next write merges them all at once, whatever automerge says: with a new
# segment per batch, one batch in a few hundred held the lock 100 to 170 ms.  So a cleanup
# turns both off for the table it empties, merges a few pages between its batches and the
# rest at the end, in small steps, then turns them back on.

FTS5_MERGING = {"automerge": 4, "crisismerge": 16}  # FTS5's defaults
CLEANUP_MERGING = {"automerge": 0, "crisismerge": 1000}  # while a cleanup empties a table
MERGE_PAGES = 8  # pages of merge work per step: a few milliseconds


def fts_table(table: Table) -> str | None:
    """The FTS5 table that indexes ``table`` (logs and traces), or None."""
    return f"{table.name}_search" if table.name in SEARCHED else None


def set_merging(conn: Connection, fts: str, settings: dict[str, int]) -> None:
    """Set FTS5's merge options (``automerge``, ``crisismerge``) of an index."""
    for option, value in settings.items():
        conn.execute(text(f"INSERT INTO {fts} ({fts}, rank) VALUES (:option, :value)"),
                     {"option": option, "value": value})


@contextmanager
def cleaning(database: str) -> Iterator[None]:
    """Held while a cleanup has FTS5's merging off (a shared ``flock`` on a file beside the
    SQLite file ``database``): a process killed meanwhile lets go of it as it dies, so that
    `restore_merging` can tell a cleanup that stopped from one that runs."""
    fd = _lock_file(database)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def merging_left_off(conn: Connection) -> list[str]:
    """The FTS5 indexes whose merging a cleanup turned off (`CLEANUP_MERGING`) and did not
    turn on again, if it is still running or if it was killed."""
    off = str(CLEANUP_MERGING["crisismerge"])
    return [f"{name}_search" for name in SEARCHED if str(conn.execute(text(
        f"SELECT v FROM {name}_search_config WHERE k = 'crisismerge'")).scalar()) == off]


def restore_merging(conn: Connection, database: str, indexes: list[str]) -> bool:
    """Turn FTS5's merging on again for ``indexes`` (`merging_left_off`), unless a cleanup
    still runs (`cleaning`); whether it did."""
    fd = _lock_file(database)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a cleanup runs: it turns merging on again when it is done
        for fts in indexes:
            set_merging(conn, fts, FTS5_MERGING)
        return True
    finally:
        os.close(fd)


def _lock_file(database: str) -> int:
    """The open lock file of `cleaning`, beside the SQLite file (the same for every process,
    whatever its working directory)."""
    path = os.path.abspath(os.path.expanduser(database))
    return os.open(f"{path}-retention.lock", os.O_RDWR | os.O_CREAT, 0o600)


def merge_step(conn: Connection, fts: str, pages: int = MERGE_PAGES) -> bool:
    """Merge up to ``pages`` pages of an FTS5 index; whether there was work left to do."""
    raw = conn.connection.dbapi_connection
    before = raw.total_changes  # type: ignore[union-attr]
    conn.execute(text(f"INSERT INTO {fts} ({fts}, rank) VALUES ('merge', :pages)"),
                 {"pages": pages})
    return raw.total_changes - before >= 2  # type: ignore[union-attr]


def delete_old_batch(
    conn: Connection, kind: str, scope: Scope, cutoff: dt.datetime, size: int,
    after: tuple[Any, Any] | None,
) -> tuple[int, tuple[Any, Any] | None]:
    """Delete up to about ``size`` of the scope's old rows of ``kind``, oldest first, after
    the key ``after`` (where the previous batch ended): (how many went, where this one ended).

    A batch is the ``size`` oldest rows after ``after``, in (time, id) order, deleted by
    primary key.  Each batch starts where the previous one ended, so
    rows deleted but not yet vacuumed (PostgreSQL) are not walked past again and again, as a
    plain "the first ``size`` old rows" would (its cost grew with every batch).
    """
    table, where = old_rows(kind, scope, cutoff)
    at, id_ = (table.c.completed_at if kind == "results" else table.c.timestamp), table.c.id
    conditions = [where]
    if after is not None:
        conditions += [at >= after[0], tuple_(at, id_) > tuple_(
            literal(after[0], at.type), literal(after[1], id_.type))]
    chosen = select(*table.primary_key.columns).where(*conditions).order_by(at, id_).limit(size)
    last = conn.execute(select(at, id_).where(*conditions).order_by(at, id_)
                        .offset(size - 1).limit(1)).one_or_none()
    key = tuple_(*table.primary_key.columns)
    gone = conn.execute(delete(table).where(key.in_(chosen))).rowcount
    return gone, (last[0], last[1]) if last is not None else after
