"""Planning deletes of checkpoints: which rows a prune keeps, and which later checkpoints still
need an earlier one to rebuild a `DeltaChannel` from its ancestors' writes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row

DELTA_COUNTERS = "counters_since_delta_snapshot"


def namespaces(rows: Sequence[Row[Any]]) -> dict[str, list[Row[Any]]]:
    """A thread's checkpoint rows by namespace, oldest first."""
    by_ns: dict[str, list[Row[Any]]] = defaultdict(list)
    for r in rows:
        by_ns[r.checkpoint_ns].append(r)
    return by_ns


def replays_history(row: Row[Any]) -> bool:
    """Whether a checkpoint rebuilds some DeltaChannel from its ancestors' writes."""
    return bool((row.metadata or {}).get(DELTA_COUNTERS))


def root_of(row: Row[Any]) -> str | None:
    """The root-graph checkpoint a subgraph checkpoint was made under."""
    parents = (row.metadata or {}).get("parents") or {}
    return parents.get("") if isinstance(parents, dict) else None


def keep_latest(rows: Sequence[Row[Any]]) -> list[Row[Any]]:
    """The latest checkpoint of a namespace and the ancestors its DeltaChannels replay from."""
    if not rows:
        return []
    by_id = {r.checkpoint_id: r for r in rows}
    head = rows[-1]
    kept = [head]
    needed = set(((head.metadata or {}).get(DELTA_COUNTERS) or {}).keys())
    cursor = by_id.get(head.parent_checkpoint_id or "")
    # each ancestor is kept until one holds a stored value (a snapshot) for every such channel
    while needed and cursor is not None:
        kept.append(cursor)
        needed -= _snapshotted(cursor, needed)
        cursor = by_id.get(cursor.parent_checkpoint_id or "")
    return kept


def _snapshotted(row: Row[Any], channels: set[str]) -> set[str]:
    """Channels of ``channels`` that have no pending delta at ``row`` (it stores their value)."""
    counters = (row.metadata or {}).get(DELTA_COUNTERS) or {}
    return {c for c in channels if c in row.versions and c not in counters}
