"""Database URLs, engines and pools: the one place that knows SQLite from PostgreSQL."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, SQLAlchemyError

from .._errors import ConfigurationError, StorageError
from .._sanitize import dumps

DEFAULT_SQLITE_FILE = "langchain_persist.db"
URL_VARIABLES = ("LANGCHAIN_PERSIST_DATABASE_URL", "DATABASE_URL")
SQLITE_BUSY_TIMEOUT_MS = 30_000
PING_AFTER_IDLE_S = 1.0


def resolve_url(url: str | None = None) -> str:
    """The URL to use: the argument, else the environment, else a SQLite file here.

    Plain ``postgresql://`` and ``postgres://`` URLs are served by psycopg 3, and a bare file
    path (no ``://``) means a SQLite file.
    """
    url = url or next((os.environ[v] for v in URL_VARIABLES if os.environ.get(v)), None)
    if not url:
        return f"sqlite:///{DEFAULT_SQLITE_FILE}"
    if "://" not in url:
        return f"sqlite:///{Path(url)}"
    scheme, rest = url.split("://", 1)
    if scheme in ("postgres", "postgresql"):
        return f"postgresql+psycopg://{rest}"
    return url


class Database:
    """One engine (with its pool) and the transactions the store runs in."""

    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        try:
            parsed = make_url(self.url)
        except ArgumentError as exc:
            raise ConfigurationError(
                f"cannot parse database URL {self.url!r}: use sqlite:///path/to/file.db "
                "or postgresql://user@host:5432/dbname"
            ) from exc
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(self.url)
        elif self.dialect == "postgresql":
            self.engine = _postgres_engine(self.url)
        else:
            raise ConfigurationError(
                f"unsupported database {self.dialect!r} in {parsed.render_as_string()!r}: "
                "langchain-persist runs on SQLite and PostgreSQL"
            )
        self._writer = self.engine.execution_options(sqlite_immediate=True)
        # PostgreSQL: a second pool of autocommit connections, so reads and one-statement writes
        # skip the BEGIN and COMMIT round trips (SQLite: the same pool, BEGIN issued by hand)
        self.fast = (
            _postgres_engine(self.url, isolation_level="AUTOCOMMIT")
            if self.dialect == "postgresql"
            else self.engine
        )
        self.schema_checked = False
        self.lock = threading.Lock()
        # SQLite takes one writer at a time: threads of this process queue here, rather than
        # in SQLite's busy handler, which sleeps a millisecond or more per retry
        self._sqlite_writer: AbstractContextManager[Any] = (
            threading.Lock() if self.dialect == "sqlite" else nullcontext()
        )

    def __repr__(self) -> str:
        return f"Database({make_url(self.url).render_as_string()!r})"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (autocommit on PostgreSQL, a rolled back read on SQLite)."""
        with self.fast.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed at the end (``BEGIN IMMEDIATE`` on SQLite)."""
        with self._sqlite_writer, self._writer.begin() as conn:
            yield conn

    @contextmanager
    def cursor(self, *, write: bool = False) -> Iterator[Any]:
        """A raw DBAPI cursor for the hot paths (see `_store._prepared`).

        On PostgreSQL it is in autocommit mode: each statement the store runs commits by
        itself.  On SQLite a write runs in one ``BEGIN IMMEDIATE`` transaction.  Driver errors
        come out as `StorageError`, and a connection that failed is not reused.
        """
        in_transaction = write and self.dialect == "sqlite"
        with self._sqlite_writer if write else nullcontext():
            try:
                conn = self.fast.raw_connection()
            except (self.fast.dialect.loaded_dbapi.Error, SQLAlchemyError) as exc:
                raise self._failed(write, exc) from exc
            try:
                cur = conn.cursor()
                if in_transaction:
                    cur.execute("BEGIN IMMEDIATE")
                try:
                    yield cur
                except BaseException:
                    if in_transaction:
                        cur.execute("ROLLBACK")
                    raise
                if in_transaction:
                    cur.execute("COMMIT")
            except self.fast.dialect.loaded_dbapi.Error as exc:
                conn.invalidate(exc)
                raise self._failed(write, exc) from exc
            finally:
                conn.close()

    def _failed(self, write: bool, exc: BaseException) -> StorageError:
        text = str(exc).strip()
        first_line = text.splitlines()[0] if text else ""
        return StorageError(
            f"{'writing to' if write else 'reading from'} {self!r} failed: "
            f"{type(exc).__name__}: {first_line}"
        )

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
        if self.fast is not self.engine:
            self.fast.dispose()


_databases: dict[str, Database] = {}
_databases_lock = threading.Lock()


def get_database(url: str | None = None) -> Database:
    """The process-wide `Database` for a URL, so that every part shares one pool."""
    resolved = resolve_url(url)
    with _databases_lock:
        db = _databases.get(resolved)
        if db is None:
            db = _databases[resolved] = Database(resolved)
        return db


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=8,
        max_overflow=16,
        json_serializer=dumps,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
        cursor = dbapi_conn.cursor()
        for pragma in (
            "journal_mode=WAL",  # readers never block the writer
            "synchronous=NORMAL",  # durable against a killed process, one fsync per checkpoint
            f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",  # wait for the lock, not "database is locked"
            "foreign_keys=ON",
        ):
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _postgres_engine(url: str, **options: Any) -> Engine:
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ConfigurationError(
            "PostgreSQL needs psycopg 3: pip install 'langchain-persist[postgres]'"
        ) from exc
    engine = create_engine(
        url,
        pool_size=10,
        max_overflow=20,
        pool_recycle=1800,
        connect_args={"prepare_threshold": _prepare_threshold()},
        json_serializer=dumps,
        **options,
    )

    # A cheaper pre-ping: a pooled connection is pinged on checkout only when it sat idle for
    # a while or its socket has something to read (what a server that went away leaves behind:
    # a termination notice or EOF).  A busy connection costs no extra round trip.
    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_conn, record) -> None:  # type: ignore[no-untyped-def]
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        idle = time.monotonic() - record.info.get("idle_since", 0.0)
        if idle < PING_AFTER_IDLE_S and not _readable(dbapi_conn):
            return
        try:
            dbapi_conn.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception as exc:  # any failure means: use a new connection
            raise DisconnectionError(f"stale pooled connection: {exc}") from exc

    return engine


def _prepare_threshold() -> int | None:
    """Server-side prepared statements: on (statements are planned once per connection), or
    off with ``LANGCHAIN_PERSIST_PG_PREPARE=off`` for a pooler that cannot keep them (PgBouncer
    before 1.21 in transaction mode)."""
    setting = os.environ.get("LANGCHAIN_PERSIST_PG_PREPARE", "on").strip().lower()
    if setting in ("off", "0", "false", "no"):
        return None
    if setting in ("on", "1", "true", "yes"):
        return 0
    raise ConfigurationError(
        f"LANGCHAIN_PERSIST_PG_PREPARE must be 'on' or 'off', not {setting!r}"
    )


def _readable(dbapi_conn: Any) -> bool:
    """Whether an idle connection's socket has data waiting (a notice, or EOF)."""
    try:
        return bool(select.select([dbapi_conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def dispose_database(url: str | None = None) -> None:
    """Close the pool of a URL's `Database` and forget it (the next use opens a new one)."""
    with _databases_lock:
        db = _databases.pop(resolve_url(url), None)
    if db is not None:
        db.dispose()
