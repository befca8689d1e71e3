"""Database URLs, engines and pools: the one place that knows SQLite from PostgreSQL.

A `Database` is one URL's engines and pools, with what is known about it (whether its schema
was checked, and caches that other layers keep per database).  The registry at the bottom of
this module shares one `Database` per URL among the objects of the process that use it:
`acquire` counts a user in, `release` counts it out, and the last release closes the pools and
forgets the database, its schema check and its caches.  In the child of an ``os.fork()`` every
open database gets new pools (the parent's connections are left to the parent)."""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, SQLAlchemyError

from .._errors import ConfigurationError, SchemaError, StorageError
from .._process import after_fork_in_child
from .._sanitize import dumps

DEFAULT_SQLITE_FILE = "langchain_persist.db"
URL_VARIABLES = ("LANGCHAIN_PERSIST_DATABASE_URL", "DATABASE_URL")
SQLITE_BUSY_TIMEOUT_MS = 30_000
PING_AFTER_IDLE_S = 1.0
T = TypeVar("T")


class MissingTableError(SchemaError):
    """A table the code needs is not in the database (recreated under the same URL, or
    dropped): the schema is checked again on the next use."""


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
        self.refs = 0  # objects using it (see `acquire` and `release`)
        self.caches: dict[str, Any] = {}  # per-database state of upper layers (see `cache`)
        self._new_locks()

    def _new_locks(self) -> None:
        self.lock = threading.Lock()
        # SQLite takes one writer at a time: threads of this process queue here, rather than
        # in SQLite's busy handler, which sleeps a millisecond or more per retry
        self._sqlite_writer: AbstractContextManager[Any] = (
            threading.Lock() if self.dialect == "sqlite" else nullcontext()
        )

    def cache(self, name: str, make: Callable[[], T]) -> T:
        """The cache ``name`` of this database, made by ``make`` on first use; it is dropped
        when the database is closed or the process forks."""
        found = self.caches.get(name)
        if found is None:
            found = self.caches.setdefault(name, make())
        return found  # type: ignore[no-any-return]

    def __repr__(self) -> str:
        return f"Database({make_url(self.url).render_as_string()!r})"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (autocommit on PostgreSQL, a rolled back read on SQLite)."""
        with self._tables_checked(), self.fast.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction, committed at the end (``BEGIN IMMEDIATE`` on SQLite)."""
        with self._tables_checked(), self._sqlite_writer, self._writer.begin() as conn:
            yield conn

    @contextmanager
    def _tables_checked(self) -> Iterator[None]:
        """Turn "no such table" into `MissingTableError`, and forget the schema check."""
        try:
            yield
        except SQLAlchemyError as exc:
            self._check_missing_table(exc.__cause__ or getattr(exc, "orig", None) or exc)
            raise

    def _check_missing_table(self, exc: BaseException) -> None:
        text = str(exc)
        if "no such table" in text or getattr(exc, "sqlstate", None) == "42P01":
            self.schema_checked = False
            raise MissingTableError(
                f"{self!r} has no table the code needs ({text.strip().splitlines()[0]}): was "
                "the database recreated or its tables dropped? Run `langchain-persist db "
                "upgrade --url URL`"
            ) from exc

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
                self._check_missing_table(exc)
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
        """Close every pooled connection, and forget the schema check and the caches."""
        self.engine.dispose()
        if self.fast is not self.engine:
            self.fast.dispose()
        self.schema_checked = False
        self.caches.clear()

    def _after_fork(self) -> None:
        """In a forked child: new pools (the parent keeps its connections), locks and caches."""
        self.engine.dispose(close=False)
        if self.fast is not self.engine:
            self.fast.dispose(close=False)
        self.caches.clear()
        self._new_locks()


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    path = None
    if parsed.database and parsed.database != ":memory:":
        path = Path(parsed.database).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=8,
        max_overflow=16,
        json_serializer=dumps,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, record) -> None:  # type: ignore[no-untyped-def]
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (see _on_begin)
        if path is not None:
            record.info["file"] = _file_id(path)
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

    # A pooled connection to a file that was deleted (or replaced) since it was opened would go
    # on reading and writing the old, unlinked file: such a connection is replaced on checkout.
    @event.listens_for(engine, "checkout")
    def _on_checkout(_dbapi_conn, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        if path is not None and record.info.get("file") != _file_id(path):
            raise DisconnectionError(f"{path} was deleted or replaced since it was opened")

    return engine


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


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


# -- the registry: one Database per URL, counted ----------------------------------------------

_open: dict[str, Database] = {}
# re-entrant: a Lease dropped without close() releases its database from a weakref finalizer,
# which the garbage collector may run inside `acquire` (creating an engine allocates), on the
# thread that holds the lock
_open_lock = threading.RLock()
_watching_forks = False


def acquire(url: str | None = None) -> Database:
    """The open `Database` of a URL (made on first use), counted as used once more: call
    `release` when done with it."""
    global _watching_forks
    resolved = resolve_url(url)
    with _open_lock:
        if not _watching_forks:
            after_fork_in_child(_after_fork)
            _watching_forks = True
        db = _open.get(resolved)
        if db is None:
            db = _open[resolved] = Database(resolved)
        db.refs += 1
        return db


def release(db: Database) -> None:
    """Count one user of ``db`` out; the last one closes its pools and forgets it."""
    with _open_lock:
        db.refs -= 1
        if db.refs > 0:
            return
        if _open.get(db.url) is db:
            del _open[db.url]
    db.dispose()


def dispose_database(url: str | None = None) -> None:
    """Close the pools of a URL's `Database` and forget it, whoever still uses it (the next
    `acquire` opens a new one): for tests and scripts that drop and recreate a database."""
    with _open_lock:
        db = _open.pop(resolve_url(url), None)
    if db is not None:
        db.dispose()


def open_databases() -> list[Database]:
    """The databases open in this process."""
    with _open_lock:
        return list(_open.values())


def _after_fork() -> None:
    global _open_lock
    _open_lock = threading.RLock()
    for db in _open.values():
        db._after_fork()
