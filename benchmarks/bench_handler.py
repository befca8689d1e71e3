"""Benchmark: what PersistCallbackHandler costs an agent, and what the writer can ingest.

    python benchmarks/bench_handler.py            # the full run (a few minutes)
    python benchmarks/bench_handler.py --smoke    # tiny sizes, a few seconds
    python benchmarks/bench_handler.py --only ingest --before REV   # some sections, before/after

Contenders, interleaved round by round (the order rotates) and summarized by medians:
no handler; LangChain's no-op handler (``run_inline``); an empty handler (every callback
implemented and empty: LangChain's dispatch alone); this handler on a SQLite file and on
PostgreSQL; and a naive handler that inserts one trace row synchronously per event.

1. an agent run (``create_agent``, a scripted fake model, 20 tool calls): ms per run, the
   ratio to no handler, and the time added per tool call;
2. direct ``tool.invoke()`` calls (10,000 per contender; the naive one does a tenth);
3. sustained ingest: trace rows per second through the background writer into each database;
4. memory: RSS after one million events pushed through the handler as fast as possible, in
   a fresh process: bounded by the queue, not by the number of events.

PostgreSQL: a throw-away database on ``LANGCHAIN_PERSIST_BENCH_PG`` (an admin URL, default
``postgresql://postgres@127.0.0.1:5432/postgres``), dropped at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import psycopg  # noqa: E402
from _versions import find, import_revision  # noqa: E402
from handler_support import ScriptedChatModel, echo  # noqa: E402
from langchain.agents import create_agent  # noqa: E402
from langchain_core.callbacks import BaseCallbackHandler  # noqa: E402

from langchain_persist import (  # noqa: E402
    BackgroundWriter,
    PersistCallbackHandler,
    ResultsPersistenceService,
)
from langchain_persist._db.engine import dispose_database  # noqa: E402
from langchain_persist._results.events import TraceEvent  # noqa: E402

PG_ADMIN = os.environ.get(
    "LANGCHAIN_PERSIST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TOOL_CALLS = 20


class NoopHandler(BaseCallbackHandler):
    """LangChain's no-op handler, run inline: the issue's reference.

    It does not implement ``on_chat_model_start``, so at every model call LangChain falls
    back to ``on_llm_start`` and renders the whole message history as text for it.
    """

    run_inline = True


class EmptyHandler(NoopHandler):
    """Every callback implemented and empty: what LangChain's dispatch alone costs, the floor
    of any handler that hears every event."""

    def on_chat_model_start(self, *args: Any, **kwargs: Any) -> None:
        """Nothing (and no fallback to ``on_llm_start``)."""


class NaiveHandler(BaseCallbackHandler):
    """One committed INSERT per tool event, on the caller's thread (what not to do)."""

    run_inline = True

    def __init__(self, service: ResultsPersistenceService) -> None:
        self.service = service
        self.started: dict[Any, float] = {}

    def on_tool_start(self, serialized: Any, input_str: str, *, run_id: Any, **kw: Any) -> None:
        self.started[run_id] = time.time()
        self.service.save_trace(agent_id="naive", execution_id=str(run_id), type="tool_start",
                                name=(serialized or {}).get("name"), content=input_str)

    def on_tool_end(self, output: Any, *, run_id: Any, **kw: Any) -> None:
        ms = (time.time() - self.started.pop(run_id)) * 1000
        self.service.save_trace(agent_id="naive", execution_id=str(run_id), type="tool_end",
                                content=getattr(output, "content", output), duration=ms)


# -- helpers ------------------------------------------------------------------------------------


@contextmanager
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database, dropped afterwards."""
    name = f"lpbench_handler_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"
    try:
        yield url
    finally:
        dispose_database(url)
        with psycopg.connect(PG_ADMIN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


Sample = tuple[float, float, float]  # wall, caller-thread CPU, process CPU (with the flush)


def measure(work: Callable[[], None], count: int, flush: Callable[[], Any] | None) -> Sample:
    """Per-unit wall time and CPU of ``work``; process CPU also counts the writer's flush."""
    gc.collect()
    wall, thread, process = time.perf_counter(), time.thread_time(), time.process_time()
    work()
    wall, thread = time.perf_counter() - wall, time.thread_time() - thread
    if flush is not None:
        flush()
    process = time.process_time() - process
    return wall / count, thread / count, process / count


def interleave(contenders: dict[str, Callable[[], Sample]], rounds: int
               ) -> dict[str, list[Sample]]:
    """Run every contender once per round, rotating the order."""
    names = list(contenders)
    samples: dict[str, list[Sample]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            samples[name].append(contenders[name]())
    return samples


def medians(samples: list[Sample]) -> Sample:
    return tuple(median([s[i] for s in samples]) for i in range(3))  # type: ignore[return-value]


def added(samples: list[Sample], base: list[Sample]) -> Sample:
    """The median, over rounds, of a contender's sample minus the no-handler sample of the same
    round: pairing within a round cancels the machine's slow drifts (a shared host)."""
    return tuple(  # type: ignore[return-value]
        median([s[i] - b[i] for s, b in zip(samples, base, strict=True)]) for i in range(3)
    )


def table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


# -- the measurements ---------------------------------------------------------------------------


def handlers(sqlite_url: str, pg_url: str, before: Any = None,
             before_urls: dict[str, str] | None = None) -> dict[str, Any]:
    """Every contender's callbacks list, by name (with ``before``, also that revision's
    handler, on databases of its own: ``before_urls``)."""
    sqlite_service = ResultsPersistenceService(sqlite_url)
    pg_service = ResultsPersistenceService(pg_url)
    contenders = {
        "no handler": [],
        "no-op handler": [NoopHandler()],
        "empty handler": [EmptyHandler()],
        "PersistCallbackHandler (SQLite)": [PersistCallbackHandler("a", service=sqlite_service)],
        "PersistCallbackHandler (PostgreSQL)": [PersistCallbackHandler("a", service=pg_service)],
        # the spool's cost: the same handlers without it
        "PersistCallbackHandler (SQLite, no spool)": [
            PersistCallbackHandler("a", service=sqlite_service, spool=False)],
        "PersistCallbackHandler (PostgreSQL, no spool)": [
            PersistCallbackHandler("a", service=pg_service, spool=False)],
    }
    if before is not None and before_urls:
        for label, url in zip(("SQLite", "PostgreSQL"), before_urls.values(), strict=True):
            service = before.ResultsPersistenceService(url)
            contenders[f"PersistCallbackHandler before ({label})"] = [
                before.PersistCallbackHandler("a", service=service)]
    return {**contenders,
            "naive sync insert (SQLite)": [NaiveHandler(sqlite_service)],
            "naive sync insert (PostgreSQL)": [NaiveHandler(pg_service)]}


def flusher(callbacks: list[Any]) -> Callable[[], Any] | None:
    handler = callbacks[0] if callbacks else None
    return getattr(handler, "flush", None) if hasattr(handler, "writer") else None


def bench_agent(contenders: dict[str, Any], rounds: int, runs: int) -> list[list[Any]]:
    agent = create_agent(ScriptedChatModel(plan=[["echo"]] * TOOL_CALLS), [echo])

    def timed(callbacks: list[Any]) -> Callable[[], Sample]:
        def work() -> None:
            for _ in range(runs):
                agent.invoke({"messages": [("user", "bench")]}, {"callbacks": callbacks})

        return lambda: measure(work, runs, flusher(callbacks))

    for callbacks in contenders.values():  # warm up every path once
        timed(callbacks)()
    samples = interleave({n: timed(c) for n, c in contenders.items()}, rounds)
    base, empty = samples["no handler"], samples["empty handler"]
    rows = []
    for name, s in samples.items():
        wall = medians(s)[0]
        more = added(s, base)
        rows.append([
            name, f"{wall * 1e3:.2f}", f"{wall / medians(base)[0]:.2f}",
            *(f"{x * 1e6 / TOOL_CALLS:+.0f}" for x in more),
            f"{added(s, empty)[0] * 1e6 / TOOL_CALLS:+.0f}",
        ])
    return rows


def bench_invoke(contenders: dict[str, Any], rounds: int, calls: int) -> list[list[Any]]:
    def timed(callbacks: list[Any], n: int) -> Callable[[], Sample]:
        config = {"callbacks": callbacks}

        def work() -> None:
            for _ in range(n):
                echo.invoke({"text": "x"}, config)

        return lambda: measure(work, n, flusher(callbacks))

    per_round = max(1, calls // rounds)
    sizes = {n: max(10, per_round // 10) if n.startswith("naive") else per_round
             for n in contenders}
    for callbacks in contenders.values():
        timed(callbacks, 10)()
    samples = interleave({n: timed(c, sizes[n]) for n, c in contenders.items()}, rounds)
    rows = []
    for name, s in samples.items():
        more = added(s, samples["no handler"])
        rows.append([
            name, sizes[name] * rounds, f"{medians(s)[0] * 1e6:.1f}",
            *(f"{x * 1e6:+.1f}" for x in more),
            f"{added(s, samples['empty handler'])[0] * 1e6:+.1f}",
        ])
    return rows


def ingest_parts(before: Any = None) -> dict[str, tuple[Any, Any, Any]]:
    """(service class, writer class, event class) by contender: this code, and ``before``'s."""
    parts = {"": (ResultsPersistenceService, BackgroundWriter, TraceEvent)}
    if before is not None:
        parts[" before"] = (
            before.ResultsPersistenceService,
            find(before, "_callbacks.writer:BackgroundWriter", "_writer:BackgroundWriter"),
            find(before, "_results.events:TraceEvent", "_writer:TraceEvent"),
        )
    return parts


def bench_ingest(urls: dict[str, str], rows: int, rounds: int, before: Any = None,
                 before_urls: dict[str, str] | None = None) -> list[list[Any]]:
    """Rows per second through each writer into each database, rounds interleaved (``before``
    writes to ``before_urls``: an older schema)."""
    contenders = {}
    for suffix, (service_cls, writer_cls, event_cls) in ingest_parts(before).items():
        for name, url in (before_urls or urls if suffix else urls).items():
            service = service_cls(url)
            service.find_results(limit=1)
            contenders[f"{name}{suffix}"] = (service, writer_cls, event_cls, {})
            if not suffix:  # the spool's cost: this writer without it
                contenders[f"{name} (no spool)"] = (service, writer_cls, event_cls,
                                                    {"spool": False})
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, (service, writer_cls, event_cls, options) in contenders.items():
            writer = writer_cls(service, max_queue=rows + 1, **options)
            run, execution = uuid.uuid4(), str(uuid.uuid4())
            context = {"thread_id": "t-1", "langgraph_node": "tools", "langgraph_step": 3}
            extra = {"tool_call_id": "call-1"}
            start = time.perf_counter()
            for i in range(rows):
                writer.put(event_cls("bench", execution, "tool_end", "echo", f"echo {i}", run,
                                     run, 0.1, time.time(), context, extra))
            assert writer.flush(600)
            rates[name].append(rows / (time.perf_counter() - start))
            assert writer.written["traces"] == rows, (writer.written, writer.dropped)
            writer.close()
    return [[name, rows, f"{median(r):,.0f}"] for name, r in rates.items()]


def memory_child(url: str, events: int) -> None:
    """In a fresh process: push ``events`` tool events through the handler, report RSS."""
    logging.disable(logging.WARNING)  # the full queue is reported once; keep the output clean

    def rss_mb() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    handler = PersistCallbackHandler("bench-memory", url=url)
    handler.service.find_results(limit=1)
    parent = uuid.uuid4()
    handler.on_chain_start({}, {}, run_id=parent, name="memory")
    before = rss_mb()
    serialized, meta = {"name": "echo"}, {"langgraph_node": "tools", "langgraph_step": 1}
    start = time.perf_counter()
    for i in range(events // 2):
        run = uuid.uuid4()
        handler.on_tool_start(serialized, "x", run_id=run, parent_run_id=parent, metadata=meta,
                              inputs={"text": i}, tool_call_id="c")
        handler.on_tool_end(f"echo {i}", run_id=run, parent_run_id=parent)
    pushed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    handler.on_chain_end({}, run_id=parent)
    handler.flush(600)
    after = rss_mb()
    print(json.dumps({
        "events": events, "before_mb": before, "peak_mb": peak, "after_mb": after,
        "written": handler.written["traces"], "dropped": handler.dropped["queue_full"],
        "accepted_per_s": events / pushed, "max_queue": handler.writer.max_queue,
    }))


def bench_memory(urls: dict[str, str], events: int) -> list[list[Any]]:
    out = []
    for name, url in urls.items():
        proc = subprocess.run(
            [sys.executable, __file__, "--memory-child", url, str(events)],
            capture_output=True, text=True, timeout=1800, check=True,
        )
        m = json.loads(proc.stdout.strip().splitlines()[-1])
        out.append([
            name, f"{m['events']:,}", f"{m['max_queue']:,}", f"{m['before_mb']:.0f}",
            f"{m['peak_mb']:.0f}", f"{m['after_mb']:.0f}", f"{m['written']:,}",
            f"{m['dropped']:,}", f"{m['accepted_per_s']:,.0f}",
        ])
    return out


SECTIONS = ("agent", "invoke", "ingest", "memory")  # the keys of --only, in the report's order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--json", type=Path, help="also write the tables as JSON here")
    parser.add_argument("--before", metavar="REV",
                        help="also run the handler as of this git revision (before/after)")
    parser.add_argument("--only", metavar="SECTIONS",
                        help="comma-separated sections to run: agent, invoke, ingest, memory")
    parser.add_argument("--memory-child", nargs=2, metavar=("URL", "EVENTS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], int(args.memory_child[1]))
        return
    sizes = dict(rounds=3, runs=1, calls=300, ingest=2_000, ingest_rounds=1, memory=20_000) \
        if args.smoke else dict(rounds=61, runs=1, calls=10_000, ingest=200_000,
                                ingest_rounds=3, memory=1_000_000)
    logging.getLogger("langchain_persist").setLevel(logging.ERROR)
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"lpbench-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    report: dict[str, Any] = {}
    print(f"## Callback handler benchmark{' (smoke)' if args.smoke else ''}\n")
    print(f"Python {platform.python_version()}, {os.cpu_count()} cores, "
          f"{platform.platform()}; sizes: {sizes}\n")
    with ExitStack() as stack:
        pg_url = stack.enter_context(pg_database())
        sqlite_url = f"sqlite:///{tmp / 'bench.db'}"
        urls = {"SQLite file": sqlite_url, "PostgreSQL": pg_url}
        before = import_revision(args.before) if args.before else None
        before_urls = {"SQLite file": f"sqlite:///{tmp / 'before.db'}",
                       "PostgreSQL": stack.enter_context(pg_database())} if before else None
        contenders = handlers(sqlite_url, pg_url, before, before_urls)
        for callbacks in contenders.values():
            for cb in callbacks:
                if hasattr(cb, "service"):
                    cb.service.find_results(limit=1)  # schema in place before timing

        sections = [
            ("Agent run", f"`create_agent`, scripted fake model, {TOOL_CALLS} tool calls. "
             "Added: the median over rounds of (contender - no handler) in the same round. "
             "Caller CPU: the calling thread only; process CPU: every thread, including the "
             "writer storing the run's events. Over the empty handler: the same median against "
             "a handler whose every callback is empty, what the handler costs beyond "
             "LangChain's own dispatch (LangChain's no-op handler also pays for rendering the "
             "message history as text at each model call)",
             ["handler", "ms / run", "x no handler", "µs added / tool call",
              "caller CPU µs added / tool call", "process CPU µs added / tool call",
              "µs over the empty handler / tool call"],
             lambda: bench_agent(contenders, sizes["rounds"], sizes["runs"])),
            ("Direct tool.invoke()", "µs per call: medians over interleaved rounds (added, and "
             "the CPU columns, as above)",
             ["handler", "calls", "µs / call", "µs added", "caller CPU µs added",
              "process CPU µs added", "µs over the empty handler"],
             lambda: bench_invoke(contenders, sizes["rounds"], sizes["calls"])),
            ("Sustained ingest", "trace rows per second through the background writer",
             ["database", "rows", "rows / s"],
             lambda: bench_ingest(urls, sizes["ingest"], sizes["ingest_rounds"], before,
                                 before_urls)),
            ("Memory", "tool events pushed through the handler as fast as possible, fresh "
             "process; RSS in MiB",
             ["database", "events", "max_queue", "RSS before", "RSS peak", "RSS after flush",
              "rows written", "dropped (queue full)", "events accepted / s"],
             lambda: bench_memory(urls, sizes["memory"])),
        ]
        only = set(args.only.split(",")) if args.only else None
        for (title, note, headers, fn), key in zip(sections, SECTIONS, strict=True):
            if only is not None and key not in only:
                continue
            rows = fn()
            report[title] = {"headers": headers, "rows": rows}
            print(f"### {title}\n\n{note}\n\n{table(headers, rows)}\n", flush=True)
        for callbacks in contenders.values():
            for cb in callbacks:
                if hasattr(cb, "writer"):
                    cb.close()
                if hasattr(cb, "service"):
                    cb.service.close()
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
