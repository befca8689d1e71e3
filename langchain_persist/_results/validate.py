"""Input checks shared by the service and the background writer: ids, levels, statuses, ages.

Each returns the value to store or raises `ValidationError` naming the field and the fix.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping
from typing import Any

from .._db.schema import LOG_LEVELS, RESULT_STATUSES
from .._db.sql.paging import as_utc
from .._errors import ValidationError
from .._sanitize import MAX_ID as MAX_KEY
from .._sanitize import checked_id as key  # the id checks live in the foundation: the saver
from .._sanitize import checked_namespace as namespace  # checks its ids too
from .._sanitize import is_clean, jsonable, shown
from .._sanitize import lookup_id as lookup

__all__ = [
    "MAX_KEY", "MAX_PAGE", "cutoff", "duration", "key", "level", "limit", "lookup", "metadata",
    "moment", "namespace", "now", "result_id", "status", "trace_type",
]

MAX_PAGE = 10_000
LEVEL_ALIASES = {"warning": "warn", "critical": "error", "exception": "error"}

Age = dt.datetime | dt.timedelta
_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*([wdhms])")
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def now() -> dt.datetime:
    """The current time in UTC."""
    return dt.datetime.now(dt.UTC)


def level(value: str) -> str:
    """A log level, its common aliases (``warning``, ``critical``, ``exception``) mapped."""
    name = LEVEL_ALIASES.get(value, value)
    if name not in LOG_LEVELS:
        raise ValidationError(f"level must be one of {', '.join(LOG_LEVELS)}; got {shown(value)}")
    return name


def status(value: str) -> str:
    """A result status."""
    if value not in RESULT_STATUSES:
        raise ValidationError(
            f"status must be one of {', '.join(RESULT_STATUSES)}; got {shown(value)}")
    return value


def result_id(value: Any) -> str | None:
    """A result id in canonical form, or None when it cannot be one (so it matches no row)."""
    try:
        return str(uuid.UUID(value if type(value) is str else str(value)))
    except Exception:  # not an id, or a value that cannot even be shown as text
        return None


def metadata(value: Mapping[str, Any] | None) -> dict[str, Any]:
    """A metadata mapping as plain JSON (``{}`` for None)."""
    if value is None:
        return {}
    if type(value) is not dict and not isinstance(value, Mapping):
        raise ValidationError(f"metadata must be a mapping, got {type(value).__name__}")
    return jsonable(value)  # type: ignore[no-any-return]


def limit(value: int) -> int:
    """A page size."""
    if not isinstance(value, int) or not 1 <= value <= MAX_PAGE:
        raise ValidationError(f"limit must be an integer from 1 to {MAX_PAGE}, got {shown(value)}")
    return value


def trace_type(value: Any) -> str:
    """A trace type: a short name such as ``tool_start``."""
    if not isinstance(value, str) or not 0 < len(value) <= 32 or not is_clean(value):
        raise ValidationError(f"type must be a name such as 'tool_start', got {shown(value)}")
    return value


def duration(value: Any) -> float | None:
    """A duration in milliseconds."""
    if value is None:
        return None
    if not isinstance(value, int | float) or value < 0:
        raise ValidationError(f"duration must be a non-negative number of ms, got {shown(value)}")
    return float(value)


def moment(field: str, value: Any) -> dt.datetime | None:
    """A moment (None, or a datetime; a naive one is taken as UTC) in UTC."""
    if value is None:
        return None
    if not isinstance(value, dt.datetime):
        raise ValidationError(f"{field} must be a datetime, got {shown(value)}")
    return as_utc(value)


def cutoff(older_than: Age, field: str = "older_than") -> dt.datetime:
    """The moment before which rows count as old: a datetime, or an age back from now."""
    if isinstance(older_than, dt.timedelta):
        if older_than < dt.timedelta(0):
            raise ValidationError(f"{field} must not be negative, got {older_than}")
        try:
            return now() - older_than
        except OverflowError:
            raise ValidationError(
                f"{field} must be an age since year 1, got {older_than}"
            ) from None
    if isinstance(older_than, dt.datetime):
        return as_utc(older_than)
    raise ValidationError(
        f"{field} must be a datetime or a timedelta, got {type(older_than).__name__}"
    )


def parse_age(text: str) -> dt.timedelta:
    """An age such as ``30d``, ``12h``, ``15m``, ``90s``, ``2w`` or ``1d12h``."""
    compact = text.strip().lower().replace(" ", "")
    parts = _AGE.findall(compact)
    if not compact or "".join(f"{n}{u}" for n, u in parts) != compact:
        raise ValidationError(
            f"{text!r} is not an age: use a number and a unit, such as 30d, 12h, 15m, 90s "
            "(w, d, h, m, s; combined like 1d12h)"
        )
    try:
        return sum((dt.timedelta(**{_UNITS[u]: float(n)}) for n, u in parts), dt.timedelta())
    except OverflowError:
        raise ValidationError(f"{text!r} is too long an age: the longest is 999999999d") from None


def age_or_moment(text: str) -> Age:
    """An age (``7d``: back from now) or a moment (ISO 8601; UTC if it names no zone)."""
    try:
        return as_utc(dt.datetime.fromisoformat(text.strip()))
    except ValueError:
        return parse_age(text)
