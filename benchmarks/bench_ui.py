"""How fast the viewer's pages are on a database of more than 1,000,000 traces.

Builds (once) a database of ``--runs`` runs of 10 model and 10 tool calls each (30 traces a
run: 1,500,000 traces by default) plus one run of 200 calls, then serves it with the read-only
viewer and measures, for the runs page (unfiltered, and filtered by agent) and for the 200-call
run's page:

- server time: the page's own ``Server-Timing`` (reads, shaping, rendering), and the whole
  HTTP request as a client on the same machine sees it;
- browser time: headless Chromium's navigation timing, from the request to the first
  contentful paint (the page shows) and to the end of ``load``.

Pages are interleaved and repeated; medians are reported.  Run::

    .venv/bin/python benchmarks/bench_ui.py                                   # SQLite file
    .venv/bin/python benchmarks/bench_ui.py --url postgresql://postgres@127.0.0.1:5432/lp_bench_ui
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import socket
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from langchain_persist import ResultsPersistenceService
from langchain_persist._db.schema import agent_results, agent_traces
from langchain_persist.server import create_ui_app

CALLS_PER_RUN = 10  # model calls, and as many tool calls: 30 traces
BIG_CALLS = 200
BIG_ID = "bench-200-calls"


def build(service: ResultsPersistenceService, runs: int) -> None:
    """Fill the database: ``runs`` runs of 30 traces, and one run of 200 calls."""
    with service.db.read() as conn:
        have = conn.execute(select(func.count()).select_from(agent_results)).scalar_one()
    if have >= runs:
        return
    rng = random.Random(7)
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    step = dt.timedelta(days=30) / runs
    batch_results, batch_traces = [], []
    began = time.perf_counter()
    for i in range(runs):
        at = start + step * i
        execution = f"bench-{i:07d}"
        failed = rng.random() < 0.1
        batch_results.append({
            "id": str(uuid.uuid4()), "agent_id": f"agent-{i % 20}", "execution_id": execution,
            "thread_id": f"thread-{i // 3}", "checkpoint_id": None, "quest_id": None,
            "result": None if failed else f"answer {i}", "status": "failed" if failed else
            "completed", "error": "TimeoutError: tool timed out" if failed else None,
            "metadata": {"usage": {"input_tokens": 500, "output_tokens": 80,
                                   "total_tokens": 580}, "duration_ms": 900.0},
            "created_at": at, "updated_at": at, "completed_at": at + dt.timedelta(seconds=1),
        })
        batch_traces.extend(_traces(service, execution, f"agent-{i % 20}", at,
                                    CALLS_PER_RUN))
        if len(batch_traces) >= 20_000:
            _flush(service, batch_results, batch_traces)
            print(f"  {i + 1:,} runs, {time.perf_counter() - began:.0f} s", flush=True)
    at = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    batch_results.append({
        "id": str(uuid.uuid4()), "agent_id": "agent-big", "execution_id": BIG_ID,
        "thread_id": "thread-big", "checkpoint_id": None, "quest_id": None,
        "result": "done", "status": "completed", "error": None,
        "metadata": {"usage": {"input_tokens": 50_000, "output_tokens": 9_000,
                               "total_tokens": 59_000}},
        "created_at": at, "updated_at": at, "completed_at": at + dt.timedelta(seconds=60),
    })
    batch_traces.extend(_traces(service, BIG_ID, "agent-big", at, BIG_CALLS // 2))
    _flush(service, batch_results, batch_traces)


def _traces(service, execution, agent, at, calls):
    """``calls`` model calls (llm_end) and as many tool calls (tool_start, tool_end), by step."""
    rows = []
    t = at
    for n in range(calls):
        t += dt.timedelta(milliseconds=120)
        rows.append(service.trace_row(
            agent_id=agent, execution_id=execution, type="llm_end", name="ChatModel",
            content=f"calling lookup #{n}", run_id=f"{execution}-m{n}", duration=110.0,
            metadata={"node": "model", "step": 2 * n + 1,
                      "usage": {"input_tokens": 500, "output_tokens": 90}}, timestamp=t))
        rows.append(service.trace_row(
            agent_id=agent, execution_id=execution, type="tool_start", name="lookup",
            content={"query": f"q{n}", "page": n}, run_id=f"{execution}-t{n}",
            metadata={"node": "tools", "step": 2 * n + 2}, timestamp=t))
        t += dt.timedelta(milliseconds=40)
        rows.append(service.trace_row(
            agent_id=agent, execution_id=execution, type="tool_end", name="lookup",
            content="x" * 600, run_id=f"{execution}-t{n}", duration=40.0,
            metadata={"node": "tools", "step": 2 * n + 2}, timestamp=t))
    return rows


def _flush(service, results, traces):
    if results:
        with service.db.write() as conn:
            conn.execute(insert(agent_results), results)
    if traces:
        service.insert_events("traces", traces)
    results.clear()
    traces.clear()


def serve(app):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return f"http://127.0.0.1:{sock.getsockname()[1]}", server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=f"sqlite:///{tempfile.gettempdir()}/lp_bench_ui.db")
    parser.add_argument("--runs", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--smoke", action="store_true",
                        help="a tiny run (300 runs, 2 repeats, a new SQLite file) for the tests")
    parser.add_argument("--json", help="also write the medians to this file")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.repeat = 300, 2
        args.url = f"sqlite:///{tempfile.mkdtemp(prefix='lp-bench-ui-')}/smoke.db"

    service = ResultsPersistenceService(args.url)
    print(f"database {service!r}: building (once) ...", flush=True)
    build(service, args.runs)
    with service.db.read() as conn:
        traces = conn.execute(select(func.count()).select_from(agent_traces)).scalar_one()
        runs = conn.execute(select(func.count()).select_from(agent_results)).scalar_one()
    print(f"{runs:,} runs, {traces:,} traces")

    from browser_support import chromium

    base, server = serve(create_ui_app(service=service))
    pages = {"runs page": "/", "runs page, one agent": "/?agent=agent-7",
             f"run page, {BIG_CALLS} calls": f"/runs/{BIG_ID}"}
    timing: dict[str, dict[str, list[float]]] = {p: {} for p in pages}
    with httpx.Client(base_url=base, timeout=60) as client, chromium() as driver:
        for path in pages.values():  # warm up
            client.get(path)
            driver.get(base + path)
        for _ in range(args.repeat):
            for name, path in pages.items():  # interleaved
                t0 = time.perf_counter()
                response = client.get(path)
                total = (time.perf_counter() - t0) * 1000
                assert response.status_code == 200, response.text[:300]
                app = float(response.headers["server-timing"].split("dur=")[1])
                driver.get(base + path)
                nav = driver.execute_script(
                    "const n = performance.getEntriesByType('navigation')[0];"
                    "const p = performance.getEntriesByName('first-contentful-paint')[0];"
                    "return [n.responseEnd, p ? p.startTime : null, n.loadEventEnd];")
                for key, value in (("server (Server-Timing)", app), ("HTTP request", total),
                                   ("browser: last byte", nav[0]),
                                   ("browser: first paint", nav[1]),
                                   ("browser: load end", nav[2])):
                    if value is not None:
                        timing[name].setdefault(key, []).append(value)
    server.should_exit = True
    service.close()
    columns = ["server (Server-Timing)", "HTTP request", "browser: last byte",
               "browser: first paint", "browser: load end"]
    print(f"\nmedians of {args.repeat}, ms ({runs:,} runs, {traces:,} traces, "
          f"{service.db.dialect})")
    print(f"| page | {' | '.join(columns)} |")
    print(f"|---|{'---|' * len(columns)}")
    medians = {name: {c: statistics.median(values[c]) for c in columns if c in values}
               for name, values in timing.items()}
    for name, values in medians.items():
        cells = " | ".join(f"{values[c]:.0f}" if c in values else "—" for c in columns)
        print(f"| {name} | {cells} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "traces": traces,
                                               "medians_ms": medians}, indent=2))


if __name__ == "__main__":
    main()
