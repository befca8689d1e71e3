"""Benchmark: how long the server's read routes take while it runs 50 agents at once.

Each of ``--runs`` concurrent executions makes ``--calls`` calls of a sync tool that blocks for
``--tool-ms`` (the kind of work that fills the event loop's default thread pool), while a
reader asks ``GET /api/agents/{agent}/results`` and ``GET /api/health`` every 50 ms.  Reported:
read latency p50 / p95 / max, for this code and, with ``--before REV``, for another revision,
interleaved (each repeated ``--reps`` times, on its own fresh database).

    python benchmarks/bench_server_reads.py [--db sqlite|postgres] [--before REV] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import httpx  # noqa: E402
from _common import DEFAULT_PG_ADMIN_URL, PgDatabases, md_table  # noqa: E402
from _versions import import_revision  # noqa: E402
from handler_support import ScriptedChatModel  # noqa: E402
from langchain.agents import create_agent  # noqa: E402
from langchain_core.tools import tool  # noqa: E402
from server_support import running_server  # noqa: E402

import langchain_persist.server as current  # noqa: E402


def graph(calls: int, tool_ms: float) -> Any:
    @tool
    def slow(text: str) -> str:
        """Block the thread a while, as a sync tool calling an API does."""
        time.sleep(tool_ms / 1000)
        return f"slow {text}"

    return create_agent(ScriptedChatModel(plan=[["slow"]] * calls), [slow])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(server_module: Any, url: str, args: argparse.Namespace) -> dict[str, list[float]]:
    app = server_module.create_app(graph(args.calls, args.tool_ms), url=url, retry_delay=0)
    times: dict[str, list[float]] = {"results": [], "health": []}
    with running_server(app) as base:
        done = threading.Event()

        async def execute_all() -> None:
            async with httpx.AsyncClient(base_url=base, timeout=600) as client:
                async def one(n: int) -> None:
                    async with client.stream("POST", "/api/agents/execute", json={
                            "agentId": "bench", "task": f"run {n}"}) as response:
                        async for _ in response.aiter_bytes():
                            pass

                await asyncio.gather(*(one(n) for n in range(args.runs)))

        runner = threading.Thread(target=lambda: (asyncio.run(execute_all()), done.set()))
        runner.start()
        with httpx.Client(base_url=base, timeout=120) as reader:
            time.sleep(0.2)  # the runs get going
            while not done.is_set() or not times["results"]:
                for name, path in (("results", "/api/agents/bench/results?limit=20"),
                                   ("health", "/api/health")):
                    start = time.perf_counter()
                    reader.get(path).raise_for_status()
                    times[name].append((time.perf_counter() - start) * 1000)
                time.sleep(0.05)
        runner.join()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--pg", default=DEFAULT_PG_ADMIN_URL)
    parser.add_argument("--before", metavar="REV", help="also this revision, interleaved")
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--tool-ms", type=float, default=50.0)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="5 runs of 2 calls, once")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.calls, args.reps = 5, 2, 1
    versions = {"this code": current}
    if args.before:
        before = import_revision(args.before)
        versions[f"before ({args.before})"] = importlib.import_module(f"{before.__name__}.server")
    samples: dict[str, dict[str, list[float]]] = {v: {"results": [], "health": []}
                                                   for v in versions}
    pg = PgDatabases(args.pg, "lpreads")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for rep in range(args.reps):
                order = list(versions) if rep % 2 == 0 else list(reversed(versions))
                for name in order:
                    url = (f"sqlite:///{tmp}/{rep}-{len(name)}.db" if args.db == "sqlite"
                           else pg.create(f"r{rep}"))
                    for kind, values in measure(versions[name], url, args).items():
                        samples[name][kind] += values
        finally:
            pg.drop_all()
    rows = []
    for name, kinds in samples.items():
        for kind, values in kinds.items():
            rows.append([name, f"GET {'/api/health' if kind == 'health' else 'results'}",
                         len(values), f"{statistics.median(values):.1f}",
                         f"{percentile(values, 0.95):.1f}", f"{max(values):.1f}"])
    print(f"### Reads under load: {args.runs} concurrent runs x {args.calls} sync tool calls "
          f"of {args.tool_ms:g} ms, {args.db}\n")
    print(md_table(["code", "route", "reads", "p50 ms", "p95 ms", "max ms"], rows))


if __name__ == "__main__":
    main()
