"""Where the database URL comes from, and connections that survive the server dropping them."""

from __future__ import annotations

import time

import psycopg
import pytest

from langchain_persist import ConfigurationError, ResultsPersistenceService
from langchain_persist._db.engine import Database, resolve_url


def test_url_precedence(monkeypatch) -> None:
    monkeypatch.delenv("LANGCHAIN_PERSIST_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    assert resolve_url() == "sqlite:///langchain_persist.db"
    monkeypatch.setenv("DATABASE_URL", "sqlite:///from-database-url.db")
    assert resolve_url() == "sqlite:///from-database-url.db"
    monkeypatch.setenv("LANGCHAIN_PERSIST_DATABASE_URL", "postgres://u@h/db")
    assert resolve_url() == "postgresql+psycopg://u@h/db"
    assert resolve_url("postgresql://u@h:5/db") == "postgresql+psycopg://u@h:5/db"
    assert resolve_url("runs/agent.db") == "sqlite:///runs/agent.db"


def test_default_is_a_sqlite_file_in_the_working_directory(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LANGCHAIN_PERSIST_DATABASE_URL", raising=False)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    service = ResultsPersistenceService()
    service.save_result(agent_id="a")
    service.close()
    assert (tmp_path / "langchain_persist.db").stat().st_size > 0


@pytest.mark.parametrize(
    ("url", "message"),
    [("mysql://u@h/db", "runs on SQLite and PostgreSQL"), ("://nope", "cannot parse")],
)
def test_unsupported_urls(url: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        Database(url)


def test_sqlite_is_in_wal_mode_with_a_busy_timeout(sqlite_url: str) -> None:
    db = Database(sqlite_url)
    with db.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000


def test_pool_survives_dropped_connections(pg_url: str, pg_admin_url: str) -> None:
    service = ResultsPersistenceService(pg_url)
    first = service.save_result(agent_id="a")
    name = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
            (name,),
        ).fetchone()
        assert killed and killed[0] >= 1
        for _ in range(100):  # until the backends are really gone, as after a restart
            left = admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (name,)
            ).fetchone()
            if left and left[0] == 0:
                break
            time.sleep(0.05)
    assert service.get_result(first.id) == first
    assert service.save_result(agent_id="a").agent_id == "a"
