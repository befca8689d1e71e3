"""Benchmark: bytes per stored result, log and trace, and whether compressing them pays.

    python benchmarks/bench_storage.py            # both databases
    python benchmarks/bench_storage.py --smoke    # tiny sizes

1. **a realistic run**: 500 agent runs shaped like ``bench_insight``'s (10 model calls and 20
   tool calls each, outputs of a few hundred characters, errors, logs) stored through the
   writer, with results whose final answer is 300-1,500 characters: bytes per row of each
   table with its indexes, and apart, of its search index (SQLite: the FTS5 tables;
   PostgreSQL: the ``search_vector`` column and its GIN index), after ``VACUUM``.
2. **large results**: 2,000 results whose output is a 20 kB report (Markdown-ish text, as an
   agent writes one) stored as they are, and the same compressed: on SQLite with zstd (what
   langchain-persist does above ``RESULT_COMPRESS_OVER`` characters), on PostgreSQL with TOAST's
   pglz (the default) and with lz4 (``ALTER TABLE ... SET COMPRESSION lz4``); bytes per
   result, and the time to read all of them back (median of 5, interleaved).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    PgDatabases,
    fmt_bytes,
    fmt_num,
    md_table,
    pg_relations_size,
    sqlite_tables_size,
    write_json,
)
from bench_insight import AGENTS, PG_ADMIN, _events
from sqlalchemy import text

from langchain_persist import ResultsPersistenceService
from langchain_persist._callbacks.writer import BackgroundWriter
from langchain_persist._db.engine import dispose_database

TEXT = ("the agent searched flights to Lisbon and found three options; prices range from "
        "€129 to €340 (non-refundable), the weather looks sunny with 24°C, hotels near the "
        "old town are available on Monday, a confirmation e-mail was sent to the traveller, "
        "and the booking reference is LP-7Q2K. Next steps: approve, pay, check in.")
WORDS = TEXT.split(" ")


def _report(rng: random.Random, size: int) -> str:
    lines, length = [], 0
    while length < size:
        line = ("## " if rng.random() < 0.1 else "- ") + " ".join(
            rng.choice(WORDS) for _ in range(rng.randrange(8, 25)))
        lines.append(line)
        length += len(line) + 1
    return "\n".join(lines)[:size]


def realistic(url: str, runs: int) -> dict[str, Any]:
    rng = random.Random(3)
    service = ResultsPersistenceService(url)
    writer = BackgroundWriter(service, install_signal_handler=False)
    for run in range(runs):
        events, row = _events(rng, run, AGENTS[run % len(AGENTS)], time.time() - 600)
        for event in events:
            writer.put(event)
        answer = _report(rng, rng.randrange(300, 1500))
        service.save_result(agent_id=row["agent_id"], execution_id=row["execution_id"],
                            thread_id=row["thread_id"], result=answer, metadata=row["metadata"],
                            status="completed")
    writer.close()
    counts = dict(writer.written)
    service.close()
    dispose_database(url)
    sizes = {}
    for table, extra in (("agent_results", ()), ("agent_traces", ("agent_traces_search",)),
                         ("execution_logs", ("execution_logs_search",))):
        if url.startswith("sqlite"):
            path = url.removeprefix("sqlite:///")
            own = sqlite_tables_size(path, [table])[0]
            search = sqlite_tables_size(path, [f"{extra[0]}_{s}" for s in (
                "data", "idx", "docsize", "config")])[0] if extra else 0
        else:
            own = pg_relations_size(url, [table])
            search = 0  # the tsvector column and its GIN index are part of the table
        n = runs if table == "agent_results" else counts.get(
            "traces" if table == "agent_traces" else "logs", 0)
        sizes[table] = {"rows": n, "bytes_per_row": own / n,
                        "search_bytes_per_row": search / n if search else None}
    if url.startswith("postgresql"):
        import psycopg

        with psycopg.connect(url.replace("+psycopg", "")) as conn:
            for table, column in (("agent_traces", "search_vector"),
                                  ("execution_logs", "search_vector")):
                vector = conn.execute(f"SELECT avg(pg_column_size({column})) FROM {table}"
                                      ).fetchone()[0]
                gin = conn.execute(f"SELECT pg_relation_size('ix_{table}_search_vector')"
                                   ).fetchone()[0]
                search = float(vector) + gin / sizes[table]["rows"]
                sizes[table]["search_bytes_per_row"] = search
                sizes[table]["bytes_per_row"] -= search  # counted apart, as on SQLite
    return sizes


def large_results(url: str, count: int, reps: int) -> dict[str, Any]:
    rng = random.Random(5)
    reports = [_report(rng, 20_000) for _ in range(count)]
    out: dict[str, Any] = {}
    variants = (["as text", "zstd"] if url.startswith("sqlite") else ["pglz", "lz4"])
    urls = {}
    for variant in variants:
        target = (url.replace(".db", f"-{variant.replace(' ', '')}.db")
                  if url.startswith("sqlite") else url)
        if not url.startswith("sqlite"):
            target = PG.create(f"large_{variant}")
        service = ResultsPersistenceService(target)
        if variant == "lz4":
            with service.db.write() as conn:
                conn.execute(text("ALTER TABLE agent_results ALTER COLUMN result "
                                  "SET COMPRESSION lz4"))
        if variant == "as text":
            service.result_compress_over = None
        started = time.perf_counter()
        for report in reports:
            service.save_result(agent_id="writer", result=report, status="completed")
        write_ms = (time.perf_counter() - started) * 1000 / count
        service.close()
        dispose_database(target)
        if target.startswith("sqlite"):
            size = sqlite_tables_size(target.removeprefix("sqlite:///"), ["agent_results"])[0]
        else:
            size = pg_relations_size(target, ["agent_results"])
        urls[variant] = target
        out[variant] = {"bytes_per_result": size / count, "write_ms": write_ms, "read_ms": []}
    for rep in range(reps):
        for variant in (variants if rep % 2 == 0 else variants[::-1]):
            service = ResultsPersistenceService(urls[variant])
            started = time.perf_counter()
            page = service.find_results(agent_id="writer", limit=count)
            took = (time.perf_counter() - started) * 1000
            assert len(page) == count and len(page[0].result) == 20_000
            out[variant]["read_ms"].append(took / count)
            service.close()
    for variant in variants:
        out[variant]["read_ms"] = statistics.median(out[variant]["read_ms"])
        dispose_database(urls[variant])
    out["text_bytes"] = 20_000
    return out


PG = PgDatabases(PG_ADMIN, "lpstorage")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args()
    runs, count, reps = (20, 50, 1) if args.smoke else (500, 2000, 5)
    tmp = tempfile.mkdtemp(prefix="lp-storage-")
    results: dict[str, Any] = {}
    try:
        for db in ("sqlite", "postgresql"):
            url = f"sqlite:///{tmp}/realistic.db" if db == "sqlite" else PG.create("realistic")
            results[db] = {"realistic": realistic(url, runs),
                           "large": large_results(
                               f"sqlite:///{tmp}/large.db" if db == "sqlite" else url,
                               count, reps)}
    finally:
        PG.drop_all()
    names = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}
    lines = ["### Bytes per stored row (a realistic run)", "", md_table(
        ["table", *(f"{names[db]}: row + indexes" for db in results),
         *(f"{names[db]}: + search index" for db in results)],
        [[table, *(fmt_bytes(results[db]["realistic"][table]["bytes_per_row"])
                   for db in results),
          *(fmt_bytes(results[db]["realistic"][table]["search_bytes_per_row"])
            for db in results)]
         for table in ("agent_results", "agent_traces", "execution_logs")]), "",
        "### Results with a 20 kB output", "", md_table(
            ["database", "stored as", "bytes per result", "write ms", "read ms per result"],
            [[names[db], variant, fmt_bytes(v["bytes_per_result"]), fmt_num(v["write_ms"]),
              fmt_num(v["read_ms"])]
             for db in results for variant, v in results[db]["large"].items()
             if isinstance(v, dict)])]
    text_out = "\n".join(lines)
    print(text_out)
    if args.json:
        write_json(args.json, {"results": results, "report": text_out})


if __name__ == "__main__":
    main()
