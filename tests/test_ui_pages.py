"""The viewer over HTTP, on SQLite and PostgreSQL: filters, time range and cursor pages of the
runs list, the live feed, not-found pages, security headers, the token gate, what ships in the
package, the ``ui`` command; and the pure shaping of its pages (diffs, chats, waterfalls)."""

from __future__ import annotations

import datetime as dt
import fnmatch
import html
import os
import re
import subprocess
import sys
import threading
import tomllib
import uuid
from collections import Counter
from pathlib import Path

import httpx
import pytest
from server_support import parse_sse, running_server
from sqlalchemy import insert

from langchain_persist import ResultsPersistenceService
from langchain_persist._db.schema import agent_results
from langchain_persist.server import _ui_views as views
from langchain_persist.server import create_ui_app

ROOT = Path(__file__).resolve().parent.parent
SERVER = ROOT / "langchain_persist" / "server"
TOKEN = "page-token"


@pytest.fixture
def viewer(db_url):
    service = ResultsPersistenceService(db_url)
    service.db  # noqa: B018 - creates the schema (the viewer itself never does)
    with running_server(create_ui_app(db_url)) as base, httpx.Client(
            base_url=base, timeout=30) as client:
        yield service, client
    service.close()


def _runs(client: httpx.Client, **params) -> list[str]:
    page = client.get("/", params=params)
    assert page.status_code == 200, page.text
    return re.findall(r'<tr id="run-([^"]+)"', page.text)


def test_the_runs_list_filters_and_pages_by_cursor(viewer):
    service, client = viewer
    made = [service.save_result(agent_id=f"agent-{i % 2}", thread_id=f"t-{i % 3}",
                                status="failed" if i % 5 == 0 else "completed",
                                error="boom" if i % 5 == 0 else None, execution_id=f"e-{i}")
            for i in range(60)]
    newest_first = [r.id for r in reversed(made)]

    first = client.get("/")
    assert _runs(client) == newest_first[:50]
    older = re.search(r'href="(/\?cursor=[^"]+)" rel="next">Older runs', first.text).group(1)
    second = client.get(older.replace("&amp;", "&"))
    assert re.findall(r'<tr id="run-([^"]+)"', second.text) == newest_first[50:]
    assert "← Newest" in second.text and "Older runs" not in second.text

    assert set(_runs(client, agent="agent-1")) == {r.id for r in made if r.agent_id == "agent-1"}
    assert set(_runs(client, status="failed")) == {r.id for r in made if r.status == "failed"}
    assert set(_runs(client, thread="t-2", agent="agent-0")) == {
        r.id for r in made if r.thread_id == "t-2" and r.agent_id == "agent-0"}
    later = (dt.datetime.now() + dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    earlier = (dt.datetime.now() - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    assert _runs(client, since=later) == []
    assert len(_runs(client, since=earlier, until=later)) == 50
    assert "No runs match these filters" in client.get("/", params={"since": later}).text

    bad = client.get("/", params={"since": "yesterday"})
    assert bad.status_code == 400 and "must be a date and time" in bad.text
    assert client.get("/", params={"status": "sleeping"}).status_code == 400
    assert "invalid cursor" in client.get("/", params={"cursor": "nope"}).text


def test_pages_that_find_nothing_say_so(viewer):
    _, client = viewer
    empty = client.get("/")
    assert "No runs stored yet" in empty.text and "langchain-persist demo" in empty.text
    for path, what in (("/runs/nope", "run 'nope'"), ("/threads/nope", "thread 'nope'")):
        page = client.get(path)
        assert page.status_code == 404
        assert f"Nothing is stored for {what}" in html.unescape(page.text)
    assert client.get("/api/health").status_code == 404  # the viewer alone serves no API


def test_pages_are_self_contained_escaped_and_timed(viewer):
    service, client = viewer
    service.save_result(agent_id="a", status="failed", error='<script>alert("x")</script>',
                        execution_id="e-1", thread_id="t-1")
    page = client.get("/")
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page.text
    assert "<script>alert" not in page.text
    headers = page.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"
    assert re.fullmatch(r"app;dur=[\d.]+", headers["server-timing"])
    for path in ("/", "/runs/e-1", "/stats", "/ui/static/ui.js", "/ui/static/ui.css"):
        body = client.get(path).text
        # offline: nothing is fetched from anywhere but this server
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", body), path
        assert "@import" not in body and "url(http" not in body, path
    assert client.get("/ui/static/favicon.svg").headers["content-type"].startswith("image/svg")


def test_the_search_box_lists_matching_logs_and_traces_with_the_matches_marked(viewer):
    service, client = viewer
    service.save_result(agent_id="a", execution_id="e-1", status="failed", error="429")
    service.save_result(agent_id="b", execution_id="e-2", status="interrupted")
    service.save_trace(agent_id="a", execution_id="e-1", type="tool_error", name="search",
                       content="<b>HTTP 429</b>: Rate limit exceeded, retry <i>later</i>")
    service.save_log(agent_id="b", execution_id="e-2", level="warn",
                     message="rate limited by the flight API")
    service.save_log(agent_id="b", execution_id="e-2", message="nothing to see")

    page = client.get("/", params={"q": "rate limit*"})
    assert page.status_code == 200 and 'value="rate limit*"' in page.text
    found = re.findall(r'<tr class="hit [^"]*">.*?</tr>', page.text, re.S)
    assert len(found) == 2  # newest first: the log, then the trace
    assert 'href="/runs/e-2"' in found[0] and 'href="/runs/e-1"' in found[1]
    marks = [re.findall(r"<mark>(.*?)</mark>", hit) for hit in found]
    assert marks == [["rate", "limit"], ["Rate", "limit"]]  # a prefix marks what it matched
    assert "&lt;b&gt;HTTP 429&lt;/b&gt;" in found[1] and "<b>HTTP" not in page.text  # escaped
    assert "data-live" not in page.text  # a search does not watch for new runs

    by_filters = client.get("/", params={"q": "rate", "agent": "a", "status": "failed"})
    assert re.findall(r'href="/runs/(e-\d)"><code>', by_filters.text) == ["e-1"]
    assert "No log or trace matches" in client.get("/", params={"q": "nowhere"}).text
    bad = client.get("/", params={"q": '"**"'})
    assert bad.status_code == 400 and "has no word in it" in html.unescape(bad.text)
    assert '<option value="interrupted" selected' in client.get(
        "/", params={"status": "interrupted"}).text
    assert _runs(client, status="interrupted") == [
        r.id for r in service.find_results(status="interrupted")]


def test_the_stats_page_charts_runs_failures_durations_and_tokens(viewer):
    service, client = viewer
    now = dt.datetime.now(dt.UTC)
    rows = []
    for i, (agent, status, hours_ago) in enumerate(
            [("a", "completed", 1), ("a", "failed", 1), ("a", "completed", 30),
             ("b", "interrupted", 2), ("b", "completed", 24 * 20)]):
        at = now - dt.timedelta(hours=hours_ago)
        rows.append({
            "id": str(uuid.uuid4()), "agent_id": agent, "execution_id": f"e-{i}",
            "thread_id": None, "checkpoint_id": None, "quest_id": None, "result": None,
            "status": status, "error": "boom: the API is down" if status == "failed" else None,
            "metadata": {"usage": {"input_tokens": 10 * (i + 1), "output_tokens": 1,
                                   "total_tokens": 10 * (i + 1) + 1}},
            "created_at": at, "updated_at": at, "completed_at": at + dt.timedelta(seconds=i)})
        service.save_trace(agent_id=agent, execution_id=f"e-{i}", name="lookup",
                           type="tool_error" if status == "failed" else "tool_end",
                           content="boom: the API is down", duration=0.05, timestamp=at)
    with service.db.write() as conn:
        conn.execute(insert(agent_results), rows)
    per_day = Counter(r["created_at"].date() for r in rows
                      if r["created_at"] > now - dt.timedelta(days=7))

    week = client.get("/stats")
    assert week.status_code == 200
    tiles = dict(re.findall(r'<span class="label">([^<]+)</span> <span class="value">([^<]+)<',
                            week.text))
    assert tiles["Runs"] == "4" and tiles["Failed"] == "1" and tiles["Interrupted"] == "1"
    assert tiles["Tokens"] == f"{11 + 21 + 31 + 41:,}" and tiles["Tool calls"] == "4"
    charts = dict(re.findall(r'<figure class="chart (\w+)">(.*?)</figure>', week.text, re.S))
    assert list(charts) == ["runs", "failures", "durations", "tokens"]
    bars = [re.findall(r"<title>([^<]+)</title>", charts[name]) for name in ("runs", "failures")]
    assert sorted(int(t.split(": ")[1]) for t in bars[0]) == sorted(per_day.values())
    assert [t.split(": ")[1] for t in bars[1]] == ["1"]
    assert "per day" in charts["runs"]
    agents = re.findall(r'<a href="/stats\?agent=(\w)&amp;span=7d">', week.text)
    assert agents == ["a", "b"]  # busiest first
    assert "boom: the API is down" in week.text and "/?q=boom" in week.text

    day = client.get("/stats", params={"span": "24h", "agent": "a"})
    assert "per hour" in day.text and "Agent a" in day.text
    assert re.search(r'<span class="label">Runs</span> <span class="value">2<', day.text)
    assert 'class="by-agent"' not in day.text
    assert client.get("/stats", params={"span": "1y"}).status_code == 400
    month = client.get("/stats", params={"span": "30d"})
    assert re.search(r'<span class="label">Runs</span> <span class="value">5<', month.text)


def test_the_live_feed_follows_running_runs_until_they_end(viewer):
    service, client = viewer
    running = service.save_result(agent_id="a", execution_id="live-1")
    with client.stream("GET", "/ui/live", params={"run": running.id}) as response:
        events = parse_sse(response.iter_lines())
        first = next(events)
        assert first.event == "run" and first.data["status"] == "running"
        assert f'id="run-{running.id}"' in first.data["html"]
        service.update_result(running.id, status="completed", result="<b>done</b>")
        for event in events:
            if event.data.get("status") == "completed":
                assert "&lt;b&gt;done&lt;/b&gt;" in event.data["html"]
                break
        assert next(events).event == "done"

    newer = service.save_result(agent_id="a", execution_id="before").created_at.isoformat()
    with client.stream("GET", "/ui/live", params={"watch": 1, "newer": newer,
                                                  "agent": "a"}) as response:
        events = parse_sse(response.iter_lines())
        service.save_result(agent_id="other", execution_id="not counted")
        service.save_result(agent_id="a", execution_id="after")
        event = next(events)
        assert event.event == "new" and event.data == {"count": 1}


def test_the_token_gate_of_the_pages_and_the_unchanged_api(sqlite_url, monkeypatch):
    from browser_support import served_demo_app  # the demo's graph, served with a token

    monkeypatch.setenv("LANGCHAIN_PERSIST_API_TOKEN", TOKEN)
    with running_server(served_demo_app(sqlite_url)) as base, httpx.Client(
            base_url=base) as client:
        prompt = client.get("/threads/x?step=1")
        assert prompt.status_code == 401 and 'type="password"' in prompt.text
        assert 'name="next" value="/threads/x?step=1"' in prompt.text
        assert client.get("/ui/static/ui.css").status_code == 200  # assets hold no data
        login = client.post("/ui/login", data={"token": TOKEN, "next": "//evil.example/"})
        assert login.status_code == 303 and login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert "SameSite=strict" in cookie and "Path=/" in cookie
        assert client.get("/").status_code == 200  # the cookie is kept by the client
        assert client.get("/api/health").status_code == 401  # the API wants the header
        assert client.get("/api/health", headers={"Authorization": f"Bearer {TOKEN}"}
                          ).status_code == 200
        client.cookies.clear()
        client.cookies.set("langchain_persist_token", "wrong")
        again = client.get("/")
        assert again.status_code == 401 and "not accepted" in again.text
        logout = client.get("/ui/logout")
        assert logout.status_code == 303 and 'langchain_persist_token=""' in logout.headers[
            "set-cookie"]


def test_the_package_ships_every_template_and_asset():
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["langchain_persist"]
    files = [p.relative_to(ROOT / "langchain_persist").as_posix()
             for folder in ("templates", "static") for p in (SERVER / folder).iterdir()]
    assert files and all(any(fnmatch.fnmatch(f, pattern) for pattern in data) for f in files)
    assert "jinja2" in str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]["server"])


def test_the_ui_command_serves_the_viewer_read_only(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    ResultsPersistenceService(url).save_result(agent_id="cli", execution_id="e-cli")
    process = subprocess.Popen(
        [sys.executable, "-m", "langchain_persist", "ui", "--url", url, "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    try:
        timer = threading.Timer(60, process.kill)
        timer.start()
        lines = []
        for line in process.stdout:
            lines.append(line)
            if found := re.search(r"running on http://127\.0\.0\.1:(\d+)", line):
                break
        timer.cancel()
        assert found, "".join(lines)
        assert "The langchain-persist viewer" in "".join(lines) and "read-only" in "".join(lines)
        page = httpx.get(f"http://127.0.0.1:{found.group(1)}/", timeout=30)
        assert page.status_code == 200 and "e-cli"[:8] in page.text and "read-only" in page.text
    finally:
        process.terminate()
        process.wait(30)

    missing = subprocess.run(
        [sys.executable, "-m", "langchain_persist", "ui", "--url",
         f"sqlite:///{tmp_path / 'none.db'}"], capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "there is no database at" in missing.stderr


# -- the pure parts --------------------------------------------------------------------------


def test_a_diff_shows_what_each_channel_gained_or_lost():
    before = {"messages": [["user", "hi"]], "count": 1, "gone": True}
    after = {"messages": [["user", "hi"], {"type": "ai", "content": "hello", "tool_calls": []}],
             "count": 2, "new": {"a": 1}}
    changes = {c.channel: c for c in views.diff(before, after)}
    assert changes["messages"].kind == "appended" and changes["messages"].count == 1
    assert [(m.role, m.text) for m in changes["messages"].appended] == [("assistant", "hello")]
    assert changes["count"].kind == "changed" and changes["count"].before.text == "1"
    assert changes["gone"].kind == "removed" and changes["new"].kind == "added"
    assert views.diff(after, after) == []


def test_payloads_fold_when_long_and_json_is_indented():
    assert views.Payload.of(None) is None
    short = views.Payload.of('{"city": "Lisbon"}')
    assert not short.folded and short.text == '{\n  "city": "Lisbon"\n}'
    long = views.Payload.of("x" * 1000)
    assert long.folded and "1,000 characters" in long.summary
    assert views.messages([{"no": "message"}]) is None
