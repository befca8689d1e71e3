"""Tokens scoped to agents, over every route of the server: 200 within a tenant, 403 across."""

from __future__ import annotations

import httpx
import pytest
import server_graphs
from saver_graphs import agent_graph
from server_support import post_events, running_server

from langchain_persist import ConfigurationError, PersistSaver
from langchain_persist.server import create_app

TOKENS = {"tok-a": ["agent-a"], "tok-b": ["agent-b*"], "tok-all": ["*"]}


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tenants(db_url):
    """A served agent with runs of agent-a and agent-b-1, and a checkpoint of no agent."""
    app = create_app(server_graphs.agent, url=db_url, retry_delay=0, api_tokens=TOKENS,
                     api_token="single-admin")
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        runs = {}
        for agent, token in (("agent-a", "tok-a"), ("agent-b-1", "tok-b")):
            client.headers.update(_auth(token))
            runs[agent] = post_events(client, "/api/agents/execute",
                                      {"agentId": agent, "task": f"{agent} :: echo"})[-1].data
        saver = PersistSaver.from_url(db_url)  # a graph run with no agent in its config
        agent_graph(1).compile(checkpointer=saver).invoke(
            {"messages": [("user", "x")]}, {"configurable": {"thread_id": "ownerless"}})
        ownerless = saver.get_tuple({"configurable": {"thread_id": "ownerless"}}).config[
            "configurable"]["checkpoint_id"]
        saver.close()
        client.headers.pop("Authorization")
        yield app, client, runs, ownerless


def _requests(agent: str, run: dict) -> list[tuple[str, str, dict | None]]:
    """One request per route, about ``agent``'s run."""
    e, r, c = run["executionId"], run["resultId"], run["checkpointId"]
    return [
        ("POST", "/api/agents/execute", {"agentId": agent, "task": "again"}),
        ("POST", f"/api/agents/{agent}/resume", {"checkpointId": c,
                                                 "additionalInstructions": "more"}),
        ("GET", f"/api/executions/{e}/events", None),
        ("GET", f"/api/results/{r}", None),
        ("GET", f"/api/agents/{agent}/results", None),
        ("GET", f"/api/agents/{agent}/results/{r}", None),
        ("GET", f"/api/executions/{e}", None),
        ("GET", f"/api/executions/{e}/logs", None),
        ("GET", f"/api/executions/{e}/traces", None),
        ("GET", f"/api/agents/{agent}/executions/{e}/logs", None),
        ("GET", f"/api/agents/{agent}/executions/{e}/traces", None),
        ("GET", f"/api/checkpoints/{c}", None),
        ("GET", f"/api/agents/{agent}/checkpoints/{c}", None),
        ("GET", f"/api/search?q=echo&agentId={agent}", None),
        ("GET", f"/api/agents/{agent}/search?q=echo", None),
        ("GET", f"/api/stats?agentId={agent}", None),
        ("GET", f"/api/agents/{agent}/stats", None),
    ]


def _status(client: httpx.Client, method: str, path: str, body: dict | None, token: str) -> int:
    with client.stream(method, path, json=body, headers=_auth(token)) as response:
        response.read()
        return response.status_code


def test_every_route_keeps_tenants_apart(tenants):
    app, client, runs, _ = tenants
    routes = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    checked = {(m, p) for m, p in routes if p != "/api/health"}
    covered = set()
    for agent, mine, theirs in (("agent-a", "tok-a", "tok-b"), ("agent-b-1", "tok-b", "tok-a")):
        for method, path, body in _requests(agent, runs[agent]):
            template = next(p for m, p in checked if m == method and _fits(p, path))
            covered.add((method, template))
            assert _status(client, method, path, body, mine) == 200, (mine, path)
            assert _status(client, method, path, body, theirs) == 403, (theirs, path)
            assert _status(client, method, path, body, "tok-all") == 200, path
            assert _status(client, method, path, body, "single-admin") == 200, path
    assert covered == checked, "a route is not covered by this test: add it to _requests"
    for token in TOKENS:
        assert _status(client, "GET", "/api/health", None, token) == 200
    assert _status(client, "GET", "/api/health", None, "nobody") == 401


def test_a_checkpoint_of_no_agent_is_for_tokens_allowed_everything(tenants):
    _, client, _, ownerless = tenants
    for path, body in ((f"/api/checkpoints/{ownerless}", None),):
        assert _status(client, "GET", path, body, "tok-a") == 403
        assert _status(client, "GET", path, body, "tok-all") == 200
    resume = {"checkpointId": ownerless, "additionalInstructions": "go on"}
    assert _status(client, "POST", "/api/agents/agent-a/resume", resume, "tok-a") == 403
    assert _status(client, "POST", "/api/agents/agent-a/resume", resume, "tok-all") == 200


def _fits(template: str, path: str) -> bool:
    a, b = template.strip("/").split("/"), path.split("?")[0].strip("/").split("/")
    return len(a) == len(b) and all(x == y or x.startswith("{") for x, y in zip(a, b,
                                                                                strict=True))


def test_the_viewer_shows_a_token_only_its_agents(tenants):
    _, client, runs, _ = tenants
    mine, theirs = runs["agent-a"], runs["agent-b-1"]
    as_a = {"Cookie": "langchain_persist_token=tok-a"}
    listing = client.get("/", headers=as_a)
    assert listing.status_code == 200
    assert mine["executionId"] in listing.text and theirs["executionId"] not in listing.text
    assert client.get(f"/runs/{mine['executionId']}", headers=as_a).status_code == 200
    assert client.get(f"/runs/{theirs['executionId']}", headers=as_a).status_code == 403
    assert client.get(f"/threads/{theirs['threadId']}", headers=as_a).status_code == 403
    assert client.get("/threads/ownerless", headers=as_a).status_code == 403
    assert client.get("/", params={"agent": "agent-b-1"}, headers=as_a).status_code == 403
    as_all = {"Cookie": "langchain_persist_token=tok-all"}
    assert client.get("/threads/ownerless", headers=as_all).status_code == 200
    assert theirs["executionId"] in client.get("/", headers=as_all).text


def test_search_and_stats_of_every_agent_are_for_tokens_allowed_everything(tenants):
    _, client, runs, _ = tenants
    for path in ("/api/search?q=echo", "/api/stats"):
        assert _status(client, "GET", path, None, "tok-a") == 403
        assert _status(client, "GET", path, None, "tok-all") == 200
    hits = client.get("/api/agents/agent-a/search", params={"q": "echo"},
                      headers=_auth("tok-a")).json()["items"]
    assert hits and {h["agentId"] for h in hits} == {"agent-a"}
    assert {h["executionId"] for h in hits} == {runs["agent-a"]["executionId"]}
    every = client.get("/api/search", params={"q": "echo"}, headers=_auth("tok-all")).json()
    assert {h["agentId"] for h in every["items"]} == {"agent-a", "agent-b-1"}


def test_the_viewer_searches_and_counts_only_a_tokens_agents(tenants):
    _, client, runs, _ = tenants
    mine, theirs = runs["agent-a"], runs["agent-b-1"]
    as_a = {"Cookie": "langchain_persist_token=tok-a"}
    found = client.get("/", params={"q": "echo"}, headers=as_a)
    assert found.status_code == 200
    assert mine["executionId"] in found.text and theirs["executionId"] not in found.text
    assert client.get("/", params={"q": "echo", "agent": "agent-b-1"},
                      headers=as_a).status_code == 403
    every = client.get("/stats", headers=as_a)  # no charts of every agent: choose one
    assert every.status_code == 200 and "choose one to see its charts" in every.text
    assert "agent-a" in every.text and "agent-b-1" not in every.text
    assert 'class="tile"' not in every.text
    own = client.get("/stats", params={"agent": "agent-a"}, headers=as_a)
    assert own.status_code == 200 and 'class="tile"' in own.text
    assert client.get("/stats", params={"agent": "agent-b-1"}, headers=as_a).status_code == 403
    as_all = {"Cookie": "langchain_persist_token=tok-all"}
    assert "agent-b-1" in client.get("/stats", headers=as_all).text


@pytest.mark.parametrize("given", ["json", "file"])
def test_scoped_tokens_come_from_the_environment_as_json_or_a_file(sqlite_url, tmp_path,
                                                                   monkeypatch, given):
    config = '{"tok-env": ["agent-a"]}'
    path = tmp_path / "tokens.json"
    path.write_text(config)
    monkeypatch.setenv("LANGCHAIN_PERSIST_API_TOKENS", config if given == "json" else str(path))
    monkeypatch.delenv("LANGCHAIN_PERSIST_API_TOKEN", raising=False)
    app = create_app(server_graphs.agent, url=sqlite_url, retry_delay=0)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert _status(client, "GET", "/api/agents/agent-a/results", None, "tok-env") == 200
        assert _status(client, "GET", "/api/agents/agent-b/results", None, "tok-env") == 403
        assert _status(client, "GET", "/api/agents/agent-a/results", None, "other") == 401


@pytest.mark.parametrize(("value", "said"), [
    ("{not json", "not valid JSON"),
    ("/nowhere/tokens.json", "neither a JSON object nor a readable file"),
    ('{"tok": []}', "map each token to a list of agent names"),
])
def test_scoped_tokens_that_cannot_be_read_stop_the_server_and_say_why(sqlite_url, monkeypatch,
                                                                       value, said):
    monkeypatch.setenv("LANGCHAIN_PERSIST_API_TOKENS", value)
    with pytest.raises(ConfigurationError, match=said):
        create_app(server_graphs.agent, url=sqlite_url, retry_delay=0)
