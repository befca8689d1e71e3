"""Resume across processes, kill -9 mid-run, two processes on one SQLite file."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langgraph.checkpoint.base import empty_checkpoint
from saver_graphs import agent_graph

from langchain_persist import PersistSaver, ValidationError

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


# -- rows deleted behind this process's back ---------------------------------------------------


def _delete_elsewhere(url: str, thread_id: str) -> None:
    """Delete a thread from another process (this one's caches never hear of it)."""
    subprocess.run([sys.executable, "-c", "import sys; from langchain_persist import "
                    "PersistSaver; PersistSaver.from_url(sys.argv[1]).delete_thread(sys.argv[2])",
                    url, thread_id], check=True, timeout=60)


def test_a_thread_deleted_by_another_process_is_written_again_whole(db_url: str) -> None:
    """Found by a review: this process stored a list as a tail of a base (a row it had stored
    before), which another process had deleted since: the new checkpoint could never be read,
    nor could ``list(None)``."""
    saver = PersistSaver.from_url(db_url)
    system = SystemMessage("You are a careful agent. " * 60, id="system")  # a long, stable head

    def put(parent: Any, messages: list[Any], step: int) -> Any:
        version = saver.get_next_version(None, None)
        checkpoint = {**empty_checkpoint(), "channel_values": {"messages": messages},
                      "channel_versions": {"messages": version}}
        config = {"configurable": {"thread_id": "t", "checkpoint_ns": "",
                                   **({"checkpoint_id": parent} if parent else {})}}
        return saver.put(config, checkpoint, {"step": step}, {"messages": version})

    first = [system, HumanMessage("hi", id="h1")]
    put(None, first, 0)  # stored whole: this process's base for the channel
    _delete_elsewhere(db_url, "t")
    again = put(None, [*first, HumanMessage("again", id="h2")], 0)  # a new conversation
    mid = put(again["configurable"]["checkpoint_id"], [*first, AIMessage("x", id="a1")], 1)
    _delete_elsewhere(db_url, "t")  # deleted while the run goes on
    late = put(mid["configurable"]["checkpoint_id"], [*first, AIMessage("y", id="a2")], 2)
    assert saver.get_tuple(again) is None  # deleted: gone, as with the official savers
    found = saver.get_tuple(late)
    assert found is not None  # readable; its list, written after the delete, is what was lost
    assert [t.config["configurable"]["checkpoint_id"] for t in saver.list(None)] == [
        late["configurable"]["checkpoint_id"]]
    fresh = put(None, [*first, HumanMessage("third", id="h3")], 0)  # no parent: written whole
    assert saver.get_tuple(fresh).checkpoint["channel_values"]["messages"][-1].content == "third"
    saver.close()


def test_prune_while_a_run_writes_keeps_every_new_checkpoint_whole(db_url: str) -> None:
    """Found by a review: on PostgreSQL, `prune` read the thread's checkpoints and, later, its
    values; the values of a checkpoint committed in between were deleted as unused (a race:
    the code before lost a checkpoint's values in 2 of 3 runs of this test)."""
    saver = PersistSaver.from_url(db_url)
    stop, lost, errors = time.monotonic() + 30, [], []

    def write() -> None:
        version, parent, step = None, None, 0
        while step < 1000 and time.monotonic() < stop and not lost:  # (lost near 240 before)
            step += 1
            version = saver.get_next_version(version, None)
            checkpoint = {**empty_checkpoint(), "channel_values": {"v": f"value {step}"},
                          "channel_versions": {"v": version}}
            config = saver.put({"configurable": {"thread_id": "p", "checkpoint_ns": "",
                                                 **({"checkpoint_id": parent} if parent else {})}},
                               checkpoint, {"step": step}, {"v": version})
            parent = config["configurable"]["checkpoint_id"]
            values = saver.get_tuple(config).checkpoint["channel_values"]
            if values.get("v") != f"value {step}":
                lost.append((step, values))

    def prune() -> None:
        while writer.is_alive():
            try:
                saver.prune(["p"])
            except Exception as exc:  # reported below
                errors.append(repr(exc))

    writer, pruner = threading.Thread(target=write), threading.Thread(target=prune)
    for thread in (writer, pruner):
        thread.start()
    for thread in (writer, pruner):
        thread.join()
    assert not lost and not errors, (lost[:3], errors[:3])
    saver.close()


def test_an_id_alone_is_not_taken_letter_by_letter(db_url: str) -> None:
    saver = PersistSaver.from_url(db_url)
    for method in (saver.prune, saver.delete_for_runs):
        with pytest.raises(ValidationError, match=r"a list of ids, not one: pass \['ab'\]"):
            method("ab")
    saver.close()
