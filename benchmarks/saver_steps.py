"""Where a graph step's time goes: each saver against InMemorySaver, per super-step.

    python benchmarks/saver_steps.py [--rounds N] [--only memory,persist-pg] [--json out.json]

The 50-super-step agent graph of ``bench_saver.py`` (default durability: LangGraph saves in a
background thread while the next step runs), driven with ``invoke`` and with ``ainvoke``, on
InMemorySaver, SqliteSaver / AsyncSqliteSaver, PostgresSaver / AsyncPostgresSaver and
PersistSaver on both databases; contenders interleaved round by round, new thread per run.
Every saver's ``put`` / ``put_writes`` (and their ``a``-twins) are timed, wall clock and CPU
of the thread that runs them; inside PersistSaver, so are serialization (LangGraph's
serializer), compression (zstd), the driver's statements (CPU, and wall: the rest is waiting
on the database, commits included) and the connection (checkout and return; on SQLite also
BEGIN IMMEDIATE, COMMIT and the wait for the writer's lock).  The main thread's CPU
(LangGraph's own work) is measured too: what it did not spend running it waited, for the GIL
or for the saver.

Printed per super-step, medians over rounds: the run's wall time and its excess over
InMemorySaver, and the saver's time broken down.  CPU figures add up across threads; on 2
cores they are what a step costs the machine, wall figures what it costs the run.
"""

# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import contextlib
import contextvars
import functools
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import bench_saver as bench
from _common import DEFAULT_PG_ADMIN_URL, PgDatabases, md_table, write_json
from langgraph.checkpoint.base import BaseCheckpointSaver

PARTS = ("serialize", "compress", "driver", "pool")
METHODS = ("put", "put_writes", "aput", "aput_writes")


class Meter:
    """Wall and CPU nanoseconds per part, for the run being measured."""

    def __init__(self) -> None:
        self.wall: dict[str, int] = defaultdict(int)
        self.cpu: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)

    def reset(self) -> None:
        self.wall.clear()
        self.cpu.clear()
        self.calls.clear()

    def add(self, part: str, wall: int, cpu: int) -> None:
        self.wall[part] += wall
        self.cpu[part] += cpu
        self.calls[part] += 1


METER = Meter()
# a part timed inside the same part (InMemorySaver's aput calls put) is counted once
_INSIDE: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "inside", default=frozenset()
)


def _timed_sync(part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def timed(*args: Any, **kwargs: Any) -> Any:
        inside = _INSIDE.get()
        if part in inside:
            return fn(*args, **kwargs)
        token = _INSIDE.set(inside | {part})
        wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
        try:
            return fn(*args, **kwargs)
        finally:
            METER.add(part, time.perf_counter_ns() - wall, time.thread_time_ns() - cpu)
            _INSIDE.reset(token)

    timed._metered = True  # type: ignore[attr-defined]
    return timed


def _timed_async(part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def timed(*args: Any, **kwargs: Any) -> Any:
        inside = _INSIDE.get()
        if part in inside:
            return await fn(*args, **kwargs)
        token = _INSIDE.set(inside | {part})
        wall = time.perf_counter_ns()
        try:
            return await fn(*args, **kwargs)
        finally:  # CPU of an awaited call is not its own: the loop ran others meanwhile
            METER.add(part, time.perf_counter_ns() - wall, 0)
            _INSIDE.reset(token)

    timed._metered = True  # type: ignore[attr-defined]
    return timed


def _timed_cm(part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """A context manager's enter and exit, timed together (a pooled connection's checkout
    and return, with BEGIN and COMMIT on SQLite), not what runs inside it."""

    @functools.wraps(fn)
    @contextlib.contextmanager
    def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
        wall, cpu = time.perf_counter_ns(), time.thread_time_ns()
        manager = fn(*args, **kwargs)
        value = manager.__enter__()
        wall, cpu = time.perf_counter_ns() - wall, time.thread_time_ns() - cpu
        try:
            yield value
        except BaseException:
            if not manager.__exit__(*sys.exc_info()):
                raise
        else:
            exit_wall, exit_cpu = time.perf_counter_ns(), time.thread_time_ns()
            manager.__exit__(None, None, None)
            wall += time.perf_counter_ns() - exit_wall
            cpu += time.thread_time_ns() - exit_cpu
            METER.add(part, wall, cpu)

    return timed


def instrument_saver_methods(cls: type) -> None:
    """Time ``put`` / ``put_writes`` and their async twins on a saver class."""
    for name in METHODS:
        fn = getattr(cls, name)
        if getattr(fn, "_metered", False):
            continue
        wrap = _timed_async if name.startswith("a") else _timed_sync
        setattr(cls, name, wrap(name.removeprefix("a"), fn))


def instrument_persist() -> None:
    """Time PersistSaver's own parts: compression, statements, the pool."""
    from langchain_persist._checkpoint import saver as saver_module
    from langchain_persist._db.engine import Database
    from langchain_persist._db.sql.prepared import Prepared

    saver_module.pack = _timed_sync("compress", saver_module.pack)
    for name in ("execute", "execute_many", "fetch"):
        setattr(Prepared, name, _timed_sync("driver", getattr(Prepared, name)))
    for name in ("aexecute", "aexecute_many", "afetch"):
        setattr(Prepared, name, _timed_async("driver", getattr(Prepared, name)))
    Database.cursor = _timed_cm("pool", Database.cursor)  # type: ignore[method-assign]


def instrument_serde(saver: BaseCheckpointSaver) -> None:
    """Time a saver's serialization (its serializer's ``dumps_typed``; savers that were given
    none share LangGraph's default one)."""
    serde = saver.serde
    if not getattr(serde.dumps_typed, "_metered", False):
        serde.dumps_typed = _timed_sync("serialize", serde.dumps_typed)  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--only", help="contender keys (see bench_saver.py --list)")
    parser.add_argument("--json")
    parser.add_argument("--pg", default=DEFAULT_PG_ADMIN_URL)
    args = parser.parse_args(argv)

    persist_cls, _ = bench.load_persist_saver()
    instrument_persist()
    contenders = bench.select(bench.registry(persist_cls), args.only)
    pg = PgDatabases(args.pg, "lpsteps")
    sizes = bench.Sizes(steps=args.steps)
    builder = bench.build_graph(args.steps)
    samples: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory(prefix="saver-steps-") as tmp:
        b = bench.Bench(sizes, pg, Path(tmp))
        try:
            with b.session("steps", contenders) as lives:
                for live in lives:
                    instrument_saver_methods(type(live.saver))
                    instrument_serde(live.saver)
                    live.graph = builder.compile(checkpointer=live.saver)

                def measure(live: bench.Live, timed: bool) -> None:
                    c = live.contender
                    config = bench.run_config(bench.new_thread_id("steps"), args.steps)
                    METER.reset()
                    cpu = time.thread_time_ns()
                    if c.mode == "sync":
                        out, elapsed = b.invoke(c, live.graph, bench.first_input(), config)
                        main_cpu = time.thread_time_ns() - cpu
                    else:

                        async def run() -> tuple[Any, int, int]:
                            loop_cpu = time.thread_time_ns()
                            start = time.perf_counter_ns()
                            out = await live.graph.ainvoke(bench.first_input(), config)
                            wall = time.perf_counter_ns() - start
                            return out, wall, time.thread_time_ns() - loop_cpu

                        out, elapsed, main_cpu = b.loop.run(run())
                    assert len(out["messages"]) == args.steps + 1
                    if not timed:
                        return
                    per = 1e3 * args.steps  # ns per run -> µs per step
                    s = samples[c.key]
                    s["wall"].append(elapsed / per)
                    s["main_cpu"].append(main_cpu / per)
                    for part in ("put", "put_writes", *PARTS):
                        s[f"{part}_wall"].append(METER.wall[part] / per)
                        s[f"{part}_cpu"].append(METER.cpu[part] / per)
                    s["calls"].append((METER.calls["put"] + METER.calls["put_writes"]) / args.steps)

                b.round_robin("steps", lives, args.rounds, measure)
        finally:
            b.close()
            pg.drop_all()

    def med(key: str, metric: str) -> float | None:
        values = samples.get(key, {}).get(metric)
        return statistics.median(values) if values else None

    def fmt(value: float | None) -> str:
        return "–" if value is None else f"{value:,.0f}"

    rows = []
    for c in contenders:
        if c.key not in samples:
            continue
        memory = "memory" if c.mode == "sync" else "memory-async"
        wall, ref = med(c.key, "wall"), med(memory, "wall")
        saver_cpu = (med(c.key, "put_cpu") or 0) + (med(c.key, "put_writes_cpu") or 0)
        saver_wall = (med(c.key, "put_wall") or 0) + (med(c.key, "put_writes_wall") or 0)
        parts_cpu = {p: med(c.key, f"{p}_cpu") or 0 for p in PARTS}
        driver_wait = (med(c.key, "driver_wall") or 0) - parts_cpu["driver"]
        pool_wait = (med(c.key, "pool_wall") or 0) - parts_cpu["pool"]
        own = saver_cpu - sum(parts_cpu.values())
        rows.append([
            c.name, c.driver, fmt(wall), fmt(None if wall is None or ref is None else wall - ref),
            fmt(med(c.key, "main_cpu")), fmt(saver_wall),
            fmt(saver_cpu) if c.mode == "sync" or c.backend == "sqlite" else "–",
            fmt(parts_cpu["serialize"]), fmt(parts_cpu["compress"]),
            fmt(own) if c.mode == "sync" else "–",
            fmt(parts_cpu["driver"]) if c.mode == "sync" or c.backend == "sqlite" else "–",
            fmt(driver_wait) if c.mode == "sync" else fmt(med(c.key, "driver_wall")),
            fmt(parts_cpu["pool"]), fmt(pool_wait),
        ])  # fmt: skip
    headers = [
        "saver", "driver", "wall", "over InMemorySaver", "main thread CPU",
        "put + put_writes wall", "their CPU", "serialize", "compress", "rows, params, rest",
        "driver CPU", "waiting on the database", "connection CPU", "connection wait",
    ]  # fmt: skip
    print(f"## Per super-step (µs), {args.steps}-step graph, default durability, median of "
          f"{args.rounds} rounds\n")  # fmt: skip
    print(md_table(headers, rows))
    print(
        "\nCPU columns are the thread that ran the call (LangGraph's background thread for "
        "invoke; for ainvoke on PostgreSQL the event loop, where an awaited call's CPU cannot "
        "be told from the others': –). 'waiting on the database' is the statements' wall time "
        "less their CPU (for ainvoke on PostgreSQL: the statements' awaited wall time). "
        "'connection': taking a pooled connection and giving it back; on SQLite also the "
        "writer's lock (put and put_writes of one step wait for each other), BEGIN IMMEDIATE "
        "and COMMIT."
    )
    if args.json:
        write_json(args.json, {k: dict(v) for k, v in samples.items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
