"""``langchain-persist search``, ``stats`` and ``retention`` against the demo's stored runs."""

from __future__ import annotations

import datetime as dt
import io
import json

import pytest
from rich.console import Console
from typer.testing import CliRunner

from langchain_persist import ResultsPersistenceService
from langchain_persist._cli.commands import app
from langchain_persist._cli.demo import DemoOutcome, run_demo

runner = CliRunner()


def cli(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result.output


def cli_json(*args: str) -> object:
    result = runner.invoke(app, [*args, "--json"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture
def demo(db_url: str) -> DemoOutcome:
    return run_demo(db_url, Console(file=io.StringIO()), delay=0)


def test_search(db_url: str, demo: DemoOutcome) -> None:
    failed, paused, done = demo.execution_ids
    out = cli("search", "FlightApiTimeout", "--url", db_url)
    assert "2 matches for 'FlightApiTimeout'" in out
    assert f"{failed}  tool_error search_flights  travel-agent" in out
    assert f"{failed}  log error agent-callback" in out
    assert f"langchain-persist runs show {failed}" in out  # the link to the run
    found = cli_json("search", "TP 539", "--agent", "travel-agent", "--url", db_url)
    assert found["hits"] and {h["execution_id"] for h in found["hits"]} <= {paused, done}
    hit = found["hits"][0]
    assert [hit["snippet"][a:b] for a, b in hit["highlights"]] == ["TP", "539"]
    assert "Nothing matches" in cli("search", "FlightApiTimeout", "--agent", "nobody",
                                    "--url", db_url)
    logs = cli_json("search", "FlightApiTimeout", "--type", "log", "--since", "1h",
                    "--url", db_url)
    assert [h["kind"] for h in logs["hits"]] == ["log"]
    assert cli_json("search", "get_weather", "--status", "failed", "--url",
                    db_url)["hits"][0]["execution_id"] == failed
    assert "--status must be one of" in cli("search", "x", "--status", "done", "--url", db_url,
                                            code=2)
    assert "no word in it" in cli("search", "--url", db_url, "?!", code=1)


def test_stats(db_url: str, demo: DemoOutcome) -> None:
    totals = cli_json("stats", "--url", db_url)["totals"]
    assert (totals["runs"], totals["completed"], totals["failed"]) == (3, 2, 1)
    assert totals["tool_calls"] == 4 and totals["tool_errors"] == 1
    assert totals["run_p50_ms"] > 0 and totals["total_tokens"] > 0
    out = cli("stats", "--by", "tool", "--agent", "travel-agent", "--url", db_url)
    for seen in ("Statistics of agent travel-agent over the last 7 days", "By tool",
                 "search_flights", "50%", "█", "Top errors", "FlightApiTimeout"):
        assert seen in out, seen
    by_day = cli_json("stats", "--by", "day", "--since", "2d", "--url", db_url)
    assert [g["runs"] for g in by_day["groups"]] == [3]
    assert "By status" in cli("stats", "--by", "status", "--url", db_url)
    assert "--by must be one of" in cli("stats", "--by", "week", "--url", db_url, code=2)


def test_retention(db_url: str, demo: DemoOutcome) -> None:
    assert "No retention policy is stored" in cli("retention", "show", "--url", db_url)
    out = cli("retention", "set", "--logs", "30d", "--checkpoints", "forever", "--url", db_url)
    assert "default" in out and "30d" in out
    cli("retention", "set", "--agent", "travel-agent", "--traces", "2h", "--url", db_url)
    shown = cli_json("retention", "show", "--url", db_url)
    assert [(p["agent_id"], p["logs"], p["traces"]) for p in shown] == [
        (None, 30 * 86400, None), ("travel-agent", 30 * 86400, 2 * 3600)]
    assert "say what to keep" in cli("retention", "set", "--url", db_url, code=2)
    assert "is not an age" in cli("retention", "set", "--logs", "soon", "--url", db_url, code=2)

    # age the demo's traces, then what a dry run counts is what the run deletes
    service = ResultsPersistenceService(db_url, migrate=False)
    with service.db.write() as conn:
        from sqlalchemy import update

        from langchain_persist._db.schema import agent_traces

        conn.execute(update(agent_traces).values(
            timestamp=dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)))
    dry = cli_json("retention", "run", "--dry-run", "--url", db_url)
    traces = dry["totals"]["traces"]
    assert traces > 0 and dry["dry_run"] is True
    out = cli("retention", "run", "--yes", "--url", db_url)
    assert "what it deleted" in out and f"{traces}" in out
    assert cli_json("retention", "run", "--url", db_url)["totals"]["traces"] == 0
    for execution in demo.execution_ids:
        assert not service.get_execution_traces(execution)
    assert "Removed the policy of travel-agent" in cli("retention", "delete", "--agent",
                                                       "travel-agent", "--url", db_url)
    service.close()
