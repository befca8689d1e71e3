"""``GET /api/search`` and ``GET /api/stats`` (global and agent-scoped), and the retention
policies the server applies on a schedule, against a real uvicorn server."""

from __future__ import annotations

import datetime as dt

import httpx
import pytest
import server_graphs
from server_support import post_events, running_server, wait_for

from langchain_persist import ResultsPersistenceService
from langchain_persist.server import create_app

OWNER, OTHER = "agent-owner", "agent-other"


def execute(client: httpx.Client, task: str, agent: str = OWNER) -> dict:
    return post_events(client, "/api/agents/execute", {"agentId": agent, "task": task})[-1].data


@pytest.fixture
def client(db_url):
    app = create_app(server_graphs.agent, url=db_url, retry_delay=0, max_retries=0)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c


def test_search_is_scoped_and_links_to_executions(client) -> None:
    mine = execute(client, "Zürich-Lyon :: echo")
    theirs = execute(client, "Zürich-Lyon :: echo", agent=OTHER)
    both = client.get("/api/search", params={"q": "zürich-lyon"}).json()
    assert {h["executionId"] for h in both["items"]} == {mine["executionId"],
                                                         theirs["executionId"]}
    scoped = client.get(f"/api/agents/{OWNER}/search", params={"q": "Zürich-Lyon"}).json()
    assert scoped["items"] and {h["agentId"] for h in scoped["items"]} == {OWNER}
    hit = next(h for h in scoped["items"] if h["type"] == "tool_end")
    assert hit["name"] == "echo" and "Zürich-Lyon" in hit["snippet"]
    start, end = hit["highlights"][0]
    assert hit["snippet"][start:end] == "Zürich-Lyon"  # the phrase, as it was written
    ex = mine["executionId"]
    assert hit["links"] == {"execution": f"/api/executions/{ex}",
                            "logs": f"/api/agents/{OWNER}/executions/{ex}/logs",
                            "traces": f"/api/agents/{OWNER}/executions/{ex}/traces"}
    assert client.get(hit["links"]["traces"]).status_code == 200
    by_param = client.get("/api/search", params={"q": "Zürich-Lyon", "agentId": OTHER}).json()
    assert {h["agentId"] for h in by_param["items"]} == {OTHER}
    logs = client.get("/api/search", params={"q": "execution", "type": "log",
                                             "since": "1h", "limit": 1}).json()
    assert [h["kind"] for h in logs["items"]] == ["log"] and logs["nextCursor"]
    later = client.get("/api/search", params={"q": "execution", "type": "log", "limit": 1,
                                              "cursor": logs["nextCursor"]}).json()
    assert later["items"][0]["id"] != logs["items"][0]["id"]
    for bad in ({"q": "?!"}, {"q": "x", "since": "soon"}, {"q": "x", "status": "done"}):
        assert client.get("/api/search", params=bad).status_code == 422, bad


def test_stats_global_and_for_one_agent(client) -> None:
    execute(client, "one :: echo / echo")
    server_graphs.FAILURES["two"] = 1
    execute(client, "two :: flaky")  # fails once: no retries
    server_graphs.FAILURES["two"] = 0
    execute(client, "three", agent=OTHER)
    stats = client.get("/api/stats", params={"by": "agent"}).json()
    assert stats["totals"]["runs"] == 3 and stats["totals"]["failed"] == 1
    assert {g["key"]: g["runs"] for g in stats["groups"]} == {OWNER: 2, OTHER: 1}
    assert stats["totals"]["runP95Ms"] > 0 and stats["totals"]["toolCalls"] == 3
    mine = client.get(f"/api/agents/{OWNER}/stats", params={"by": "tool"}).json()
    assert mine["agentId"] == OWNER and mine["totals"]["runs"] == 2
    assert {g["key"]: (g["toolCalls"], g["toolErrors"]) for g in mine["groups"]} == {
        "echo": (2, 0), "flaky": (1, 1)}
    assert mine["topErrors"][0]["message"].startswith("RuntimeError: flaky failed")
    old = client.get("/api/stats", params={"until": "2000-01-01T00:00:00"}).json()
    assert old["totals"]["runs"] == 0
    assert client.get("/api/stats", params={"by": "week"}).status_code == 422


def test_the_server_applies_retention_on_a_schedule(db_url: str) -> None:
    service = ResultsPersistenceService(db_url)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    service.save_logs(service.log_row(agent_id="a", execution_id="e", message=f"{i}",
                                      timestamp=old) for i in range(50))
    service.save_log(agent_id="a", execution_id="e", message="young")
    service.set_retention_policy(logs=dt.timedelta(days=30))
    app = create_app(server_graphs.agent, url=db_url, retention_interval=0.2)
    with running_server(app):
        schedule = app.state.retention
        wait_for(lambda: schedule.runs >= 2, what="two retention runs")
        assert [log.message for log in service.get_execution_logs("e")] == ["young"]
    assert schedule.last.dry_run is False
    never = create_app(server_graphs.agent, url=db_url, retention_interval=None)
    with running_server(never):
        assert never.state.retention.runs == 0
    service.close()
