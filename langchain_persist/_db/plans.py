"""Plans: the logic of a database operation written once, run by a sync or an async runner.

A plan is a generator.  It yields `Step`s (a prepared statement and its parameters) and is
sent back each step's rows (None for a statement that returns none); a streaming read also
yields `Emit` (items for its caller, handed over between round trips); what the generator
returns is the operation's result.  `run` and `iterate` drive a plan on a DBAPI cursor;
`arun` and `aiterate` drive the same plan on a psycopg async cursor on PostgreSQL, and in a
worker thread on SQLite, whose driver blocks.  This is how `prune` is written in
langgraph-checkpoint-postgres, and httpx's auth flows: the logic is never written twice, and
the sync and async paths run the same statements.

`planned` turns a plan function into a method and `async_plan` into its async twin; both run
the plan once more after a missing table, as `recheck_schema` does.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterator
from typing import Any, NamedTuple, Protocol, TypeVar

from .engine import Database, MissingTableError
from .lease import Lease
from .sql.prepared import Prepared

T = TypeVar("T")

FETCH, EXECUTE, MANY = 0, 1, 2


class Step(NamedTuple):
    """One statement of a plan: run it, and send the plan its rows (or None)."""

    statement: Prepared
    params: Any  # a mapping, or a list of mappings for MANY
    kind: int = FETCH


class Emit(NamedTuple):
    """Items a streaming plan hands its caller; the connection is released meanwhile."""

    items: list[Any]


class _Commit:
    """Commit what the plan wrote so far and go on in a new transaction (an ``atomic`` plan
    that works through several independent pieces, one short transaction each)."""

    def __repr__(self) -> str:
        return "COMMIT"


COMMIT = _Commit()

Plan = Generator[Step | Emit | _Commit, Any, T]


def fetch(statement: Prepared, params: Any) -> Step:
    """A step that returns the statement's rows."""
    return Step(statement, params, FETCH)


def execute(statement: Prepared, params: Any) -> Step:
    """A step whose statement returns no rows."""
    return Step(statement, params, EXECUTE)


def execute_many(statement: Prepared, params: list[Any]) -> Step:
    """A step that runs the statement once per item of ``params`` (``executemany``)."""
    return Step(statement, params, MANY)


class _Done(NamedTuple):
    value: Any


def _first(plan: Plan[Any]) -> Step | Emit | _Commit | _Done:
    """Advance a plan to its first statement: the work before it (building rows,
    serializing) runs before a connection is taken, or a lock."""
    try:
        return plan.send(None)
    except StopIteration as stop:
        return _Done(stop.value)


def _drive(db: Database, cursor: Any, plan: Plan[Any], step: Any) -> Emit | _Done:
    """Run a plan's steps on a sync cursor, from ``step``, until it emits or returns."""
    try:
        while True:
            if type(step) is Step:
                if step.kind == FETCH:
                    sent = step.statement.fetch(cursor, step.params)
                elif step.kind == EXECUTE:
                    sent = step.statement.execute(cursor, step.params)
                else:
                    sent = step.statement.execute_many(cursor, step.params)
            elif type(step) is Emit or type(step) is _Done:
                return step
            else:
                sent = db.commit_and_begin(cursor)
            step = plan.send(sent)
    except StopIteration as stop:
        return _Done(stop.value)


async def _adrive(db: Database, cursor: Any, plan: Plan[Any], step: Any) -> Emit | _Done:
    """`_drive` on a psycopg async cursor."""
    try:
        while True:
            if type(step) is Step:
                if step.kind == FETCH:
                    sent = await step.statement.afetch(cursor, step.params)
                elif step.kind == EXECUTE:
                    sent = await step.statement.aexecute(cursor, step.params)
                else:
                    sent = await step.statement.aexecute_many(cursor, step.params)
            elif type(step) is Emit or type(step) is _Done:
                return step
            else:
                sent = await db.acommit_and_begin(cursor)
            step = plan.send(sent)
    except StopIteration as stop:
        return _Done(stop.value)


def run(db: Database, plan: Plan[T], *, write: bool = False, atomic: bool = False) -> T:
    """Run a plan on one connection of ``db``: a write (``write``), in one transaction
    (``atomic``; on SQLite every write is)."""
    return _run_from(db, plan, _first(plan), write, atomic)


def _run_from(db: Database, plan: Plan[T], step: Any, write: bool, atomic: bool) -> T:
    if type(step) is not _Done:
        with db.cursor(write=write, atomic=atomic) as cursor:
            step = _drive(db, cursor, plan, step)
    return _result(step)


def _result(done: Any) -> Any:
    if type(done) is not _Done:
        raise TypeError("a plan that emits items is run with `iterate`")
    return done.value


def run_on(cursor: Any, plan: Plan[T]) -> T:
    """Run a read-only plan on a cursor the caller holds (in its transaction)."""
    step = _first(plan)
    if type(step) is not _Done:
        step = _drive(None, cursor, plan, step)  # type: ignore[arg-type]
    return _result(step)  # type: ignore[no-any-return]


async def arun(db: Database, plan: Plan[T], *, write: bool = False, atomic: bool = False) -> T:
    """`run` for async callers: psycopg's async connections on PostgreSQL; on SQLite, whose
    driver blocks, a worker thread (an event loop must not wait on a file or a lock: LangGraph's
    Agent Server refuses sqlite3 calls on its loop)."""
    step = _first(plan)
    if type(step) is _Done:
        return step.value  # type: ignore[no-any-return]
    if not db.is_async_native:
        return await asyncio.to_thread(_run_from, db, plan, step, write, atomic)
    async with db.acursor(write=write, atomic=atomic) as cursor:
        return _result(await _adrive(db, cursor, plan, step))  # type: ignore[no-any-return]


def _segment(db: Database, plan: Plan[Any]) -> Emit | _Done:
    """Run a read-only plan until it emits or returns."""
    step = _first(plan)
    if type(step) is Step:
        with db.cursor() as cursor:
            return _drive(db, cursor, plan, step)
    return step  # type: ignore[return-value]


async def _asegment(db: Database, plan: Plan[Any]) -> Emit | _Done:
    if not db.is_async_native:
        return await asyncio.to_thread(_segment, db, plan)
    step = _first(plan)
    if type(step) is Step:
        async with db.acursor() as cursor:
            return await _adrive(db, cursor, plan, step)
    return step  # type: ignore[return-value]


def iterate(lease: Lease, make: Callable[[], Plan[Any]]) -> Iterator[Any]:
    """The items a read-only plan emits; a connection is held only between two emits.  The
    plan is made again and rerun after a missing table met before its first item."""
    plan, emitted, retried = make(), False, False
    while True:
        try:
            done = _segment(lease.db, plan)
        except MissingTableError:
            if emitted or retried:
                raise
            plan, retried = make(), True
            continue
        if type(done) is _Done:
            return
        emitted = True
        yield from done.items


async def aiterate(lease: Lease, make: Callable[[], Plan[Any]]) -> AsyncIterator[Any]:
    """`iterate` for async callers."""
    plan, emitted, retried = make(), False, False
    while True:
        try:
            done = await _asegment(await lease.adb(), plan)
        except MissingTableError:
            if emitted or retried:
                raise
            plan, retried = make(), True
            continue
        if type(done) is _Done:
            return
        emitted = True
        for item in done.items:
            yield item


# -- methods made of plans ----------------------------------------------------------------


class _Leased(Protocol):
    _lease: Lease


def planned(
    *, write: bool = False, atomic: bool = False
) -> Callable[[Callable[..., Plan[T]]], Callable[..., T]]:
    """Make a method of a plan function (``fn(self, ...) -> Plan``): it runs the plan on the
    object's database (``self._lease``), once more after a missing table.  `async_plan` makes
    its async twin."""

    def decorate(fn: Callable[..., Plan[T]]) -> Callable[..., T]:
        @functools.wraps(fn)
        def method(self: _Leased, *args: Any, **kwargs: Any) -> T:
            try:
                return run(self._lease.db, fn(self, *args, **kwargs), write=write, atomic=atomic)
            except MissingTableError:
                return run(self._lease.db, fn(self, *args, **kwargs), write=write, atomic=atomic)

        async def twin(self: _Leased, *args: Any, **kwargs: Any) -> T:
            db = await self._lease.adb()
            try:
                return await arun(db, fn(self, *args, **kwargs), write=write, atomic=atomic)
            except MissingTableError:
                db = await self._lease.adb()
                return await arun(db, fn(self, *args, **kwargs), write=write, atomic=atomic)

        method.twin = twin  # type: ignore[attr-defined]
        return method

    return decorate


def async_plan(method: Callable[..., T]) -> Callable[..., Coroutine[Any, Any, T]]:
    """The ``a``-prefixed twin of a `planned` method: the same plan, run by `arun`."""
    twin = method.twin  # type: ignore[attr-defined]
    functools.update_wrapper(twin, method)
    twin.__name__ = twin.__qualname__ = f"a{method.__name__}"
    twin.__doc__ = f"Async twin of `{method.__name__}` (the same plan, run without blocking)."
    return twin  # type: ignore[no-any-return]
