"""The benchmarks run end to end at tiny sizes (``--smoke``), each in its own process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PG_ADMIN_URL = os.environ.get(
    "LANGCHAIN_PERSIST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"
)


def _smoke(script: str, out: Path) -> subprocess.CompletedProcess[str]:
    """Run a benchmark with --smoke, and check that it exited 0."""
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--smoke", "--json", str(out)],
        cwd=ROOT,
        env={**os.environ, "LANGCHAIN_PERSIST_BENCH_PG": PG_ADMIN_URL},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    return result


def test_saver_bench_smoke(tmp_path: Path) -> None:
    """``bench_saver.py --smoke`` exits 0 and prints the graph-run table with every peer."""
    out = tmp_path / "saver.json"
    result = _smoke("bench_saver.py", out)

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
    for heading in ("### Micro-operations", "### Concurrency", "### Storage", "### Resume"):
        assert heading in result.stdout

    results = json.loads(out.read_text())["results"]
    assert set(results) >= {"graph", "graph_sync", "micro", "concurrency", "storage", "resume"}
    assert results["graph"]["postgres"]["ms"]["median"] > 0


def test_handler_bench_smoke(tmp_path: Path) -> None:
    """``bench_handler.py --smoke`` exits 0 and prints every table with every contender."""
    out = tmp_path / "handler.json"
    result = _smoke("bench_handler.py", out)
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


def test_insight_bench_smoke(tmp_path: Path) -> None:
    """``bench_insight.py --smoke`` exits 0 and reports search, stats and retention on both
    databases, every generated row stored and every old one deleted."""
    out = tmp_path / "insight.json"
    result = _smoke("bench_insight.py", out)
    for heading in ("### What the search index costs the writer", "### Search",
                    "### Stats: one agent, last 7 days", "### Retention while the handler writes"):
        assert heading in result.stdout
    results = json.loads(out.read_text())["results"]
    for db in ("sqlite", "postgresql"):
        generated = results[db]["generate"]
        assert generated["traces"] == 200 * 50 and generated["logs"] == 200 * 10
        assert results[db]["search"]["queries"]["rare reference | all agents"]["hits"] == 1
        assert results[db]["retention"]["deleted"] == results[db]["retention"]["planned"] > 0


def test_storage_bench_smoke(tmp_path: Path) -> None:
    """``bench_storage.py --smoke`` exits 0 and measures every variant."""
    out = tmp_path / "storage.json"
    result = _smoke("bench_storage.py", out)
    assert "### Bytes per stored row" in result.stdout
    for variant in ("| SQLite | as text |", "| SQLite | zstd |", "| PostgreSQL | pglz |",
                    "| PostgreSQL | lz4 |"):
        assert variant in result.stdout
