"""How long a SQLite retention run holds the write lock, per transaction: FTS5's own merging
as stop 21 left it (``automerge`` off, ``crisismerge`` 16, 32-page merge steps) against this
code's (``crisismerge`` 1,000, 8-page steps), interleaved on copies of one generated database.

    python benchmarks/retention_holds.py               # 20,000 runs (1,200,000 rows), 2 rounds
    python benchmarks/retention_holds.py --smoke        # 200 runs (tests/test_benchmarks_smoke.py)

No handler writes meanwhile: this is the lock the cleanup takes from writers, alone.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import fmt_num, md_table, write_json
from bench_insight import generate

from langchain_persist import ResultsPersistenceService
from langchain_persist._db import engine
from langchain_persist._db.engine import dispose_database
from langchain_persist._db.sql import retention as retention_sql

VARIANTS = {
    "stop 21 (crisismerge 16, 32-page steps)": ({"automerge": 0, "crisismerge": 16}, 32),
    "this code (crisismerge 1,000, 8-page steps)": (retention_sql.CLEANUP_MERGING,
                                                    retention_sql.MERGE_PAGES),
}


def holds(path: str, merging: dict[str, int], pages: int) -> tuple[list[float], float, int]:
    """Milliseconds each write transaction of a retention run held the lock, its seconds and
    the rows it deleted."""
    held: list[float] = []
    write = engine.Database.write

    @contextmanager
    def timed(self: Any) -> Any:
        with write(self) as conn:
            started = time.monotonic()
            yield conn
        held.append((time.monotonic() - started) * 1000)

    saved = retention_sql.CLEANUP_MERGING, retention_sql.merge_step.__defaults__
    retention_sql.CLEANUP_MERGING, retention_sql.merge_step.__defaults__ = merging, (pages,)
    engine.Database.write = timed  # type: ignore[method-assign]
    service = ResultsPersistenceService(f"sqlite:///{path}")
    try:
        service.set_retention_policy(logs=dt.timedelta(minutes=30),
                                     traces=dt.timedelta(minutes=30))
        started = time.monotonic()
        totals = service.apply_retention().totals
        return held, time.monotonic() - started, totals.logs + totals.traces
    finally:
        engine.Database.write = write  # type: ignore[method-assign]
        retention_sql.CLEANUP_MERGING, retention_sql.merge_step.__defaults__ = saved
        service.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=20_000, help="agent runs to generate")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="200 runs")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    if args.smoke:
        args.runs = 200
    tmp = tempfile.mkdtemp(prefix="lp-holds-")
    source = f"{tmp}/generated.db"
    print(generate(f"sqlite:///{source}", args.runs), flush=True)
    dispose_database(f"sqlite:///{source}")
    results: dict[str, list[tuple[list[float], float, int]]] = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for round_ in range(args.rounds):
        for name in names[round_ % 2:] + names[:round_ % 2]:  # the order alternates
            copy = f"{tmp}/copy.db"
            with sqlite3.connect(source) as src, sqlite3.connect(copy) as dst:
                src.backup(dst)
            results[name].append(holds(copy, *VARIANTS[name]))
            dispose_database(f"sqlite:///{copy}")
            for suffix in ("", "-wal", "-shm"):
                Path(copy + suffix).unlink(missing_ok=True)
            print(name, round_, max(results[name][-1][0]), flush=True)
    rows, worst = [], {}
    for name, runs in results.items():
        every = sorted(ms for held, _, _ in runs for ms in held)
        worst[name] = statistics.median(max(held) for held, _, _ in runs)
        rows.append([name, len(runs), len(every), fmt_num(statistics.median(every)),
                     fmt_num(every[int(0.99 * (len(every) - 1))]),
                     fmt_num(worst[name]), fmt_num(max(every)),
                     fmt_num(statistics.median(s for _, s, _ in runs))])
    old, new = (worst[name] for name in names)
    text = md_table(["merging", "runs", "transactions", "median ms", "p99 ms",
                     "longest ms (median of runs)", "longest ms (all)", "seconds"], rows)
    text += f"\n\nlongest hold, this code / stop 21 (medians of runs): {new / old:.2f}"
    print(text)
    if args.json:
        write_json(args.json, {"report": text, "runs": {
            name: [{"held_ms": held, "seconds": s, "deleted": n} for held, s, n in runs]
            for name, runs in results.items()}})


if __name__ == "__main__":
    main()
