"""LangGraph's Agent Server hosts graphs with PersistSaver as its checkpointer.

``langgraph dev`` (langgraph-cli, in-memory runtime) is started as a user would, with
``"checkpointer": {"path": "langchain_persist.langgraph_server.checkpointer"}`` in its
langgraph.json, and driven with langgraph-sdk: a run stops at ``interrupt()``, the server is
restarted, the run is resumed and its history read back; a thread started in-process with
PersistSaver takes new input through the server.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from langgraph.types import Command
from langgraph_sdk import get_sync_client
from saver_graphs import approval_graph

from langchain_persist import PersistSaver

HERE = Path(__file__).parent
LANGGRAPH = Path(sys.executable).parent / "langgraph"
START_TIMEOUT = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def langgraph_dev(workdir: Path, url: str) -> Iterator[str]:
    """``langgraph dev`` in ``workdir`` on PersistSaver over ``url``; yields its base URL and
    stops it with Ctrl-C (SIGINT) afterwards."""
    config = {
        "dependencies": ["."],
        "graphs": {"agent": str(HERE / "langgraph_server_app.py") + ":graph"},
        "checkpointer": {"path": "langchain_persist.langgraph_server.checkpointer"},
    }
    (workdir / "langgraph.json").write_text(json.dumps(config))
    port = _free_port()
    env = {**os.environ, "LANGCHAIN_PERSIST_DATABASE_URL": url, "LANGSMITH_TRACING": "false",
           "LANGGRAPH_CLI_NO_ANALYTICS": "1", "PYTHONPATH": str(HERE)}  # fmt: skip
    log = (workdir / f"server-{port}.log").open("w")
    server = subprocess.Popen(
        [str(LANGGRAPH), "dev", "--no-browser", "--no-reload", "--port", str(port)],
        cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert server.poll() is None, (workdir / f"server-{port}.log").read_text()[-5000:]
            assert time.monotonic() < deadline, "langgraph dev did not start"
            try:
                if httpx.get(f"{base}/ok", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        yield base
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)
        log.close()


def _cfg(thread_id: str) -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id}}


def test_langgraph_dev_on_persist_saver(db_url: str, tmp_path: Path) -> None:
    # a thread started in-process, run to its end: later continued through the server
    local = approval_graph().compile(checkpointer=PersistSaver.from_url(db_url))
    here = str(uuid.uuid4())  # the server takes UUIDs for thread ids
    local.invoke({"request": "first", "log": []}, _cfg(here))
    local.invoke(Command(resume="ok"), _cfg(here))

    with langgraph_dev(tmp_path, db_url) as base:
        client = get_sync_client(url=base)
        thread_id = client.threads.create()["thread_id"]
        out = client.runs.wait(thread_id, "agent", input={"request": "deploy", "log": []})
        assert out["__interrupt__"][0]["value"] == {"question": "approve deploy?"}
        assert client.threads.get_state(thread_id)["next"] == ["approve"]

        client.threads.create(thread_id=here, if_exists="do_nothing")
        again = client.runs.wait(here, "agent", input={"request": "second", "log": []})
        assert again["__interrupt__"][0]["value"] == {"question": "approve second?"}
        log = next(tmp_path.glob("server-*.log")).read_text()
        assert "Using custom checkpointer: PersistSaver" in log  # ours, not the server's own
        assert "Custom checkpointer missing" not in log  # the whole protocol: no degradation

    # the server restarted: the thread is still waiting at the interrupt, and resumes
    with langgraph_dev(tmp_path, db_url) as base:
        client = get_sync_client(url=base)
        state = client.threads.get_state(thread_id)
        assert state["next"] == ["approve"]
        assert state["values"] == {"request": "deploy", "log": ["prepared deploy"]}
        done = client.runs.wait(thread_id, "agent", command={"resume": "approved"})
        assert done["log"] == ["prepared deploy", "decision: approved", "acted"]
        history = client.threads.get_history(thread_id, limit=20)
        steps = [h["metadata"]["step"] for h in history]
        assert steps == sorted(steps, reverse=True) and steps[0] >= 3 and steps[-1] == -1
        assert history[0]["values"]["log"] == done["log"] and history[0]["next"] == []

    # what the server stored is what PersistSaver reads in-process
    saver = PersistSaver.from_url(db_url)
    latest = saver.get_tuple(_cfg(thread_id))
    assert latest is not None
    assert latest.checkpoint["channel_values"]["log"] == done["log"]
    assert len(list(saver.list(_cfg(thread_id)))) == len(history)
    continued = saver.get_tuple(_cfg(here))
    assert continued is not None
    assert continued.checkpoint["channel_values"]["request"] == "second"
    saver.close()
