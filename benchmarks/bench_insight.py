"""Benchmark: search, stats and retention on a million stored traces (issue 16's acceptance).

    python benchmarks/bench_insight.py                      # both databases, full size
    python benchmarks/bench_insight.py --only sqlite        # or postgresql
    python benchmarks/bench_insight.py --smoke              # tiny sizes, a few seconds
    python benchmarks/bench_insight.py --cleanup thread     # retention in the handler's process
    python benchmarks/bench_insight.py --retention-only --retention-reps 3   # retention, 3 runs

For each database (a SQLite file in a temporary directory, a throw-away PostgreSQL database on
``LANGCHAIN_PERSIST_BENCH_PG``):

0. **ingest**: rows per second through the writer into a database with the search index and
   into one without it, interleaved (100,000 rows, 3 rounds);
1. **generate**: 1,000,000 traces and 200,000 logs of 20,000 agent runs (10 agents, 30 days,
   12 tools; model calls with token usage, tool inputs and outputs, errors with class names,
   punctuation and non-ASCII words) through the handler's `BackgroundWriter`, in time order
   as a live system writes them, and the runs' 20,000 result rows (inserted in bulk, with
   their times spread over the 30 days);
2. **search**: a mix of queries (error class names, a common word, a phrase, a prefix, a
   non-ASCII word, a tool name, a rare booking reference, nothing), each with and without an
   agent filter, interleaved round after round: median per query, p95 over every call;
3. **stats**: one agent over the last 7 days, ungrouped and by tool, model, day and status;
4. **retention**: a policy that makes every generated trace and log old (1,200,000 rows),
   applied by ``langchain-persist retention run`` in another process (``--cleanup process``,
   a cron job) or by `apply_retention` in this one (``--cleanup thread``, as the server's
   schedule does), while a `PersistCallbackHandler` runs agents in a loop: every write the
   handler makes (the writer's batches, the result rows) is timed, before, during and for
   ``--after`` seconds after it (what the deletes leave the server to do, such as a
   checkpoint, comes later).  Each of ``--retention-reps`` runs gets a fresh copy of the
   generated database, on a settled server (see `_copy_database`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PgDatabases, fmt_num, fmt_ratio, machine_info, md_table, write_json  # noqa: E402
from handler_support import ScriptedChatModel, echo  # noqa: E402
from langchain.agents import create_agent  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from langchain_persist import PersistCallbackHandler, ResultsPersistenceService  # noqa: E402
from langchain_persist._callbacks.writer import BackgroundWriter  # noqa: E402
from langchain_persist._db.engine import dispose_database  # noqa: E402
from langchain_persist._db.schema import SEARCHED, agent_results  # noqa: E402
from langchain_persist._results.events import LogEvent, TraceEvent  # noqa: E402

PG_ADMIN = os.environ.get(
    "LANGCHAIN_PERSIST_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)
AGENTS = [f"agent-{i:02d}" for i in range(10)]
TOOLS = ["search_flights", "get_weather", "book_hotel", "send_email", "query_db", "fetch_url",
         "read_file", "translate", "summarize", "calendar_lookup", "currency_convert",
         "create_ticket"]
CITIES = ["Lisbon", "Zürich", "São Paulo", "Kraków", "Москва", "東京", "Paris", "Reykjavík",
          "New York", "Cape Town", "Montréal", "Łódź"]
MODELS = ["gpt-4.1-mini", "gpt-4.1", "claude-sonnet-4", "llama-3.1-70b"]
ERRORS = [
    "requests.exceptions.ConnectTimeout: HTTPSConnectionPool(host='api.example.com', "
    "port=443): Max retries exceeded (connect timeout=10)",
    "openai.RateLimitError: Error code: 429 - {'error': {'message': 'Rate limit exceeded for "
    "gpt-4.1 in organization org-x on tokens per min (TPM)', 'type': 'tokens'}}",
    "FlightApiTimeout: flight search API timed out after 120 ms",
    "KeyError: 'city'",
    "psycopg.OperationalError: connection to server at \"10.0.0.7\", port 5432 failed: "
    "Connection refused",
    "ValueError: invalid literal for int() with base 10: 'twelve'",
    "PermissionError: [Errno 13] Permission denied: '/var/data/report.csv'",
]
DAYS = 30
TRACES_PER_RUN = 50  # 10 model calls, 20 tool calls (start and end)
LOGS_PER_RUN = 10
SLOW_MS = 50  # a handler's write this long is listed, with what it did meanwhile


# --------------------------------------------------------------------------- the data


def _ref(rng: random.Random) -> str:
    return "LP-" + "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ23456789") for _ in range(4))


def _output(rng: random.Random, tool: str, city: str) -> str:
    words = ["the", "flight", "hotel", "is", "available", "on", "Monday", "price", "€129",
             "(non-refundable)", "gate", "B12", "window-seat", "confirmed", "rain", "sunny",
             "24°C", "e-mail", "sent", "to", "ops@example.com", "report", "ready", "rows=42"]
    body = " ".join(rng.choice(words) for _ in range(rng.randrange(15, 90)))
    return f"{tool} → {city}: {body}; ref {_ref(rng)}"


def _events(rng: random.Random, run: int, agent: str, start: float) -> tuple[list[Any], Any]:
    """The trace and log events of one run, and its result row's fields."""
    execution = str(uuid.UUID(int=rng.getrandbits(128)))
    at = start
    traces: list[Any] = []
    logs: list[Any] = [LogEvent(agent, execution, "info", f"execution started: {agent}",
                                "agent-callback", at, {"run": run})]
    usage = {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}
    errors = 0
    last_error = None
    for step in range(10):
        model = rng.choice(MODELS)
        took = rng.uniform(200, 4000)
        at += took / 1000
        used = {"input_tokens": rng.randrange(300, 6000), "output_tokens": rng.randrange(20, 800)}
        used["total_tokens"] = used["input_tokens"] + used["output_tokens"]
        for k in usage:
            usage[k] += used[k]
        traces.append(TraceEvent(agent, execution, "llm_end", "ChatOpenAI",
                                 f"step {step}: calling tools", None, None, took, at,
                                 {"langgraph_node": "model", "langgraph_step": 2 * step + 1,
                                  "ls_model_name": model}, {"usage": used}))
        for _ in range(2):
            tool = rng.choice(TOOLS)
            city = rng.choice(CITIES)
            call = str(uuid.UUID(int=rng.getrandbits(128)))
            meta = {"langgraph_node": "tools", "langgraph_step": 2 * step + 2}
            traces.append(TraceEvent(agent, execution, "tool_start", tool,
                                     {"city": city, "date": "2026-12-0" + str(rng.randrange(1, 9))},
                                     call, None, None, at, meta))
            took = rng.lognormvariate(4.5, 1.0)
            at += took / 1000
            if rng.random() < 0.1:
                errors += 1
                last_error = rng.choice(ERRORS)
                traces.append(TraceEvent(agent, execution, "tool_error", tool, last_error, call,
                                         None, took, at, meta))
                if rng.random() < 0.5:
                    logs.append(LogEvent(agent, execution, "warn",
                                         f"retrying {tool} after attempt 1: {last_error[:60]}",
                                         "agent-callback", at, {"tool": tool}))
            else:
                traces.append(TraceEvent(agent, execution, "tool_end", tool,
                                         _output(rng, tool, city), call, None, took, at, meta))
    while len(logs) < LOGS_PER_RUN - 1:
        logs.append(LogEvent(agent, execution, "info", f"custom event: progress "
                             f"{len(logs)}/{LOGS_PER_RUN} in {rng.choice(CITIES)}",
                             "agent-callback", at, {"event": "progress"}))
    roll = rng.random()
    status = ("failed" if roll < 0.12 and last_error else "interrupted" if roll < 0.17
              else "running" if roll < 0.19 else "completed")
    logs.append(LogEvent(agent, execution, "error" if status == "failed" else "info",
                         f"execution failed: {last_error}" if status == "failed"
                         else f"execution {status}: {agent}", "agent-callback", at))
    created = dt.datetime.fromtimestamp(start, dt.UTC)
    ended = dt.datetime.fromtimestamp(at, dt.UTC)
    row = {
        "id": str(uuid.UUID(int=rng.getrandbits(128))), "agent_id": agent,
        "execution_id": execution, "thread_id": f"thread-{run}", "checkpoint_id": None,
        "quest_id": None, "result": None if status == "failed" else f"done: {_ref(rng)}",
        "metadata": {"usage": usage, "duration_ms": (at - start) * 1000, "tool_calls": 20,
                     "llm_calls": 10, **({"interrupted": True} if status == "interrupted"
                                          else {})},
        "status": status, "error": last_error if status == "failed" else None,
        "created_at": created, "updated_at": ended,
        "completed_at": None if status == "running" else ended,
    }
    return traces + logs, row


def generate(url: str, runs: int, *, seed: int = 16) -> dict[str, Any]:
    """Store ``runs`` runs' traces and logs through the writer, and their results in bulk."""
    rng = random.Random(seed)
    service = ResultsPersistenceService(url)
    writer = BackgroundWriter(service, max_queue=400_000, batch_size=2000,
                              install_signal_handler=False)
    now = time.time()
    rows = []
    # runs start at random moments of the last 30 days and are written in that order, as a
    # live system writes them (rows about in time order)
    starts = sorted(now - rng.uniform(0, DAYS * 86400) - 3600 for _ in range(runs))
    started = time.perf_counter()
    for run, start in enumerate(starts):
        agent = AGENTS[run % len(AGENTS)]
        events, row = _events(rng, run, agent, start)
        for event in events:
            writer.put(event)
        rows.append(row)
        while writer.queued > 200_000 or writer.backlog > 64 << 20:  # as a live system: no
            time.sleep(0.05)  # faster than the database stores, for long
    writer.flush()
    took = time.perf_counter() - started
    writer.close()
    with service.db.write() as conn:
        for i in range(0, len(rows), 5000):
            conn.execute(insert(agent_results), rows[i:i + 5000])
    stored = dict(writer.written)
    assert not writer.dropped, writer.dropped
    service.close()
    return {"runs": runs, "traces": stored.get("traces", 0), "logs": stored.get("logs", 0),
            "seconds": took, "rows_per_s": (stored.get("traces", 0) + stored.get("logs", 0))
            / took}


def _ingest_once(url: str, events: list[Any]) -> float:
    """Rows per second of ``events`` through a new writer into ``url``."""
    service = ResultsPersistenceService(url)
    writer = BackgroundWriter(service, max_queue=len(events) + 10, batch_size=2000,
                              install_signal_handler=False)
    started = time.perf_counter()
    for event in events:
        writer.put(event)
    writer.flush()
    took = time.perf_counter() - started
    writer.close()
    service.close()
    return len(events) / took


def bench_ingest(db: str, pg: PgDatabases, tmp: str, rows: int, reps: int) -> dict[str, Any]:
    """What the search index costs the writer: rows/s into a database with it and into one
    without (PostgreSQL: its search triggers dropped; SQLite: its FTS5 tables made plain
    tables), interleaved."""
    from sqlalchemy import text

    rng = random.Random(7)
    events: list[Any] = []
    run = 0
    while len(events) < rows:
        events += _events(rng, run, AGENTS[run % len(AGENTS)], time.time() - 3600)[0]
        run += 1
    urls = {}
    for label in ("with", "without"):
        url = (f"sqlite:///{tmp}/ingest-{label}.db" if db == "sqlite"
               else pg.create(f"ingest_{label}"))
        service = ResultsPersistenceService(url)
        if label == "without":
            with service.db.write() as conn:
                for table, columns in SEARCHED.items():
                    if db == "sqlite":  # a plain table takes what the FTS5 index would
                        for trigger in ("delete", "update"):
                            conn.execute(text(f"DROP TRIGGER {table}_search_{trigger}"))
                        conn.execute(text(f"DROP TABLE {table}_search"))
                        conn.execute(text(f"CREATE TABLE {table}_search ({', '.join(columns)})"))
                    else:
                        conn.execute(text(f"DROP TRIGGER {table}_search ON {table}"))
        service.close()
        urls[label] = url
    samples: dict[str, list[float]] = {"with": [], "without": []}
    for rep in range(reps):
        for label in (("with", "without") if rep % 2 == 0 else ("without", "with")):
            samples[label].append(_ingest_once(urls[label], events[:rows]))
    for url in urls.values():
        dispose_database(url)
    med = {k: statistics.median(v) for k, v in samples.items()}
    return {"rows": rows, "with_rows_per_s": med["with"], "without_rows_per_s": med["without"],
            "ratio": med["with"] / med["without"]}


# --------------------------------------------------------------------------- search, stats

QUERIES = [
    ("class name", "RateLimitError"),
    ("qualified class", "requests.exceptions.ConnectTimeout"),
    ("common word", "timeout"),
    ("phrase", '"rate limit exceeded"'),
    ("punctuation", "report.csv"),
    ("prefix", "Connect*"),
    ("non-ASCII", "Zürich"),
    ("non-ASCII (Cyrillic)", "Москва"),
    ("tool name", "search_flights"),
    ("rare reference", None),  # a booking reference that occurs once
    ("no match", "xylophone"),
]


CPU: list[float] = []  # the calling thread's CPU time of each `_timed` call, in ms


def _timed(fn: Any) -> float:
    """Wall-clock ms of ``fn()``; its thread's CPU ms go to `CPU` (for SQLite, which runs in
    this thread, the work itself, whatever else the machine is doing)."""
    cpu = time.thread_time()
    started = time.perf_counter()
    fn()
    took = (time.perf_counter() - started) * 1000
    CPU.append((time.thread_time() - cpu) * 1000)
    return took


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def bench_search(url: str, reps: int) -> dict[str, Any]:
    service = ResultsPersistenceService(url)
    rare = service.search("LP*", limit=1)
    reference = rare[0].text.rsplit("ref ", 1)[-1] if rare else "LP-XXXX"
    queries = [(label, q or reference) for label, q in QUERIES]
    cases = [(label, q, agent) for label, q in queries for agent in (None, AGENTS[3])]
    cases.append(("agent, last 7 days", "timeout", "7d"))
    samples: dict[tuple[str, str | None], list[float]] = {}
    cpu: list[float] = []
    found: dict[tuple[str, str | None], int] = {}
    for rep in range(reps + 1):
        order = cases[rep % len(cases):] + cases[:rep % len(cases)]
        for label, q, agent in order:
            kwargs: dict[str, Any] = {"limit": 50}
            if agent == "7d":
                kwargs.update(agent_id=AGENTS[3], since=dt.timedelta(days=7))
            elif agent:
                kwargs["agent_id"] = agent
            page: list[Any] = []
            took = _timed(lambda kwargs=kwargs, q=q, page=page: page.extend(
                service.search(q, **kwargs)))
            key = (label, agent)
            if rep:  # the first round warms the caches
                samples.setdefault(key, []).append(took)
                cpu.append(CPU[-1])
            found[key] = len(page)
    service.close()
    every = [t for values in samples.values() for t in values]
    return {
        "queries": {f"{label} | {agent or 'all agents'}": {
            "query": q, "median_ms": statistics.median(samples[(label, agent)]),
            "p95_ms": _p95(samples[(label, agent)]), "hits": found[(label, agent)]}
            for label, q, agent in cases},
        "p95_ms": _p95(every), "median_ms": statistics.median(every), "calls": len(every),
        "cpu_p95_ms": _p95(cpu), "cpu_median_ms": statistics.median(cpu),
        "load": os.getloadavg(),
    }


def bench_stats(url: str, reps: int) -> dict[str, Any]:
    service = ResultsPersistenceService(url)
    out = {}
    for by in (None, "tool", "model", "day", "status"):
        times, cpu = [], []
        for rep in range(reps + 1):
            stats: list[Any] = []
            took = _timed(lambda by=by, stats=stats: stats.append(service.stats(
                agent_id=AGENTS[3], since=dt.timedelta(days=7), by=by)))
            if rep:
                times.append(took)
                cpu.append(CPU[-1])
        totals = stats[0].totals
        out[by or "none"] = {"median_ms": statistics.median(times), "p95_ms": _p95(times),
                             "cpu_median_ms": statistics.median(cpu),
                             "runs": totals.runs, "tool_calls": totals.tool_calls}
    everyone = []
    for rep in range(reps + 1):
        took = _timed(lambda: service.stats(since=dt.timedelta(days=7), by="agent"))
        if rep:
            everyone.append(took)
    out["every agent, by agent"] = {"median_ms": statistics.median(everyone),
                                    "p95_ms": _p95(everyone)}
    service.close()
    return out


# --------------------------------------------------------------------------- retention


class TimedService(ResultsPersistenceService):
    """The service the handler writes through, timing each of its writes."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.timings: list[tuple[float, str, float, float]] = []  # (started, what, ms, CPU ms)
        self._lock = threading.Lock()

    def _time(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        started, cpu = time.monotonic(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            took = (time.monotonic() - started) * 1000
            with self._lock:
                self.timings.append((started, what, took, (time.thread_time() - cpu) * 1000))

    def insert_events(self, kind: str, rows: list[Any]) -> int:
        return self._time(f"insert {kind}", super().insert_events, kind, rows)

    def save_result(self, **fields: Any) -> Any:
        return self._time("save_result", super().save_result, **fields)

    def update_result(self, result_id: str, **fields: Any) -> Any:
        return self._time("update_result", super().update_result, result_id, **fields)

    def resolve_interrupted(self, thread_id: str, **fields: Any) -> Any:
        return self._time("resolve_interrupted", super().resolve_interrupted, thread_id,
                          **fields)


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"writes": 0}
    return {"writes": len(values), "median_ms": statistics.median(values),
            "p99_ms": sorted(values)[int(0.99 * (len(values) - 1))], "max_ms": max(values),
            "over_100ms": sum(v > 100 for v in values)}


class CollectorPauses:
    """The garbage collector's pauses in this process (they stop every thread), from
    ``gc.callbacks``: a write that spans one waited for the collector, not the database."""

    def __init__(self) -> None:
        self.pauses: list[tuple[float, float]] = []  # (start, end), time.monotonic()
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.monotonic()
        else:
            self.pauses.append((self._started, time.monotonic()))

    def within(self, start: float, ms: float) -> float:
        """Milliseconds of collector pauses between ``start`` and ``ms`` after it."""
        end = start + ms / 1000
        return 1000 * sum(max(0.0, min(b, end) - max(a, start)) for a, b in self.pauses)


def bench_retention(url: str, mode: str, baseline_s: float, after_s: float) -> dict[str, Any]:
    """Retention while the handler writes.  What this process set up before (the generated
    data, the libraries) is frozen out of the garbage collector's sight (``gc.freeze()``, as
    servers do after start-up): its full collections, which stop every thread, took up to
    100 ms over it, and would be counted as the handler's writes waiting on the database.
    Those that remain are measured (``collector_ms``)."""
    collector = CollectorPauses()
    gc.collect()
    gc.freeze()
    gc.callbacks.append(collector)
    try:
        return _retention_while_writing(url, mode, baseline_s, after_s, collector)
    finally:
        gc.callbacks.remove(collector)
        gc.unfreeze()


def _retention_while_writing(url: str, mode: str, baseline_s: float, after_s: float,
                             collector: CollectorPauses) -> dict[str, Any]:
    service = TimedService(url)
    handler = PersistCallbackHandler("live-agent", service=service, flush_interval=0.05)
    agent = create_agent(ScriptedChatModel(plan=[["echo"]] * 5), [echo])
    stop = threading.Event()
    runs = [0]

    def loop() -> None:
        while not stop.is_set():
            agent.invoke({"messages": [("user", f"run {runs[0]}")]},
                         {"callbacks": [handler],
                          "configurable": {"thread_id": f"live-{runs[0]}"}})
            runs[0] += 1

    worker = threading.Thread(target=loop, daemon=True)
    worker.start()
    time.sleep(baseline_s)
    admin = ResultsPersistenceService(url)
    admin.set_retention_policy(logs=dt.timedelta(minutes=30), traces=dt.timedelta(minutes=30))
    planned = admin.apply_retention(dry_run=True).totals
    began = time.monotonic()
    if mode == "process":
        out = subprocess.run(
            [sys.executable, "-m", "langchain_persist._cli.commands", "retention", "run",
             "--yes", "--json", "--url", url], capture_output=True, text=True)
        if out.returncode:
            raise RuntimeError(f"retention run failed: {out.stderr}")
        deleted = json.loads(out.stdout)["totals"]
    else:
        deleted = admin.apply_retention().totals.to_dict()
    ended = time.monotonic()
    time.sleep(after_s)  # what the cleanup left the server to do (a checkpoint) comes later
    stop.set()
    worker.join(60)
    handler.close()
    admin.close()
    before = [ms for at, _, ms, _ in service.timings if at < began]
    during = [ms for at, _, ms, _ in service.timings if began <= at <= ended]
    after = [ms for at, _, ms, _ in service.timings if at > ended]
    worst = max((t for t in service.timings if began <= t[0]), key=lambda t: t[2],
                default=None)
    slow = [{"what": what, "ms": ms, "at_s": at - began, "cpu_ms": cpu,
             "collector_ms": collector.within(at, ms)}
            for at, what, ms, cpu in service.timings if ms > SLOW_MS]
    service.close()
    return {
        "mode": mode, "planned": planned.logs + planned.traces,
        "deleted": deleted["logs"] + deleted["traces"], "seconds": ended - began,
        "rows_per_s": (deleted["logs"] + deleted["traces"]) / (ended - began),
        "agent_runs": runs[0], "before": _summary(before), "during": _summary(during),
        "after": _summary(after), "after_s": after_s,
        "worst": None if worst is None else {"what": worst[1], "ms": worst[2]},
        "slow": slow,
    }


# --------------------------------------------------------------------------- report


def report(results: dict[str, Any]) -> str:
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    dbs = [db for db in names if db in results]
    out = ["### Generate", md_table(
        ["database", "runs", "traces", "logs", "through the writer", "rows/s"],
        [[names[db], f"{g['runs']:,}", f"{g['traces']:,}", f"{g['logs']:,}",
          f"{g['seconds']:.0f} s", fmt_num(g["rows_per_s"])]
         for db in dbs for g in [results[db]["generate"]]])]
    if all("ingest" in results[db] for db in dbs):
        out += ["", "### What the search index costs the writer", "", md_table(
            ["database", "rows", "rows/s with the index", "rows/s without", "ratio"],
            [[names[db], f"{i['rows']:,}", fmt_num(i["with_rows_per_s"]),
              fmt_num(i["without_rows_per_s"]), fmt_ratio(i["ratio"])]
             for db in dbs for i in [results[db]["ingest"]]])]
    if all("search" in results[db] for db in dbs):
        out += ["", "### Search", "",
                "Median ms per query (50 hits a page, newest first), p95 over every call.", ""]
        keys = list(results[dbs[0]]["search"]["queries"])
        rows = [[k.replace(" | ", " · "), f"`{results[dbs[0]]['search']['queries'][k]['query']}`",
                 *(f"{fmt_num(results[db]['search']['queries'][k]['median_ms'])} "
                   f"({results[db]['search']['queries'][k]['hits']})" for db in dbs)] for k in keys]
        rows.append(["**p95 of every call**", "", *(
            f"**{fmt_num(results[db]['search']['p95_ms'])}**" for db in dbs)])
        rows.append(["CPU ms of this thread, p95 (SQLite runs in it)", "", *(
            fmt_num(results[db]["search"]["cpu_p95_ms"]) for db in dbs)])
        out.append(md_table(["query", "text", *(f"{names[db]} ms (hits)" for db in dbs)], rows))
        out += ["", "### Stats: one agent, last 7 days", ""]
        groups = list(results[dbs[0]]["stats"])
        out.append(md_table(["grouping", *(f"{names[db]} median ms (p95)" for db in dbs),
                             *(f"{names[db]} CPU ms" for db in dbs if db == "sqlite")], [
            [g, *(f"{fmt_num(results[db]['stats'][g]['median_ms'])} "
                  f"({fmt_num(results[db]['stats'][g]['p95_ms'])})" for db in dbs),
             *(fmt_num(results[db]["stats"][g].get("cpu_median_ms")) for db in dbs
               if db == "sqlite")]
            for g in groups]))
    runs = [(db, i + 1, r) for db in dbs for i, r in enumerate(results[db].get("retention", []))]
    if runs:
        out += ["", "### Retention while the handler writes", ""]
        rows = []
        for db, rep, r in runs:
            for phase in ("before", "during", "after"):
                s = r[phase]
                label = f"{r['after_s']:.0f} s after" if phase == "after" else phase
                rows.append([names[db], rep, r["mode"], label, f"{s.get('writes', 0):,}",
                             fmt_num(s.get("median_ms")), fmt_num(s.get("p99_ms")),
                             fmt_num(s.get("max_ms")), s.get("over_100ms", 0)])
        out.append(md_table(["database", "run", "cleanup in", "handler writes", "writes",
                             "median ms", "p99 ms", "max ms", "> 100 ms"], rows))
        out.append("")
        out.append(md_table(["database", "run", "rows deleted", "seconds", "rows/s",
                             "agent runs meanwhile", "slowest write", "writes over 100 ms "
                             "(s into the cleanup; the collector's ms within)"], [
            [names[db], rep, f"{r['deleted']:,}", f"{r['seconds']:.0f}",
             fmt_num(r["rows_per_s"]), f"{r['agent_runs']:,}",
             f"{r['worst']['what']}: {fmt_num(r['worst']['ms'])} ms" if r["worst"] else "",
             "; ".join(f"{w['what']} {fmt_num(w['ms'])} ms at {w['at_s']:.1f} s "
                       f"({fmt_num(w['collector_ms'])})" for w in r["slow"] if w["ms"] > 100)
             or "none"]
            for db, rep, r in runs]))
    return "\n".join(out)


def _copy_database(url: str, pg: PgDatabases, tmp: str, rep: int) -> str:
    """A fresh copy of the generated database, for one retention run, on a settled server.

    The rows to delete are a month old in the scenario, but were written a minute ago here,
    and the copy writes the whole database again (PostgreSQL: a gigabyte of WAL): a
    checkpoint that flushes that to disk, begun before the cleanup, would fall into it, and
    every commit would wait for the checkpointer's ``fsync`` (measured: a 140 ms stall of
    the handler's commits, ``WALSync`` waits, while the checkpointer was in
    ``DataFileSync``).  So the server checkpoints first, as it long has in the scenario."""
    if url.startswith("sqlite"):
        import sqlite3

        path = f"{tmp}/retention-{rep}.db"
        with sqlite3.connect(url.split("///", 1)[1]) as src, sqlite3.connect(path) as dst:
            src.backup(dst)
        return f"sqlite:///{path}"
    copy = pg.create(f"retention_{rep}", template=url)
    with pg.admin() as admin:
        admin.execute("CHECKPOINT")
    return copy


def _drop_copy(url: str, pg: PgDatabases) -> None:
    if url.startswith("sqlite"):
        for suffix in ("", "-wal", "-shm"):
            Path(url.split("///", 1)[1] + suffix).unlink(missing_ok=True)
    else:
        pg.drop(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["sqlite", "postgresql"])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument("--runs", type=int, default=20_000, help="agent runs to generate")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--cleanup", choices=["process", "thread", "none"], default="process")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--no-ingest", action="store_true", help="skip the ingest comparison")
    parser.add_argument("--retention-only", action="store_true",
                        help="generate, then only the retention part")
    parser.add_argument("--retention-reps", type=int, default=1,
                        help="retention runs, each on a fresh copy of the generated database")
    parser.add_argument("--after", type=float, default=60.0,
                        help="seconds the handler goes on writing after the cleanup, timed")
    args = parser.parse_args()
    runs, reps, baseline = (200, 2, 1.0) if args.smoke else (args.runs, args.reps, 10.0)
    after = 1.0 if args.smoke else args.after
    results: dict[str, Any] = {"machine": machine_info(), "runs": runs}
    pg = PgDatabases(PG_ADMIN, "lpinsight")
    tmp = tempfile.mkdtemp(prefix="lp-insight-")
    try:
        for db in ("sqlite", "postgresql"):
            if args.only and args.only != db:
                continue
            if not (args.no_ingest or args.retention_only):
                results[db] = {"ingest": bench_ingest(db, pg, tmp, 5_000 if args.smoke
                                                      else 100_000, 1 if args.smoke else 3)}
                print(f"{db}: ingest {results[db]['ingest']}", flush=True)
            url = (f"sqlite:///{tmp}/insight.db" if db == "sqlite" else pg.create("insight"))
            print(f"{db}: generating {runs:,} runs ...", flush=True)
            results.setdefault(db, {}).update(url=url, generate=generate(url, runs))
            print(f"{db}: {results[db]['generate']}", flush=True)
            if db == "postgresql":
                import psycopg

                with psycopg.connect(url.replace("+psycopg", ""), autocommit=True) as conn:
                    conn.execute("VACUUM ANALYZE")
            if not args.retention_only:
                results[db]["search"] = bench_search(url, reps)
                print(f"{db}: search p95 {results[db]['search']['p95_ms']:.1f} ms", flush=True)
                results[db]["stats"] = bench_stats(url, reps)
                print(f"{db}: stats {json.dumps(results[db]['stats'])}", flush=True)
            dispose_database(url)
            if args.cleanup != "none":
                results[db]["retention"] = []
                for rep in range(args.retention_reps):
                    copy = _copy_database(url, pg, tmp, rep)
                    results[db]["retention"].append(
                        bench_retention(copy, args.cleanup, baseline, after))
                    print(f"{db}: retention {json.dumps(results[db]['retention'][-1])}",
                          flush=True)
                    dispose_database(copy)
                    _drop_copy(copy, pg)
        text = report(results)
        print(text)
        if args.json:
            write_json(args.json, {"results": results, "report": text})
    finally:
        if not args.keep:
            pg.drop_all()


if __name__ == "__main__":
    main()
