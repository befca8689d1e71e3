"""Resume across processes, kill -9 mid-run, two processes on one SQLite file."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from saver_graphs import agent_graph

from langchain_persist import PersistSaver

CHILD = [sys.executable, str(Path(__file__).parent / "saver_child.py")]


def test_resume_in_a_new_process_skips_finished_nodes(db_url: str, tmp_path: Path) -> None:
    first = subprocess.run([*CHILD, "first", db_url, "flaky", str(tmp_path)], capture_output=True,
                           text=True, timeout=120)
    assert first.returncode == 3 and "failed: b fails the first time" in first.stdout
    assert (tmp_path / "a.count").read_text() == "1"
    # the failed step's successful node left its writes pending on the checkpoint
    pending = PersistSaver.from_url(db_url).get_tuple({"configurable": {"thread_id": "flaky"}})
    assert pending is not None and "a" in {w[1] for w in pending.pending_writes or []}

    second = subprocess.run([*CHILD, "resume", db_url, "flaky", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "output: a done + b done" in second.stdout
    assert (tmp_path / "a.count").read_text() == "1"  # a was not run again


@pytest.mark.parametrize("durability", ["async", "sync"])
def test_kill_9_loses_no_acknowledged_checkpoint(db_url: str, durability: str) -> None:
    child = subprocess.Popen([*CHILD, "long", db_url, "killed", durability],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    acknowledged = [child.stdout.readline().strip() for _ in range(120)]
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL

    saver = PersistSaver.from_url(db_url)
    stored = {t.config["configurable"]["checkpoint_id"]: t
              for t in saver.list({"configurable": {"thread_id": "killed"}})}
    assert set(acknowledged) <= set(stored)
    for checkpoint_id in acknowledged:  # each one reads back whole
        tup = saver.get_tuple({"configurable": {"thread_id": "killed",
                                                "checkpoint_id": checkpoint_id}})
        assert tup is not None and tup.checkpoint["id"] == checkpoint_id
    # and the run resumes from the last one
    graph = agent_graph(70).compile(checkpointer=saver)
    out = graph.invoke(None, {"configurable": {"thread_id": "killed"}, "recursion_limit": 500})
    assert out["messages"][-1].content == "done after 70 tool calls"


def test_two_processes_share_one_sqlite_file(sqlite_url: str) -> None:
    PersistSaver.from_url(sqlite_url)  # schema first, as an application's start-up would
    procs = [subprocess.Popen([*CHILD, "agents", sqlite_url, f"p{n}"], stderr=subprocess.PIPE,
                              text=True) for n in range(2)]
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    saver = PersistSaver.from_url(sqlite_url)
    for n in range(2):
        for i in range(4):
            state = saver.get_tuple({"configurable": {"thread_id": f"p{n}-{i}"}})
            assert state is not None and len(state.checkpoint["channel_values"]["messages"]) == 62
