"""The few statements that SQLite and PostgreSQL spell differently."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection, Table, func, type_coerce
from sqlalchemy.dialects import postgresql, sqlite

_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_\-]+")


def upsert(conn: Connection, table: Table) -> Any:
    """An INSERT with ``on_conflict_do_update`` / ``on_conflict_do_nothing`` for this dialect."""
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert(table)


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
