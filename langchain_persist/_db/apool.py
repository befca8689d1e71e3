"""psycopg's async connection pools of a PostgreSQL database: one per event loop, made lazily.

An `AsyncConnectionPool` runs its workers and takes its locks on the loop that opened it, so a
database used from several loops (each ``asyncio.run``, each test's loop, the Agent Server's
isolated loops) has one pool per loop, opened by the first async call made on that loop.
The `Database` owns them: `close` (its last release) closes every pool from whatever thread it
runs in, and a pool whose loop is gone gets its connections closed directly; in a forked
child they are forgotten (the parent keeps its connections; psycopg sends nothing from the
child).  A pool also closes itself when its loop's tasks are cancelled, as ``asyncio.run``
does at its end: psycopg's workers swallow a cancellation that reaches them while they
connect, and ``asyncio.run`` would wait for them for ever.  Connections are autocommit with the
same prepared-statement setting as the sync pools, and are pinged on checkout only after sitting
idle or when the server left something on the socket, as the sync pools are (`engine`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import select
import threading
import time
import weakref
from typing import Any

PING_AFTER_IDLE_S = 1.0
CLOSE_TIMEOUT_S = 5.0
CONNECT_WAIT_S = 5.0  # seconds a caller waits for a connection before the database counts as away
POOL_NAME = "langchain-persist"

# In a forked child, the parent's pools, kept: collected, each of their tasks (pending on the
# parent's loop, which never runs here) would log "Task was destroyed but it is pending!".
_PARENTS: list[_LoopPool] = []


class _CancelledConnect(logging.Filter):
    """Drops psycopg's warning for a connect of our pools that a closing loop cancelled (it
    reads "error connecting in 'langchain-persist': ", with nothing after the colon)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (args[:1] == (POOL_NAME,) and isinstance(args[-1], asyncio.CancelledError))


logging.getLogger("psycopg.pool").addFilter(_CancelledConnect())


class _LoopPool:
    """The pool of one loop, and the connections it opened (to close them without it)."""

    def __init__(self, conninfo: str, kwargs: dict[str, Any], max_size: int) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.connections: weakref.WeakSet[Any] = weakref.WeakSet()
        self.guard: asyncio.Task[None] | None = None
        self._idle_since: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        self.opened = False
        self.pool = AsyncConnectionPool(
            conninfo,
            kwargs=kwargs,
            min_size=1,
            max_size=max_size,
            timeout=CONNECT_WAIT_S,  # an outage is said soon, as a refused connect says it
            open=False,
            configure=self._configure,
            check=self._check,
            reset=self._reset,
            name=POOL_NAME,
        )

    async def _configure(self, conn: Any) -> None:
        self.connections.add(conn)

    async def _reset(self, conn: Any) -> None:
        self._idle_since[conn] = time.monotonic()

    async def _check(self, conn: Any) -> None:
        idle = time.monotonic() - self._idle_since.get(conn, 0.0)
        if idle < PING_AFTER_IDLE_S and not _readable(conn):
            return
        await conn.execute("SELECT 1")  # raising makes the pool discard it and take another

    async def close(self) -> None:
        """Close the pool (on its loop), ending the task that waited to close it."""
        if self.guard is not None:
            self.guard.cancel()
            await asyncio.wait([self.guard])
        await self.pool.close(timeout=CLOSE_TIMEOUT_S)

    def finish(self) -> None:
        """Close the connections directly (the loop that runs the pool is gone)."""
        for conn in list(self.connections):
            if not conn.closed:
                conn.pgconn.finish()


def _readable(conn: Any) -> bool:
    try:
        return bool(select.select([conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        return True


class AsyncPools:
    """The async pools of one database, one per event loop."""

    def __init__(self, conninfo: str, kwargs: dict[str, Any], *, max_size: int) -> None:
        self._conninfo = conninfo
        self._kwargs = kwargs
        self._max_size = max_size
        self._pools: dict[asyncio.AbstractEventLoop, _LoopPool] = {}
        self._lock = threading.Lock()
        self._closing: set[asyncio.Future[Any]] = set()

    async def get(self) -> Any:
        """The pool of the running loop, made and opened on first use."""
        loop = asyncio.get_running_loop()
        entry = self._pools.get(loop)
        if entry is None:
            self._close_stale()
            with self._lock:
                entry = self._pools.get(loop)
                if entry is None:
                    entry = self._pools[loop] = _LoopPool(
                        self._conninfo, self._kwargs, self._max_size
                    )
        if not entry.opened:
            await entry.pool.open()
            entry.opened = True
        if entry.guard is None:
            entry.guard = loop.create_task(self._close_when_cancelled(loop, entry),
                                           name=f"{POOL_NAME}-pool")
        return entry.pool

    async def _close_when_cancelled(self, loop: asyncio.AbstractEventLoop,
                                    entry: _LoopPool) -> None:
        """(A task on the pool's loop) wait; once cancelled, forget the pool and close it.
        Closing hands each worker a stop message, which ends even one that lost its
        cancellation; it then stops at the first worker cancelled with the loop's other tasks
        (psycopg gathers them), so the connections are closed directly after it."""
        try:
            await loop.create_future()
        except asyncio.CancelledError:  # (not GeneratorExit: a closed loop's task collected)
            with self._lock:
                if self._pools.get(loop) is entry:
                    del self._pools[loop]
            try:
                await entry.pool.close(timeout=CLOSE_TIMEOUT_S)
            finally:
                entry.finish()
            raise

    def __len__(self) -> int:
        return len(self._pools)

    def _close_stale(self) -> None:
        """Close the connections of pools whose loop was closed."""
        with self._lock:
            stale = [(lp, e) for lp, e in self._pools.items() if lp.is_closed()]
            for lp, _ in stale:
                del self._pools[lp]
        for _, entry in stale:
            entry.finish()

    async def aclose(self) -> None:
        """Close every pool, awaiting the one of the running loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._pools.pop(loop, None)
        if entry is not None:
            await entry.close()
        self.close()

    def close(self) -> None:
        """Close every pool, from any thread."""
        with self._lock:
            entries = list(self._pools.items())
            self._pools.clear()
        for loop, entry in entries:
            self._close_one(loop, entry)

    def _close_one(self, loop: asyncio.AbstractEventLoop, entry: _LoopPool) -> None:
        if loop.is_closed():
            entry.finish()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop.is_running():
            if running is loop:  # called from sync code on that very loop: close it soon
                task = loop.create_task(entry.close())
                self._closing.add(task)
                task.add_done_callback(self._closing.discard)
                return
            future = asyncio.run_coroutine_threadsafe(entry.close(), loop)
            try:
                future.result(timeout=CLOSE_TIMEOUT_S)
                return
            except Exception:
                future.cancel()
        elif running is None:
            with contextlib.suppress(Exception):
                loop.run_until_complete(entry.close())
                return
        entry.finish()

    def forget(self) -> None:
        """In a forked child: drop the pools (the parent's connections stay the parent's)."""
        _PARENTS.extend(self._pools.values())
        self._pools = {}
        self._lock = threading.Lock()
        self._closing = set()
