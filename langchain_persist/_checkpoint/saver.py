"""`PersistSaver`: a LangGraph checkpoint saver over the langchain-persist tables.

One row per checkpoint (`checkpoint_states`, the same rows `get_checkpoint_state` reads), one
row per channel *version* (`checkpoint_state_values`: a channel that did not change is not
stored again; a list that only grew is stored as the bytes appended since a base version, see
`codec` and `bases`), one row per pending write.  `put` and `put_writes` return only once their
transaction committed.

Each method's logic is written once, as a plan of statements (`.._db.plans`): the sync method
runs it on a pooled DBAPI connection, its ``a``-twin on psycopg's async connections on
PostgreSQL (in a worker thread on SQLite, whose driver blocks).  `get_tuple` and each page of
`list` are one statement.
"""

from __future__ import annotations

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

from .._db.lease import Lease, Leased
from .._db.plans import COMMIT, Emit, Plan, aiterate, async_plan, iterate, planned
from .._db.sql import checkpoints as store
from .._errors import ValidationError
from .._ids import uuid7
from .._sanitize import checked_id, checked_namespace, is_clean, jsonable, shown
from .bases import Bases, for_database
from .codec import (
    EMPTY,
    Inflated,
    dump,
    is_list,
    load,
    load_value,
    load_values,
    pack,
    tail_of,
)
from .prune import keep_latest, namespaces, replays_history, root_of

PAGE = 100
# a list is stored as a tail while what was appended since its base stays this small
TAIL_FRACTION = 4
BASE_MIN_BYTES = 1024
STRATEGIES = ("keep_latest", "delete")
VERSION_DIGITS = 32
MAX_VERSION = 64  # characters of a stored version (the column's length)


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

    @property
    def _inflated(self) -> Inflated:
        return self._lease.db.cache("checkpoint-inflated", Inflated)

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
        await self.aclose()

    # -- writing --------------------------------------------------------------------------------

    @planned(write=True)
    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> Plan[RunnableConfig]:
        """Store a checkpoint and the values of the channels it changed; return its config."""
        thread_id, ns, parent_id = _key(config)
        rest = dict(checkpoint)
        values = rest.pop("channel_values")
        versions = rest.pop("channel_versions")
        bases = self._bases
        follows = bases.follows(thread_id, ns, parent_id)
        value_rows, new_bases = [], []
        for channel, version in new_versions.items():
            row, base = self._value_row(
                bases if follows else None, thread_id, ns, checked_id("channel", channel),
                _checked_version(channel, version), values,
            )
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
            "checkpoint_id": checked_id("checkpoint id", checkpoint["id"]),
            "id": uuid7(),
            "agent_id": None if agent_id is None else str(agent_id),
            "parent_checkpoint_id": parent_id,
            "run_id": run_id,
            "state": None,
            "type": type_,
            "checkpoint": blob,
            "versions": {k: stored_version(v) for k, v in versions.items()},
            "metadata": meta,
            "created_at": dt.datetime.now(dt.UTC),
        }
        yield from store.put_checkpoint(self._dialect, row, value_rows)
        bases.add(new_bases, (thread_id, ns, checkpoint["id"]))
        return _config(thread_id, ns, checkpoint["id"])

    def _value_row(
        self,
        bases: Bases | None,
        thread_id: str,
        ns: str,
        channel: str,
        version: str,
        values: Mapping[str, Any],
    ) -> tuple[tuple[Any, ...], Any]:
        """The row storing one channel version, ``(channel, version, type, base_version,
        blob)``, and the base entry it makes (or None); a tail of a base in ``bases`` when
        that pays (no ``bases``: none)."""
        if channel not in values:
            return (channel, version, EMPTY, None, None), None
        stype, raw = dump(self.serde, values[channel], f"channel {channel!r}")
        key = (thread_id, ns, channel)
        base = bases.get(key) if bases is not None else None
        if base is not None and base[1] == stype:
            tail = tail_of(raw, base[2])
            if tail is not None and len(tail) <= len(base[2]) // TAIL_FRACTION:
                type_, blob = pack(stype, tail)
                return (channel, version, type_, base[0], blob), None
        type_, blob = pack(stype, raw)
        row = (channel, version, type_, None, blob)
        if len(raw) >= BASE_MIN_BYTES and is_list(raw):
            return row, (key, (version, stype, raw))
        return row, None

    @planned(write=True)
    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> Plan[None]:
        """Store the writes a task made against a checkpoint (pending until the next one)."""
        thread_id, ns, checkpoint_id = _key(config)
        if not writes:
            return
        rows = list({  # by idx: two writes to one special channel, the last one kept
            WRITES_IDX_MAP.get(channel, idx): (
                WRITES_IDX_MAP.get(channel, idx),
                checked_id("channel", channel),
                *pack(*dump(self.serde, value, f"a write to channel {channel!r}")),
            )
            for idx, (channel, value) in enumerate(writes)
        }.values())
        key = {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
            "task_id": checked_id("task_id", task_id),
            "task_path": task_path and checked_id("task_path", task_path),
            "run_id": _run_id(config),
        }
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        yield from store.put_writes(self._dialect, key, rows, replace=replace)

    # -- reading --------------------------------------------------------------------------------

    @planned()
    def get_tuple(self, config: RunnableConfig) -> Plan[CheckpointTuple | None]:
        """The checkpoint named by ``config``, or the thread's latest, with its pending writes:
        one statement."""
        thread_id, ns, checkpoint_id = _key(config)
        page = yield from store.read_page(
            self._dialect, limit=1, thread_id=thread_id, checkpoint_ns=ns,
            checkpoint_id=checkpoint_id or None,
        )  # fmt: skip
        return self._tuple(page[0]) if page else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first, read a page at a time; filter on metadata, before, limit."""
        return iterate(self._lease, lambda: self._list(config, filter, before, limit))

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async twin of `list`: the same plan, each page read without blocking."""
        async for tup in aiterate(self._lease, lambda: self._list(config, filter, before, limit)):
            yield tup

    def _list(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> Plan[None]:
        """`list` as a plan: a page of checkpoints (with values and writes) per statement,
        each page handed out (`Emit`) before the next is read."""
        conf = (config or {}).get("configurable") or {}
        thread_id = _optional_id("thread_id", conf.get("thread_id"))
        ns = conf.get("checkpoint_ns")
        ns = None if ns is None else checked_namespace(ns)
        within = thread_id is not None and ns is not None
        filter = jsonable(filter) if filter else None  # as the metadata was stored
        given = {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": _optional_id("checkpoint_id", conf.get("checkpoint_id") or None),
            "before": _optional_id("before", get_checkpoint_id(before) if before else None),
            "filter": filter,
        }
        left = limit
        after: tuple[str, ...] | None = None
        while left is None or left > 0:
            size = PAGE if left is None or filter else min(PAGE, left)
            page = yield from store.read_page(self._dialect, limit=size, after=after, **given)
            tuples = [self._tuple(s) for s in page if _matches(s.metadata, filter)]
            if left is not None:
                tuples = tuples[:left]
                left -= len(tuples)
            if tuples:
                yield Emit(tuples)
            if len(page) < size:
                return
            last = page[-1]
            after = (
                (last.checkpoint_id,)
                if within
                else (last.checkpoint_id, last.checkpoint_ns, last.thread_id)
            )

    def _tuple(self, stored: store.Stored) -> CheckpointTuple:
        """A checkpoint tuple from what was read (decoded with this saver's serializer)."""
        thread_id, ns = stored.thread_id, stored.checkpoint_ns
        where = _Where(stored.checkpoint_id, thread_id)
        serde, memo = self.serde, self._inflated
        checkpoint = load(serde, stored.type, stored.checkpoint, where, memo)
        checkpoint["channel_versions"] = {k: version(v) for k, v in stored.versions.items()}
        checkpoint["channel_values"] = load_values(serde, stored.values, where, memo)
        return CheckpointTuple(
            config=_config(thread_id, ns, stored.checkpoint_id),
            checkpoint=checkpoint,
            metadata=stored.metadata,
            parent_config=(
                _config(thread_id, ns, stored.parent_checkpoint_id)
                if stored.parent_checkpoint_id
                else None
            ),
            pending_writes=[
                (task_id, channel, load(serde, type_, blob, _Where(
                    stored.checkpoint_id, None, f"a pending write to {channel!r} of "), memo))
                for task_id, channel, type_, blob, _, _ in stored.writes
            ],
        )

    @planned()
    def get_delta_channel_history(
        self, *, config: RunnableConfig, channels: Sequence[str]
    ) -> Plan[Mapping[str, DeltaChannelHistory]]:
        """Writes and seed of some channels along the parent chain, a page of ancestors at a
        time."""
        if not channels:
            return {}
        thread_id, ns, checkpoint_id = _key(config)
        d = self._dialect
        writes: dict[str, list[PendingWrite]] = {c: [] for c in channels}
        seeds: dict[str, Any] = {}
        left = set(channels)
        target = yield from store.read_page(
            d, limit=1, thread_id=thread_id, checkpoint_ns=ns, checkpoint_id=checkpoint_id
        )
        parent = target[0].parent_checkpoint_id if target else None
        while parent is not None and left:
            chain = []
            for r in (yield from store.ancestors(d, thread_id, ns, parent, PAGE)):
                if r.checkpoint_id == parent:
                    chain.append(r)
                    parent = r.parent_checkpoint_id
            if not chain:
                break
            keys = {(c, r.versions[c]) for r in chain for c in left if c in r.versions}
            rows = yield from store.read_values(d, thread_id, ns, keys)
            values = {(r[0], r[1]): r for r in rows}
            ids = [r.checkpoint_id for r in chain]
            chain_writes = yield from store.read_writes(d, thread_id, ns, ids, sorted(left))
            for r in chain:  # newest first
                for wr in reversed(chain_writes.get(r.checkpoint_id, [])):
                    if wr[1] in left:
                        what = f"a pending write to {wr[1]!r} of checkpoint {r.checkpoint_id!r}"
                        writes[wr[1]].append((wr[0], wr[1], load(self.serde, wr[2], wr[3], what)))
                for channel in [c for c in left if c in r.versions]:
                    value = values.get((channel, r.versions[channel]))
                    if value is not None and value[2] != EMPTY:
                        seeds[channel] = load_value(self.serde, value)
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

    @planned(write=True)
    def delete_thread(self, thread_id: str) -> Plan[None]:
        """Delete every checkpoint, value and write of a thread."""
        self._bases.forget([str(thread_id)])
        yield from store.delete_threads(self._dialect, [str(thread_id)])

    @planned(write=True, atomic=True)
    def delete_for_runs(self, run_ids: Sequence[str]) -> Plan[None]:
        """Delete the checkpoints (with their writes and values) that some runs wrote.

        Raises `ValidationError`, deleting nothing, when a checkpoint that stays still needs a
        deleted one to rebuild a `DeltaChannel`.
        """
        run_ids = _ids("run_ids", run_ids)
        if not run_ids:
            return
        d = self._dialect
        doomed: dict[tuple[str, str], set[str]] = defaultdict(set)
        yield from store.one_snapshot(d)
        for r in (yield from store.checkpoints_of_runs(d, run_ids)):
            doomed[(r.thread_id, r.checkpoint_ns)].add(r.checkpoint_id)
        self._bases.forget([thread_id for thread_id, _ in doomed])
        yield from store.delete_writes_of_runs(d, run_ids)
        for thread_id in sorted({thread_id for thread_id, _ in doomed}):
            for ns, rows in namespaces((yield from store.namespace_rows(d, thread_id))).items():
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
                    yield from store.remove_checkpoints(d, thread_id, ns, sorted(gone), kept)

    @planned(write=True, atomic=True)
    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> Plan[None]:
        """Copy every checkpoint, value and write of a thread (its whole history) to a new one."""
        source, target = str(source_thread_id), str(target_thread_id)
        if (yield from store.thread_exists(self._dialect, target)):
            raise ValidationError(
                f"thread {target!r} already has checkpoints; copy into a new thread id "
                "(or delete_thread it first)"
            )
        yield from store.copy_thread(self._dialect, source, target, uuid7)

    @planned(write=True, atomic=True)
    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> Plan[None]:
        """Prune threads: ``"keep_latest"`` keeps each namespace's latest checkpoint (and the
        ancestors its DeltaChannels are rebuilt from); ``"delete"`` removes everything."""
        if strategy not in STRATEGIES:
            raise ValidationError(
                f"strategy must be one of {', '.join(STRATEGIES)}, not {strategy!r}"
            )
        thread_ids = _ids("thread_ids", thread_ids)
        if not thread_ids:
            return
        d = self._dialect
        self._bases.forget(thread_ids)
        if strategy == "delete":
            yield from store.delete_threads(d, thread_ids)
            return
        for thread_id in thread_ids:  # one short transaction per thread, on one snapshot
            yield from store.one_snapshot(d)
            by_ns = namespaces((yield from store.namespace_rows(d, thread_id)))
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
                    yield from store.remove_checkpoints(d, thread_id, ns, gone, kept)
            yield COMMIT

    def get_next_version(self, current: str | None, channel: None) -> str:
        """Versions as zero-padded 32-digit counters with a random suffix, ordered as strings,
        as LangGraph's Postgres saver and Agent Server write them.

        The suffix keeps the versions that two forks of a thread give one channel apart.  A
        counter written with fewer digits (this saver's 12-digit versions before 0.2) counts
        as its digits followed by zeros, so the next version still sorts above it.
        """
        if current is None:
            number = 0
        elif isinstance(current, int):
            number = current
        else:
            head = str(current).split(".")[0]
            number = int(head) * 10 ** max(VERSION_DIGITS - len(head), 0)
        return f"{number + 1:0{VERSION_DIGITS}}.{random.getrandbits(64):016x}"

    async def aget_iter(self, config: RunnableConfig) -> AsyncIterator[CheckpointTuple]:
        """The Agent Server's optional method: the checkpoint `aget_tuple` finds (the latest
        of the thread without a checkpoint id), as an async iterator of at most one tuple."""
        return _at_most_one(await self.aget_tuple(config))

    aget_tuple = async_plan(get_tuple)
    aput = async_plan(put)
    aput_writes = async_plan(put_writes)
    adelete_thread = async_plan(delete_thread)
    adelete_for_runs = async_plan(delete_for_runs)
    acopy_thread = async_plan(copy_thread)
    aprune = async_plan(prune)
    aget_delta_channel_history = async_plan(get_delta_channel_history)


# A version is stored with the leading zeros of a 32-digit counter left out ("+7.<suffix>" for
# "000...0007.<suffix>"): the counter is as long as LangGraph's Agent Server and Postgres saver
# make it, so that versions sort the same whoever wrote them, and stored it costs no more
# than the 12-digit versions did.  Every other version is stored as it is ("+" doubled in
# front when it begins with one).  Versions are only ever compared for equality in SQL.


def _checked_version(channel: str, value: Any) -> str:
    """`stored_version`, or a `ValidationError` for a version no row can hold."""
    stored = stored_version(value)
    if len(stored) > MAX_VERSION or not is_clean(stored):
        raise ValidationError(
            f"channel {channel!r}: version {shown(value)} must be plain text of at most "
            f"{MAX_VERSION} characters (get_next_version makes them)"
        )
    return stored


def stored_version(value: Any) -> str:
    """The form a channel version is stored in (see `version` for the way back)."""
    text = str(value)
    head, dot, rest = text.partition(".")
    if dot and len(head) == VERSION_DIGITS and head.isdigit():
        return f"+{head.lstrip('0') or '0'}.{rest}"
    return "+" + text if text.startswith("+") else text


def version(stored: str) -> str:
    """A channel version as it was given, from its stored form."""
    if not stored.startswith("+"):
        return stored
    if stored.startswith("++"):
        return stored[1:]
    head, _, rest = stored[1:].partition(".")
    return f"{head:0>{VERSION_DIGITS}}.{rest}"


async def _at_most_one(found: CheckpointTuple | None) -> AsyncIterator[CheckpointTuple]:
    if found is not None:
        yield found


class _Where(NamedTuple):
    """What a decoding error names (the text is made only when there is an error)."""

    checkpoint_id: str
    thread_id: str | None
    prefix: str = ""

    def __str__(self) -> str:
        thread = "" if self.thread_id is None else f" of thread {self.thread_id!r}"
        return f"{self.prefix}checkpoint {self.checkpoint_id!r}{thread}"


def _ids(field: str, values: Sequence[str]) -> list[str]:
    """A list of ids (one id alone, a str, is refused: it would be taken letter by letter)."""
    if isinstance(values, str | bytes):
        raise ValidationError(f"{field} must be a list of ids, not one: pass [{values!r}]")
    return [str(v) for v in values]


def _optional_id(field: str, value: Any) -> str | None:
    return None if value is None else checked_id(field, str(value))


def _run_id(config: RunnableConfig) -> str | None:
    """The run a checkpoint or write belongs to: the run config's ``run_id``, if any."""
    run_id = config.get("run_id") or (config.get("metadata") or {}).get("run_id")
    return None if run_id is None else str(run_id)


def _matches(metadata: Mapping[str, Any], filter: Mapping[str, Any] | None) -> bool:
    return not filter or all(metadata.get(k) == v for k, v in filter.items())
