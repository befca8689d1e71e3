"""Benchmark: how long the event loop stalls while 50 agents run at once with the handler.

A ticker asks the loop to wake it every millisecond while ``--runs`` concurrent ``ainvoke``
runs (``create_agent``, a scripted fake model, ``--calls`` tool calls each) are recorded by
`PersistCallbackHandler`; its lateness is the loop's lag.  Reported: the worst lag and the p99,
medians over interleaved rounds, for no handler, this code (spool on and off) and, with
``--before REV``, another revision's handler.  The agents' own steps stall the loop too (see the
"no handler" row: the garbage collector's full collections take ~100 ms here), so the
handler's share is also measured directly: the longest time any one of its callbacks held the
loop, less the collector's pauses inside it, and how many collector pauses over 2 ms a round had.

    python benchmarks/bench_loop_lag.py [--db sqlite|postgres] [--before REV] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import inspect
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from _common import DEFAULT_PG_ADMIN_URL, PgDatabases, md_table  # noqa: E402
from _versions import import_revision  # noqa: E402
from handler_support import ScriptedChatModel, echo  # noqa: E402
from langchain.agents import create_agent  # noqa: E402

import langchain_persist  # noqa: E402


async def lag_while(work: Any) -> list[float]:
    """The ticker's lateness (ms) at each tick while ``work`` runs."""
    loop = asyncio.get_running_loop()
    lags: list[float] = []
    task = asyncio.ensure_future(work)
    while not task.done():
        start = loop.time()
        await asyncio.sleep(0.001)
        lags.append((loop.time() - start - 0.001) * 1000)
    await task
    return lags


class Collector:
    """The garbage collector's pauses: their total (ms) and how many took over 2 ms."""

    total = 0.0
    long = 0
    _start = 0.0

    @classmethod
    def watch(cls, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            cls._start = time.perf_counter()
            return
        pause = (time.perf_counter() - cls._start) * 1000
        cls.total += pause
        cls.long += pause > 2


gc.callbacks.append(Collector.watch)


class Holds:
    """The longest time (ms) any one callback of the wrapped handlers held the loop, less the
    garbage collector's pauses within it.  A callback that LangChain awaits on the loop (an
    async twin: see `PersistCallbackHandler.on_chain_end`) holds it only between its awaits:
    each of those stretches is timed."""

    def __init__(self, handlers: list[Any]) -> None:
        self.longest = 0.0
        for handler in handlers:
            cls, wrapped = type(handler), {}
            for name in (n for n in dir(cls) if n.startswith("on_")):
                attr = inspect.getattr_static(cls, name)
                if hasattr(attr, "twin"):  # this code's: a plain method and an async twin
                    wrapped[name] = type(attr)(self.timed(attr.method), self.atimed(attr.twin))
                elif callable(attr):
                    wrapped[name] = self.timed(attr)
            handler.__class__ = type(cls.__name__, (cls,), wrapped)

    def held(self, start: float, collected: float) -> None:
        held = (time.perf_counter() - start) * 1000 - (Collector.total - collected)
        self.longest = max(self.longest, held)

    def timed(self, method: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            start, collected = time.perf_counter(), Collector.total
            try:
                return method(*args, **kwargs)
            finally:
                self.held(start, collected)
        return call

    def atimed(self, method: Any) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await self.stepwise(method(*args, **kwargs))
        return call

    @types.coroutine
    def stepwise(self, coro: Any) -> Any:
        """Run ``coro``, timing each stretch it runs between two awaits."""
        sent: Any = None
        thrown: BaseException | None = None
        while True:
            start, collected = time.perf_counter(), Collector.total
            try:
                yielded = coro.send(sent) if thrown is None else coro.throw(thrown)
            except StopIteration as stop:
                return stop.value
            finally:
                self.held(start, collected)
            try:
                sent, thrown = (yield yielded), None
            except BaseException as exc:
                sent, thrown = None, exc


def one_round(callbacks: list[Any], runs: int, calls: int) -> list[float]:
    agent = create_agent(ScriptedChatModel(plan=[["echo"]] * calls), [echo])

    async def everything() -> None:
        await asyncio.gather(*(agent.ainvoke({"messages": [("user", f"go {n}")]},
                                             {"callbacks": callbacks}) for n in range(runs)))

    return asyncio.run(lag_while(everything()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--pg", default=DEFAULT_PG_ADMIN_URL)
    parser.add_argument("--before", metavar="REV")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="5 runs, 2 rounds")
    parser.add_argument("--freeze", action="store_true",
                        help="gc.freeze() after the warm-up, as a long-lived server does")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.rounds = 5, 2
    pg = PgDatabases(args.pg, "lplag")
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/lag.db" if args.db == "sqlite" else pg.create("lag")
        contenders: dict[str, list[Any]] = {
            "no handler": [],
            "this code (spool)": [langchain_persist.PersistCallbackHandler("lag", url=url)],
            "this code (no spool)": [langchain_persist.PersistCallbackHandler(
                "lag", url=url, spool=False)],
        }
        if args.before:
            before = import_revision(args.before)
            contenders[f"before ({args.before})"] = [before.PersistCallbackHandler(
                "lag", url=url.replace("lag.db", "lag-before.db"))]
        holds = {name: Holds(callbacks) for name, callbacks in contenders.items()}
        samples: dict[str, list[tuple[float, float, float, int]]] = {
            name: [] for name in contenders}
        try:
            for callbacks in contenders.values():  # warm up every path
                one_round(callbacks, 2, 1)
            if args.freeze:
                gc.collect()
                gc.freeze()
            for round_ in range(args.rounds):
                names = list(contenders)
                names = names[round_ % len(names):] + names[:round_ % len(names)]
                for name in names:
                    holds[name].longest, Collector.long = 0.0, 0
                    lags = sorted(one_round(contenders[name], args.runs, args.calls))
                    samples[name].append((lags[-1], lags[int(0.99 * (len(lags) - 1))],
                                          holds[name].longest, Collector.long))
                    time.sleep(0.1)
        finally:
            for callbacks in contenders.values():
                for handler in callbacks:
                    handler.close()
            pg.drop_all()
    rows = [[name, len(s), f"{statistics.median(w for w, *_ in s):.2f}",
             f"{max(w for w, *_ in s):.2f}", f"{statistics.median(p for _, p, *_ in s):.2f}",
             f"{statistics.median(h for *_, h, _ in s):.3f}" if contenders[name] else "-",
             f"{max(h for *_, h, _ in s):.3f}" if contenders[name] else "-",
             f"{statistics.median(c for *_, c in s):g}"]
            for name, s in samples.items()]
    print(f"### Event loop lag: {args.runs} concurrent ainvoke x {args.calls} tool calls, "
          f"{args.db}\n")
    print(md_table(["handler", "rounds", "worst lag ms (median of rounds)", "worst lag ms (max)",
                    "p99 lag ms", "longest callback ms (median)", "longest callback ms (max)",
                    "collector pauses > 2 ms (median)"],
                   rows))


if __name__ == "__main__":
    main()
