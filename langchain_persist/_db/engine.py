"""Database URLs, engines and pools: the one place that knows SQLite from PostgreSQL.

A `Database` is one URL's engines and pools, with what is known about it (whether its schema
was checked, and caches that other layers keep per database).  The registry at the bottom of
this module shares one `Database` per URL among the objects of the process that use it:
`acquire` counts a user in, `release` counts it out, and the last release closes the pools and
forgets the database, its schema check and its caches.  In the child of an ``os.fork()`` every
open database gets new pools (the parent's connections are left to the parent).

On PostgreSQL a `Database` also owns psycopg's async pools (`apool`), one per event loop,
opened by the first async call on that loop and closed with the sync pools."""

from __future__ import annotations

import collections
import os
import select
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractContextManager, asynccontextmanager, contextmanager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, SQLAlchemyError

from .._errors import ConfigurationError, SchemaError, StorageError
from .._process import after_fork_in_child
from .._sanitize import dumps
from .apool import AsyncPools

DEFAULT_SQLITE_FILE = "langchain_persist.db"
URL_VARIABLES = ("LANGCHAIN_PERSIST_DATABASE_URL", "DATABASE_URL")
SQLITE_BUSY_TIMEOUT_MS = 30_000
SQLITE_LOCK_POLL_S = 0.001  # how often a writer tries for SQLite's write lock
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


# In a forked child, the driver connections its parent had open (see `Database._after_fork`).
PARENTS_CONNECTIONS: list[Any] = []


def checked_url(url: str) -> URL:
    """``url`` (as `resolve_url` gives it) parsed, or a `ConfigurationError` naming the fix: a
    URL that cannot be parsed, a database other than SQLite and PostgreSQL, or an in-memory
    SQLite one."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ConfigurationError(
            f"cannot parse database URL {url!r}: use sqlite:///path/to/file.db "
            "or postgresql://user@host:5432/dbname"
        ) from exc
    dialect = parsed.get_backend_name()
    if dialect not in ("sqlite", "postgresql"):
        raise ConfigurationError(
            f"unsupported database {dialect!r} in {parsed.render_as_string()!r}: "
            "langchain-persist runs on SQLite and PostgreSQL"
        )
    if dialect == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigurationError(
            f"{url!r} names no file: an in-memory SQLite database belongs to one connection "
            "and is gone at exit; give a file, such as sqlite:///runs.db"
        )
    return parsed


class Database:
    """One engine (with its pool) and the transactions the store runs in."""

    def __init__(self, url: str | None = None) -> None:
        self.url = resolve_url(url)
        self.dialect = checked_url(self.url).get_backend_name()
        if self.dialect == "sqlite":
            self.engine = _sqlite_engine(self.url)
        else:
            self.engine = _postgres_engine(self.url)
        self._writer = self.engine.execution_options(sqlite_immediate=True)
        # PostgreSQL: a second pool of autocommit connections, so reads and one-statement writes
        # skip the BEGIN and COMMIT round trips (SQLite: the same pool, BEGIN issued by hand)
        self.fast = (
            _postgres_engine(self.url, isolation_level="AUTOCOMMIT")
            if self.dialect == "postgresql"
            else self.engine
        )
        # PostgreSQL: psycopg's async pools, one per event loop, made on first async use
        self.is_async_native = self.dialect == "postgresql"
        self._apools: AsyncPools | None = (
            AsyncPools(_conninfo(self.url), {**_connect_kwargs(self.url), "autocommit": True},
                       max_size=ASYNC_POOL_SIZE)
            if self.is_async_native
            else None
        )
        self.schema_checked = False
        self.refs = 0  # objects using it (see `acquire` and `release`)
        self.caches: dict[str, Any] = {}  # per-database state of upper layers (see `cache`)
        self._connections: dict[int, Any] = {}  # the pools' open driver connections, by id
        for engine in {self.engine, self.fast}:
            event.listen(engine, "connect", self._opened)
            event.listen(engine, "close", self._closed)
            event.listen(engine, "close_detached", self._closed)
        self._new_locks()

    def _opened(self, dbapi_conn: Any, *_: Any) -> None:
        self._connections[id(dbapi_conn)] = dbapi_conn

    def _closed(self, dbapi_conn: Any, *_: Any) -> None:
        self._connections.pop(id(dbapi_conn), None)

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
    def cursor(self, *, write: bool = False, atomic: bool = False) -> Iterator[Any]:
        """A raw DBAPI cursor for the hot paths (see `sql.prepared` and `plans`).

        On PostgreSQL it is in autocommit mode: each statement the store runs commits by
        itself, unless ``atomic`` asks for one transaction.  On SQLite a write runs in one
        ``BEGIN IMMEDIATE`` transaction.  Driver errors come out as `StorageError`, and a
        connection that failed is not reused.
        """
        sqlite = self.dialect == "sqlite"
        in_transaction = (write and sqlite) or (atomic and not sqlite)
        with self._sqlite_writer if write else nullcontext():
            try:
                conn = self.fast.raw_connection()
            except (self.fast.dialect.loaded_dbapi.Error, SQLAlchemyError) as exc:
                raise self._failed(write, exc) from exc
            try:
                cur = conn.cursor(binary=True) if not sqlite else conn.cursor()
                if in_transaction:
                    _begin(cur, sqlite)
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

    @asynccontextmanager
    async def acursor(self, *, write: bool = False, atomic: bool = False) -> AsyncIterator[Any]:
        """`cursor` for async callers on PostgreSQL: a psycopg async cursor from the running
        loop's pool (autocommit, or one transaction when ``atomic``)."""
        assert self._apools is not None, "async cursors are for PostgreSQL"
        import psycopg

        try:
            pool = await self._apools.get()
            async with pool.connection() as conn, conn.cursor(binary=True) as cur:
                if atomic:
                    await cur.execute("BEGIN")
                try:
                    yield cur
                except BaseException:
                    if atomic and not conn.closed:
                        await cur.execute("ROLLBACK")
                    raise
                if atomic:
                    await cur.execute("COMMIT")
        except psycopg.Error as exc:
            self._check_missing_table(exc)
            raise self._failed(write, exc) from exc

    def commit_and_begin(self, cursor: Any) -> None:
        """Commit the transaction of a `cursor` and begin the next one."""
        cursor.execute("COMMIT")
        _begin(cursor, self.dialect == "sqlite")

    async def acommit_and_begin(self, cursor: Any) -> None:
        """`commit_and_begin` for an `acursor`."""
        await cursor.execute("COMMIT")
        await cursor.execute("BEGIN")

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
        if self._apools is not None:
            self._apools.close()
        self.schema_checked = False
        self.caches.clear()

    async def adispose(self) -> None:
        """`dispose` from async code: the running loop's async pool is closed before it
        returns."""
        if self._apools is not None:
            await self._apools.aclose()
        self.dispose()

    @property
    def async_pools(self) -> int:
        """How many async pools are open (one per event loop that used the database)."""
        return len(self._apools) if self._apools is not None else 0

    def _after_fork(self) -> None:
        """In a forked child: new pools (the parent keeps its connections), locks and caches.
        The parent's connections are kept, unused: collected, SQLite's would be closed in
        the child (which SQLite forbids for a connection opened before a fork) and
        psycopg's would warn."""
        PARENTS_CONNECTIONS.extend(self._connections.values())
        self._connections = {}
        self.engine.dispose(close=False)
        if self.fast is not self.engine:
            self.fast.dispose(close=False)
        if self._apools is not None:
            self._apools.forget()
        self.caches.clear()
        self._new_locks()


def begin_immediate(execute: Callable[[str], Any]) -> None:
    """``BEGIN IMMEDIATE`` through ``execute`` (a SQLite cursor's or connection's), trying
    for the write lock every ``SQLITE_LOCK_POLL_S`` for up to ``SQLITE_BUSY_TIMEOUT_MS``.

    SQLite's own busy handler sleeps longer and longer between tries (25 ms, then 50, then
    100), so a writer behind another process's string of short transactions (a retention
    run's) can miss the moments the lock is free; polling takes it within a millisecond of
    its release (behind a connection holding it 10 ms in every 50, the longest of 400 waits
    went from 19 to 10 ms)."""
    execute("PRAGMA busy_timeout = 0")
    try:
        deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
        while True:
            try:
                execute("BEGIN IMMEDIATE")
                return
            except (sqlite3.OperationalError, SQLAlchemyError) as exc:
                if not is_locked(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(SQLITE_LOCK_POLL_S)
    finally:
        execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")


def _begin(cursor: Any, sqlite: bool) -> None:
    if sqlite:
        begin_immediate(cursor.execute)
    else:
        cursor.execute("BEGIN")


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    file = Path(parsed.database).expanduser()  # (a file: `Database` refuses in-memory ones)
    file.parent.mkdir(parents=True, exist_ok=True)
    path = str(file)
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
        if conn.get_execution_options().get("sqlite_immediate"):
            begin_immediate(conn.exec_driver_sql)
        else:
            conn.exec_driver_sql("BEGIN")

    # A pooled connection to a file that was deleted (or replaced) since it was opened would go
    # on reading and writing the old, unlinked file: such a connection is replaced on checkout.
    @event.listens_for(engine, "checkout")
    def _on_checkout(_dbapi_conn, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        if record.info.get("file") != _file_id(path):
            raise DisconnectionError(f"{path} was deleted or replaced since it was opened")

    return engine


def _file_id(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
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
        connect_args=_connect_kwargs(url),
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


ASYNC_POOL_SIZE = 16


def _conninfo(url: str) -> str:
    """The libpq connection string of a ``postgresql+psycopg://`` URL."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


# libpq settings of every connection, unless the URL gives its own: a database that stops
# answering (a network that drops packets, a host gone) fails a connect after 10 s and a
# statement whose packets go unacknowledged after 30 s (keepalives find a dead idle link in a
# minute), rather than hanging for the kernel's 15 minutes.
NETWORK_SETTINGS = {
    "connect_timeout": 10, "tcp_user_timeout": 30_000,
    "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3,
}


def _connect_kwargs(url: str) -> dict[str, Any]:
    """How PostgreSQL connections are set up: prepared statements (see `_prepare_threshold`)
    and `NETWORK_SETTINGS` that the URL does not set."""
    given = make_url(url).query
    settings = {k: v for k, v in NETWORK_SETTINGS.items() if k not in given}
    return {**settings, "prepare_threshold": _prepare_threshold()}


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


def is_outage(exc: BaseException) -> bool:
    """Whether an error says the database could not be reached or used at all (a connection
    refused or lost, a locked or full file), rather than that it refused a statement's values:
    worth retrying later, not worth splitting a batch for."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DisconnectionError) or type(seen).__name__ in (
            "OperationalError", "InterfaceError", "ConnectionTimeout", "PoolTimeout",
        ):
            return True
        if type(seen).__name__ in ("DataError", "IntegrityError", "ProgrammingError"):
            return False
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return False


def is_locked(exc: BaseException) -> bool:
    """Whether an error is SQLite's "database is locked": another connection holds the write
    lock (past the busy timeout, or during a ``BEGIN IMMEDIATE`` try)."""
    seen: BaseException | None = exc
    while seen is not None:
        if getattr(seen, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY:
            return True
        seen = seen.__cause__ or getattr(seen, "orig", None)
    return False


def locked_hint() -> str:
    """What a "database is locked" means, and its fix."""
    return (
        f"another connection held SQLite's write lock for over {SQLITE_BUSY_TIMEOUT_MS / 1000:g}"
        " s: is a long transaction or a cleanup running in another process? let it finish and "
        "try again, or use PostgreSQL for many concurrent writers"
    )


# -- the registry: one Database per URL, counted ----------------------------------------------

_open: dict[str, Database] = {}
_open_lock = threading.Lock()
_released: collections.deque[Database] = collections.deque()
_watching_forks = False


def acquire(url: str | None = None) -> Database:
    """The open `Database` of a URL (made on first use), counted as used once more: call
    `release` when done with it."""
    global _watching_forks
    resolved = resolve_url(url)
    with _open_lock:
        db = _open.get(resolved)
        if db is not None:
            db.refs += 1
    if db is None:  # made outside the lock: its imports and allocations may run finalizers
        made = Database(resolved)
        with _open_lock:
            if not _watching_forks:
                after_fork_in_child(_after_fork)
                _watching_forks = True
            db = _open.setdefault(resolved, made)
            db.refs += 1
        if db is not made:
            made.dispose()
    _settle()
    return db


def release(db: Database) -> None:
    """Count one user of ``db`` out; the last one closes its pools and forgets it.

    Never blocks, so that a garbage-collected object may call it from a finalizer, whatever
    lock its thread holds: when the registry is busy, the thread that holds it settles the
    count on its way out."""
    _released.append(db)
    _settle()


def _settle() -> None:
    """Apply the releases that wait, if the registry is free (else its holder will)."""
    while _released:
        if not _open_lock.acquire(blocking=False):
            return
        gone = []
        try:
            while _released:
                db = _released.popleft()
                db.refs -= 1
                if db.refs <= 0:
                    if _open.get(db.url) is db:
                        del _open[db.url]
                    gone.append(db)
        finally:
            _open_lock.release()
        for db in gone:
            db.dispose()


async def arelease(db: Database) -> None:
    """`release` from async code: when it was the last user, the running loop's async pool
    is closed before it returns."""
    with _open_lock:
        db.refs -= 1
        last = db.refs <= 0
        if last and _open.get(db.url) is db:
            del _open[db.url]
    _settle()
    if last:
        await db.adispose()


def dispose_database(url: str | None = None) -> None:
    """Close the pools of a URL's `Database` and forget it, whoever still uses it (the next
    `acquire` opens a new one): for tests and scripts that drop and recreate a database."""
    with _open_lock:
        db = _open.pop(resolve_url(url), None)
    _settle()
    if db is not None:
        db.dispose()


def open_databases() -> list[Database]:
    """The databases open in this process."""
    with _open_lock:
        found = list(_open.values())
    _settle()
    return found


def _after_fork() -> None:
    global _open_lock
    _open_lock = threading.RLock()
    for db in _open.values():
        db._after_fork()
