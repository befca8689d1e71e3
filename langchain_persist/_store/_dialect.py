"""The few statements that SQLite and PostgreSQL spell differently."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Connection, LargeBinary, Table, bindparam, func, select, type_coerce
from sqlalchemy.dialects import postgresql, sqlite

_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_\-]+")


def upsert(conn: Connection, table: Table) -> Any:
    """An INSERT with ``on_conflict_do_update`` / ``on_conflict_do_nothing`` for this dialect."""
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert(table)


@functools.cache
def bulk_insert(dialect: str, table: Table, update: tuple[str, ...] = (), prefix: str = "") -> Any:
    """An INSERT of many rows that skips (or, naming ``update`` columns, updates) existing keys.

    On PostgreSQL the rows travel as one array per column through ``unnest``, so any number of
    rows is one statement that SQLAlchemy compiles once; `bulk_params` makes its parameters.
    On SQLite it is a plain INSERT, to run with a list of rows (executemany).
    """
    if dialect == "postgresql":
        arrays = [
            bindparam(f"{prefix}{c.name}", type_=postgresql.ARRAY(_element_type(c.type)))
            for c in table.c
        ]
        rows = func.unnest(*arrays).table_valued(*(c.name for c in table.c)).render_derived()
        stmt = postgresql.insert(table).from_select([c.name for c in table.c], select(*rows.c))
    else:
        stmt = sqlite.insert(table)
    if not update:
        return stmt.on_conflict_do_nothing()
    return stmt.on_conflict_do_update(
        index_elements=[c.name for c in table.primary_key.columns],
        set_={name: stmt.excluded[name] for name in update},
    )


def bulk_params(
    dialect: str, table: Table, rows: Sequence[dict[str, Any]], prefix: str = ""
) -> Any:
    """The parameters of `bulk_insert` for ``rows``: arrays on PostgreSQL, the rows on SQLite."""
    if dialect != "postgresql":
        return list(rows)
    return {f"{prefix}{c.name}": [row.get(c.name) for row in rows] for c in table.c}


def _element_type(column_type: Any) -> Any:
    if isinstance(column_type, LargeBinary):
        return postgresql.BYTEA()
    if isinstance(column_type, JSON):
        return postgresql.JSONB()
    return column_type


def metadata_filter(conn: Connection, column: Any, filter: dict[str, Any]) -> list[Any]:
    """Conditions that narrow rows to those whose JSON ``column`` may match ``filter``.

    PostgreSQL checks containment (served by the JSONB column); SQLite compares scalar values
    with ``json_extract``.  Callers still compare exactly in Python, as `InMemorySaver` does.
    """
    if conn.dialect.name == "postgresql":
        return [type_coerce(column, postgresql.JSONB).contains(filter)]
    conditions = []
    for key, value in filter.items():
        if not _SIMPLE_KEY.fullmatch(key):
            continue
        path = f'$."{key}"'
        if value is None:
            conditions.append(func.json_type(column, path) == "null")
        elif isinstance(value, bool | int | float | str):
            conditions.append(func.json_extract(column, path) == value)
    return conditions
