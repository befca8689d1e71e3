"""The demo, end to end through the real CLI: fail, resume, approve, complete; all of it stored."""

from __future__ import annotations

import re

import psycopg
import pytest
from typer.testing import CliRunner

from langchain_persist import PersistSaver, ResultsPersistenceService
from langchain_persist._cli.commands import app
from langchain_persist._db.engine import resolve_url
from langchain_persist._results.inspect import find_execution, thread_checkpoints

runner = CliRunner()


def _demo(url: str) -> str:
    result = runner.invoke(app, ["demo", "--url", url], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    return result.output


def test_demo_fails_resumes_is_approved_and_completes(db_url: str) -> None:
    out = _demo(db_url)
    for seen in (
        "the run failed: FlightApiTimeout",
        "Resume from the last checkpoint",
        "get_weather, which had finished before the failure, was not called a second time",
        "the agent stopped to ask a human: 'Book TP 539 for €129?'",
        "Approve the booking",
        "completed: Booked! TP 539 booked for €129",
        "What was stored",
        "step 2 · tools",
        "langchain-persist runs show",
        "See it all in your browser: langchain-persist ui",  # the closing hint names the viewer
    ):
        assert seen in out, seen

    service = ResultsPersistenceService(db_url, migrate=False)
    results = list(reversed(service.find_results(agent_id="travel-agent")))
    assert [r.status for r in results] == ["failed", "completed", "completed"]
    # run 2 stopped at interrupt(), waited as interrupted, and run 3 resumed it
    assert results[1].metadata["interrupted"] is True
    assert results[1].metadata["resumed_by"] == results[2].execution_id
    assert results[0].error.startswith("FlightApiTimeout")
    assert "TP 539 booked" in results[-1].result
    thread = results[0].thread_id
    assert thread and all(r.thread_id == thread for r in results)
    assert all(r.checkpoint_id for r in results)

    first, second, third = (find_execution(service, r.execution_id) for r in results)
    kinds = {(t.type, t.name) for t in first.traces}
    assert {("tool_end", "get_weather"), ("tool_error", "search_flights")} <= kinds
    assert ("tool_end", "search_flights") in {(t.type, t.name) for t in second.traces}
    assert "get_weather" not in {t.name for t in second.traces}  # kept from run 1, not re-run
    assert ("tool_end", "book_flight") in {(t.type, t.name) for t in third.traces}
    assert all(t.duration is not None for t in first.traces if t.type != "tool_start")
    assert [log.level for log in first.logs] == ["info", "error"]
    assert all(log.level == "info" for log in second.logs + third.logs)

    checkpoints = thread_checkpoints(PersistSaver(db_url, migrate=False), thread)
    assert [c.step for c in checkpoints] == [5, 4, 3, 2, 1, 0, -1]
    failed_step = next(c for c in checkpoints if c.step == 1)
    writes = [w["value"] for w in failed_step.pending_writes]
    assert any(w.startswith("error: FlightApiTimeout") for w in writes)
    assert any("tool(get_weather)" in w for w in writes)
    service.close()


def test_demo_runs_again_on_the_same_database(sqlite_url: str) -> None:
    _demo(sqlite_url)
    _demo(sqlite_url)
    service = ResultsPersistenceService(sqlite_url, migrate=False)
    results = service.find_results(agent_id="travel-agent")
    assert len(results) == 6
    assert len({r.thread_id for r in results}) == 2
    assert len({r.execution_id for r in results}) == 6
    assert [r.status for r in results].count("completed") == 4


def test_demo_postgres_runs_on_a_throwaway_server_and_removes_it() -> None:
    result = runner.invoke(app, ["demo", "--postgres"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    out = result.output
    found = re.search(r"PostgreSQL (18\.\d+) is running at (postgresql://\S+/demo)", out)
    assert found, out
    assert f"database {resolve_url(found[2])} · agent travel-agent" in out
    for seen in (
        "the run failed: FlightApiTimeout",
        "completed: Booked! TP 539 booked for €129",
        "Checkpoints (checkpoint_states: 7 checkpoints",
        "The throwaway PostgreSQL server is stopped and its directory removed",
    ):
        assert seen in out, seen
    results = out.split("Results (agent_results")[1].split("Traces (agent_traces")[0]
    assert re.findall(r"\b(failed|completed)\b", results) == ["failed", "completed", "completed"]
    assert "langchain-persist runs list" not in out  # the database is gone: nothing to look at
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(found[2], connect_timeout=2)


def test_demo_postgres_with_a_sqlite_url_says_to_pick_one(sqlite_url: str) -> None:
    result = runner.invoke(app, ["demo", "--postgres", "--url", sqlite_url])
    assert result.exit_code == 2
    assert "--postgres runs the demo on PostgreSQL, but --url is sqlite:" in result.output
