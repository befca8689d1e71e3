"""Statements built with SQLAlchemy Core, compiled once, run on a raw DBAPI cursor.

On the saver's hot paths (a checkpoint put, a pending write, a checkpoint read) SQLAlchemy's
per-call execution machinery costs more than the database round trip itself.  A `Prepared`
keeps what SQLAlchemy would do for the statement (its SQL, its parameter order and its type
processors, all taken from the compiled statement) and does only that on each call.  It runs
on a sync DBAPI cursor (`execute`, `fetch`) and on a psycopg async cursor (`aexecute`,
`afetch`) alike: the same SQL and parameters either way.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy.engine import Dialect


class Prepared:
    """One compiled statement for one dialect."""

    def __init__(self, statement: Any, dialect: Dialect, *, raw: bool = False) -> None:
        compiled = statement.compile(dialect=dialect)
        self.raw = raw  # rows as the driver returns them (no named tuples, no processors)
        self.sql = str(compiled)
        self._order: Sequence[str] | None = compiled.positiontup if dialect.positional else None
        self._binds: dict[str, Callable[[Any], Any]] = {}
        # values the statement carries itself (a LIMIT, a literal), under their generated names
        self._defaults = {n: b.value for n, b in compiled.binds.items() if not b.required}
        for name, bind in compiled.binds.items():
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if processor is not None:
                self._binds[name] = processor
        self._results: list[Callable[[Any], Any] | None] = []
        self._row: type[NamedTuple] | None = None
        columns = None
        if getattr(statement, "is_select", False) or hasattr(statement, "selected_columns"):
            columns = list(statement.selected_columns)
        elif getattr(statement, "_returning", ()):  # INSERT / UPDATE ... RETURNING
            columns = list(statement.exported_columns)
        if columns is not None and not raw:
            self._results = [
                c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns
            ]
            self._row = NamedTuple("Row", [(c.name, Any) for c in columns])  # type: ignore[misc]

    def params(self, values: Mapping[str, Any]) -> Any:
        """The DBAPI parameters for ``values`` (keyed by bind name), processed by type."""
        values = {**self._defaults, **values} if self._defaults else dict(values)
        for name, process in self._binds.items():
            if name in values:
                values[name] = process(values[name])
        if self._order is not None:
            return tuple(values[name] for name in self._order)
        return values

    def execute(self, cursor: Any, values: Mapping[str, Any]) -> None:
        """Run the statement."""
        cursor.execute(self.sql, self.params(values))

    def execute_many(self, cursor: Any, values: Sequence[Mapping[str, Any]]) -> None:
        """Run the statement once per item of ``values`` (``executemany``)."""
        cursor.executemany(self.sql, [self.params(v) for v in values])

    def fetch(self, cursor: Any, values: Mapping[str, Any]) -> list[Any]:
        """Run a SELECT (or a RETURNING statement) and return its rows as named tuples, values
        processed by type (or, for a ``raw`` statement, the driver's rows as they are)."""
        cursor.execute(self.sql, self.params(values))
        return self.rows(cursor.fetchall())

    async def aexecute(self, cursor: Any, values: Mapping[str, Any]) -> None:
        """`execute` on an async cursor."""
        await cursor.execute(self.sql, self.params(values))

    async def aexecute_many(self, cursor: Any, values: Sequence[Mapping[str, Any]]) -> None:
        """`execute_many` on an async cursor."""
        await cursor.executemany(self.sql, [self.params(v) for v in values])

    async def afetch(self, cursor: Any, values: Mapping[str, Any]) -> list[Any]:
        """`fetch` on an async cursor."""
        await cursor.execute(self.sql, self.params(values))
        return self.rows(await cursor.fetchall())

    def rows(self, fetched: list[Any]) -> list[Any]:
        """The driver's rows as this statement returns them."""
        if self.raw:
            return fetched
        assert self._row is not None
        make, processors = self._row._make, self._results
        if not any(processors):
            return [make(row) for row in fetched]
        return [
            make(p(value) if p else value for p, value in zip(processors, row, strict=True))
            for row in fetched
        ]


_kinds: dict[tuple[Any, ...], Dialect] = {}


def _kind(dialect: Dialect) -> Dialect:
    """The first dialect object seen of this kind (driver, parameter style, server version):
    a statement compiled for it serves every database of the kind, so a database opened again
    (a new engine, a new dialect object) compiles nothing again."""
    key = (type(dialect), dialect.paramstyle, getattr(dialect, "server_version_info", None))
    return _kinds.setdefault(key, dialect)


def prepared(build: Callable[..., Any], *, raw: bool = False) -> Callable[..., Prepared]:
    """Cache a statement builder's result as a `Prepared`, per kind of dialect and arguments."""

    @functools.lru_cache(maxsize=512)
    def cached(dialect: Dialect, *args: Any) -> Prepared:
        return Prepared(build(dialect.name, *args), dialect, raw=raw)

    def get(dialect: Dialect, *args: Any) -> Prepared:
        return cached(_kind(dialect), *args)

    get.__doc__ = build.__doc__
    return get


def prepared_raw(build: Callable[..., Any]) -> Callable[..., Prepared]:
    """`prepared` for a statement whose rows the caller reads as the driver returns them."""
    return prepared(build, raw=True)
