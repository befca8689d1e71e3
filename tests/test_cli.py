"""The CLI against real databases: human output, --json, cleanup dry runs, errors that say what
to do, and ``logs --follow`` in a real process."""

from __future__ import annotations

import datetime as dt
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from rich.console import Console
from typer.testing import CliRunner

from langchain_persist import ResultsPersistenceService
from langchain_persist._cli.commands import app
from langchain_persist._cli.demo import DemoOutcome, run_demo

runner = CliRunner()


def cli(*args: str, code: int = 0) -> str:
    """Run the CLI in-process; check its exit code; return stdout and stderr together."""
    result = runner.invoke(app, list(args), env={"COLUMNS": "200"})
    assert result.exit_code == code, result.output
    return result.output


def cli_json(*args: str) -> object:
    return json.loads(runner.invoke(app, [*args, "--json"], env={"COLUMNS": "200"}).stdout)


@dataclass
class Stored:
    url: str
    demo: DemoOutcome

    @property
    def failed(self) -> str:
        return self.demo.execution_ids[0]


@pytest.fixture
def stored(db_url: str) -> Stored:
    """A database holding one demo thread: a failed, a paused and a completed run."""
    outcome = run_demo(db_url, Console(file=io.StringIO()), delay=0)
    return Stored(db_url, outcome)


def test_runs_list_and_show(stored: Stored) -> None:
    url, (failed, paused, done) = stored.url, stored.demo.execution_ids
    out = cli("runs", "list", "--url", url)
    assert all(x in out for x in (failed, paused, done, "failed", "completed", "travel-agent"))
    assert "✘ FlightApiTimeout" in out and "✔ Booked! TP 539" in out

    rows = cli_json("runs", "list", "--url", url)
    assert [r["execution_id"] for r in rows] == [done, paused, failed]  # newest first
    assert [r["execution_id"] for r in cli_json("runs", "list", "--status", "failed",
                                                "--url", url)] == [failed]
    assert len(cli_json("runs", "list", "--limit", "2", "--url", url)) == 2
    assert "pass --limit for more" in cli("runs", "list", "--limit", "2", "--url", url)
    assert "No runs match." in cli("runs", "list", "--agent", "nobody", "--url", url)
    assert len(cli_json("runs", "list", "--thread", stored.demo.thread_id, "--url", url)) == 3

    out = cli("runs", "show", failed, "--url", url)
    for seen in ("Result", "failed", "FlightApiTimeout", "Traces", "step 2 · tools",
                 "search_flights", "get_weather", "Logs", "execution failed"):
        assert seen in out, seen
    assert f"stopped at interrupt(); resumed by {done}" in cli("runs", "show", paused,
                                                                 "--url", url)
    shown = cli_json("runs", "show", failed, "--url", url)
    assert shown["result"]["status"] == "failed" and shown["interrupted"] is False
    groups = {g["label"]: g["children"] for g in shown["trace_tree"]}
    calls = {c["span"]["name"]: c["span"] for c in groups["step 2 · tools"]}
    assert calls["search_flights"]["status"] == "error"
    assert calls["get_weather"]["status"] == "ok" and calls["get_weather"]["duration_ms"] >= 0
    assert [log["level"] for log in shown["logs"]] == ["info", "error"]
    assert cli_json("runs", "show", paused, "--url", url)["interrupted"] is True
    by_result_id = cli_json("runs", "show", shown["result"]["id"], "--url", url)
    assert by_result_id["execution_id"] == failed


def test_logs_and_checkpoints(stored: Stored) -> None:
    url = stored.url
    out = cli("logs", stored.failed, "--url", url)
    assert "execution started: travel-agent" in out and "execution failed" in out
    logs = cli_json("logs", stored.failed, "--url", url)
    assert [log["level"] for log in logs] == ["info", "error"]

    out = cli("checkpoints", stored.demo.thread_id, "--url", url)
    assert f"Thread {stored.demo.thread_id}: 7 checkpoints" in out
    assert "error: FlightApiTimeout" in out
    assert "next: tools(get_weather), tools(search_flights)" in out
    found = cli_json("checkpoints", stored.demo.thread_id, "--url", url)
    assert [c["step"] for c in found] == [5, 4, 3, 2, 1, 0, -1]
    assert found[0]["state"] is None and found[0]["values"] == {"messages": "7 messages"}
    with_state = cli_json("checkpoints", stored.demo.thread_id, "--state", "--url", url)
    assert len(with_state[0]["state"]["messages"]) == 7
    assert "pass --limit for more" in cli("checkpoints", stored.demo.thread_id, "--limit", "2",
                                          "--url", url)


def _old_rows(url: str) -> ResultsPersistenceService:
    service = ResultsPersistenceService(url)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=40)
    service.save_logs(service.log_row(agent_id="a", execution_id="old", message=str(i),
                                      timestamp=old) for i in range(12))
    service.save_traces(service.trace_row(agent_id="a", execution_id="old", type="tool_end",
                                          timestamp=old) for _ in range(5))
    service.save_log(agent_id="a", execution_id="young", message="young")
    return service


def test_cleanup_dry_run_deletes_nothing_then_cleanup_deletes(db_url: str) -> None:
    service = _old_rows(db_url)
    out = cli("cleanup", "--older-than", "30d", "--dry-run", "--url", db_url)
    assert "Would delete 0 results, 12 logs, 5 traces older than 30 days" in out
    assert cli_json("cleanup", "--older-than", "4w", "--dry-run", "--url", db_url) == {
        "older_than": "28 days", "dry_run": True,
        "would_delete": {"results": 0, "logs": 12, "traces": 5},
    }
    assert len(service.get_execution_logs("old")) == 12  # the dry runs deleted nothing
    assert len(service.get_execution_traces("old")) == 5

    out = cli("cleanup", "--older-than", "30d", "--yes", "--url", db_url)
    assert "Deleted 0 results, 12 logs, 5 traces older than 30 days" in out
    assert service.get_execution_logs("old") == [] and service.get_execution_traces("old") == []
    assert [log.message for log in service.get_execution_logs("young")] == ["young"]
    assert "Nothing in" in cli("cleanup", "--older-than", "1d12h", "--url", db_url)
    assert cli_json("cleanup", "--older-than", "90s", "--url", db_url)["deleted"] == {
        "results": 0, "logs": 0, "traces": 0}
    service.close()


def test_errors_say_what_to_do(db_url: str, tmp_path) -> None:
    ResultsPersistenceService(db_url).db  # noqa: B018 - create the schema
    out = cli("runs", "show", "no-such-run", "--url", db_url, code=1)
    assert "nothing is stored for execution 'no-such-run'" in out and "runs list" in out
    assert "runs list" in cli("logs", "no-such-run", "--url", db_url, code=1)
    assert "no checkpoints stored for thread 'nope'" in cli("checkpoints", "nope", "--url",
                                                            db_url, code=1)
    assert "No runs stored yet" in cli("runs", "list", "--url", db_url)
    assert "--status must be one of" in cli("runs", "list", "--status", "done", "--url", db_url,
                                            code=2)
    assert "is not an age" in cli("cleanup", "--older-than", "soon", "--url", db_url, code=2)

    missing = tmp_path / "missing.db"
    out = cli("runs", "list", "--url", str(missing), code=1)
    assert "there is no database at" in out and "langchain-persist demo" in out
    assert not missing.exists()  # reading never creates a database


def test_hostile_arguments_get_one_line_that_names_the_fix(tmp_path) -> None:
    """Found by a review: each of these printed a traceback (or created a file)."""
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("hello")
    ok = f"sqlite:///{tmp_path / 'ok.db'}"
    ResultsPersistenceService(ok).db  # noqa: B018 - create the schema
    for args, code, said in [
        (("runs", "list", "--url", "sqlite:///"), 1, "an in-memory SQLite database"),
        (("runs", "list", "--url", "sqlite:///:memory:"), 1, "give a file"),
        (("runs", "list", "--url", "postgresql://u@[::1:5432/x"), 1, "cannot parse database URL"),
        (("db", "upgrade", "--url", f"sqlite:///{not_a_database}"), 1, "file is not a database"),
        (("db", "current", "--url", f"sqlite:///{not_a_database}"), 1, "file is not a database"),
        (("search", "x", "--since", "99999999999d", "--url", ok), 2, "the longest is"),
        (("stats", "--since", "1000000000000d", "--url", ok), 2, "the longest is 999999999d"),
        (("cleanup", "--older-than", "99999999999d", "--yes", "--url", ok), 2, "the longest"),
        (("ui", "--port", "99999", "--url", ok), 2, "65535"),
    ]:
        out = cli(*args, code=code)
        assert said in out and "Traceback" not in out, (args, out)
    for command in ("current", "check"):
        missing = tmp_path / "nowhere" / "x.db"
        out = cli("db", command, "--url", f"sqlite:///{missing}", code=1)
        assert "there is no database at" in out
        assert not missing.parent.exists()  # reading never creates a directory or a file
    assert "upgraded from empty" in cli("db", "upgrade", "--url", f"sqlite:///{missing}")


def test_old_schema_and_unreachable_database(pg_url: str, tmp_path) -> None:
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE unrelated (x)").connection.close()
    for url in (f"sqlite:///{empty}", pg_url):
        for args in (("runs", "list"), ("logs", "x"), ("checkpoints", "t"),
                     ("cleanup", "--older-than", "30d", "--dry-run")):
            out = cli(*args, "--url", url, code=1)
            assert "older than this code" in out and "langchain-persist db upgrade" in out, args
        assert cli_json("db", "current", "--url", url)["up_to_date"] is False
        cli("db", "upgrade", "--url", url)
        assert cli_json("db", "current", "--url", url)["up_to_date"] is True
        assert "No runs stored yet" in cli("runs", "list", "--url", url)

    out = cli("runs", "list", "--url", "postgresql://postgres@127.0.0.1:1/nowhere", code=1)
    assert "cannot reach postgresql+psycopg://postgres@127.0.0.1:1/nowhere" in out
    assert "is the server running" in out


# -- logs --follow in a real process -----------------------------------------------------------


def _ctrl_c_as_in_a_terminal() -> None:
    """In the child, before it starts: SIGINT at its default, as in a terminal.  A test run
    started as a shell's background job has SIGINT ignored, every child inherits that, and
    Python then keeps it ignored instead of raising KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Follower:
    """``langchain-persist logs --follow`` in a subprocess, its lines read as they come."""

    def __init__(self, url: str, execution_id: str, *extra: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "langchain_persist", "logs", execution_id, "--follow",
             "--interval", "0.05", "--url", url, *extra],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "COLUMNS": "200", "PYTHONFAULTHANDLER": "1"},
            preexec_fn=_ctrl_c_as_in_a_terminal,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self._errors: list[str] = []
        self._drain = threading.Thread(target=lambda: self._errors.extend(self.proc.stderr),
                                       daemon=True)
        self._drain.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()

    def wait_for(self, text: str) -> None:
        with self._changed:
            assert self._changed.wait_for(lambda: any(text in x for x in self.lines), 30), (
                self.lines)

    def finish(self) -> tuple[int, str]:
        """Wait for the exit (its stderr drained meanwhile); on a hang, fail with the stacks
        of its threads (faulthandler prints them on SIGABRT)."""
        try:
            code = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(30)
            self._drain.join(10)
            pytest.fail(f"the follower did not exit; its threads:\n{''.join(self._errors)}")
        self._drain.join(10)
        return code, "".join(self._errors)


@pytest.fixture
def running(db_url: str) -> Iterator[tuple[ResultsPersistenceService, str]]:
    service = ResultsPersistenceService(db_url)
    result = service.save_result(agent_id="a", execution_id="exec-live")
    service.save_log(agent_id="a", execution_id="exec-live", message="line one")
    yield service, result.id
    service.close()


def test_logs_follow_until_the_execution_ends(running, db_url: str) -> None:
    service, result_id = running
    follower = Follower(db_url, "exec-live")
    follower.wait_for("line one")
    service.save_log(agent_id="a", execution_id="exec-live", message="line two", level="warn")
    follower.wait_for("line two")
    service.update_result(result_id, status="completed", result="ok")
    service.save_log(agent_id="a", execution_id="exec-live", message="line three")
    code, errors = follower.finish()  # it stops by itself once the run is over
    assert code == 0, errors
    assert [x.split()[-2:] for x in follower.lines] == [
        ["line", "one"], ["line", "two"], ["line", "three"]]


def test_logs_follow_json_lines_and_ctrl_c(running, db_url: str) -> None:
    follower = Follower(db_url, "exec-live", "--json")
    follower.wait_for("line one")
    assert json.loads(follower.lines[0])["message"] == "line one"
    follower.proc.send_signal(signal.SIGINT)
    code, errors = follower.finish()
    assert code == 130 and "Traceback" not in errors
