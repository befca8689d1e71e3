"""The database stops in the middle of a run: the agent finishes, the counters say what was
lost, one warning says why, and the result is finished once the database is back."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from handler_support import ScriptedChatModel, echo
from langchain.agents import create_agent
from langchain_core.tools import tool
from tcp_proxy import outage as tcp_outage
from tcp_proxy import proxied

from langchain_persist import (
    BackgroundWriter,
    PersistCallbackHandler,
    ResultsPersistenceService,
    StorageError,
)
from langchain_persist._results.events import TraceEvent


@pytest.fixture
def outage(db_url, monkeypatch, request) -> Iterator[tuple[Callable[[], None], Callable[[], None]]]:
    """(stop, restart) for the test's database, without touching the shared server."""
    if db_url.startswith("sqlite"):  # another connection holds the write lock
        with tcp_outage(db_url, monkeypatch) as (_, stop, restart):
            yield stop, restart
        return
    name = db_url.rsplit("/", 1)[1]
    admin = psycopg.connect(request.getfixturevalue("pg_admin_url"), autocommit=True)

    def stop() -> None:  # no new connections, and every open one is cut
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()", (name,),
        )

    def restart() -> None:
        admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')

    yield stop, restart
    restart()
    admin.close()


def _dropping_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "is dropping" in r.getMessage()]


def _waiting_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.levelno == logging.WARNING and "they are kept" in r.getMessage()]


def _agent_in_an_outage(db_url: str, stop: Any, fail_at: int | None = None) -> tuple[
        ResultsPersistenceService, PersistCallbackHandler, Any]:
    """An agent of four tool calls whose second call stops the database (once its events so
    far are stored) and whose call ``fail_at`` raises."""
    service = ResultsPersistenceService(db_url)
    service.find_results(limit=1)
    handler = PersistCallbackHandler("outage", service=service, flush_interval=0.05)
    calls = []

    @tool
    def work(text: str) -> str:
        """Work."""
        calls.append(text)
        if len(calls) == 2:
            assert handler.flush(10)
            stop()
        if len(calls) == fail_at:
            raise RuntimeError("the flight API is down too")
        return f"worked {text}"

    return service, handler, create_agent(ScriptedChatModel(plan=[["work"]] * 4), [work])


def test_database_stops_mid_run(db_url, outage, caplog):
    """The agent finishes; nothing is dropped (the writer spools what it cannot store, says so
    once), and once the database is back every event and the end of the run are stored, each
    once."""
    service, handler, agent = _agent_in_an_outage(db_url, outage[0])
    restart = outage[1]
    run = uuid.uuid4()
    with caplog.at_level(logging.WARNING, logger="langchain_persist"):
        out = agent.invoke({"messages": [("user", "go")]}, {"callbacks": [handler], "run_id": run})
        assert out["messages"][-1].content == "answer to go"  # the agent finished
        assert handler.flush(10)
        assert handler.dropped == {"result_writes": 1}  # the end could not be written then...
        assert handler.writer.backlog > 0  # ...and it waits, with the events, on local disk
        assert len(_waiting_warnings(caplog)) == 1  # one warning for the whole outage
        assert any("is on local disk" in r.getMessage() for r in caplog.records)

        restart()
        handler.writer._retry_at = 0  # (no need to wait out the backoff here)
        assert handler.flush(10)
    (result,) = service.find_results(execution_id=str(run))
    assert result.status == "completed" and result.result == "answer to go"
    assert result.metadata["tool_calls"] == 4
    traces = service.get_execution_traces(str(run))
    assert [t.type for t in traces if t.type.startswith("tool")] == [
        "tool_start", "tool_end"] * 4  # every one, once
    assert len({t.id for t in traces}) == len(traces) == 4 * 2 + 5  # 4 tool calls, 5 models
    assert handler.writer.backlog == 0
    handler.close()
    service.close()


def test_a_run_that_fails_during_an_outage_is_stored_failed_with_its_reason(db_url, outage):
    """The agent fails while the database is away: once it is back, the row says failed, and
    why, and its events are there."""
    service, handler, agent = _agent_in_an_outage(db_url, outage[0], fail_at=3)
    restart = outage[1]
    run = uuid.uuid4()
    with pytest.raises(RuntimeError, match="the flight API is down too"):
        agent.invoke({"messages": [("user", "go")]}, {"callbacks": [handler], "run_id": run})
    assert handler.flush(10) and handler.writer.backlog > 0  # waiting on local disk
    restart()
    handler.writer._retry_at = 0  # (no need to wait out the backoff here)
    assert handler.flush(10)
    (result,) = service.find_results(execution_id=str(run))
    assert result.status == "failed" and "the flight API is down too" in result.error
    types = [t.type for t in service.get_execution_traces(str(run)) if t.type.startswith("tool")]
    assert types == ["tool_start", "tool_end"] * 2 + ["tool_start", "tool_error"]
    assert handler.writer.backlog == 0 and "traces" not in handler.dropped
    handler.close()
    service.close()


def test_without_a_spool_an_outage_drops_and_counts(db_url, outage, caplog):
    """``spool=False``: what the database cannot take is dropped, counted, and said once."""
    stop, restart = outage
    service = ResultsPersistenceService(db_url)
    service.find_results(limit=1)
    handler = PersistCallbackHandler("outage", service=service, flush_interval=0.05, spool=False)
    agent = create_agent(ScriptedChatModel(plan=[["echo"]] * 2), [echo])
    stop()
    with caplog.at_level(logging.WARNING, logger="langchain_persist"):
        agent.invoke({"messages": [("user", "go")]}, {"callbacks": [handler]})
        assert handler.flush(10)
    assert handler.dropped["traces"] == 2 * 2 + 3 and handler.dropped["result_writes"] == 1
    assert len(_dropping_warnings(caplog)) == 1
    restart()
    handler.close()
    service.close()


def test_raise_error_makes_result_writes_blocking(db_url, outage):
    stop, _ = outage
    service = ResultsPersistenceService(db_url)
    service.find_results(limit=1)
    strict = PersistCallbackHandler("strict", service=service, raise_error=True)
    lenient = PersistCallbackHandler("lenient", service=service, writer=strict.writer)
    agent = create_agent(ScriptedChatModel(plan=[["echo"]]), [echo])
    stop()
    with pytest.raises(StorageError, match="could not save the result"):
        agent.invoke({"messages": [("user", "x")]}, {"callbacks": [strict]})
    out = agent.invoke({"messages": [("user", "x")]}, {"callbacks": [lenient]})
    assert out["messages"][-1].content == "answer to x"
    # the running row was left to the writer; the end of the run is the one blocking write
    assert lenient.dropped["result_writes"] == 1
    assert strict.active_runs == lenient.active_runs == 0
    strict.close()
    service.close()


def test_a_sustained_load_is_stored_once_in_fewer_transactions_on_postgresql(db_url):
    """Rows that pile up faster than they are stored: on PostgreSQL the batches waiting go in
    one transaction (up to max_batch_bytes), each commit being a WAL flush; on SQLite every
    transaction stays one batch, as other writers wait for its lock."""

    class Counted(ResultsPersistenceService):
        stores: list[int] = []

        def insert_events(self, kind: str, rows: list[Any], **kwargs: Any) -> Any:
            self.stores.append(len(rows))
            return super().insert_events(kind, rows, **kwargs)

    service = Counted(db_url)
    writer = BackgroundWriter(service, batch_size=100, max_queue=50_000, spool=False)
    for i in range(20_000):
        writer.put(TraceEvent("a", "e-load", "tool_end", "t", f"out {i}", None, None, None,
                              time.time()))
    assert writer.flush(120)
    assert writer.written["traces"] == 20_000 and not writer.dropped
    with service.db.engine.connect() as conn:
        stored = conn.exec_driver_sql(
            "SELECT count(DISTINCT id) FROM agent_traces WHERE execution_id = 'e-load'").scalar()
    assert stored == 20_000 == sum(service.stores)
    if db_url.startswith("postgresql"):
        assert max(service.stores) > 100 and len(service.stores) < 200
    else:
        assert max(service.stores) <= 100
    writer.close()
    service.close()


def test_full_queue_drops_and_never_blocks(service, caplog):
    writer = BackgroundWriter(service, max_queue=10, flush_interval=0.05)
    with caplog.at_level(logging.WARNING, logger="langchain_persist"):
        accepted = sum(
            writer.put(TraceEvent("a", "e-full", "tool_start", "t", i, None, None, None,
                                  time.time()))
            for i in range(5000)
        )
        assert writer.flush(10)
    assert writer.dropped["queue_full"] == 5000 - accepted > 0
    assert writer.written["traces"] == accepted
    assert len(service.get_execution_traces("e-full", limit=10_000)) == accepted
    assert len(_dropping_warnings(caplog)) == 1
    writer.close()
    assert not writer.put(TraceEvent("a", "e-full", "x", None, None, None, None, None, 0.0))
    assert writer.dropped["closed"] == 1


def test_a_database_that_never_answers_fails_a_connect_rather_than_hang(pg_url):
    """A host behind a network that drops packets: the connection attempt gives up (after
    `NETWORK_SETTINGS`' connect_timeout) with an error that says so; libpq's default waits for
    ever."""
    with proxied(pg_url) as (through, proxy):
        proxy.freeze()
        service = ResultsPersistenceService(through)
        with pytest.raises(StorageError, match="timeout expired"):
            service.ping()
        service.close()
