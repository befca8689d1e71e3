"""A `Lease`: one object's use of a URL's database, opened on first use and closed by `close`.

The service and the saver each hold one.  `Lease.db` acquires the shared `Database` from the
registry and checks its schema (creating or upgrading it when ``migrate`` allows), and checks
it again after a missing table was seen; `close` releases it (the last user closes the pools),
and so does garbage collection of an object never closed.  `recheck_schema` retries a method
once after a missing table, so a database recreated under the same URL is set up as on first
use.
"""

from __future__ import annotations

import asyncio
import functools
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

from .engine import (
    Database,
    MissingTableError,
    acquire,
    arelease,
    checked_url,
    release,
    resolve_url,
)
from .migrate import ensure_schema

F = TypeVar("F", bound=Callable[..., Any])


class Lease:
    """The use of one database URL by one object."""

    def __init__(self, url: str | None = None, *, migrate: bool = True) -> None:
        self.url = resolve_url(url)
        checked_url(self.url)  # a URL that cannot work fails here, not at first use
        self.migrate = migrate
        self._db: Database | None = None
        self._release: weakref.finalize | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return repr(self._db) if self._db is not None else f"Lease({self.url!r})"

    @property
    def db(self) -> Database:
        """The database, acquired and its schema checked on first use (and again after a
        missing table was seen)."""
        db = self._db
        if db is None or not db.schema_checked:
            db = self._open()
        return db

    async def adb(self) -> Database:
        """`db` for async callers: opening it (and checking the schema) runs in a worker
        thread, once; afterwards it is an attribute read."""
        db = self._db
        if db is None or not db.schema_checked:
            db = await asyncio.to_thread(self._open)
        return db

    def _open(self) -> Database:
        with self._lock:
            db = self._db
            if db is None:
                db = acquire(self.url)
                self._release = weakref.finalize(self, release, db)
                self._db = db
            try:
                ensure_schema(db, migrate=self.migrate)
            except BaseException:
                self.close()
                raise
            return db

    @property
    def opened(self) -> Database | None:
        """The database if it is open, else None (opens nothing)."""
        return self._db

    def close(self) -> None:
        """Release the database (the last user of a URL closes its pools); a later use
        acquires it again."""
        self._db = None
        if self._release is not None:
            self._release()

    async def aclose(self) -> None:
        """`close` from async code: when this was the database's last user, the running
        loop's async pool is closed before it returns."""
        db, finalizer = self._db, self._release
        self._db = None
        if finalizer is not None and finalizer.detach() is not None and db is not None:
            await arelease(db)


class Leased:
    """An object that uses one database through a `Lease` (the service, the saver): its URL,
    its database, and `close`."""

    _lease: Lease

    @property
    def url(self) -> str:
        """The database URL (resolved: the argument, else the environment, else the file)."""
        return self._lease.url

    @property
    def db(self) -> Database:
        """The database, acquired (and its schema checked) on first use, again after a missing
        table, and after `close`."""
        return self._lease.db

    def close(self) -> None:
        """Release the database (the last user of a URL closes its pools); it is opened again
        if used again."""
        self._lease.close()

    async def aclose(self) -> None:
        """`close` from async code: when this was the database's last user, the running loop's
        async pool is closed before it returns."""
        await self._lease.aclose()


def recheck_schema(method: F) -> F:
    """Run a method once more after it met a missing table: its next use of ``self.db``
    checks the schema again (and creates it where ``migrate`` allows), so a database recreated
    under the same URL is set up as on first use.  A table still missing then raises
    `MissingTableError` (a `SchemaError`) naming the fix."""

    @functools.wraps(method)
    def checked(self: Leased, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except MissingTableError:
            return method(self, *args, **kwargs)

    return checked  # type: ignore[return-value]
