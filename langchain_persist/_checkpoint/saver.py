"""`PersistSaver`: a LangGraph checkpoint saver over the langchain-persist tables.

One row per checkpoint (`checkpoint_states`, the same rows `get_checkpoint_state` reads), one
row per channel *version* (`checkpoint_state_values`: a channel that did not change is not
stored again; a list that only grew is stored as the bytes appended since a base version, see
`codec` and `bases`), one row per pending write.  `put` and `put_writes` return only once their
transaction committed.  Async methods run the same code in a worker thread, so they never
block the event loop.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    DeltaChannelHistory,
    PendingWrite,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from sqlalchemy import Row

from .._aio import async_twin
from .._db.lease import Lease, Leased, recheck_schema
from .._db.sql import checkpoints as store
from .._errors import ValidationError
from .._ids import uuid7
from .._sanitize import checked_id, checked_namespace, jsonable
from .bases import Bases, for_database
from .codec import EMPTY, dump, is_list, load, load_value, load_values, pack, tail_of
from .prune import keep_latest, namespaces, replays_history, root_of

PAGE = 100
# a list is stored as a tail while what was appended since its base stays this small
TAIL_FRACTION = 4
BASE_MIN_BYTES = 1024
STRATEGIES = ("keep_latest", "delete")


class _Key(NamedTuple):
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str | None


def _key(config: RunnableConfig) -> _Key:
    conf = config.get("configurable") or {}
    thread_id = conf.get("thread_id")
    if thread_id is None or thread_id == "":
        raise ValidationError(
            'PersistSaver needs a thread: pass config={"configurable": {"thread_id": "..."}}'
        )
    checkpoint_id = get_checkpoint_id(config)
    return _Key(
        checked_id("thread_id", str(thread_id)),  # type: ignore[arg-type]
        checked_namespace(conf.get("checkpoint_ns") or ""),
        None if checkpoint_id is None else checked_id("checkpoint_id", str(checkpoint_id)),
    )


def _config(thread_id: str, checkpoint_ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint_id,
        }
    }


class PersistSaver(Leased, BaseCheckpointSaver[str]):
    """A LangGraph checkpointer on SQLite or PostgreSQL: ``builder.compile(checkpointer=saver)``.

    ``url`` is resolved like everywhere in langchain-persist (argument, then
    ``LANGCHAIN_PERSIST_DATABASE_URL``, then ``DATABASE_URL``, then ``./langchain_persist.db``).
    The schema is created or upgraded on construction unless ``migrate=False``.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        serde: SerializerProtocol | None = None,
        migrate: bool = True,
    ) -> None:
        super().__init__(serde=serde)
        self.migrate = migrate
        self._lease = Lease(url, migrate=migrate)
        self._dialect = self._lease.db.fast.dialect

    @property
    def _bases(self) -> Bases:
        return for_database(self._lease.db)

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        *,
        serde: SerializerProtocol | None = None,
        migrate: bool = True,
    ) -> PersistSaver:
        """A ready saver for a database URL (also a sync and async context manager)."""
        return cls(url, serde=serde, migrate=migrate)

    def __repr__(self) -> str:
        return f"PersistSaver({self._lease!r})"

    def __enter__(self) -> PersistSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> PersistSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- writing --------------------------------------------------------------------------------

    @recheck_schema
    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Store a checkpoint and the values of the channels it changed; return its config."""
        thread_id, ns, parent_id = _key(config)
        rest = dict(checkpoint)
        values = rest.pop("channel_values")
        versions = rest.pop("channel_versions")
        value_rows, new_bases = [], []
        for channel, version in new_versions.items():
            row, base = self._value_row(thread_id, ns, channel, str(version), values)
            value_rows.append(row)
            if base is not None:
                new_bases.append(base)
        type_, blob = pack(*dump(self.serde, rest, "the checkpoint"))
        given = get_serializable_checkpoint_metadata(config, metadata)
        meta = jsonable(given)
        conf = config.get("configurable") or {}
        agent_id = conf.get("agent_id") or given.get("agent_id")  # as given: ids are not cleaned
        if agent_id is not None:
            agent_id = checked_id("agent_id", str(agent_id))
        run_id = str(meta["run_id"]) if meta.get("run_id") else _run_id(config)
        row = {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint["id"],
            "id": uuid7(),
            "agent_id": None if agent_id is None else str(agent_id),
            "parent_checkpoint_id": parent_id,
            "run_id": run_id,
            "type": type_,
            "checkpoint": blob,
            "versions": {k: str(v) for k, v in versions.items()},
            "metadata": meta,
            "created_at": dt.datetime.now(dt.UTC),
        }
        with self.db.cursor(write=True) as cur:
            store.put_checkpoint(cur, self._dialect, row, value_rows)
        self._bases.add(new_bases)
        return _config(thread_id, ns, checkpoint["id"])

    def _value_row(
        self, thread_id: str, ns: str, channel: str, version: str, values: Mapping[str, Any]
    ) -> tuple[dict[str, Any], Any]:
        """The row storing one channel version, and the base entry it makes (or None)."""
        row = {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "channel": channel,
            "version": version,
            "type": EMPTY,
            "blob": None,
            "base_version": None,
        }
        if channel not in values:
            return row, None
        stype, raw = dump(self.serde, values[channel], f"channel {channel!r}")
        key = (thread_id, ns, channel)
        base = self._bases.get(key)
        if base is not None and base[1] == stype:
            tail = tail_of(raw, base[2])
            if tail is not None and len(tail) <= len(base[2]) // TAIL_FRACTION:
                row["type"], row["blob"] = pack(stype, tail)
                row["base_version"] = base[0]
                return row, None
        row["type"], row["blob"] = pack(stype, raw)
        if len(raw) >= BASE_MIN_BYTES and is_list(raw):
            return row, (key, (version, stype, raw))
        return row, None

    @recheck_schema
    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Store the writes a task made against a checkpoint (pending until the next one)."""
        thread_id, ns, checkpoint_id = _key(config)
        if not writes:
            return
        run_id = _run_id(config)
        rows = []
        for idx, (channel, value) in enumerate(writes):
            type_, blob = pack(*dump(self.serde, value, f"a write to channel {channel!r}"))
            rows.append(
                {
                    "thread_id": thread_id,
                    "checkpoint_ns": ns,
                    "checkpoint_id": checkpoint_id,
                    "task_id": task_id,
                    "idx": WRITES_IDX_MAP.get(channel, idx),
                    "channel": channel,
                    "type": type_,
                    "blob": blob,
                    "task_path": task_path,
                    "run_id": run_id,
                }
            )
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        with self.db.cursor(write=True) as cur:
            store.put_writes(cur, self._dialect, rows, replace=replace)

    # -- reading --------------------------------------------------------------------------------

    @recheck_schema
    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint named by ``config``, or the thread's latest, with its pending writes."""
        key = _key(config)
        with self.db.cursor() as cur:
            row = store.get_checkpoint(cur, self._dialect, *key)
            if row is None:
                return None
            values, writes = store.get_values_and_writes(
                cur,
                self._dialect,
                key.thread_id,
                key.checkpoint_ns,
                row.versions.items(),
                [row.checkpoint_id],
            )
        return self._tuple(key.thread_id, row, values, writes)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, read a page at a time; filter on metadata, before, limit."""
        conf = (config or {}).get("configurable") or {}
        thread_id = _optional_id("thread_id", conf.get("thread_id"))
        ns = conf.get("checkpoint_ns")
        ns = None if ns is None else checked_namespace(ns)
        checkpoint_id = _optional_id("checkpoint_id", conf.get("checkpoint_id"))
        before_id = _optional_id("before", get_checkpoint_id(before) if before else None)
        filter = jsonable(filter) if filter else None  # as the metadata was stored
        left = limit
        after: tuple[str, str, str] | None = None
        while left is None or left > 0:
            size = PAGE if left is None or filter else min(PAGE, left)
            with self.db.read() as conn:
                rows = store.list_checkpoints(
                    conn,
                    thread_id=thread_id,
                    checkpoint_ns=ns,
                    checkpoint_id=checkpoint_id,
                    before=before_id,
                    filter=filter,
                    after=after,
                    limit=size,
                )
                matching = [r for r in rows if _matches(r.metadata, filter)]
                page = self._load_page(conn.connection.cursor(), matching)
            for tup in page:
                yield tup
                if left is not None:
                    left -= 1
                    if left == 0:
                        return
            if len(rows) < size:
                return
            last = rows[-1]
            after = (last.checkpoint_id, last.checkpoint_ns, last.thread_id)

    def _load_page(self, cur: Any, rows: list[Row[Any]]) -> list[CheckpointTuple]:
        """Values and writes of a page of checkpoint rows, fetched per namespace."""
        groups: dict[tuple[str, str], list[Row[Any]]] = defaultdict(list)
        for r in rows:
            groups[(r.thread_id, r.checkpoint_ns)].append(r)
        values: dict[tuple[str, str], Mapping[tuple[str, str], Row[Any]]] = {}
        writes: dict[tuple[str, str, str], list[Row[Any]]] = defaultdict(list)
        for (thread_id, ns), group in groups.items():
            keys = {item for r in group for item in r.versions.items()}
            ids = [r.checkpoint_id for r in group]
            values[thread_id, ns], group_writes = store.get_values_and_writes(
                cur, self._dialect, thread_id, ns, keys, ids
            )
            for wr in group_writes:
                writes[thread_id, ns, wr.checkpoint_id].append(wr)
        return [
            self._tuple(
                r.thread_id,
                r,
                values[r.thread_id, r.checkpoint_ns],
                writes[r.thread_id, r.checkpoint_ns, r.checkpoint_id],
            )
            for r in rows
        ]

    def _tuple(
        self,
        thread_id: str,
        row: Row[Any],
        values: Mapping[tuple[str, str], Row[Any]],
        writes: Sequence[Row[Any]],
    ) -> CheckpointTuple:
        where = _Where(row.checkpoint_id, thread_id)
        checkpoint = load(self.serde, row.type, row.checkpoint, where)
        checkpoint["channel_versions"] = dict(row.versions)
        checkpoint["channel_values"] = load_values(self.serde, row.versions, values, where)
        ns = row.checkpoint_ns
        return CheckpointTuple(
            config=_config(thread_id, ns, row.checkpoint_id),
            checkpoint=checkpoint,
            metadata=row.metadata,
            parent_config=(
                _config(thread_id, ns, row.parent_checkpoint_id)
                if row.parent_checkpoint_id
                else None
            ),
            pending_writes=[self._write(wr) for wr in writes],
        )

    def _write(self, row: Row[Any]) -> PendingWrite:
        what = _Where(row.checkpoint_id, None, f"a pending write to {row.channel!r} of ")
        return (row.task_id, row.channel, load(self.serde, row.type, row.blob, what))

    @recheck_schema
    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Mapping[str, DeltaChannelHistory]:
        """Writes and seed of some channels along the parent chain, a page of ancestors a query."""
        if not channels:
            return {}
        thread_id, ns, checkpoint_id = _key(config)
        writes: dict[str, list[PendingWrite]] = {c: [] for c in channels}
        seeds: dict[str, Any] = {}
        left = set(channels)
        with self.db.cursor() as cur:
            target = store.get_checkpoint(cur, self._dialect, thread_id, ns, checkpoint_id)
            parent = target.parent_checkpoint_id if target is not None else None
            while parent is not None and left:
                chain = []
                for r in store.ancestors(cur, self._dialect, thread_id, ns, parent, PAGE):
                    if r.checkpoint_id == parent:
                        chain.append(r)
                        parent = r.parent_checkpoint_id
                if not chain:
                    break
                keys = {(c, r.versions[c]) for r in chain for c in left if c in r.versions}
                ids = [r.checkpoint_id for r in chain]
                values, chain_writes = store.get_values_and_writes(
                    cur, self._dialect, thread_id, ns, keys, ids, left
                )
                by_checkpoint: dict[str, list[Row[Any]]] = defaultdict(list)
                for wr in chain_writes:
                    by_checkpoint[wr.checkpoint_id].append(wr)
                for r in chain:  # newest first
                    for wr in reversed(by_checkpoint[r.checkpoint_id]):
                        if wr.channel in left:
                            writes[wr.channel].append(self._write(wr))
                    for channel in [c for c in left if c in r.versions]:
                        value = values.get((channel, r.versions[channel]))
                        if value is not None and value.type != EMPTY:
                            seeds[channel] = load_value(self.serde, value, values)
                            left.discard(channel)
                    if not left:
                        break
        result: dict[str, DeltaChannelHistory] = {}
        for channel in channels:
            entry: DeltaChannelHistory = {"writes": writes[channel][::-1]}
            if channel in seeds:
                entry["seed"] = seeds[channel]
            result[channel] = entry
        return result

    # -- deleting and copying -------------------------------------------------------------------

    @recheck_schema
    def delete_thread(self, thread_id: str) -> None:
        """Delete every checkpoint, value and write of a thread."""
        self._bases.forget([str(thread_id)])
        with self.db.cursor(write=True) as cur:
            store.delete_threads(cur, self._dialect, [str(thread_id)])

    @recheck_schema
    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (with their writes and values) that some runs wrote.

        Raises `ValidationError`, deleting nothing, when a checkpoint that stays still needs a
        deleted one to rebuild a `DeltaChannel`.
        """
        if not run_ids:
            return
        with self.db.write() as conn:
            doomed: dict[tuple[str, str], set[str]] = defaultdict(set)
            for r in store.checkpoints_of_runs(conn, [str(r) for r in run_ids]):
                doomed[(r.thread_id, r.checkpoint_ns)].add(r.checkpoint_id)
            self._bases.forget([thread_id for thread_id, _ in doomed])
            store.delete_writes_of_runs(conn, [str(r) for r in run_ids])
            for thread_id in {thread_id for thread_id, _ in doomed}:
                for ns, rows in namespaces(store.namespace_rows(conn, thread_id)).items():
                    gone = doomed.get((thread_id, ns), set())
                    if gone:
                        kept = [r for r in rows if r.checkpoint_id not in gone]
                        orphans = [r for r in kept if r.parent_checkpoint_id in gone]
                        if any(replays_history(r) for r in orphans):
                            raise ValidationError(
                                f"cannot delete runs {list(run_ids)}: later checkpoints of "
                                f"thread {thread_id!r} rebuild a DeltaChannel from their "
                                "checkpoints; delete the whole thread or prune it instead"
                            )
                        self._remove(conn, thread_id, ns, sorted(gone), kept)

    @recheck_schema
    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, value and write of a thread (its whole history) to a new one."""
        source, target = str(source_thread_id), str(target_thread_id)
        with self.db.write() as conn:
            if store.thread_exists(conn, target):
                raise ValidationError(
                    f"thread {target!r} already has checkpoints; copy into a new thread id "
                    "(or delete_thread it first)"
                )
            rows = store.state_rows(conn, source)
            store.insert_states(conn, [{**r, "thread_id": target, "id": uuid7()} for r in rows])
            store.copy_rows(conn, source, target)

    @recheck_schema
    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune threads: ``"keep_latest"`` keeps each namespace's latest checkpoint (and the
        ancestors its DeltaChannels are rebuilt from); ``"delete"`` removes everything."""
        if strategy not in STRATEGIES:
            raise ValidationError(
                f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}"
            )
        thread_ids = [str(t) for t in thread_ids]
        if not thread_ids:
            return
        self._bases.forget(thread_ids)
        if strategy == "delete":
            with self.db.cursor(write=True) as cur:
                store.delete_threads(cur, self._dialect, thread_ids)
            return
        for thread_id in thread_ids:  # one short transaction per thread
            with self.db.write() as conn:
                by_ns = namespaces(store.namespace_rows(conn, thread_id))
                roots = by_ns.get("", [])
                root_ids = {r.checkpoint_id for r in roots}
                kept_roots = {r.checkpoint_id for r in keep_latest(roots)}
                for ns, rows in by_ns.items():
                    # a subgraph call ("node:task") goes with the root checkpoint it ran under
                    root = root_of(rows[-1])
                    stale_call = ":" in ns and root in root_ids and root not in kept_roots
                    kept = [] if stale_call else keep_latest(rows)
                    kept_ids = {r.checkpoint_id for r in kept}
                    gone = [r.checkpoint_id for r in rows if r.checkpoint_id not in kept_ids]
                    if gone:
                        self._remove(conn, thread_id, ns, gone, kept)

    def _remove(
        self, conn: Any, thread_id: str, ns: str, gone: Sequence[str], kept: Sequence[Row[Any]]
    ) -> None:
        """Delete checkpoints, detach the kept ones from them, and drop unreferenced values."""
        store.delete_checkpoints(conn, thread_id, ns, gone)
        gone_set = set(gone)
        store.detach_parents(
            conn,
            thread_id,
            ns,
            [r.checkpoint_id for r in kept if r.parent_checkpoint_id in gone_set],
        )
        used = {(ch, ver) for r in kept for ch, ver in r.versions.items()}
        rows = store.value_keys(conn, thread_id, ns)
        used |= {
            (r.channel, r.base_version)
            for r in rows
            if r.base_version and (r.channel, r.version) in used
        }
        store.delete_values(
            conn,
            thread_id,
            ns,
            [(r.channel, r.version) for r in rows if (r.channel, r.version) not in used],
        )

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Versions as zero-padded counters with a random suffix, ordered as strings.

        The suffix keeps the versions that two forks of a thread give one channel apart.
        """
        number = 0 if current is None else int(str(current).split(".")[0])
        return f"{number + 1:012}.{random.getrandbits(64):016x}"

    aget_tuple = async_twin(get_tuple)
    aput = async_twin(put)
    aput_writes = async_twin(put_writes)
    adelete_thread = async_twin(delete_thread)
    adelete_for_runs = async_twin(delete_for_runs)
    acopy_thread = async_twin(copy_thread)
    aprune = async_twin(prune)
    aget_delta_channel_history = async_twin(get_delta_channel_history)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async twin of `list`: each page is read in a worker thread."""
        pages = self.list(config, filter=filter, before=before, limit=limit)
        while True:
            batch = await asyncio.to_thread(_take, pages, PAGE)
            for tup in batch:
                yield tup
            if len(batch) < PAGE:
                return


class _Where(NamedTuple):
    """What a decoding error names (the text is made only when there is an error)."""

    checkpoint_id: str
    thread_id: str | None
    prefix: str = ""

    def __str__(self) -> str:
        thread = "" if self.thread_id is None else f" of thread {self.thread_id!r}"
        return f"{self.prefix}checkpoint {self.checkpoint_id!r}{thread}"


def _optional_id(field: str, value: Any) -> str | None:
    return None if value is None else checked_id(field, str(value))


def _run_id(config: RunnableConfig) -> str | None:
    """The run a checkpoint or write belongs to: the run config's ``run_id``, if any."""
    run_id = config.get("run_id") or (config.get("metadata") or {}).get("run_id")
    return None if run_id is None else str(run_id)


def _take(items: Iterator[Any], n: int) -> list[Any]:
    out = []
    for item in items:
        out.append(item)
        if len(out) == n:
            break
    return out


def _matches(metadata: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    return not filter or all(metadata.get(k) == v for k, v in filter.items())
