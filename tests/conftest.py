"""Fixtures: every database test runs on a real SQLite file and a fresh PostgreSQL database.

The PostgreSQL server is chosen once per session by `pg_support.pg_server` (the default URL if
a server answers there, else a throwaway one; ``LANGCHAIN_PERSIST_TEST_PG`` overrides).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from pg_support import VARIABLE, PgUnavailable, create_database, drop_database, pg_server

from langchain_persist import ResultsPersistenceService
from langchain_persist._db.engine import dispose_database

_SERVERS: list[str] = []  # the line that says where the PostgreSQL tests ran


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """The admin URL of the session's PostgreSQL server (started here if throwaway)."""
    with ExitStack() as stack:
        try:
            server = stack.enter_context(pg_server(os.environ.get(VARIABLE)))
        except PgUnavailable as exc:
            failure = str(exc)
        else:
            failure = None
        if failure is not None:  # fail, never skip: the PostgreSQL tests must run
            pytest.fail(failure, pytrace=False)
        _SERVERS.append(server.description)
        yield server.admin_url


def pytest_terminal_summary(terminalreporter) -> None:
    for description in _SERVERS:
        terminalreporter.write_line(f"PostgreSQL tests ran on {description}")


@pytest.fixture
def pg_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    url = create_database(pg_admin_url)
    yield url
    dispose_database(url)
    drop_database(pg_admin_url, url)


@pytest.fixture
def sqlite_url(tmp_path) -> Iterator[str]:
    """A SQLite file in the test's temporary directory."""
    url = f"sqlite:///{tmp_path / 'persist.db'}"
    yield url
    dispose_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request) -> str:
    """The same test on a SQLite file and on a fresh PostgreSQL database."""
    return request.getfixturevalue(f"{'pg' if request.param == 'postgresql' else 'sqlite'}_url")


@pytest.fixture
def service(db_url) -> Iterator[ResultsPersistenceService]:
    """A service on the test's database, schema upgraded."""
    svc = ResultsPersistenceService(db_url)
    yield svc
    svc.close()
