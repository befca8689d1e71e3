"""LangGraph checkpoint savers side by side, in one process and one run.

Contenders: InMemorySaver, SqliteSaver and AsyncSqliteSaver (on a file), PostgresSaver and
AsyncPostgresSaver (langgraph-checkpoint-postgres, after ``.setup()``), and, once
``from langchain_persist import PersistSaver`` succeeds, PersistSaver on a SQLite file and on
PostgreSQL, each driven synchronously (``invoke`` and the sync saver methods) and
asynchronously (``ainvoke`` and the ``a``-prefixed methods). Every contender gets its own fresh
database per workload (a new PostgreSQL database, or a new SQLite file in a temp directory;
with ``--smoke``, one per contender for the run). Only the public ``BaseCheckpointSaver`` API
is used.

Workloads (``--workloads``):

- ``graph``: a 50-super-step agent/tools graph with a growing ``messages`` list, new thread per
  run, default durability and ``durability="sync"``: ms per run.
- ``micro``: ``put``, ``put_writes``, ``get_tuple`` (latest and by id, on a 1,000- and a
  10-checkpoint thread), ``list`` of the 1,000-checkpoint thread, ``delete_thread``.
- ``concurrency``: 8 OS threads running ``invoke`` (sync contenders) and 32 concurrent
  ``ainvoke`` (async contenders), on distinct threads: super-steps per second.
- ``storage``: bytes stored per checkpoint after a 50- and a 200-step run.
- ``resume``: a run that fails at step 40, then ``invoke(None, config)`` with a new saver
  instance over the same database: time to complete.

Contenders are interleaved round-robin within every repetition (the starting contender rotates),
after a warm-up; tables report medians and ratios. Usage::

    python benchmarks/bench_saver.py [--smoke] [--only postgres,persist-pg] \\
        [--workloads graph,micro] [--reps N] [--json results.json]
"""

# ruff: noqa: RUF001
# (the tables print a multiplication sign after ratios, on purpose)

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import itertools
import os
import random
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Callable, Generator, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from time import perf_counter_ns
from typing import Annotated, Any, Literal, TypedDict

from _common import (
    DEFAULT_PG_ADMIN_URL,
    LoopThread,
    PgDatabases,
    fmt_bytes,
    fmt_num,
    fmt_ratio,
    machine_info,
    md_table,
    package_versions,
    pg_relations_size,
    ratio,
    sqlite_tables_size,
    summarize,
    write_json,
)
from _versions import import_revision
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver, Checkpoint, empty_checkpoint
from langgraph.checkpoint.base.id import uuid6
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, StateGraph
from langgraph.graph.message import add_messages

WORKLOADS = ("graph", "micro", "large", "concurrency", "storage", "resume")
PEER_TABLES = {
    "sqlite": ("checkpoints", "writes"),
    "postgres": ("checkpoints", "checkpoint_blobs", "checkpoint_writes"),
}
PERSIST_TABLES = ("checkpoint_states", "checkpoint_state_values", "checkpoint_state_writes")


# =========================================================================== sizes


@dataclass(frozen=True)
class Sizes:
    """How big each workload is and how often it is repeated."""

    steps: int = 50  # super-steps of one graph run
    long_thread: int = 1_000  # checkpoints of the long thread (micro)
    short_thread: int = 10  # checkpoints of the short thread (micro)
    window: int = 25  # messages in every checkpoint of the micro lookup threads
    lookups: int = 10  # get_tuple calls of each kind per repetition
    os_threads: int = 8
    async_runs: int = 32
    storage_steps: tuple[int, ...] = (50, 200)
    fail_at: int = 40  # the super-step that raises in the resume workload
    large_kb: int = 10  # size of the three big channels of the large state
    large_puts: int = 20  # puts timed per repetition (a scratch thread of that many)
    fresh_per_workload: bool = True  # else one database per contender (storage: always fresh)
    warmup: int = 2
    reps: dict[str, int] = field(
        default_factory=lambda: {
            "graph": 31,
            "micro": 7,
            "concurrency": 5,
            "storage": 1,
            "resume": 11,
            "large": 7,
        }
    )


FULL = Sizes()
SMOKE = Sizes(
    steps=6,
    long_thread=30,
    short_thread=5,
    window=3,
    lookups=3,
    os_threads=2,
    async_runs=4,
    storage_steps=(6, 12),
    fail_at=4,
    fresh_per_workload=False,
    warmup=1,
    large_kb=2,
    large_puts=3,
    reps={"graph": 2, "micro": 1, "concurrency": 1, "storage": 1, "resume": 1, "large": 1},
)


# =========================================================================== messages and graph


_PROSE = (
    "the quarterly revenue report indicates steady growth across european and asian regions "
    "while operating costs remained flat compared with last year; the customer support "
    "backlog fell after the new routing policy, and three enterprise contracts were renewed "
    "ahead of schedule. search results mention supplier delays, currency effects, a pending "
    "audit, updated forecasts, hiring plans, cloud spending, churn, pricing, and margins"
)
_WORDS = _PROSE.split(" ")


def _text(seed: int, chars: int) -> str:
    """Deterministic prose of exactly ``chars`` characters."""
    rng = random.Random(seed)
    words: list[str] = []
    length = 0
    while length < chars:
        word = rng.choice(_WORDS)
        words.append(word)
        length += len(word) + 1
    return " ".join(words)[:chars]


def _call_id(k: int) -> str:
    return f"call_{uuid.UUID(int=k).hex[:24]}"


@functools.cache
def message(k: int) -> BaseMessage:
    """The ``k``-th message of the conversation: a question, then alternating AI tool calls
    (200-300 characters plus a tool call) and tool results (350-500 characters)."""
    if k == 0:
        return HumanMessage(_text(0, 240), id=str(uuid.UUID(int=0)))
    if k % 2:
        return AIMessage(
            content=_text(k, 200 + (37 * k) % 100),
            tool_calls=[
                {
                    "name": "search_documents",
                    "args": {"query": _text(-k, 60), "top_k": 5},
                    "id": _call_id(k),
                    "type": "tool_call",
                }
            ],
            id=f"run-{uuid.UUID(int=k)}",
            response_metadata={"model_name": "gpt-4o-2024-08-06", "finish_reason": "tool_calls"},
            usage_metadata={
                "input_tokens": 1_200 + 40 * k,
                "output_tokens": 64,
                "total_tokens": 1_264 + 40 * k,
            },
        )
    return ToolMessage(
        content=_text(k, 350 + (53 * k) % 150),
        tool_call_id=_call_id(k - 1),
        name="search_documents",
        id=str(uuid.UUID(int=k)),
    )


class AgentState(TypedDict):
    """The graph's state: one message list, appended to by every super-step."""

    messages: Annotated[list[AnyMessage], add_messages]


class InjectedFailure(RuntimeError):
    """Raised by the resume workload's graph at its chosen super-step."""


_FAIL_ONCE: set[str] = set()  # thread ids whose next pass over ``fail_at`` raises
_EXECUTED: Counter[str] = Counter()  # node executions per thread id (resume workload)


def build_graph(steps: int, fail_at: int | None = None) -> StateGraph:
    """An agent-shaped graph of exactly ``steps`` super-steps: "agent" appends an AIMessage
    with a tool call, "tools" a ToolMessage, alternately. With ``fail_at``, the node of that
    super-step raises ``InjectedFailure`` once for each thread id in ``_FAIL_ONCE``."""

    def node(state: AgentState, config: RunnableConfig) -> dict[str, list[BaseMessage]]:
        k = len(state["messages"])
        if fail_at is not None:
            thread_id = config["configurable"]["thread_id"]
            if k == fail_at and thread_id in _FAIL_ONCE:
                _FAIL_ONCE.discard(thread_id)
                raise InjectedFailure(f"injected failure at super-step {k}")
            _EXECUTED[thread_id] += 1
        return {"messages": [message(k)]}

    def route_to(target: str) -> Callable[[AgentState], str]:
        def route(state: AgentState) -> str:
            return END if len(state["messages"]) > steps else target

        return route

    builder = StateGraph(AgentState)
    builder.add_node("agent", node)
    builder.add_node("tools", node)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route_to("tools"), ["tools", END])
    builder.add_conditional_edges("tools", route_to("agent"), ["agent", END])
    return builder


def run_config(thread_id: str, steps: int) -> RunnableConfig:
    """The config of one run on ``thread_id`` (with room for ``steps`` super-steps)."""
    return {"configurable": {"thread_id": thread_id}, "recursion_limit": steps + 10}


def first_input() -> dict[str, list[BaseMessage]]:
    """The input of a new run: the user's question."""
    return {"messages": [message(0)]}


_ids = itertools.count()


def new_thread_id(label: str) -> str:
    """A thread id never used before in this process."""
    return f"{label}-{next(_ids)}-{uuid.uuid4().hex[:8]}"


# =========================================================================== contenders


Backend = Literal["memory", "sqlite", "postgres"]
Mode = Literal["sync", "async"]


@dataclass(frozen=True)
class Contender:
    """One saver driven one way. ``open(location)`` returns a context manager (``mode ==
    "sync"``) or an async context manager (``mode == "async"``, entered on the benchmark's
    event loop) that yields a ready saver over ``location``: a SQLite file path, a PostgreSQL
    URL or an opaque in-memory key."""

    key: str
    name: str
    backend: Backend
    mode: Mode
    open: Callable[[str], Any]
    tables: tuple[str, ...] = ()
    peer: bool = True

    @property
    def driver(self) -> str:
        """How graphs are run with this contender."""
        return "invoke" if self.mode == "sync" else "ainvoke"


_MEMORY: dict[str, InMemorySaver] = {}  # location -> saver, so a "reopen" sees the same data


@contextmanager
def _open_memory(location: str) -> Iterator[InMemorySaver]:
    yield _MEMORY.setdefault(location, InMemorySaver())


@asynccontextmanager
async def _aopen_memory(location: str) -> AsyncIterator[InMemorySaver]:
    yield _MEMORY.setdefault(location, InMemorySaver())


@asynccontextmanager
async def _aopen_sqlite(path: str) -> AsyncIterator[AsyncSqliteSaver]:
    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        await saver.setup()
        yield saver


@contextmanager
def _open_postgres(url: str) -> Iterator[PostgresSaver]:
    with PostgresSaver.from_conn_string(url) as saver:
        saver.setup()
        yield saver


@asynccontextmanager
async def _aopen_postgres(url: str) -> AsyncIterator[AsyncPostgresSaver]:
    async with AsyncPostgresSaver.from_conn_string(url) as saver:
        await saver.setup()
        yield saver


def _persist_url(location: str) -> str:
    return location if "://" in location else f"sqlite:///{location}"


def _persist_openers(cls: Any) -> tuple[Callable[[str], Any], Callable[[str], Any]]:
    @contextmanager
    def open_sync(location: str) -> Iterator[BaseCheckpointSaver]:
        saver = cls.from_url(_persist_url(location))
        with saver as entered:
            yield entered if entered is not None else saver

    @asynccontextmanager
    async def open_async(location: str) -> AsyncIterator[BaseCheckpointSaver]:
        saver = cls.from_url(_persist_url(location))
        async with saver as entered:
            yield entered if entered is not None else saver

    return open_sync, open_async


def load_persist_saver() -> tuple[Any, str | None]:
    """``(PersistSaver, None)`` when importable, else ``(None, reason)``."""
    try:
        from langchain_persist import PersistSaver
    except Exception as exc:  # not written yet, or broken: the peers are measured anyway
        return None, f"{exc.__class__.__name__}: {exc}"
    return PersistSaver, None


def registry(persist_cls: Any = None, before_cls: Any = None) -> list[Contender]:
    """Every contender, in report order; PersistSaver's only when its class is given, and
    that of another revision (``--before``) when its class is given too."""
    contenders = [
        Contender("memory", "InMemorySaver", "memory", "sync", _open_memory),
        Contender("memory-async", "InMemorySaver", "memory", "async", _aopen_memory),
        Contender(
            "sqlite", "SqliteSaver", "sqlite", "sync", SqliteSaver.from_conn_string,
            PEER_TABLES["sqlite"],
        ),
        Contender(
            "sqlite-async", "AsyncSqliteSaver", "sqlite", "async", _aopen_sqlite,
            PEER_TABLES["sqlite"],
        ),
        Contender(
            "postgres", "PostgresSaver", "postgres", "sync", _open_postgres,
            PEER_TABLES["postgres"],
        ),
        Contender(
            "postgres-async", "AsyncPostgresSaver", "postgres", "async", _aopen_postgres,
            PEER_TABLES["postgres"],
        ),
    ]  # fmt: skip
    for cls, key, name in ((persist_cls, "persist", "PersistSaver"),
                           (before_cls, "persist-before", "PersistSaver before")):
        if cls is None:
            continue
        open_sync, open_async = _persist_openers(cls)
        for backend, label in (("sqlite", "SQLite"), ("postgres", "PostgreSQL")):
            short = "sqlite" if backend == "sqlite" else "pg"
            for mode, opener in (("sync", open_sync), ("async", open_async)):
                contenders.append(
                    Contender(
                        f"{key}-{short}" + ("-async" if mode == "async" else ""),
                        f"{name} ({label})",
                        backend,
                        mode,
                        opener,
                        PERSIST_TABLES,
                        peer=False,
                    )
                )
    return contenders


def select(contenders: list[Contender], only: str | None) -> list[Contender]:
    """The contenders named in ``--only``: keys (``postgres-async``), display names (all
    variants of ``PostgresSaver``), or the groups ``peers`` and ``persist``."""
    if not only:
        return contenders
    wanted = {token.strip().lower() for token in only.split(",") if token.strip()}
    chosen = [
        c
        for c in contenders
        if c.key in wanted
        or c.name.lower() in wanted
        or ("peers" in wanted and c.peer)
        or ("persist" in wanted and not c.peer)
    ]
    return chosen


# =========================================================================== saver operations

# A micro-benchmark is written once, as a generator of saver calls; a sync and an async driver
# run it, timing each call and sending back ``(result, elapsed_ns)``.


@dataclass(frozen=True)
class Call:
    """One ``BaseCheckpointSaver`` call: the sync method's name (the async driver adds the
    ``a`` prefix) and its arguments."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)


Plan = Generator[Call, tuple[Any, int], Any]


def drive_sync(saver: BaseCheckpointSaver, plan: Plan) -> Any:
    """Run ``plan`` with the saver's sync methods; returns the plan's return value."""
    try:
        call = next(plan)
        while True:
            method = getattr(saver, call.method)
            start = perf_counter_ns()
            result = method(*call.args, **call.kwargs)
            if call.method == "list":
                result = list(result)
            elapsed = perf_counter_ns() - start
            call = plan.send((result, elapsed))
    except StopIteration as stop:
        return stop.value


async def drive_async(saver: BaseCheckpointSaver, plan: Plan) -> Any:
    """Run ``plan`` with the saver's async methods; returns the plan's return value."""
    try:
        call = next(plan)
        while True:
            method = getattr(saver, "a" + call.method)
            start = perf_counter_ns()
            if call.method == "list":
                result = [item async for item in method(*call.args, **call.kwargs)]
            else:
                result = await method(*call.args, **call.kwargs)
            elapsed = perf_counter_ns() - start
            call = plan.send((result, elapsed))
    except StopIteration as stop:
        return stop.value


class BenchError(AssertionError):
    """A saver returned something other than what was stored."""


def put_thread_plan(
    saver: BaseCheckpointSaver,
    thread_id: str,
    checkpoints: int,
    window: int | None = None,
    samples: dict[str, list[int]] | None = None,
) -> Plan:
    """Store ``checkpoints`` agent-loop checkpoints on a new thread, as LangGraph does: each
    ``put`` carries the ``messages`` list and a ``branch:to:<node>`` trigger, with versions
    from ``saver.get_next_version``; every checkpoint but the last then gets the next step's
    two writes. The list grows by one message per step, or, with ``window``, always holds
    ``window`` messages (so that checkpoints weigh the same however long the thread is).
    Returns the checkpoint ids; with ``samples``, records each call's time under ``put`` and
    ``put_writes``."""
    config: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    versions: dict[str, Any] = {}
    seen: dict[str, dict[str, Any]] = {"__input__": {}}
    ids: list[str] = []
    for step in range(checkpoints):
        node, other = ("agent", "tools") if step % 2 == 0 else ("tools", "agent")
        updated = ["messages", f"branch:to:{node}"]
        span = range(step + 1) if window is None else range(step, step + window)
        new_versions = {ch: saver.get_next_version(versions.get(ch), None) for ch in updated}
        versions.update(new_versions)
        checkpoint: Checkpoint = {
            **empty_checkpoint(),
            "id": str(uuid6(clock_seq=step)),
            "ts": datetime.now(UTC).isoformat(),
            "channel_values": {
                "messages": [message(k) for k in span],
                f"branch:to:{node}": None,
            },
            "channel_versions": dict(versions),
            "versions_seen": {name: dict(v) for name, v in seen.items()},
            "updated_channels": updated,
        }
        metadata = {"source": "loop", "step": step, "parents": {}}
        config, elapsed = yield Call("put", (config, checkpoint, metadata, new_versions))
        ids.append(config["configurable"]["checkpoint_id"])
        if samples is not None:
            samples["put"].append(elapsed)
        seen[other] = {f"branch:to:{other}": versions[f"branch:to:{node}"]}
        if step < checkpoints - 1:
            writes = [("messages", [message(step + 1)]), (f"branch:to:{other}", None)]
            task_id = str(uuid.UUID(int=random.getrandbits(128)))
            task_path = f"~__pregel_pull, {other}"
            _, elapsed = yield Call("put_writes", (config, writes, task_id, task_path))
            if samples is not None:
                samples["put_writes"].append(elapsed)
    return ids


def _thread_config(thread_id: str, checkpoint_id: str | None = None) -> RunnableConfig:
    configurable = {"thread_id": thread_id, "checkpoint_ns": ""}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise BenchError(what)


def micro_rep_plan(
    saver: BaseCheckpointSaver,
    sizes: Sizes,
    threads: dict[str, tuple[str, list[str]]],
) -> Plan:
    """One repetition of the micro-operations; returns ``{operation: [ns, ...]}``.

    ``threads`` maps ``"long"`` and ``"short"`` to ``(thread_id, checkpoint ids)``. A new
    thread of ``sizes.steps`` checkpoints gives the ``put`` and ``put_writes`` samples and is
    then deleted (``delete_thread``); lookups and the listing run on the prepared threads.
    """
    samples: dict[str, list[int]] = defaultdict(list)
    scratch = new_thread_id("micro-put")
    yield from put_thread_plan(saver, scratch, sizes.steps, samples=samples)
    _, elapsed = yield Call("delete_thread", (scratch,))
    samples["delete_thread"].append(elapsed)
    gone, _ = yield Call("get_tuple", (_thread_config(scratch),))
    _expect(gone is None, "delete_thread left the thread readable")

    for _ in range(sizes.lookups):
        for size in ("long", "short"):
            thread_id, ids = threads[size]
            found, elapsed = yield Call("get_tuple", (_thread_config(thread_id),))
            _expect(found is not None and found.checkpoint["id"] == ids[-1], "wrong latest")
            samples[f"get_latest_{size}"].append(elapsed)
            target = ids[len(ids) // 2]
            found, elapsed = yield Call("get_tuple", (_thread_config(thread_id, target),))
            _expect(found is not None and found.checkpoint["id"] == target, "wrong checkpoint")
            samples[f"get_id_{size}"].append(elapsed)

    thread_id, ids = threads["long"]
    listed, elapsed = yield Call("list", (_thread_config(thread_id),))
    _expect([t.checkpoint["id"] for t in listed] == ids[::-1], "list is not the whole thread")
    samples["list_long"].append(elapsed)
    return samples


def count_plan(thread_id: str) -> Plan:
    """How many checkpoints ``list`` returns for ``thread_id``."""
    listed, _ = yield Call("list", (_thread_config(thread_id),))
    return len(listed)


LARGE_CHANNELS = (
    "messages", "documents", "scratchpad",  # about ``large_kb`` KB each
    "step", "status", "plan", "user", "scores", "last_tool", "flags",
)  # fmt: skip


@functools.cache
def _serialized_size(k: int) -> int:
    """Bytes of message ``k`` as LangGraph's serializer writes it."""
    return len(JsonPlusSerializer().dumps_typed(message(k))[1])


def large_values(step: int, kb: int) -> dict[str, Any]:
    """The large state at ``step``: ten channels, three of them about ``kb`` KB (a window of
    messages, retrieved documents, a scratchpad), and every channel different at every step
    (the message window slides, so no version extends the previous one)."""
    messages, size, k = [], 0, step
    while size < kb * 1000:
        messages.append(message(k % 400 + 1))
        size += _serialized_size(k % 400 + 1)
        k += 1
    doc_chars = 1200
    documents = [
        {"id": f"doc-{step}-{i}", "title": _text(step * 31 + i, 40),
         "text": _text(step * 17 + i, doc_chars), "score": round(1 / (i + 1 + step % 7), 4)}
        for i in range(max(1, kb * 1000 // (doc_chars + 100)))
    ]  # fmt: skip
    return {
        "messages": messages,
        "documents": documents,
        "scratchpad": _text(step * 7 + 3, kb * 1000),
        "step": step,
        "status": ("planning", "searching", "writing", "reviewing")[step % 4],
        "plan": [f"step {step + i}: {_text(step + i, 30)}" for i in range(5)],
        "user": {"id": f"user-{step % 13}", "locale": "en-GB", "tier": "pro", "turn": step},
        "scores": {f"s{i}": round((step * 7 + i) % 97 / 97, 4) for i in range(5)},
        "last_tool": ("search_documents", "summarize", "write_section")[step % 3],
        "flags": {"needs_review": step % 5 == 0, "cached": step % 2 == 0, "done": False},
    }


def large_thread_plan(
    saver: BaseCheckpointSaver,
    thread_id: str,
    checkpoints: int,
    kb: int,
    samples: dict[str, list[int]] | None = None,
) -> Plan:
    """Store ``checkpoints`` checkpoints of the large state on a new thread: every ``put``
    names all ten channels in ``new_versions``; every checkpoint but the last gets two writes.
    Returns the checkpoint ids; with ``samples``, records each ``put`` under ``put``."""
    config: RunnableConfig = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
    versions: dict[str, Any] = {}
    ids: list[str] = []
    for step in range(checkpoints):
        new_versions = {ch: saver.get_next_version(versions.get(ch), None) for ch in LARGE_CHANNELS}
        versions.update(new_versions)
        checkpoint: Checkpoint = {
            **empty_checkpoint(),
            "id": str(uuid6(clock_seq=step)),
            "ts": datetime.now(UTC).isoformat(),
            "channel_values": large_values(step, kb),
            "channel_versions": dict(versions),
            "versions_seen": {"agent": {ch: versions[ch] for ch in LARGE_CHANNELS[:3]}},
            "updated_channels": list(LARGE_CHANNELS),
        }
        metadata = {"source": "loop", "step": step, "parents": {}}
        config, elapsed = yield Call("put", (config, checkpoint, metadata, new_versions))
        ids.append(config["configurable"]["checkpoint_id"])
        if samples is not None:
            samples["put"].append(elapsed)
        if step < checkpoints - 1:
            writes = [("messages", [message(step % 400 + 1)]), ("status", "writing")]
            task_id = str(uuid.UUID(int=random.getrandbits(128)))
            yield Call("put_writes", (config, writes, task_id, "~__pregel_pull, agent"))
    return ids


_BY_ID: defaultdict[str, Iterator[int]] = defaultdict(itertools.count)


def large_rep_plan(
    saver: BaseCheckpointSaver,
    sizes: Sizes,
    threads: dict[str, tuple[str, list[str]]],
) -> Plan:
    """One repetition of the large-state workload; returns ``{operation: [ns, ...]}``: ``put``
    on a scratch thread (deleted afterwards), ``get_tuple`` latest and by id on the long and
    short threads, and ``list`` of the whole long thread.  The latest is the same checkpoint
    every time (as a thread's latest is read at every run); by id walks through the thread
    (on the long one, every lookup of the run reads a checkpoint not read before)."""
    samples: dict[str, list[int]] = defaultdict(list)
    scratch = new_thread_id("large-put")
    yield from large_thread_plan(saver, scratch, sizes.large_puts, sizes.large_kb, samples)
    yield Call("delete_thread", (scratch,))
    for _ in range(sizes.lookups):
        for size in ("long", "short"):
            thread_id, ids = threads[size]
            found, elapsed = yield Call("get_tuple", (_thread_config(thread_id),))
            _expect(found is not None and found.checkpoint["id"] == ids[-1], "wrong latest")
            _expect(len(found.checkpoint["channel_values"]) == 10, "channels missing")
            samples[f"get_latest_{size}"].append(elapsed)
            target = ids[(next(_BY_ID[thread_id]) * 37) % (len(ids) - 1)]  # never the last
            found, elapsed = yield Call("get_tuple", (_thread_config(thread_id, target),))
            _expect(found is not None and found.checkpoint["id"] == target, "wrong checkpoint")
            _expect(len(found.pending_writes or []) == 2, "pending writes missing")
            samples[f"get_id_{size}"].append(elapsed)
    thread_id, ids = threads["long"]
    listed, elapsed = yield Call("list", (_thread_config(thread_id),))
    _expect([t.checkpoint["id"] for t in listed] == ids[::-1], "list is not the whole thread")
    samples["list_long"].append(elapsed)
    return samples


# =========================================================================== the bench


@dataclass
class Live:
    """A contender during one workload: its database and, when opened, its saver."""

    contender: Contender
    location: str
    saver: Any = None
    graph: Any = None


class Bench:
    """The run: contenders, databases, the event loop for async contenders, and results."""

    def __init__(self, sizes: Sizes, pg: PgDatabases | None, tmp: Path) -> None:
        self.sizes = sizes
        self.pg = pg
        self.tmp = tmp
        self.loop = LoopThread()
        self.results: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(
            lambda: defaultdict(lambda: defaultdict(list))
        )
        self.errors: list[dict[str, str]] = []
        self._counter = itertools.count()
        self._shared: dict[str, str] = {}
        self._keep = ExitStack()

    # ----------------------------------------------------------------- databases and savers

    @contextmanager
    def fresh_location(self, c: Contender, label: str) -> Iterator[str]:
        """A new, empty database for ``c``, removed afterwards."""
        if c.backend == "postgres":
            assert self.pg is not None
            url = self.pg.create(f"{c.key}_{label}")
            try:
                yield url
            finally:
                self.pg.drop(url)
        elif c.backend == "sqlite":
            path = self.tmp / f"{c.key}-{label}-{next(self._counter)}.db"
            try:
                yield str(path)
            finally:
                for suffix in ("", "-wal", "-shm", "-journal"):
                    Path(f"{path}{suffix}").unlink(missing_ok=True)
        else:
            location = f"memory:{c.key}-{label}-{next(self._counter)}"
            try:
                yield location
            finally:
                _MEMORY.pop(location, None)

    def shared_location(self, c: Contender) -> str:
        """One database per contender for the whole run, removed by ``close``."""
        if c.key not in self._shared:
            self._shared[c.key] = self._keep.enter_context(self.fresh_location(c, "shared"))
        return self._shared[c.key]

    @contextmanager
    def opened(self, c: Contender, location: str) -> Iterator[Any]:
        """``c``'s saver over ``location``; async savers live on the benchmark's loop."""
        if c.mode == "sync":
            with c.open(location) as saver:
                yield saver
            return
        stack = AsyncExitStack()

        async def enter() -> Any:
            return await stack.enter_async_context(c.open(location))

        saver = self.loop.run(enter())
        try:
            yield saver
        finally:
            self.loop.run(stack.aclose())

    @contextmanager
    def session(
        self, workload: str, contenders: Sequence[Contender], *, open_saver: bool = True
    ) -> Iterator[list[Live]]:
        """A database for each contender (fresh, or in smoke mode the contender's shared one)
        and, with ``open_saver``, its saver; contenders that fail to start are reported and
        left out."""
        with ExitStack() as stack:
            lives = []
            for c in contenders:
                try:
                    if self.sizes.fresh_per_workload or workload.startswith("storage"):
                        location = stack.enter_context(self.fresh_location(c, workload))
                    else:
                        location = self.shared_location(c)
                    live = Live(c, location)
                    if open_saver:
                        live.saver = stack.enter_context(self.opened(c, location))
                    lives.append(live)
                except Exception as exc:
                    self.fail(workload, c, exc)
            yield lives

    # ----------------------------------------------------------------- running things

    def drive(self, c: Contender, saver: Any, plan: Plan) -> Any:
        """Run a plan of saver calls with ``c``'s driver."""
        if c.mode == "sync":
            return drive_sync(saver, plan)
        return self.loop.run(drive_async(saver, plan))

    def invoke(
        self, c: Contender, graph: Any, inp: Any, config: RunnableConfig, **kw: Any
    ) -> tuple[Any, int]:
        """Run ``graph`` once with ``c``'s driver; returns ``(output, elapsed_ns)``."""
        if c.mode == "sync":
            start = perf_counter_ns()
            out = graph.invoke(inp, config, **kw)
            return out, perf_counter_ns() - start

        async def run() -> tuple[Any, int]:
            start = perf_counter_ns()
            out = await graph.ainvoke(inp, config, **kw)
            return out, perf_counter_ns() - start

        return self.loop.run(run())

    def round_robin(
        self,
        workload: str,
        lives: Sequence[Live],
        reps: int,
        measure: Callable[[Live, bool], None],
        warmup: int | None = None,
    ) -> None:
        """Call ``measure(live, timed)`` for every contender in every repetition, the
        contenders interleaved and the first one rotating; warm-up passes have
        ``timed=False``. A contender that raises is reported and dropped."""
        warmup = self.sizes.warmup if warmup is None else warmup
        active = list(lives)
        gc.collect()
        gc.freeze()  # what exists now is not garbage: keep the per-measurement collect cheap
        try:
            for rep in range(-warmup, reps):
                shift = rep % len(active) if active else 0
                for live in active[shift:] + active[:shift]:
                    gc.collect()
                    try:
                        measure(live, rep >= 0)
                    except Exception as exc:
                        self.fail(workload, live.contender, exc)
                        active.remove(live)
        finally:
            gc.unfreeze()

    def record(self, workload: str, c: Contender, metric: str, *values: float) -> None:
        """Add samples of ``metric`` for ``c``."""
        self.results[workload][c.key][metric].extend(values)

    def fail(self, workload: str, c: Contender, exc: BaseException) -> None:
        """Report a contender's failure (with its traceback on stderr) and keep going."""
        self.errors.append({"workload": workload, "contender": c.key, "error": repr(exc)})
        print(f"!! {c.key} failed in {workload}: {exc!r}", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)

    def close(self) -> None:
        """Remove the shared databases and stop the event loop."""
        try:
            self._keep.close()
        finally:
            self.loop.close()


def log(text: str) -> None:
    """Progress, on stderr so stdout stays Markdown."""
    print(text, file=sys.stderr, flush=True)


# =========================================================================== workloads


def workload_graph(bench: Bench, contenders: Sequence[Contender]) -> None:
    """Workload 1: graph runs, new thread each time, with the default durability and with
    ``durability="sync"``; both run back to back within each turn (alternating which goes
    first), so that they see the same machine."""
    steps = bench.sizes.steps
    builder = build_graph(steps)
    variants = [("graph", {}), ("graph_sync", {"durability": "sync"})]
    turns = itertools.count()
    with bench.session("graph", contenders) as lives:
        for live in lives:
            live.graph = builder.compile(checkpointer=live.saver)

        def measure(live: Live, timed: bool) -> None:
            c = live.contender
            order = variants if next(turns) % 2 else variants[::-1]
            for label, extra in order:
                config = run_config(new_thread_id(label), steps)
                out, elapsed = bench.invoke(c, live.graph, first_input(), config, **extra)
                _expect(len(out["messages"]) == steps + 1, "graph run ended early")
                if timed:
                    bench.record(label, c, "ms", elapsed / 1e6)

        bench.round_robin("graph", lives, bench.sizes.reps["graph"], measure)


def workload_micro(bench: Bench, contenders: Sequence[Contender]) -> None:
    """Workload 2: saver methods called directly, on prepared long and short threads."""
    sizes = bench.sizes
    with bench.session("micro", contenders) as lives:
        threads: dict[str, dict[str, tuple[str, list[str]]]] = {}
        for live in list(lives):
            c = live.contender
            try:
                threads[c.key] = {}
                for size, n in (("long", sizes.long_thread), ("short", sizes.short_thread)):
                    thread_id = new_thread_id(f"micro-{size}")
                    plan = put_thread_plan(live.saver, thread_id, n, sizes.window)
                    threads[c.key][size] = (thread_id, bench.drive(c, live.saver, plan))
            except Exception as exc:
                bench.fail("micro", c, exc)
                lives.remove(live)

        def measure(live: Live, timed: bool) -> None:
            c = live.contender
            plan = micro_rep_plan(live.saver, sizes, threads[c.key])
            samples = bench.drive(c, live.saver, plan)
            if timed:
                for operation, values in samples.items():
                    bench.record("micro", c, operation, *values)

        bench.round_robin("micro", lives, sizes.reps["micro"], measure, warmup=1)


def workload_large(bench: Bench, contenders: Sequence[Contender]) -> None:
    """Workload 2b: saver methods on the large state (ten channels, three of ~10 KB, every
    channel new at every put), on prepared threads of 1,000 and 10 checkpoints."""
    sizes = bench.sizes
    with bench.session("large", contenders) as lives:
        threads: dict[str, dict[str, tuple[str, list[str]]]] = {}
        for live in list(lives):
            c = live.contender
            try:
                threads[c.key] = {}
                for size, n in (("long", sizes.long_thread), ("short", sizes.short_thread)):
                    thread_id = new_thread_id(f"large-{size}")
                    plan = large_thread_plan(live.saver, thread_id, n, sizes.large_kb)
                    threads[c.key][size] = (thread_id, bench.drive(c, live.saver, plan))
            except Exception as exc:
                bench.fail("large", c, exc)
                lives.remove(live)

        def measure(live: Live, timed: bool) -> None:
            c = live.contender
            samples = bench.drive(c, live.saver, large_rep_plan(live.saver, sizes, threads[c.key]))
            if timed:
                for operation, values in samples.items():
                    bench.record("large", c, operation, *values)

        bench.round_robin("large", lives, sizes.reps["large"], measure, warmup=1)


def workload_concurrency(bench: Bench, contenders: Sequence[Contender]) -> None:
    """Workload 3: ``os_threads`` threads each running one ``invoke`` (sync contenders), or
    ``async_runs`` concurrent ``ainvoke`` (async contenders), all on distinct threads."""
    sizes = bench.sizes
    steps = sizes.steps
    builder = build_graph(steps)
    with bench.session("concurrency", contenders) as lives:
        for live in lives:
            live.graph = builder.compile(checkpointer=live.saver)

        def measure(live: Live, timed: bool) -> None:
            c = live.contender
            if not timed:  # warm-up: one plain run
                bench.invoke(c, live.graph, first_input(), run_config(new_thread_id("w"), steps))
                return
            if c.mode == "sync":
                configs = [run_config(new_thread_id("t"), steps) for _ in range(sizes.os_threads)]
                with ThreadPoolExecutor(max_workers=sizes.os_threads) as pool:
                    start = perf_counter_ns()
                    futures = [pool.submit(live.graph.invoke, first_input(), cf) for cf in configs]
                    outs = [f.result() for f in futures]
                    elapsed = perf_counter_ns() - start
            else:
                configs = [run_config(new_thread_id("a"), steps) for _ in range(sizes.async_runs)]

                async def gather() -> tuple[list[Any], int]:
                    start = perf_counter_ns()
                    runs = [live.graph.ainvoke(first_input(), cf) for cf in configs]
                    outs = await asyncio.gather(*runs)
                    return outs, perf_counter_ns() - start

                outs, elapsed = bench.loop.run(gather())
            _expect(all(len(o["messages"]) == steps + 1 for o in outs), "a run ended early")
            bench.record("concurrency", c, "steps_per_s", len(configs) * steps / (elapsed / 1e9))

        bench.round_robin("concurrency", lives, sizes.reps["concurrency"], measure, warmup=1)


def _payload_bytes(obj: Any) -> int:
    """Bytes of serialized payloads held in nested dicts, tuples and lists."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return len(obj)
    if isinstance(obj, dict):
        return sum(_payload_bytes(v) for v in obj.values())
    if isinstance(obj, tuple | list):
        return sum(_payload_bytes(v) for v in obj)
    return 0


def _stored_bytes(c: Contender, location: str) -> int:
    """Bytes ``c``'s tables take in ``location`` (indexes and TOAST included). InMemorySaver
    has no tables: the serialized payloads it keeps are counted instead."""
    if c.backend == "postgres":
        return pg_relations_size(location, c.tables)
    if c.backend == "sqlite":
        return sqlite_tables_size(location, c.tables)[0]
    saver = _MEMORY.get(location)
    return 0 if saver is None else _payload_bytes([saver.storage, saver.writes, saver.blobs])


def workload_storage(bench: Bench, contenders: Sequence[Contender]) -> None:
    """Workload 4: one run of each length on a fresh database per contender; the growth of
    the saver's tables (after VACUUM ANALYZE, or a WAL checkpoint) per stored checkpoint."""
    for steps in bench.sizes.storage_steps:
        builder = build_graph(steps)
        with bench.session(f"storage{steps}", contenders, open_saver=False) as lives:

            def measure(
                live: Live, timed: bool, steps: int = steps, builder: StateGraph = builder
            ) -> None:
                c = live.contender
                with bench.opened(c, live.location) as saver:  # a read creates the tables
                    bench.drive(c, saver, count_plan(new_thread_id("nothing")))
                empty = _stored_bytes(c, live.location)
                thread_id = new_thread_id("storage")
                with bench.opened(c, live.location) as saver:
                    graph = builder.compile(checkpointer=saver)
                    bench.invoke(c, graph, first_input(), run_config(thread_id, steps))
                    checkpoints = bench.drive(c, saver, count_plan(thread_id))
                    if c.backend == "memory":
                        used = _stored_bytes(c, live.location)
                if c.backend != "memory":
                    used = _stored_bytes(c, live.location)
                bench.record("storage", c, f"checkpoints_{steps}", checkpoints)
                bench.record("storage", c, f"bytes_{steps}", used - empty)
                per_checkpoint = (used - empty) / checkpoints
                bench.record("storage", c, f"bytes_per_checkpoint_{steps}", per_checkpoint)

            bench.round_robin("storage", lives, bench.sizes.reps["storage"], measure, warmup=0)


def workload_resume(bench: Bench, contenders: Sequence[Contender]) -> None:
    """Workload 5: a run that raises at super-step ``fail_at``, then ``invoke(None, config)``
    with a new saver instance over the same database (InMemorySaver: the same instance)."""
    sizes = bench.sizes
    steps, fail_at = sizes.steps, sizes.fail_at
    builder = build_graph(steps, fail_at)
    with bench.session("resume", contenders, open_saver=False) as lives:

        def measure(live: Live, timed: bool) -> None:
            c = live.contender
            thread_id = new_thread_id("resume")
            config = run_config(thread_id, steps)
            _FAIL_ONCE.add(thread_id)
            with bench.opened(c, live.location) as saver:
                try:
                    bench.invoke(c, builder.compile(checkpointer=saver), first_input(), config)
                except InjectedFailure:
                    pass
                else:
                    raise BenchError("the run did not fail")
            before = _EXECUTED[thread_id]
            with bench.opened(c, live.location) as saver:
                graph = builder.compile(checkpointer=saver)
                out, elapsed = bench.invoke(c, graph, None, config)
            _expect(len(out["messages"]) == steps + 1, "resume did not complete the run")
            _expect(_EXECUTED[thread_id] - before == steps - fail_at + 1, "resume re-ran nodes")
            del _EXECUTED[thread_id]
            if timed:
                bench.record("resume", c, "ms", elapsed / 1e6)

        bench.round_robin("resume", lives, sizes.reps["resume"], measure, warmup=1)


WORKLOAD_FUNCTIONS: dict[str, Callable[[Bench, Sequence[Contender]], None]] = {
    "graph": workload_graph,
    "micro": workload_micro,
    "large": workload_large,
    "concurrency": workload_concurrency,
    "storage": workload_storage,
    "resume": workload_resume,
}


# =========================================================================== report


class Report:
    """Turns the bench's samples into medians, ratios and Markdown tables."""

    def __init__(self, bench: Bench, contenders: Sequence[Contender]) -> None:
        self.sizes = bench.sizes
        self.results = bench.results
        self.contenders = list(contenders)
        self.by_key = {c.key: c for c in contenders}

    def median(self, workload: str, key: str, metric: str) -> float | None:
        """Median of a metric, or ``None`` when it was not measured."""
        summary = summarize(self.results.get(workload, {}).get(key, {}).get(metric, []))
        return summary.median if summary else None

    def peer(self, c: Contender, backend: Backend) -> str:
        """The official saver on ``backend`` driven like ``c`` (sync or async)."""
        base = {"memory": "memory", "sqlite": "sqlite", "postgres": "postgres"}[backend]
        return base if c.mode == "sync" else f"{base}-async"

    def rows_for(self, workload: str) -> list[Contender]:
        """Contenders with results in ``workload``."""
        return [c for c in self.contenders if self.results.get(workload, {}).get(c.key)]

    def _compare(self, workload: str, metric: str, c: Contender, backend: Backend) -> str:
        mine = self.median(workload, c.key, metric)
        return fmt_ratio(ratio(mine, self.median(workload, self.peer(c, backend), metric)))

    def graph(self, workload: str) -> str:
        """Table: ms per graph run and ratios."""
        rows = []
        for c in self.rows_for(workload):
            summary = summarize(self.results[workload][c.key]["ms"])
            assert summary is not None
            rows.append(
                [
                    c.name,
                    c.driver,
                    fmt_num(summary.median),
                    f"{summary.spread * 100:.0f} %",
                    self._compare(workload, "ms", c, "memory"),
                    self._compare(workload, "ms", c, "postgres"),
                    self._compare(workload, "ms", c, "sqlite"),
                ]
            )
        headers = ["saver", "driver", "ms/run", "IQR", "× InMemorySaver", "× PostgresSaver†",
                   "× SqliteSaver†"]  # fmt: skip
        return md_table(headers, rows)

    MICRO_COLUMNS = (  # metric, value column, ratio column, ns per unit
        ("put", "put µs", "put", 1e3),
        ("put_writes", "put_writes µs", "put_writes", 1e3),
        ("get_latest_long", "get_tuple latest µs (long)", "latest (long)", 1e3),
        ("get_latest_short", "get_tuple latest µs (short)", "latest (short)", 1e3),
        ("get_id_long", "get_tuple by id µs (long)", "by id (long)", 1e3),
        ("get_id_short", "get_tuple by id µs (short)", "by id (short)", 1e3),
        ("list_long", "list ms (long)", "list (long)", 1e6),
        ("delete_thread", "delete_thread ms", "delete_thread", 1e6),
    )

    def micro(self) -> str:
        """Tables: micro-operation medians, then ratios to PostgresSaver and SqliteSaver."""
        contenders = self.rows_for("micro")
        values = []
        for c in contenders:
            row = [c.name, c.driver]
            for metric, _, _, scale in self.MICRO_COLUMNS:
                value = self.median("micro", c.key, metric)
                row.append(fmt_num(None if value is None else value / scale))
            values.append(row)
        headers = ["saver", "driver"] + [title for _, title, _, _ in self.MICRO_COLUMNS]
        ratios = []
        for c in contenders:
            row = [c.name, c.driver]
            for metric, _, _, _ in self.MICRO_COLUMNS:
                row.append(self._compare("micro", metric, c, "postgres"))
            flat = ratio(
                self.median("micro", c.key, "get_latest_long"),
                self.median("micro", c.key, "get_latest_short"),
            )
            row.append(fmt_ratio(flat))
            row.append(self._compare("micro", "list_long", c, "sqlite"))
            ratios.append(row)
        ratio_headers = (
            ["saver", "driver"]
            + [short for _, _, short, _ in self.MICRO_COLUMNS]
            + ["latest long ÷ short", "list × SqliteSaver†"]
        )
        return (
            md_table(headers, values)
            + "\n\nRatios (× PostgresSaver†, lower is better):\n\n"
            + md_table(ratio_headers, ratios)
        )

    LARGE_COLUMNS = (  # metric, value column, short name, ns per unit
        ("put", "put µs", "put", 1e3),
        ("get_latest_long", "latest µs (1,000)", "latest (1,000)", 1e3),
        ("get_latest_short", "latest µs (10)", "latest (10)", 1e3),
        ("get_id_long", "by id µs (1,000)", "by id (1,000)", 1e3),
        ("get_id_short", "by id µs (10)", "by id (10)", 1e3),
        ("list_long", "list ms (1,000)", "list (1,000)", 1e6),
    )

    def own_peer(self, c: Contender) -> str:
        """The official saver of ``c``'s own database, driven like ``c``."""
        return self.peer(c, c.backend)

    def large(self) -> str:
        """Tables: large-state medians, then ratios to the saver's own peer and to
        InMemorySaver (both driven the same way)."""
        contenders = self.rows_for("large")
        values, ratios = [], []
        for c in contenders:
            row = [c.name, c.driver]
            for metric, _, _, scale in self.LARGE_COLUMNS:
                value = self.median("large", c.key, metric)
                row.append(fmt_num(None if value is None else value / scale))
            values.append(row)
            peer = self.by_key.get(self.own_peer(c))
            row = [c.name, c.driver, peer.name if peer else "–"]
            for metric, _, _, _ in self.LARGE_COLUMNS:
                mine = self.median("large", c.key, metric)
                row.append(fmt_ratio(ratio(mine, self.median("large", self.own_peer(c), metric))))
            for metric in ("get_latest_long", "get_id_long"):
                mine = self.median("large", c.key, metric)
                memory = self.median("large", self.peer(c, "memory"), metric)
                row.append(fmt_ratio(ratio(mine, memory)))
            for metric in ("get_latest", "get_id"):
                row.append(fmt_ratio(ratio(
                    self.median("large", c.key, f"{metric}_long"),
                    self.median("large", c.key, f"{metric}_short"),
                )))  # fmt: skip
            ratios.append(row)
        headers = ["saver", "driver"] + [title for _, title, _, _ in self.LARGE_COLUMNS]
        ratio_headers = (
            ["saver", "driver", "peer"]
            + [f"{short} × peer" for _, _, short, _ in self.LARGE_COLUMNS]
            + ["latest × InMemorySaver†", "by id × InMemorySaver†", "latest 1,000 ÷ 10",
               "by id 1,000 ÷ 10"]
        )  # fmt: skip
        return (
            md_table(headers, values)
            + "\n\nRatios (peer: the official saver of the same database, driven the same "
            "way; lower is better):\n\n" + md_table(ratio_headers, ratios)
        )

    def concurrency(self) -> str:
        """Table: super-steps per second under concurrency."""
        rows = []
        for c in self.rows_for("concurrency"):
            how = (
                f"{self.sizes.os_threads} threads × invoke"
                if c.mode == "sync"
                else f"{self.sizes.async_runs} × ainvoke"
            )
            rows.append(
                [
                    c.name,
                    how,
                    fmt_num(self.median("concurrency", c.key, "steps_per_s")),
                    self._compare("concurrency", "steps_per_s", c, "memory"),
                    self._compare("concurrency", "steps_per_s", c, "postgres"),
                    self._compare("concurrency", "steps_per_s", c, "sqlite"),
                ]
            )
        headers = ["saver", "load", "super-steps/s", "× InMemorySaver", "× PostgresSaver†",
                   "× SqliteSaver†"]  # fmt: skip
        return md_table(headers, rows)

    def storage(self) -> str:
        """Table: bytes per checkpoint after runs of each length, and ratios to PostgresSaver
        (the sync one; storage does not depend on the driver)."""
        headers = ["saver", "driver"]
        for steps in self.sizes.storage_steps:
            headers += [f"checkpoints ({steps})", f"bytes/ckpt ({steps})"]
        headers += [f"total ({self.sizes.storage_steps[-1]})", "× PostgresSaver", "× SqliteSaver"]
        last = self.sizes.storage_steps[-1]
        rows = []
        for c in self.rows_for("storage"):
            row = [c.name, c.driver]
            for steps in self.sizes.storage_steps:
                row += [
                    fmt_num(self.median("storage", c.key, f"checkpoints_{steps}")),
                    fmt_bytes(self.median("storage", c.key, f"bytes_per_checkpoint_{steps}")),
                ]
            mine = self.median("storage", c.key, f"bytes_{last}")
            row += [
                fmt_bytes(mine),
                fmt_ratio(ratio(mine, self.median("storage", "postgres", f"bytes_{last}"))),
                fmt_ratio(ratio(mine, self.median("storage", "sqlite", f"bytes_{last}"))),
            ]
            rows.append(row)
        return md_table(headers, rows)

    def resume(self) -> str:
        """Table: time to resume a failed run to completion."""
        rows = []
        for c in self.rows_for("resume"):
            rows.append(
                [
                    c.name,
                    c.driver,
                    fmt_num(self.median("resume", c.key, "ms")),
                    self._compare("resume", "ms", c, "memory"),
                    self._compare("resume", "ms", c, "postgres"),
                    self._compare("resume", "ms", c, "sqlite"),
                ]
            )
        headers = ["saver", "driver", "ms to resume", "× InMemorySaver", "× PostgresSaver†",
                   "× SqliteSaver†"]  # fmt: skip
        return md_table(headers, rows)

    def markdown(self) -> str:
        """Every table that has results, with headings and notes."""
        s = self.sizes
        dagger = (
            "† ainvoke rows are compared with the async peer (InMemorySaver via ainvoke, "
            "AsyncPostgresSaver, AsyncSqliteSaver)."
        )
        parts = []
        if self.rows_for("graph") or self.rows_for("graph_sync"):
            titles = {"graph": "default durability", "graph_sync": 'durability="sync"'}
            for workload, title in titles.items():
                if self.rows_for(workload):
                    parts.append(
                        f"### Graph run: {s.steps} super-steps, {title}\n\n"
                        f"Median of {s.reps['graph']} interleaved runs, new thread per run; "
                        f"IQR is the interquartile range relative to the median.\n\n"
                        + self.graph(workload)
                    )
        if self.rows_for("micro"):
            parts.append(
                f"### Micro-operations\n\nMedians over {s.reps['micro']} interleaved "
                f"repetitions. put / put_writes: every call of a {s.steps}-checkpoint thread "
                f"(messages growing 1→{s.steps}, 2 writes per step); long / short: threads of "
                f"{s.long_thread:,} and {s.short_thread} checkpoints of {s.window} messages "
                f"each, {s.lookups} lookups of each kind per repetition; delete_thread: the "
                f"{s.steps}-checkpoint thread.\n\n" + self.micro()
            )
        if self.rows_for("large"):
            parts.append(
                f"### Large state\n\nTen channels, three of about {s.large_kb} KB (a window of "
                "messages, retrieved documents, a scratchpad) and seven small ones; every "
                "channel has a new value at every put, every checkpoint but the last has two "
                f"pending writes. Medians over {s.reps['large']} interleaved repetitions: "
                f"{s.large_puts} puts each, {s.lookups} lookups of each kind on threads of "
                f"{s.long_thread:,} and {s.short_thread} checkpoints, one `list` of the "
                f"{s.long_thread:,}-checkpoint thread.\n\n" + self.large()
            )
        if self.rows_for("concurrency"):
            parts.append(
                f"### Concurrency\n\n{s.steps}-step runs on distinct threads; median of "
                f"{s.reps['concurrency']} repetitions.\n\n" + self.concurrency()
            )
        if self.rows_for("storage"):
            parts.append(
                "### Storage\n\nGrowth of the saver's tables (indexes and TOAST included) "
                "during one run on a fresh database: PostgreSQL `pg_total_relation_size` after "
                "VACUUM ANALYZE, SQLite `dbstat` pages after a WAL checkpoint, InMemorySaver "
                "the serialized bytes it holds. Divided by the checkpoints `list` returns.\n\n"
                + self.storage()
            )
        if self.rows_for("resume"):
            parts.append(
                f"### Resume\n\nA {s.steps}-step run raises at super-step {s.fail_at}; then "
                f"`invoke(None, config)` with a new saver instance over the same database "
                f"(InMemorySaver: the same instance) runs super-steps {s.fail_at}-{s.steps}. "
                f"Median of {s.reps['resume']}.\n\n" + self.resume()
            )
        return "\n\n".join([*parts, dagger]) if parts else "(no results)"

    def to_json(self) -> dict[str, Any]:
        """Every metric's summary (median, quartiles, count) and samples, per workload and
        contender."""
        out: dict[str, Any] = {}
        for workload, per_key in self.results.items():
            out[workload] = {
                key: {
                    metric: {**summarize(values).to_dict(), "samples": values}
                    for metric, values in metrics.items()
                }
                for key, metrics in per_key.items()
            }
        return out


# =========================================================================== main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: the whole run < 30 s")
    parser.add_argument("--only", help="comma-separated contender keys or names, or peers/persist")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=",".join(WORKLOADS))
    parser.add_argument(
        "--reps", type=int, help="repetitions of every workload (default: each its own)"
    )
    parser.add_argument("--json", help="also write the results as JSON to this path")
    parser.add_argument(
        "--pg",
        default=os.environ.get("LANGCHAIN_PERSIST_BENCH_PG", DEFAULT_PG_ADMIN_URL),
        help="PostgreSQL admin URL; databases are created and dropped on its server",
    )
    parser.add_argument("--list", action="store_true", help="list the contenders and exit")
    parser.add_argument("--before", metavar="REV",
                        help="also run PersistSaver as of this git revision (before/after)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selected workloads and print the tables; 1 when a contender failed."""
    args = parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if args.reps is not None:
        sizes = replace(sizes, reps={name: args.reps for name in sizes.reps})
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    unknown = set(workloads) - set(WORKLOADS)
    if unknown:
        print(f"unknown workloads: {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2

    persist_cls, why = load_persist_saver()
    before_cls = import_revision(args.before).PersistSaver if args.before else None
    everyone = registry(persist_cls, before_cls)
    if args.list:
        for c in everyone:
            print(f"{c.key:22} {c.name} ({c.driver})")
        return 0
    contenders = select(everyone, args.only)
    if not contenders:
        print(f"--only {args.only!r} matches no contender (see --list)", file=sys.stderr)
        return 2

    pg = PgDatabases(args.pg, "lpbench")
    pg_version = pg.server_version()
    if any(c.backend == "postgres" for c in contenders) and pg_version.startswith("unreachable"):
        log(f"PostgreSQL {pg_version} at {args.pg}: PostgreSQL contenders skipped")
        contenders = [c for c in contenders if c.backend != "postgres"]

    import sqlite3

    versions = package_versions(
        ["langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite",
         "langgraph-checkpoint-postgres", "aiosqlite", "psycopg", "langchain-core",
         "langchain-persist"]
    )  # fmt: skip
    machine = machine_info()
    print("## Checkpoint savers\n")
    print(f"PersistSaver: {'available' if persist_cls else 'not available'}"
          + ("" if persist_cls else f" ({why})"))  # fmt: skip
    print(f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']}, "
          f"{machine['os']}, Python {machine['python']}")  # fmt: skip
    print(f"Load average at the start: {' / '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print(f"Databases: {pg_version.split(' on ')[0]}; SQLite {sqlite3.sqlite_version}")
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    print(f"Mode: {'smoke' if args.smoke else 'full'}; workloads: {', '.join(workloads)}; "
          f"contenders: {', '.join(c.key for c in contenders)}\n", flush=True)  # fmt: skip

    started = time.perf_counter()
    timings: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-saver-") as tmp:
        bench = Bench(sizes, pg, Path(tmp))
        try:
            for workload in workloads:
                t0 = time.perf_counter()
                log(f"-- {workload} ...")
                try:
                    WORKLOAD_FUNCTIONS[workload](bench, contenders)
                except Exception as exc:  # e.g. a database that cannot be dropped: go on
                    error = {"workload": workload, "contender": "*", "error": repr(exc)}
                    bench.errors.append(error)
                    traceback.print_exception(exc, file=sys.stderr)
                timings[workload] = time.perf_counter() - t0
                log(f"-- {workload}: {timings[workload]:.1f} s")
        finally:
            bench.close()
            pg.drop_all()

    report = Report(bench, contenders)
    total = time.perf_counter() - started
    print(report.markdown())
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\nTotal time: {total:.0f} s ("
          + ", ".join(f"{w} {t:.0f} s" for w, t in timings.items())
          + f"); load average at the end: {load}")  # fmt: skip
    if bench.errors:
        print("\n### Errors\n")
        for error in bench.errors:
            print(f"- {error['contender']} in {error['workload']}: {error['error']}")
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": "checkpoint savers",
                "date": datetime.now(UTC).isoformat(),
                "mode": "smoke" if args.smoke else "full",
                "machine": machine,
                "load_average_at_end": os.getloadavg(),
                "postgresql": pg_version,
                "sqlite": sqlite3.sqlite_version,
                "versions": versions,
                "persist_saver": "available" if persist_cls else f"not available ({why})",
                "sizes": {k: v for k, v in vars(sizes).items()},
                "contenders": {
                    c.key: {"name": c.name, "backend": c.backend, "driver": c.driver}
                    for c in contenders
                },
                "results": report.to_json(),
                "seconds": {"total": total, **timings},
                "errors": bench.errors,
            },
        )
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
