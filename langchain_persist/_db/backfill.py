"""Fill derived structures for the rows stored before they existed, in short batches.

A migration that adds such a structure (the search index of logs and traces, revision 0002)
makes it keep up with new rows at once, and leaves an entry in ``langchain_persist_backfill``
for the rows already there.  `run` works through those entries batch by batch, each batch one
short transaction (writers wait at most for one batch), with progress, and can be stopped and
run again: it goes on where it stopped.  `migrate.upgrade` and `migrate.ensure_schema` run it.

- PostgreSQL: a row not yet indexed has a NULL ``search_vector``; a batch re-sets a searched
  column of such rows (``SET name = name``), which fires the trigger that fills the vector.
- SQLite: the rows not yet in the FTS5 index are those with a rowid from ``position`` up to
  ``until`` (the newest rowid when the migration ran); a batch indexes the next range.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, column, delete, func, literal_column, select, table, update

from .engine import Database
from .schema import SEARCH_COLUMN, SEARCHED, backfills, metadata

logger = logging.getLogger("langchain_persist")

DEFAULT_BATCH = 5000
Progress = Callable[[str, int, int], None]
"""Called after each batch with the table's name, the rows done so far and the rows in all."""


def pending(db: Database) -> dict[str, int]:
    """The tables whose rows are not all indexed yet, with about how many rows are left."""
    with db.read() as conn:
        names = [r.name for r in conn.execute(select(backfills.c.name))]
        return {name: _left(conn, name) for name in names}


def run(db: Database, on_progress: Progress | None = None, *, batch: int = DEFAULT_BATCH) -> int:
    """Index every row still waiting, batch by batch; return how many were indexed.

    Without ``on_progress`` (an upgrade the library does by itself on first use), a warning
    says what is being indexed.
    """
    total, waiting = 0, pending(db)
    if waiting and on_progress is None:
        logger.warning(
            "langchain-persist: indexing %s stored before the search index existed (once; "
            "`langchain-persist db upgrade` does it ahead, with a progress bar)",
            describe(waiting),
        )
    for name, left in waiting.items():
        done = 0
        while True:
            with db.write() as conn:
                count, finished = _batch(conn, name, batch)
            done += count
            if on_progress is not None:
                on_progress(name, done, max(left, done))
            if finished:
                break
        total += done
    return total


def _left(conn: Connection, name: str) -> int:
    t = metadata.tables[name]
    if conn.dialect.name == "postgresql":
        where = literal_column(SEARCH_COLUMN).is_(None)
    else:
        position, until = conn.execute(
            select(backfills.c.position, backfills.c.until).where(backfills.c.name == name)
        ).one()
        where = literal_column("rowid").between(position, until)
    return conn.execute(select(func.count()).select_from(t).where(where)).scalar_one()


def _batch(conn: Connection, name: str, size: int) -> tuple[int, bool]:
    """Index up to ``size`` rows of table ``name``; (how many, whether none are left)."""
    t = metadata.tables[name]
    entry = backfills.c.name == name
    found = conn.execute(
        select(backfills.c.position, backfills.c.until).where(entry)
    ).one_or_none()
    if found is None:  # another process finished it
        return 0, True
    if conn.dialect.name == "postgresql":
        ctid = literal_column("ctid")
        unindexed = literal_column(SEARCH_COLUMN).is_(None)
        chosen = select(ctid).select_from(t).where(unindexed).limit(size).with_for_update(
            skip_locked=True
        )
        first = SEARCHED[name][0]  # re-setting it fires the trigger that fills the vector
        count = conn.execute(
            update(t).where(ctid == func.any(func.array(chosen.scalar_subquery())))
            .values({first: t.c[first]})
        ).rowcount
        finished = count < size and conn.execute(
            select(func.count()).select_from(select(ctid).select_from(t).where(unindexed)
                                             .limit(1).subquery())
        ).scalar_one() == 0
        position = found.position + count
    else:
        columns = SEARCHED[name]
        fts = table(f"{name}_search", column("rowid"), *(column(c) for c in columns))
        rowid = literal_column("rowid")
        start, end = found.position, min(found.position + size, found.until + 1)
        count = conn.execute(
            fts.insert().from_select(
                ["rowid", *columns],
                select(rowid, *(t.c[c] for c in columns)).where(rowid >= start, rowid < end),
            )
        ).rowcount
        finished = end > found.until
        position = end
    if finished:
        conn.execute(delete(backfills).where(entry))
    else:
        conn.execute(update(backfills).where(entry).values(position=position))
    return count, finished


def describe(left: dict[str, Any]) -> str:
    """``12,000 traces and 3,000 logs``: what `pending` returned, in words."""
    words = {"agent_traces": "traces", "execution_logs": "logs"}
    return " and ".join(f"{n:,} {words.get(name, name)}" for name, n in left.items())
