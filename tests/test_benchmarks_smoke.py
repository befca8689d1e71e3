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
    for heading in ("### Micro-operations", "### Large state", "### Concurrency", "### Storage",
                    "### Resume"):
        assert heading in result.stdout

    results = json.loads(out.read_text())["results"]
    assert set(results) >= {"graph", "graph_sync", "micro", "large", "concurrency", "storage",
                            "resume"}
    assert results["graph"]["postgres"]["ms"]["median"] > 0
    assert results["large"]["persist-pg-async"]["get_latest_long"]["median"] > 0


def test_saver_steps_smoke(tmp_path: Path) -> None:
    """``saver_steps.py`` (the per-step breakdown) runs end to end on a tiny graph."""
    out = tmp_path / "steps.json"
    result = subprocess.run(
        [sys.executable, "benchmarks/saver_steps.py", "--rounds", "1", "--steps", "3",
         "--only", "memory,memory-async,sqlite,persist-sqlite,persist-pg-async",
         "--json", str(out), "--pg", PG_ADMIN_URL],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    assert "| PersistSaver (SQLite) | invoke |" in result.stdout
    samples = json.loads(out.read_text())
    assert samples["persist-sqlite"]["put_cpu"][0] > 0


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
