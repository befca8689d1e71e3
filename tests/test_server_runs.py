"""The agent service against a real uvicorn server: every SSE event where it belongs, retries
from the last checkpoint, resume, interrupts, the recursion warning, disconnects, concurrency
and live events re-joined with Last-Event-ID, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter

import httpx
import pytest
import server_graphs
from server_support import Sse, names, parse_sse, post_events, running_server, wait_for

from langchain_persist.server import create_app

AGENT = "agent-1"


@pytest.fixture
def base_url(db_url):
    app = create_app(server_graphs.agent, url=db_url, retry_delay=0, max_retries=2)
    with running_server(app) as url:
        yield url


@pytest.fixture
def client(base_url):
    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c


def unique(label: str) -> str:
    """A task label of this test only: gates and failures are kept per label."""
    return f"{label}-{uuid.uuid4().hex[:8]}"


def execute(client: httpx.Client, task: str, **body) -> list[Sse]:
    return post_events(client, "/api/agents/execute", {"agentId": AGENT, "task": task, **body})


def resume(client: httpx.Client, checkpoint_id: str, agent: str = AGENT, **body) -> list[Sse]:
    return post_events(client, f"/api/agents/{agent}/resume",
                       {"checkpointId": checkpoint_id, **body})


def by_name(events: list[Sse], name: str) -> list[dict]:
    return [e.data for e in events if e.event == name]


def test_execute_streams_each_event_and_persists_the_run(client):
    task = "tools :: echo / echo,echo"
    events = execute(client, task, questId="quest-7", estimatedTokens=500)

    assert [e.id for e in events] == list(range(1, len(events) + 1))
    assert events[0].event == "start" and events[-1].event == "complete"
    start, complete = events[0].data, events[-1].data
    counts = Counter(names(events))
    assert counts["thinking"] == 3  # one per model call
    assert counts["tool_start"] == counts["tool_end"] == 3
    tokens = "".join(d["token"] for d in by_name(events, "token"))
    assert tokens == complete["output"] == f"answer to {task}"
    assert {d["output"] for d in by_name(events, "tool_end")} == {
        f"echo {task}#{i}" for i in range(3)
    }
    assert by_name(events, "tool_start")[0]["input"] == {"text": f"{task}#0"}
    assert complete["resultId"] == start["resultId"]
    assert complete["threadId"] == start["threadId"]
    assert complete["checkpointId"]

    result = client.get(f"/api/results/{start['resultId']}").json()
    assert result["status"] == "completed" and result["result"] == complete["output"]
    assert (result["agentId"], result["executionId"], result["questId"]) == (
        AGENT, start["executionId"], "quest-7")
    assert result["checkpointId"] == complete["checkpointId"]
    assert result["metadata"]["estimated_tokens"] == 500
    assert result["metadata"]["tool_calls"] == 3 and result["metadata"]["llm_calls"] == 3

    # persisted by the time `complete` arrives: traces, logs and the checkpoint
    traces = client.get(f"/api/executions/{start['executionId']}/traces").json()["items"]
    assert Counter(t["type"] for t in traces if t["type"].startswith("tool_")) == {
        "tool_start": 3, "tool_end": 3}
    logs = client.get(f"/api/executions/{start['executionId']}/logs").json()["items"]
    messages = [log["message"] for log in logs]
    assert messages[0] == "execution started" and messages[-1] == "execution completed"
    checkpoint = client.get(f"/api/checkpoints/{complete['checkpointId']}").json()
    assert (checkpoint["agentId"], checkpoint["threadId"]) == (AGENT, start["threadId"])
    assert len(checkpoint["state"]["messages"]) == 7  # task, 2 tool rounds (3 calls), answer


def test_a_failed_tool_is_retried_from_the_last_checkpoint(client):
    task = "retry :: echo / flaky"
    server_graphs.FAILURES["retry"] = 1
    events = execute(client, task)

    assert names(events)[-1] == "complete"
    (error,) = by_name(events, "tool_error")
    assert error["tool"] == "flaky" and "flaky failed" in error["error"]
    (retry,) = by_name(events, "retry")
    assert retry["attempt"] == 2 and retry["maxAttempts"] == 3 and retry["checkpointId"]
    assert "RuntimeError: flaky failed" in retry["error"]
    order = names(events)
    assert order.index("tool_error") < order.index("retry") < len(order) - 1
    # resumed, not restarted: echo and the first two model calls are not run again
    assert [d["tool"] for d in by_name(events, "tool_start")] == ["echo", "flaky", "flaky"]
    assert len(by_name(events, "thinking")) == 3
    complete = events[-1].data
    assert complete["attempts"] == 2 and complete["output"] == f"answer to {task}"

    result = client.get(f"/api/results/{complete['resultId']}").json()
    assert result["status"] == "completed" and result["metadata"]["attempts"] == 2
    # counted over both attempts: echo, flaky (failed), flaky; three model calls
    assert (result["metadata"]["tool_calls"], result["metadata"]["llm_calls"]) == (3, 3)
    assert result["metadata"]["usage"]["total_tokens"] == 45
    # one result row for the execution, whatever the number of attempts
    page = client.get(f"/api/agents/{AGENT}/results").json()
    assert [r["id"] for r in page["items"]] == [complete["resultId"]]
    logs = client.get(f"/api/executions/{complete['executionId']}/logs").json()["items"]
    assert any(log["level"] == "warn" and log["message"].startswith("retrying: attempt 2")
               for log in logs)


def test_exhausted_retries_fail_and_the_resume_endpoint_finishes_the_run(client):
    task = "exhaust :: echo / flaky"
    server_graphs.FAILURES["exhaust"] = 2
    events = execute(client, task, maxRetries=1)

    assert names(events)[-1] == "error"
    assert len(by_name(events, "tool_error")) == 2 and len(by_name(events, "retry")) == 1
    error = events[-1].data
    assert "RuntimeError: flaky failed" in error["message"] and error["attempts"] == 2
    assert error["resultId"] == events[0].data["resultId"] and error["checkpointId"]
    failed = client.get(f"/api/results/{error['resultId']}").json()
    assert failed["status"] == "failed" and "flaky failed" in failed["error"]
    assert failed["checkpointId"] == error["checkpointId"]

    resumed = resume(client, error["checkpointId"])
    assert names(resumed)[0] == "start" and names(resumed)[-1] == "complete"
    start, complete = resumed[0].data, resumed[-1].data
    assert start["executionId"] != error["executionId"]
    assert start["threadId"] == error["threadId"]
    assert [d["tool"] for d in by_name(resumed, "tool_start")] == ["flaky"]  # only what failed
    assert complete["output"] == f"answer to {task}"
    result = client.get(f"/api/results/{complete['resultId']}").json()
    assert result["status"] == "completed"
    assert result["metadata"]["resumed_from"] == error["checkpointId"]
    assert client.get(f"/api/results/{error['resultId']}").json()["status"] == "failed"


def test_an_interrupt_is_resumed_with_a_value(client):
    task = "approve :: ask"
    events = execute(client, task)

    complete = events[-1].data
    assert names(events)[-1] == "complete"
    assert "tool_error" not in names(events)  # an interrupt is no failure
    (waiting,) = complete["interrupts"]
    assert waiting["value"] == {"question": f"may I go on with {task}#0?"}
    assert complete["status"] == "interrupted"
    result = client.get(f"/api/results/{complete['resultId']}").json()
    assert result["status"] == "interrupted" and result["metadata"]["interrupted"] is True
    listed = client.get(f"/api/agents/{AGENT}/results", params={"status": "interrupted"}).json()
    assert [r["id"] for r in listed["items"]] == [complete["resultId"]]

    refused = client.post(f"/api/agents/{AGENT}/resume",
                          json={"checkpointId": complete["checkpointId"]})
    assert refused.status_code == 409 and "send its answer as resume" in refused.json()["detail"]

    resumed = resume(client, complete["checkpointId"], resume="yes")
    assert [d["output"] for d in by_name(resumed, "tool_end")] == ["approved: yes"]
    done = resumed[-1].data
    assert names(resumed)[-1] == "complete" and "interrupts" not in done
    assert done["output"] == f"answer to {task}" and done["status"] == "completed"
    before = client.get(f"/api/results/{complete['resultId']}").json()
    assert before["status"] == "completed"  # resumed: it waits no more
    assert before["metadata"]["resumed_by"] == done["executionId"]

    again = client.post(f"/api/agents/{AGENT}/resume",
                        json={"checkpointId": done["checkpointId"], "resume": "no"})
    assert again.status_code == 409 and "not waiting" in again.json()["detail"]


def test_additional_instructions_continue_a_finished_run(client):
    first = execute(client, "first")[-1].data
    nothing = client.post(f"/api/agents/{AGENT}/resume",
                          json={"checkpointId": first["checkpointId"]})
    assert nothing.status_code == 409 and "additionalInstructions" in nothing.json()["detail"]

    events = resume(client, first["checkpointId"], additionalInstructions="more :: echo")
    complete = events[-1].data
    assert [d["tool"] for d in by_name(events, "tool_start")] == ["echo"]
    assert complete["output"] == "answer to more :: echo"
    state = client.get(f"/api/agents/{AGENT}/checkpoints/{complete['checkpointId']}").json()
    contents = [m["content"] for m in state["state"]["messages"]]
    assert contents[:2] == ["first", "answer to first"]
    assert contents[2] == "more :: echo" and contents[-1] == "answer to more :: echo"


def test_nearing_the_recursion_limit_warns(client):
    task = "loop :: echo / echo / echo / echo"  # 9 super-steps
    events = execute(client, task, recursionLimit=10)
    (warning,) = by_name(events, "warning")
    assert warning["recursionLimit"] == 10 and warning["step"] == 8
    assert names(events)[-1] == "complete"
    assert names(events).index("warning") < len(events) - 1

    over = execute(client, task, recursionLimit=6)
    assert by_name(over, "warning") and names(over)[-1] == "error"
    assert not by_name(over, "retry")  # a retry would hit the same limit
    error = over[-1].data
    assert "GraphRecursionError" in error["message"] and error["attempts"] == 1
    logs = client.get(f"/api/executions/{error['executionId']}/logs").json()["items"]
    assert any(log["level"] == "warn" and "recursion limit" in log["message"] for log in logs)


def test_a_client_that_disconnects_does_not_stop_the_run(client):
    label = unique("leave")
    task = f"{label} :: wait"
    with client.stream("POST", "/api/agents/execute",
                       json={"agentId": AGENT, "task": task}) as response:
        seen = []
        for event in parse_sse(response.iter_lines()):
            seen.append(event)
            if event.event == "tool_start":
                break
    start = seen[0].data
    execution = f"/api/executions/{start['executionId']}"
    assert client.get(execution).json()["running"] is True
    server_graphs.gate(label).set()  # the run goes on with nobody listening

    done = wait_for(lambda: (r := client.get(execution).json())["result"]["status"]
                    == "completed" and r, what="the run to complete")
    assert done["result"]["result"] == f"answer to {task}"
    traces = client.get(f"{execution}/traces").json()["items"]
    assert [t["content"] for t in traces if t["type"] == "tool_end"] == [f"waited {task}#0"]
    # what the client missed is still there to follow
    with client.stream("GET", f"{execution}/events") as response:
        replay = list(parse_sse(response.iter_lines()))
    assert replay[:len(seen)] == seen and names(replay)[-1] == "complete"


async def test_twenty_concurrent_executions(base_url):
    agent = "agent-many"

    async def one(client: httpx.AsyncClient, i: int) -> list[Sse]:
        body = {"agentId": agent, "task": f"job-{i} :: echo"}
        async with client.stream("POST", "/api/agents/execute", json=body) as response:
            assert response.status_code == 200
            return list(parse_sse([line async for line in response.aiter_lines()]))

    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:
        runs = await asyncio.gather(*(one(client, i) for i in range(20)))
        results, cursor = [], None
        while True:  # the agent's results, 7 a page
            params = {"limit": 7, **({"cursor": cursor} if cursor else {})}
            page = (await client.get(f"/api/agents/{agent}/results", params=params)).json()
            results += page["items"]
            if not (cursor := page["nextCursor"]):
                break

    for i, events in enumerate(runs):
        assert names(events)[-1] == "complete", events[-1]
        assert events[-1].data["output"] == f"answer to job-{i} :: echo"
        assert by_name(events, "tool_end")[0]["output"] == f"echo job-{i} :: echo#0"
    assert len({events[0].data["threadId"] for events in runs}) == 20
    assert len(results) == 20 and {r["status"] for r in results} == {"completed"}
    assert {r["executionId"] for r in results} == {e[0].data["executionId"] for e in runs}


def test_live_events_joined_late_and_rejoined_with_last_event_id(client):
    label = unique("live")
    task = f"{label} :: wait / wait"
    with client.stream("POST", "/api/agents/execute",
                       json={"agentId": AGENT, "task": task}) as owner:
        lines = owner.iter_lines()
        stream = parse_sse(lines)
        first = next(stream)
        execution = first.data["executionId"]
        url = f"/api/executions/{execution}/events"

        # another client joins late: it gets everything so far, then live events
        with client.stream("GET", url) as late:
            assert late.headers["x-execution-id"] == execution
            joined = []
            for event in parse_sse(late.iter_lines()):
                joined.append(event)
                if event.event == "tool_start":
                    break
        assert joined[0] == first
        last = joined[-1].id

        # the thread is busy meanwhile
        busy = client.post("/api/agents/execute", json={
            "agentId": AGENT, "task": "x", "threadId": first.data["threadId"]})
        assert busy.status_code == 409 and execution in busy.json()["detail"]

        server_graphs.gate(label, 0).set()  # events flow while the late client is away
        with client.stream("GET", url, headers={"Last-Event-ID": str(last)}) as back:
            assert "x-events-missed" not in back.headers
            rejoined = []
            for event in parse_sse(back.iter_lines()):
                rejoined.append(event)
                if event.event == "tool_start":
                    server_graphs.gate(label, 1).set()
        everything = [first, *stream]

    assert names(everything)[-1] == "complete"
    assert [e.id for e in rejoined] == list(range(last + 1, everything[-1].id + 1))
    assert joined + rejoined == everything
    # a finished execution's events stay: a re-join after the end replays the rest
    with client.stream("GET", url, params={"lastEventId": everything[-3].id}) as response:
        assert list(parse_sse(response.iter_lines())) == everything[-2:]


def test_a_server_stop_fails_running_runs_so_that_they_can_be_resumed(db_url):
    label = unique("stop")
    task = f"{label} :: echo / wait"
    app = create_app(server_graphs.agent, url=db_url, shutdown_timeout=0.2, retry_delay=0)
    with (running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client,
          client.stream("POST", "/api/agents/execute",
                        json={"agentId": AGENT, "task": task}) as response):
        for event in parse_sse(response.iter_lines()):
            if event.event == "start":
                execution = event.data["executionId"]
            if event.event == "tool_start" and event.data["tool"] == "wait":
                break
    # stopped mid-run; a new server on the same database takes over
    app = create_app(server_graphs.agent, url=db_url, retry_delay=0)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        result = client.get(f"/api/executions/{execution}").json()["result"]
        assert result["status"] == "failed"
        assert "the server stopped before the run finished" in result["error"]
        gone = client.get(f"/api/executions/{execution}/events")
        assert gone.status_code == 410 and "no longer kept" in gone.json()["detail"]

        server_graphs.gate(label, 1).set()  # the second tool call of the task
        resumed = resume(client, result["checkpointId"])
        assert [d["tool"] for d in by_name(resumed, "tool_start")] == ["wait"]
        assert resumed[-1].data["output"] == f"answer to {task}"
