"""What the handler keeps when its process ends: normal exit, exception, SIGTERM, SIGKILL,
and a run killed with SIGKILL then resumed from its checkpoint in a new process."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from langchain_persist import ResultsPersistenceService

CHILD = Path(__file__).parent / "handler_child.py"
CALLS = 300


def _start(url: str, run: uuid.UUID, mode: str, calls: int = CALLS,
           thread: str | None = None) -> subprocess.Popen[str]:
    args = [sys.executable, str(CHILD), url, str(run), mode, str(calls)]
    return subprocess.Popen([*args, *([thread] if thread else [])], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_ready(child: subprocess.Popen[str]) -> None:
    line = child.stdout.readline()  # type: ignore[union-attr]
    assert line == "ready\n", f"{line!r} {child.stderr.read() if child.poll() else ''}"  # type: ignore[union-attr]


def _tool_traces(service: ResultsPersistenceService, execution_id: str) -> Counter[str]:
    page = service.get_execution_traces(execution_id, limit=10_000)
    return Counter(t.type for t in page if t.type.startswith("tool"))


def test_every_event_survives_exit_exception_and_sigterm(db_url):
    """300 tool calls, then: a normal exit, an uncaught exception, SIGTERM, SIGKILL."""
    service = ResultsPersistenceService(db_url)
    service.find_results(limit=1)  # create the schema once, before the children race for it
    runs = {mode: uuid.uuid4() for mode in ("exit", "raise", "sigterm", "sigkill")}
    children = {
        mode: _start(db_url, run, "block" if mode.startswith("sig") else mode)
        for mode, run in runs.items()
    }
    for mode in ("sigterm", "sigkill"):
        _wait_ready(children[mode])
    children["sigterm"].send_signal(signal.SIGTERM)
    time.sleep(1.0)  # five flush intervals: SIGKILL may lose only what came after them
    children["sigkill"].send_signal(signal.SIGKILL)
    codes = {mode: child.wait(60) for mode, child in children.items()}
    assert codes == {"exit": 0, "raise": 1, "sigterm": -signal.SIGTERM,
                     "sigkill": -signal.SIGKILL}, {m: c.stderr.read() for m, c in children.items()}

    for mode in ("exit", "raise"):
        assert _tool_traces(service, str(runs[mode])) == {"tool_start": CALLS, "tool_end": CALLS}
        (result,) = service.find_results(execution_id=str(runs[mode]))
        assert result.status == "completed"
        logs = service.get_execution_logs(str(runs[mode]))
        assert [entry.message for entry in logs][-1] == "execution completed: LangGraph"
    for mode in ("sigterm", "sigkill"):  # the 301st call was running when the signal came
        traces = _tool_traces(service, str(runs[mode]))
        assert traces == {"tool_start": CALLS + 1, "tool_end": CALLS}, mode
        (result,) = service.find_results(execution_id=str(runs[mode]))
        assert result.status == "running"

    # A result left running by a dead process can be found and marked.
    stale = service.mark_stale_results(dt.timedelta(0), agent_id="exit-agent")
    assert sorted(stale) == sorted(
        r.id for r in service.find_results(agent_id="exit-agent", status="failed")
    )
    assert len(stale) == 2
    service.close()


def test_run_killed_then_resumed_in_a_new_process_is_not_traced_twice(db_url):
    """kill -9 during the 4th tool call, then resume the thread with PersistSaver."""
    service = ResultsPersistenceService(db_url)
    service.find_results(limit=1)
    first, second = uuid.uuid4(), uuid.uuid4()
    child = _start(db_url, first, "resume", calls=3, thread="t-resume")
    _wait_ready(child)
    time.sleep(1.0)  # past the flush interval
    child.kill()
    child.wait(30)

    resumed = _start(db_url, second, "continue", calls=3, thread="t-resume")
    out, err = resumed.communicate(timeout=60)
    assert resumed.returncode == 0, err
    assert "finished" in out

    before = service.get_execution_traces(str(first), limit=1000)
    after = service.get_execution_traces(str(second), limit=1000)
    ends = Counter(
        t.metadata["tool_call_id"] for t in [*before, *after] if t.type == "tool_end"
    )
    assert len(ends) == 4 and set(ends.values()) == {1}  # each call completed exactly once
    assert Counter(t.type for t in before if t.type.startswith("tool")) == {
        "tool_start": 4, "tool_end": 3,
    }
    assert Counter(t.type for t in after if t.type.startswith("tool")) == {
        "tool_start": 1, "tool_end": 1,
    }
    (done,) = service.find_results(execution_id=str(second))
    assert done.status == "completed" and done.result == "answer to go"
    assert done.thread_id == "t-resume" and done.checkpoint_id is not None
    (killed,) = service.find_results(execution_id=str(first))
    assert killed.status == "running"
    service.close()
