"""The few statements that SQLite and PostgreSQL spell differently."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.dialects import postgresql, sqlite


def upsert(conn: Connection, table: Table) -> Any:
    """An INSERT with ``on_conflict_do_update`` / ``on_conflict_do_nothing`` for this dialect."""
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert(table)
