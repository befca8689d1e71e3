"""The server answers every request (no 500), ends runs cleanly through a database outage,
and ends its streams with a final event when it stops (issue 13), on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import server_graphs
from hostile import hostile_text, values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from server_support import names, parse_sse, post_events, running_server, wait_for
from tcp_proxy import outage as tcp_outage

from langchain_persist import ResultsPersistenceService
from langchain_persist.server import create_app

TESTS = Path(__file__).parent


# -- no 500, whatever comes in ----------------------------------------------------------------


def _path_text(text: str) -> str:
    """Text as a path segment, percent-encoded byte by byte (lone surrogates included)."""
    return urllib.parse.quote(text.encode("utf-8", "surrogatepass"), safe="") or "x"


def _json_body(value: Any) -> bytes:
    return json.dumps(value, default=repr, ensure_ascii=True).encode()  # \\ud800 escapes


header_text = st.text(st.characters(min_codepoint=32, max_codepoint=255, exclude_characters="\x7f"),
                      max_size=30)
edge_moments = st.sampled_from(["0001-01-01", "0001-01-01T00:00+01:00", "9999-12-31T23:59",
                                "9999-12-31T23:59-14:00", "2026-02-30", "1970-01-01T00:00Z"])
times = st.one_of(header_text, edge_moments,  # the since / until of the API and the pages
                  st.integers(0, 10**16).map(lambda n: f"{n}d"), st.just("1d12h"))
cursors = st.tuples(edge_moments, st.uuids()).map(  # forged, of the right shape
    lambda m: base64.urlsafe_b64encode(f"{m[0]}|{m[1]}".encode()).decode())
bodies = st.one_of(
    values.map(lambda v: _json_body(_plain_json(v))),
    st.fixed_dictionaries({}, optional={
        "agentId": hostile_text, "task": hostile_text, "threadId": hostile_text,
        "checkpointId": hostile_text, "resume": values, "additionalInstructions": hostile_text,
        "recursionLimit": st.integers(-5, 10**20), "maxRetries": st.integers(-5, 99),
        "estimatedTokens": st.integers(-5, 10**20), "questId": hostile_text,
    }).map(lambda d: _json_body(_plain_json(d))),
    st.binary(max_size=64),
)


def _plain_json(value: Any) -> Any:
    """What ``json.dumps`` can write of a hostile value (NaN as a float, loops cut)."""
    from langchain_persist._sanitize import jsonable

    def keep(v: Any, depth: int = 0) -> Any:
        if isinstance(v, str | int | float | bool) or v is None:
            return v
        if isinstance(v, dict) and depth < 20:
            return {str(k): keep(x, depth + 1) for k, x in v.items()}
        if isinstance(v, list | tuple) and depth < 20:
            return [keep(x, depth + 1) for x in v]
        return jsonable(v)

    return keep(value)


@pytest.fixture
def fuzz_target(db_url):
    app = create_app(server_graphs.agent, url=db_url, retry_delay=0, max_body_bytes=4096)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        done = post_events(client, "/api/agents/execute",
                           {"agentId": "fuzz", "task": "seed :: echo"})[-1].data
        yield app, client, done


def test_hostile_requests_never_get_a_5xx(fuzz_target):
    app, client, done = fuzz_target
    routes = [(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops]
    routes += [("GET", page) for page in ("/", "/runs/{executionId}", "/threads/{threadId}",
                                          "/stats")]  # the viewer's pages
    known = {"agentId": "fuzz", "executionId": done["executionId"],
             "resultId": done["resultId"], "checkpointId": done["checkpointId"],
             "threadId": done["threadId"]}

    @settings(max_examples=250, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(routes), st.data())
    def request(route: tuple[str, str], data: st.DataObject) -> None:
        method, template = route
        path = template
        for name in [part[1:-1] for part in template.split("/") if part.startswith("{")]:
            text = data.draw(st.one_of(hostile_text, st.just(known.get(name, "x"))))
            path = path.replace("{" + name + "}", _path_text(text))
        params = data.draw(st.fixed_dictionaries({}, optional={
            "cursor": st.one_of(hostile_text.map(lambda t: t.encode("utf-8", "surrogatepass")
                                                 .decode("latin-1")), header_text, cursors),
            "limit": st.one_of(st.integers(-10, 10**30).map(str), header_text),
            "status": header_text, "lastEventId": header_text, "agent": hostile_text,
            "thread": hostile_text, "since": times, "until": times, "type": hostile_text,
            "checkpoint": hostile_text, "step": header_text, "run": hostile_text,
        }))
        headers = data.draw(st.fixed_dictionaries({}, optional={
            "Last-Event-ID": header_text.map(lambda h: h.strip().encode("latin-1")),
            "Content-Type": st.sampled_from(
                ["application/json", "text/plain", "application/x-www-form-urlencoded"]),
        }))
        body = data.draw(bodies) if method == "POST" else None
        query = {k: v.encode("utf-8", "surrogatepass") for k, v in params.items()}
        url = path + ("?" + urllib.parse.urlencode(query) if query else "")
        with client.stream(method, url, content=body, headers=headers,
                           timeout=httpx.Timeout(60)) as response:
            answer = b"".join(response.iter_bytes())  # a stream runs until its run ends
            assert response.status_code < 500, (method, url, headers, body, answer[:300])

    request()


def test_requests_that_used_to_answer_500(fuzz_target):
    _, client, done = fuzz_target
    events = f"/api/executions/{done['executionId']}/events"
    for header in ("²", "9" * 5000, "-1", "1 2", "1e3"):
        reply = client.get(events, headers={"Last-Event-ID": header.encode("latin-1")})
        assert reply.status_code == 422, header
    for body in ('{"agentId": "a\\ud800", "task": "x"}', '{"agentId": "a\\u0000", "task": "x"}',
                 '{"agentId": "a", "task": "x", "threadId": "t\\u0000"}',
                 '{"agentId": "a", "task": "x\\ud800", "bogus": "\\udfff"}'):
        reply = client.post("/api/agents/execute", content=body,
                            headers={"Content-Type": "application/json"})
        assert reply.status_code == 422, (body, reply.text)
    for path in ("/api/results/%00", "/api/checkpoints/a%00b", "/api/executions/%ED%A0%80"):
        assert client.get(path).status_code == 404, path
    junk = "bm90fGEtdXVpZA=="  # base64 of "not|a-uuid"
    assert client.get("/api/agents/fuzz/results", params={"cursor": junk}).status_code == 422
    resume = client.post("/api/agents/fuzz/resume", json={
        "checkpointId": done["checkpointId"], "additionalInstructions": "x", "resume": 10**30})
    assert resume.status_code in (409, 422)  # not waiting at an interrupt, or not storable


def test_moments_ages_cursors_and_types_out_of_range_get_a_4xx(fuzz_target):
    """Found by a review: each of these answered 500 (or 503 blaming the schema)."""
    _, client, done = fuzz_target
    forged = base64.urlsafe_b64encode(  # a cursor at the calendar's first hour, in UTC+1
        f"0001-01-01T00:00:00+01:00|{uuid.UUID(int=0)}".encode()).decode()
    for path, params in [
        ("/api/agents/fuzz/results", {"cursor": forged}),
        (f"/api/executions/{done['executionId']}/logs", {"cursor": forged}),
        ("/api/search", {"q": "x", "cursor": forged}),
        ("/api/search", {"q": "x", "since": "99999999999d"}),
        ("/api/search", {"q": "x", "since": "0001-01-01T00:00:00+14:00"}),
        ("/api/search", {"q": "x", "type": "\x00"}),
        ("/api/stats", {"since": "1000000000000d"}),
        ("/api/stats", {"until": "0001-01-01T00:00:00+01:00"}),
        ("/api/stats", {"until": "999999999d"}),
    ]:
        query = {k: v.encode("utf-8", "surrogatepass") for k, v in params.items()}
        reply = client.get(path + "?" + urllib.parse.urlencode(query))
        assert reply.status_code == 422, (path, params, reply.text)
        assert isinstance(reply.json()["detail"], str), reply.text  # a sentence, not a trace
    for params in ({"cursor": forged}, {"since": "0001-01-01"},
                   {"since": "0001-01-01T00:00+01:00"}, {"until": "9999-12-31T23:59-14:00"}):
        page = client.get("/", params=params)  # the runs page says what it refused
        assert page.status_code == 400, (params, page.status_code)
        assert "year 1 to 9999" in page.text or "invalid cursor" in page.text, params
    for params, first in [({"status": "bogus"}, "done"), ({"since": "0001-01-01T00:00+01:00"},
                          "done"), ({"newer": "2020-01-01"}, "new")]:  # (naive: the server's zone)
        with client.stream("GET", "/ui/live", params={"watch": "1", **params}) as live:
            event = next(parse_sse(live.iter_lines()))  # refused filters: nothing to watch
        assert live.status_code == 200 and event.event == first, (params, event)
    assert event.data["count"] >= 1  # the seed run is newer


def test_ids_are_kept_as_given_and_their_pages_reached(db_url):
    """Thread and run ids with a slash, a question mark or spaces are stored as given, and
    the run page's links reach the thread's page."""
    app = create_app(server_graphs.agent, url=db_url, retry_delay=0)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        for thread in ("team/a?b#c", " spaced "):
            done = post_events(client, "/api/agents/execute",
                               {"agentId": "ids", "task": "hi :: echo", "threadId": thread})
            assert done[-1].data["threadId"] == thread
            run = client.get(f"/runs/{done[-1].data['executionId']}")
            link = re.search(r'<dd><a href="(/threads/[^"]+)"', run.text)
            assert link is not None, run.text[:500]
            page = client.get(html.unescape(link.group(1)))
            assert page.status_code == 200 and html.escape(thread) in page.text
        assert client.post("/api/agents/execute", json={
            "agentId": "ids", "task": "x", "threadId": "  "}).status_code == 422


def test_an_agent_id_with_a_slash_is_reached_through_every_agent_route(db_url):
    """``team/bot`` is a valid agent id: its routes take it percent-encoded (as the viewer's
    resume form sends it), not a 404."""
    app = create_app(server_graphs.agent, url=db_url, retry_delay=0)
    agent = urllib.parse.quote("team/bot", safe="")
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        asked = post_events(client, "/api/agents/execute",
                            {"agentId": "team/bot", "task": "approve :: ask"})[-1].data
        assert asked["interrupts"]
        (listed,) = client.get(f"/api/agents/{agent}/results").json()["items"]
        assert listed["agentId"] == "team/bot"
        for path in (f"results/{asked['resultId']}",
                     f"executions/{asked['executionId']}/logs",
                     f"executions/{asked['executionId']}/traces",
                     f"checkpoints/{asked['checkpointId']}", "stats"):
            assert client.get(f"/api/agents/{agent}/{path}").status_code == 200, path
        hits = client.get(f"/api/agents/{agent}/search", params={"q": "approve"}).json()
        assert hits["items"] and {h["agentId"] for h in hits["items"]} == {"team/bot"}
        with client.stream("POST", f"/api/agents/{agent}/resume",
                           json={"checkpointId": asked["checkpointId"], "resume": "yes"}) as r:
            resumed = list(parse_sse(r.iter_lines()))
        assert r.status_code == 200 and resumed[-1].data["status"] == "completed"
        other = urllib.parse.quote("team/other", safe="")
        assert client.get(f"/api/agents/{other}/results/{asked['resultId']}").status_code == 403


def test_a_missing_asset_is_a_404_behind_a_token(db_url):
    app = create_app(server_graphs.agent, url=db_url, retry_delay=0,
                     api_tokens={"s3cret": ["*"]})
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert client.get("/ui/static/ui.js").status_code == 200
        assert client.get("/ui/static/nope.css").status_code == 404
        assert client.get("/ui/static/%2e%2e/_ui.py").status_code == 404
        assert client.post("/ui/static/ui.js").status_code == 405


def test_a_resume_value_the_checkpoints_cannot_hold_is_refused_first(db_url):
    app = create_app(server_graphs.agent, url=db_url, retry_delay=0)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        asked = post_events(client, "/api/agents/execute",
                            {"agentId": "a", "task": "ask :: ask"})[-1].data
        assert asked["interrupts"]
        body = {"checkpointId": asked["checkpointId"], "resume": 10**30}
        reply = client.post("/api/agents/a/resume", json=body)
        assert reply.status_code == 422 and "cannot be stored" in reply.json()["detail"]
        assert client.get("/api/agents/a/results").json()["items"][0]["executionId"] == \
            asked["executionId"]  # no run was started for it


def test_a_body_that_trickles_in_is_cut_off(sqlite_url):
    app = create_app(server_graphs.agent, url=sqlite_url, body_timeout=1.0)
    with running_server(app) as url:
        port = int(url.rsplit(":", 1)[1])
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"POST /api/agents/execute HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            sock.settimeout(20)
            reply = sock.recv(4096)
        assert reply.startswith(b"HTTP/1.1 408"), reply
        assert time.monotonic() - started < 15  # not held open for long


# -- an outage in the middle of a served run --------------------------------------------------


@pytest.fixture
def outage(db_url, monkeypatch) -> Iterator[tuple[str, Any, Any]]:
    """(the URL to use, cut, restore): see `tcp_proxy.outage`."""
    with tcp_outage(db_url, monkeypatch) as found:
        yield found


def test_a_run_goes_on_through_a_database_outage(outage, db_url):
    url, cut, restore = outage
    app = create_app(server_graphs.agent, url=url, retry_delay=0)
    label = f"outage-{os.getpid()}-{time.monotonic_ns()}"
    with running_server(app) as base, httpx.Client(base_url=base, timeout=120) as client:
        events: list[Any] = []

        def follow() -> None:
            with client.stream("POST", "/api/agents/execute", json={
                    "agentId": "a", "task": f"{label} :: wait / echo"}) as response:
                events.extend(parse_sse(response.iter_lines()))

        reader = threading.Thread(target=follow)
        reader.start()
        wait_for(lambda: "tool_start" in names(events), what="the wait tool to start")
        cut()
        server_graphs.gate(label, 0).set()  # the tool finishes: its step cannot be stored
        wait_for(lambda: any(e.data.get("kind") == "outage" for e in events), 30,
                 "the outage warning")
        health = client.get("/api/health")
        assert health.status_code == 503 and health.json()["databaseReachable"] is False
        reads = client.get("/api/agents/a/results").status_code  # SQLite still reads (WAL)
        assert reads == (200 if db_url.startswith("sqlite") else 503)  # never a 500
        time.sleep(10)  # the outage lasts
        restore()
        reader.join(120)
        assert names(events)[-1] == "complete", names(events)
        assert any(e.data.get("kind") == "recovered" for e in events)
        assert client.get("/api/health").status_code == 200
        done = events[-1].data
    service = ResultsPersistenceService(db_url)
    row = service.get_result(done["resultId"])
    assert row is not None and row.status == "completed", row
    assert row.result == done["output"]
    assert service.find_results(status="running") == []  # no row stays running
    service.close()


# -- the server stops while a run streams ------------------------------------------------------


def test_streams_end_with_a_final_event_when_the_server_stops(db_url, tmp_path):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    server = subprocess.Popen(
        [sys.executable, "-m", "langchain_persist", "serve", "--graph", "server_graphs:agent",
         "--url", db_url, "--port", str(port)], cwd=TESTS, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(base), 60, "the server to start")
        events: list[Any] = []
        with httpx.Client(base_url=base, timeout=60) as client, client.stream(
                "POST", "/api/agents/execute",
                json={"agentId": "a", "task": "stopped :: wait"}) as response:
            lines = response.iter_lines()
            for event in parse_sse(lines):
                events.append(event)
                if event.event == "tool_start":  # the run waits at a gate nobody opens
                    server.send_signal(signal.SIGTERM)
        assert names(events)[-1] == "error", names(events)
        assert events[-1].data["serverStopping"] is True
        assert "shutting down" in events[-1].data["message"]
        server.wait(60)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    service = ResultsPersistenceService(db_url)  # the run was stopped and marked failed
    (row,) = service.find_results(agent_id="a")
    assert row.status == "failed" and "server stopped" in (row.error or "")
    service.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/api/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_row_running_too_long_is_flagged_stale(db_url):
    from typer.testing import CliRunner

    from langchain_persist._cli.commands import app as cli

    service = ResultsPersistenceService(db_url)
    old = service.save_result(agent_id="a", execution_id="old")
    fresh = service.save_result(agent_id="a", execution_id="fresh")
    with service.db.write() as conn:
        conn.exec_driver_sql("UPDATE agent_results SET updated_at = created_at - "
                             + ("interval '1 hour'" if "postgresql" in db_url else "0")
                             + " WHERE execution_id = 'old'")
        if "sqlite" in db_url:
            conn.exec_driver_sql("UPDATE agent_results SET updated_at = "
                                 "'2020-01-01 00:00:00.000000' WHERE execution_id = 'old'")
    app = create_app(server_graphs.agent, url=db_url)
    with running_server(app) as base, httpx.Client(base_url=base, timeout=60) as client:
        assert client.get(f"/api/results/{old.id}").json()["stale"] is True
        assert client.get(f"/api/results/{fresh.id}").json()["stale"] is False
    listed = CliRunner().invoke(cli, ["runs", "list", "--url", db_url, "--json"])
    stale = {r["execution_id"]: r["stale"] for r in json.loads(listed.output)}
    assert stale == {"old": True, "fresh": False}
    shown = CliRunner().invoke(cli, ["runs", "list", "--url", db_url])
    assert "⚠ stale" in shown.output and shown.output.count("⚠ stale") == 1
    service.close()
