"""The benchmarks run end to end at tiny sizes (``--smoke``), each in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _smoke(script: str, out: Path, pg_admin_url: str) -> subprocess.CompletedProcess[str]:
    """Run a benchmark with --smoke on the tests' PostgreSQL, and check that it exited 0."""
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--smoke", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "LANGCHAIN_PERSIST_BENCH_PG": pg_admin_url},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    return result


def test_saver_bench_smoke(tmp_path: Path, pg_admin_url: str) -> None:
    """``bench_saver.py --smoke`` exits 0 and prints the graph-run table with every peer."""
    out = tmp_path / "saver.json"
    result = _smoke("bench_saver.py", out, pg_admin_url)

    graph_table = result.stdout.split("### Graph run")[1].split("###")[0]
    for name, driver in [
        ("InMemorySaver", "invoke"),
        ("InMemorySaver", "ainvoke"),
        ("SqliteSaver", "invoke"),
        ("AsyncSqliteSaver", "ainvoke"),
        ("PostgresSaver", "invoke"),
        ("AsyncPostgresSaver", "ainvoke"),
        ("PersistSaver (SQLite)", "invoke"),
        ("PersistSaver (PostgreSQL)", "ainvoke"),
    ]:
        assert f"| {name} | {driver} |" in graph_table, graph_table
    for heading in ("### Micro-operations", "### Large state", "### Concurrency", "### Storage",
                    "### Resume"):
        assert heading in result.stdout

    results = json.loads(out.read_text())["results"]
    assert set(results) >= {"graph", "graph_sync", "micro", "large", "concurrency", "storage",
                            "resume"}
    assert results["graph"]["postgres"]["ms"]["median"] > 0
    assert results["large"]["persist-pg-async"]["get_latest_long"]["median"] > 0


def test_saver_steps_smoke(tmp_path: Path, pg_admin_url: str) -> None:
    """``saver_steps.py`` (the per-step breakdown) runs end to end on a tiny graph."""
    out = tmp_path / "steps.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/saver_steps.py", "--rounds", "1", "--steps", "3",
         "--only", "memory,memory-async,sqlite,persist-sqlite,persist-pg-async",
         "--json", str(out), "--pg", pg_admin_url],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "| PersistSaver (SQLite) | invoke |" in result.stdout
    samples = json.loads(out.read_text())
    assert samples["persist-sqlite"]["put_cpu"][0] > 0


def test_handler_bench_smoke(tmp_path: Path, pg_admin_url: str) -> None:
    """``bench_handler.py --smoke`` exits 0 and prints every table with every contender."""
    out = tmp_path / "handler.json"
    result = _smoke("bench_handler.py", out, pg_admin_url)
    agent_table = result.stdout.split("### Agent run")[1].split("###")[0]
    for name in ("no handler", "no-op handler", "empty handler", "PersistCallbackHandler (SQLite)",
                 "PersistCallbackHandler (PostgreSQL)", "naive sync insert (SQLite)",
                 "naive sync insert (PostgreSQL)"):
        assert f"| {name} |" in agent_table, agent_table
    for heading in ("### Direct tool.invoke()", "### Sustained ingest", "### Memory"):
        assert heading in result.stdout
    report = json.loads(out.read_text())
    memory = report["Memory"]["rows"]
    assert [row[0] for row in memory] == ["SQLite file", "PostgreSQL"]
    assert all(row[6] == "20,000" for row in memory)  # every event of the smoke run was stored


def test_ui_bench_smoke(tmp_path: Path, pg_admin_url: str) -> None:
    """``bench_ui.py --smoke`` exits 0 and times every page on the server and in Chromium."""
    out = tmp_path / "ui.json"
    result = _smoke("bench_ui.py", out, pg_admin_url)
    assert "| run page, 200 calls |" in result.stdout
    medians = json.loads(out.read_text())["medians_ms"]
    assert set(medians) == {"runs page", "runs page, one agent", "run page, 200 calls"}
    assert all(m["server (Server-Timing)"] > 0 and m["browser: load end"] > 0
               for m in medians.values())


def test_server_reads_bench_smoke(pg_admin_url: str) -> None:
    """``bench_server_reads.py --smoke`` exits 0 and reports both routes' latency."""
    result = subprocess.run(
        [sys.executable, "benchmarks/bench_server_reads.py", "--smoke", "--pg", pg_admin_url],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    for route in ("| this code | GET results |", "| this code | GET /api/health |"):
        assert route in result.stdout, result.stdout


def test_insight_bench_smoke(tmp_path: Path, pg_admin_url: str) -> None:
    """``bench_insight.py --smoke`` exits 0 and reports search, stats and retention on both
    databases, every generated row stored and every old one deleted."""
    out = tmp_path / "insight.json"
    result = _smoke("bench_insight.py", out, pg_admin_url)
    for heading in ("### What the search index costs the writer", "### Search",
                    "### Stats: one agent, last 7 days", "### Retention while the handler writes"):
        assert heading in result.stdout
    results = json.loads(out.read_text())["results"]
    for db in ("sqlite", "postgresql"):
        generated = results[db]["generate"]
        assert generated["traces"] == 200 * 50 and generated["logs"] == 200 * 10
        assert results[db]["search"]["queries"]["rare reference | all agents"]["hits"] == 1
        (retention,) = results[db]["retention"]  # one run on a copy of the generated data
        assert retention["deleted"] == retention["planned"] > 0


def test_retention_holds_smoke(tmp_path: Path, pg_admin_url: str) -> None:
    """``retention_holds.py --smoke`` exits 0, and both merge settings delete every row."""
    out = tmp_path / "holds.json"
    result = _smoke("retention_holds.py", out, pg_admin_url)
    assert "longest hold, this code / stop 21" in result.stdout
    runs = json.loads(out.read_text())["runs"]
    assert len(runs) == 2
    for variant in runs.values():
        assert [run["deleted"] for run in variant] == [200 * 60] * 2


def test_storage_bench_smoke(tmp_path: Path, pg_admin_url: str) -> None:
    """``bench_storage.py --smoke`` exits 0 and measures every variant."""
    out = tmp_path / "storage.json"
    result = _smoke("bench_storage.py", out, pg_admin_url)
    assert "### Bytes per stored row" in result.stdout
    for variant in ("| SQLite | as text |", "| SQLite | zstd |", "| PostgreSQL | pglz |",
                    "| PostgreSQL | lz4 |"):
        assert variant in result.stdout
