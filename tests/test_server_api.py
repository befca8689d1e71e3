"""The agent service's guards and reads against a real uvicorn server: ownership (404/403),
the bearer token (401), bad bodies (422), the body limit (413), pagination, and graphs that
are not chat agents."""

from __future__ import annotations

import uuid

import httpx
import pytest
import server_graphs
from server_support import Sse, names, post_events, running_server

from langchain_persist.server import create_app

OWNER, OTHER = "agent-owner", "agent-other"


@pytest.fixture
def client(db_url):
    app = create_app(server_graphs.agent, url=db_url, retry_delay=0, max_body_bytes=4096)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c


@pytest.fixture
def sqlite_client(sqlite_url):
    app = create_app(server_graphs.agent, url=sqlite_url, retry_delay=0, max_body_bytes=4096)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as c:
        yield c


def execute(client: httpx.Client, task: str, agent: str = OWNER, **body) -> list[Sse]:
    return post_events(client, "/api/agents/execute", {"agentId": agent, "task": task, **body})


def test_checkpoints_and_threads_belong_to_their_agent(client):
    done = execute(client, "mine :: echo")[-1].data
    checkpoint, thread = done["checkpointId"], done["threadId"]

    unknown = client.post(f"/api/agents/{OWNER}/resume", json={"checkpointId": "nope"})
    assert unknown.status_code == 404 and "no checkpoint 'nope'" in unknown.json()["detail"]
    theirs = client.post(f"/api/agents/{OTHER}/resume", json={
        "checkpointId": checkpoint, "additionalInstructions": "steal"})
    assert theirs.status_code == 403
    assert theirs.json()["detail"] == f"checkpoint {checkpoint!r} belongs to another agent"
    assert OWNER not in theirs.text  # the owner is not disclosed

    for body in ({"threadId": thread}, {"checkpointId": checkpoint}):
        refused = client.post("/api/agents/execute", json={"agentId": OTHER, "task": "x", **body})
        assert refused.status_code == 403, body
    wrong_thread = client.post("/api/agents/execute", json={
        "agentId": OWNER, "task": "x", "checkpointId": checkpoint, "threadId": "elsewhere"})
    assert wrong_thread.status_code == 422 and "is on thread" in wrong_thread.json()["detail"]

    # nothing was run for the refused requests
    assert client.get(f"/api/agents/{OTHER}/results").json()["items"] == []
    # the owner continues the thread
    again = execute(client, "again", threadId=thread)
    assert again[-1].data["threadId"] == thread and names(again)[-1] == "complete"
    state = client.get(f"/api/checkpoints/{again[-1].data['checkpointId']}").json()["state"]
    contents = [m["content"] for m in state["messages"]]
    assert contents[0] == "mine :: echo" and contents[-2:] == ["again", "answer to again"]


def test_reads_are_scoped_to_the_agent_in_the_path(client):
    mine = execute(client, "scoped :: echo")[-1].data
    execute(client, "theirs", agent=OTHER)
    result, execution, checkpoint = mine["resultId"], mine["executionId"], mine["checkpointId"]

    ok = [f"/api/agents/{OWNER}/results/{result}",
          f"/api/agents/{OWNER}/checkpoints/{checkpoint}",
          f"/api/agents/{OWNER}/executions/{execution}/logs",
          f"/api/agents/{OWNER}/executions/{execution}/traces"]
    for path in ok:
        assert client.get(path).status_code == 200, path
        refused = client.get(path.replace(OWNER, OTHER))
        assert refused.status_code == 403, path
        assert "belongs to another agent" in refused.json()["detail"]
    for path in (f"/api/agents/{OWNER}/results/{uuid.uuid4()}",
                 f"/api/agents/{OWNER}/checkpoints/nope",
                 f"/api/agents/{OWNER}/executions/nope/traces",
                 f"/api/results/{uuid.uuid4()}", "/api/results/not-a-uuid",
                 "/api/executions/nope", "/api/executions/nope/events"):
        assert client.get(path).status_code == 404, path

    listed = client.get(f"/api/agents/{OWNER}/results").json()["items"]
    assert [r["id"] for r in listed] == [result]
    assert client.get(f"/api/agents/{OWNER}/results", params={"status": "failed"}).json() == {
        "items": [], "nextCursor": None}


def test_logs_and_traces_are_paginated_with_a_cursor(sqlite_client):
    done = execute(sqlite_client, "pages :: echo / echo / echo")[-1].data
    path = f"/api/executions/{done['executionId']}/traces"
    everything = sqlite_client.get(path, params={"limit": 1000}).json()
    assert everything["nextCursor"] is None and len(everything["items"]) == 10  # 6 tool, 4 llm

    seen, cursor = [], None
    while True:
        page = sqlite_client.get(path, params={"limit": 3, **({"cursor": cursor} if cursor
                                                                else {})}).json()
        assert len(page["items"]) <= 3
        seen += page["items"]
        if not (cursor := page["nextCursor"]):
            break
    assert seen == everything["items"]
    bad = sqlite_client.get(path, params={"cursor": "garbage"})
    assert bad.status_code == 422 and "invalid cursor" in bad.json()["detail"]


@pytest.mark.parametrize(("body", "field"), [
    ({"task": "no agent"}, "agentId"),
    ({"agentId": "a"}, "task"),
    ({"agentId": "", "task": "x"}, "agentId"),
    ({"agentId": "a", "task": ""}, "task"),
    ({"agentId": "a" * 256, "task": "x"}, "agentId"),
    ({"agentId": "a", "task": "x", "recursionLimit": 0}, "recursionLimit"),
    ({"agentId": "a", "task": "x", "maxRetries": 11}, "maxRetries"),
    ({"agentId": "a", "task": "x", "estimatedTokens": -1}, "estimatedTokens"),
    ({"agentId": "a", "task": 42}, "task"),
    ({"agentId": "a", "task": "x", "tsak": "typo"}, "tsak"),
])
def test_bad_execute_bodies_get_422_naming_the_field(sqlite_client, body, field):
    response = sqlite_client.post("/api/agents/execute", json=body)
    assert response.status_code == 422
    assert any(field in error["loc"] for error in response.json()["detail"]), response.json()


def test_bad_resume_bodies_and_headers_get_422(sqlite_client):
    for body, field in (({}, "checkpointId"), ({"checkpointId": "c", "resume": None}, None),
                        ({"checkpointId": "c", "additionalInstructions": ""},
                         "additionalInstructions")):
        response = sqlite_client.post(f"/api/agents/{OWNER}/resume", json=body)
        assert response.status_code == 422, body
        detail = response.json()["detail"]
        assert any(field in e["loc"] for e in detail) if field else "resume must be" in str(detail)
    not_json = sqlite_client.post("/api/agents/execute", content=b"{nope",
                                  headers={"content-type": "application/json"})
    assert not_json.status_code == 422
    done = execute(sqlite_client, "hi")[-1].data
    garbage = sqlite_client.get(f"/api/executions/{done['executionId']}/events",
                                headers={"Last-Event-ID": "abc"})
    assert garbage.status_code == 422 and "Last-Event-ID" in garbage.json()["detail"]
    assert sqlite_client.get(f"/api/agents/{OWNER}/results",
                             params={"limit": 0}).status_code == 422


def test_large_bodies_are_refused_with_413(sqlite_client):
    declared = sqlite_client.post("/api/agents/execute",
                                  json={"agentId": "a", "task": "x" * 5000})
    assert declared.status_code == 413 and "4096 bytes" in declared.json()["detail"]

    def chunks():  # no Content-Length: the limit counts what streams in
        yield b'{"agentId": "a", "task": "'
        for _ in range(10):
            yield b"y" * 1000
        yield b'"}'

    streamed = sqlite_client.post("/api/agents/execute", content=chunks(),
                                  headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert sqlite_client.get("/api/agents/a/results").json()["items"] == []


def test_the_bearer_token_guards_every_route(sqlite_url, monkeypatch):
    monkeypatch.setenv("LANGCHAIN_PERSIST_API_TOKEN", "s3cret")
    app = create_app(server_graphs.agent, url=sqlite_url, retry_delay=0)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as anonymous:
        for method, path in (("GET", "/api/health"), ("POST", "/api/agents/execute"),
                             ("POST", f"/api/agents/{OWNER}/resume"),
                             ("GET", "/api/executions/x/events"), ("GET", "/api/results/x"),
                             ("GET", "/docs"), ("GET", "/openapi.json")):
            response = anonymous.request(method, path, json={"agentId": "a", "task": "x"})
            assert response.status_code == 401, path
            assert response.headers["www-authenticate"] == "Bearer"
            assert "LANGCHAIN_PERSIST_API_TOKEN" in response.json()["detail"]
        wrong = anonymous.get("/api/health", headers={"Authorization": "Bearer guess"})
        assert wrong.status_code == 401
        with httpx.Client(base_url=url, timeout=60,
                          headers={"Authorization": "Bearer s3cret"}) as client:
            assert client.get("/api/health").json()["status"] == "ok"
            events = execute(client, "with token")
            assert names(events)[-1] == "complete"
            path = f"/api/executions/{events[0].data['executionId']}/events"
            assert client.get(path).status_code == 200
            assert anonymous.get(path).status_code == 401


@pytest.mark.parametrize("graph", [server_graphs.task_graph, server_graphs.task_builder],
                         ids=["StateGraph", "callable"])
def test_a_graph_without_messages_gets_the_task_in_its_state(sqlite_url, graph):
    app = create_app(graph, url=sqlite_url)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        events = execute(client, "be loud")
        assert names(events) == ["start", "complete"]
        assert events[-1].data["output"] == {"task": "be loud", "result": "BE LOUD"}
        refused = client.post(f"/api/agents/{OWNER}/resume", json={
            "checkpointId": events[-1].data["checkpointId"], "additionalInstructions": "more"})
        assert refused.status_code == 422 and "no 'messages'" in refused.json()["detail"]
        assert client.get("/api/health").json() == {
            "status": "ok", "graph": "LangGraph", "database": "sqlite", "running": 0,
            "databaseReachable": True}
