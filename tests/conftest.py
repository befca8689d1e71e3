"""Fixtures: every database test runs on a real SQLite file and a fresh PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from langchain_persist import ResultsPersistenceService
from langchain_persist._db.engine import dispose_database

PG_ADMIN_URL = os.environ.get(
    "LANGCHAIN_PERSIST_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test"
)


def _admin() -> psycopg.Connection:
    try:
        return psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:  # fail, never skip: PostgreSQL tests must run
        raise RuntimeError(
            f"PostgreSQL is not reachable at {PG_ADMIN_URL} (set LANGCHAIN_PERSIST_TEST_PG, or "
            "start it: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start)"
        ) from exc


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database, dropped after the test."""
    name = f"lp_test_{uuid.uuid4().hex[:12]}"
    with _admin() as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    yield url
    dispose_database(url)
    with _admin() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
