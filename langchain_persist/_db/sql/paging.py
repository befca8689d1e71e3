"""Keyset pagination and batched deletes shared by the table groups."""

from __future__ import annotations

import base64
import datetime as dt
import uuid
from typing import Any

from sqlalchemy import Connection, Table, delete, func, literal, select, tuple_
from sqlalchemy.sql.elements import ColumnElement

from ..._errors import ValidationError
from ..._sanitize import shown


def encode_cursor(at: dt.datetime, id_: str) -> str:
    """An opaque cursor that points just past the row (at, id_)."""
    return base64.urlsafe_b64encode(f"{at.isoformat()}|{id_}".encode()).decode()


def decode_cursor(cursor: str) -> tuple[dt.datetime, str]:
    """Undo `encode_cursor`, with a clear error for a cursor that was not ours."""
    try:
        at, id_ = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return as_utc(dt.datetime.fromisoformat(at)), str(uuid.UUID(id_))
    except (ValueError, UnicodeError, AttributeError, TypeError) as exc:
        raise ValidationError(
            f"invalid cursor {shown(cursor)}: pass the next_cursor of a previous page unchanged"
        ) from exc


def as_utc(at: dt.datetime) -> dt.datetime:
    """A datetime in UTC; a naive one is taken to be UTC already."""
    if at.tzinfo is dt.UTC:
        return at
    if at.tzinfo is None:
        return at.replace(tzinfo=dt.UTC)
    try:
        return at.astimezone(dt.UTC)
    except OverflowError:  # the first or last hours of the calendar, in another zone
        raise ValidationError(
            f"{at.isoformat()} is out of range in UTC: give a moment from year 1 to 9999"
        ) from None


def delete_batch(conn: Connection, table: Table, where: ColumnElement[bool], size: int) -> int:
    """Delete at most ``size`` rows matching ``where``, by primary key; return how many went."""
    key = tuple_(*table.primary_key.columns)
    chosen = select(*table.primary_key.columns).where(where).limit(size)
    if conn.dialect.name == "postgresql":  # let concurrent cleanups skip each other's rows
        chosen = chosen.with_for_update(skip_locked=True)
    return conn.execute(delete(table).where(key.in_(chosen))).rowcount


def count_where(conn: Connection, table: Table, where: ColumnElement[bool]) -> int:
    """How many rows match ``where`` (what `delete_batch` would delete, batch after batch)."""
    return conn.execute(select(func.count()).select_from(table).where(where)).scalar_one()


def after_cursor(at_col: Any, id_col: Any, cursor: str, *, descending: bool) -> ColumnElement[bool]:
    """The keyset condition for the rows that come after ``cursor`` in (at, id) order."""
    at, id_ = decode_cursor(cursor)
    row, mark = tuple_(at_col, id_col), tuple_(literal(at, at_col.type), literal(id_, id_col.type))
    return row < mark if descending else row > mark
