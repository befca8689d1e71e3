"""Statistics computed by the database equal the same figures computed in Python from the rows."""

from __future__ import annotations

import datetime as dt
import random
import statistics
import uuid
from collections import Counter, defaultdict
from typing import Any

import pytest
from sqlalchemy import insert

from langchain_persist import ResultsPersistenceService, ValidationError
from langchain_persist._db.schema import agent_results

NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
AGENTS = ("planner", "booker", "support")
TOOLS = ("search", "book", "weather")
STATUSES = ("completed", "failed", "interrupted", "running")
ERRORS = ("TimeoutError: upstream timed out", "RateLimitError: 429", "KeyError: 'city'")


def pct(values: list[float], p: float) -> float | None:
    """The ``p`` percentile with linear interpolation (percentile_cont), from the stdlib."""
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[round(p * 100) - 1]


def close(a: float | None, b: float | None) -> bool:
    return (a is None and b is None) or (
        a is not None and b is not None and a == pytest.approx(b, rel=1e-6, abs=1e-6))


@pytest.fixture
def data(service: ResultsPersistenceService) -> dict[str, Any]:
    """Runs, tool calls and model calls of three agents over ten days, at known times."""
    rng = random.Random(16)
    runs, tools, models = [], [], []
    rows = []
    for i in range(240):
        agent = rng.choice(AGENTS)
        created = NOW - dt.timedelta(minutes=rng.randrange(0, 10 * 24 * 60))
        status = rng.choices(STATUSES, weights=(6, 2, 1, 1))[0]
        stopped = status != "running"
        took = rng.randrange(5, 90_000)  # milliseconds
        meta: dict[str, Any] = {"usage": {"input_tokens": rng.randrange(50, 900),
                                          "output_tokens": rng.randrange(5, 300)}}
        meta["usage"]["total_tokens"] = sum(meta["usage"].values())
        if rng.random() < 0.8:  # the handler's own count; else the timestamps tell
            meta["duration_ms"] = took + rng.random()
        run = {
            "id": str(uuid.uuid4()), "agent_id": agent, "execution_id": f"ex-{i}",
            "thread_id": f"t-{i}", "checkpoint_id": None, "quest_id": None, "result": None,
            "metadata": meta, "status": status,
            "error": rng.choice(ERRORS) if status == "failed" else None,
            "created_at": created, "updated_at": created,
            "completed_at": created + dt.timedelta(milliseconds=took) if stopped else None,
        }
        rows.append(run)
        runs.append(run)
        for _ in range(rng.randrange(0, 6)):
            at = created + dt.timedelta(seconds=rng.randrange(0, 60))
            failed = rng.random() < 0.2
            tool = {"agent_id": agent, "execution_id": run["execution_id"],
                    "type": "tool_error" if failed else "tool_end", "name": rng.choice(TOOLS),
                    "content": f"{rng.choice(ERRORS)}" if failed else "ok",
                    "duration": rng.random() * 2000, "timestamp": at}
            tools.append(tool)
            service.save_trace(**tool)
        for _ in range(rng.randrange(1, 3)):
            model = {"agent_id": agent, "execution_id": run["execution_id"], "type": "llm_end",
                     "name": "ChatModel", "content": "thinking", "duration": 12.0,
                     "metadata": {"model": rng.choice(("gpt-a", "gpt-b")),
                                  "usage": {"input_tokens": 7, "output_tokens": 3,
                                            "total_tokens": 10}},
                     "timestamp": created}
            models.append(model)
            service.save_trace(**model)
        service.save_trace(agent_id=agent, execution_id=run["execution_id"], type="tool_start",
                           name="search", content="not a call's end", timestamp=created)
    with service.db.write() as conn:
        conn.execute(insert(agent_results), rows)
    return {"runs": runs, "tools": tools, "models": models}


def _duration(run: dict[str, Any]) -> float | None:
    if run["status"] == "running":
        return None
    if "duration_ms" in run["metadata"]:
        return run["metadata"]["duration_ms"]
    return (run["completed_at"] - run["created_at"]).total_seconds() * 1000


def _expected_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    counts = Counter(r["status"] for r in runs)
    stopped = counts["completed"] + counts["failed"] + counts["interrupted"]
    durations = [d for d in map(_duration, runs) if d is not None]
    usage = [r["metadata"]["usage"] for r in runs]
    return {
        "runs": len(runs), **{s: counts[s] for s in STATUSES},
        "success_rate": counts["completed"] / stopped if stopped else None,
        "failure_rate": counts["failed"] / stopped if stopped else None,
        "interrupt_rate": counts["interrupted"] / stopped if stopped else None,
        "run_p50_ms": pct(durations, 0.5), "run_p95_ms": pct(durations, 0.95),
        "run_p99_ms": pct(durations, 0.99),
        **{k: sum(u[k] for u in usage) for k in ("input_tokens", "output_tokens",
                                                 "total_tokens")},
    }


def _expected_tools(tools: list[dict[str, Any]]) -> dict[str, Any]:
    durations = [t["duration"] for t in tools]
    errors = sum(t["type"] == "tool_error" for t in tools)
    return {
        "tool_calls": len(tools), "tool_errors": errors,
        "tool_error_rate": errors / len(tools) if tools else None,
        "tool_p50_ms": pct(durations, 0.5), "tool_p95_ms": pct(durations, 0.95),
        "tool_p99_ms": pct(durations, 0.99),
    }


def _check(row: Any, expected: dict[str, Any]) -> None:
    for name, value in expected.items():
        assert close(getattr(row, name), value), (row.key, name, getattr(row, name), value)


def _in(rows: list[dict[str, Any]], at: str, since: dt.datetime | None = None,
        agent: str | None = None) -> list[dict[str, Any]]:
    return [r for r in rows if (since is None or r[at] >= since)
            and (agent is None or r["agent_id"] == agent)]


def test_totals_and_groups_by_agent_equal_python(service, data) -> None:
    stats = service.stats(by="agent")
    _check(stats.totals, {**_expected_runs(data["runs"]), **_expected_tools(data["tools"]),
                          "model_calls": len(data["models"])})
    assert [g.key for g in stats.groups] == sorted(
        AGENTS, key=lambda a: -len(_in(data["runs"], "created_at", agent=a)))
    for group in stats.groups:
        _check(group, _expected_runs(_in(data["runs"], "created_at", agent=group.key)))
        _check(group, _expected_tools(_in(data["tools"], "timestamp", agent=group.key)))
        assert group.model_calls == len(_in(data["models"], "timestamp", agent=group.key))


def test_one_agent_over_seven_days(service, data) -> None:
    since = NOW - dt.timedelta(days=7)
    stats = service.stats(agent_id="booker", since=since, by="day")
    runs = _in(data["runs"], "created_at", since, "booker")
    tools = _in(data["tools"], "timestamp", since, "booker")
    _check(stats.totals, {**_expected_runs(runs), **_expected_tools(tools)})
    days: dict[dt.datetime, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        days[run["created_at"].replace(hour=0, minute=0, second=0, microsecond=0)].append(run)
    run_days = [g for g in stats.groups if g.runs]
    assert [g.key for g in run_days] == sorted(days)
    for group in run_days:
        _check(group, _expected_runs(days[group.key]))
    for group in stats.groups:  # every tool call falls in its day
        day_tools = [t for t in tools if t["timestamp"].replace(
            hour=0, minute=0, second=0, microsecond=0) == group.key]
        _check(group, _expected_tools(day_tools))


def test_by_tool_model_status_and_hour(service, data) -> None:
    by_tool = service.stats(by="tool")
    assert sorted(g.key for g in by_tool.groups) == sorted(TOOLS)
    for group in by_tool.groups:
        _check(group, _expected_tools([t for t in data["tools"] if t["name"] == group.key]))
        assert group.runs is None  # runs have no tool

    by_model = service.stats(by="model")
    assert sorted(g.key for g in by_model.groups) == ["gpt-a", "gpt-b"]
    for group in by_model.groups:
        calls = [m for m in data["models"] if m["metadata"]["model"] == group.key]
        assert group.model_calls == len(calls) and group.total_tokens == 10 * len(calls)
        assert group.input_tokens == 7 * len(calls) and group.tool_calls is None

    by_status = service.stats(by="status")
    for group in by_status.groups:
        _check(group, _expected_runs([r for r in data["runs"] if r["status"] == group.key]))
        assert group.tool_calls is None

    since = NOW - dt.timedelta(hours=30)
    by_hour = service.stats(by="hour", since=since)
    assert sum(g.runs for g in by_hour.groups) == len(_in(data["runs"], "created_at", since))
    assert all(g.key.minute == 0 and g.key.tzinfo is dt.UTC for g in by_hour.groups)


def test_top_errors_equal_python(service, data) -> None:
    stats = service.stats(top_errors=50)
    expected = Counter(("run", None, r["error"]) for r in data["runs"] if r["status"] == "failed")
    expected.update(("tool", t["name"], t["content"]) for t in data["tools"]
                    if t["type"] == "tool_error")
    assert {(e.kind, e.name, e.message): e.count for e in stats.top_errors} == dict(expected)
    counts = [e.count for e in stats.top_errors]
    assert counts == sorted(counts, reverse=True)
    assert len(service.stats(top_errors=3).top_errors) == 3


def test_an_empty_range_and_bad_input(service, data) -> None:
    stats = service.stats(since=NOW + dt.timedelta(days=1), by="agent")
    assert stats.groups == [] and stats.top_errors == []
    assert stats.totals.runs == 0 and stats.totals.tool_calls == 0
    assert stats.totals.success_rate is None and stats.totals.run_p50_ms is None
    with pytest.raises(ValidationError, match="by must be one of"):
        service.stats(by="week")


async def test_async_twin(service, data) -> None:
    stats = await service.astats(agent_id="planner", by="tool")
    assert stats.totals.runs == len(_in(data["runs"], "created_at", agent="planner"))
    assert stats.to_dict()["totals"]["runs"] == stats.totals.runs
