"""SQL for `checkpoint_states` as the service sees it: save a state, read it back by id."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select

from .._records import CheckpointState
from .._schema import checkpoint_states as t
from ._dialect import upsert

_KEY = ("thread_id", "checkpoint_ns", "checkpoint_id")
_COLUMNS = [t.c[name] for name in CheckpointState.__dataclass_fields__ if name != "state"]


def upsert_state(conn: Connection, values: dict[str, Any]) -> None:
    """Insert a checkpoint state, or replace the state and metadata of the same checkpoint."""
    stmt = upsert(conn, t).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=list(_KEY),
        set_={"state": stmt.excluded.state, "metadata": stmt.excluded.metadata},
    )
    conn.execute(stmt)


def find_state_rows(
    conn: Connection, checkpoint_id: str, *, thread_id: str | None = None
) -> list[Any]:
    """Rows of a checkpoint id (newest first), with the saver's blob when it wrote the row."""
    query = (
        select(*_COLUMNS, t.c.state, t.c.checkpoint)
        .where(t.c.checkpoint_id == checkpoint_id)
        .order_by(t.c.created_at.desc())
    )
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
