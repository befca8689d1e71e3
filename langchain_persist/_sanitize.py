"""Make any value safe to store, the same way on both databases: JSON that PostgreSQL's JSONB
and SQLite accept, and text that both can encode.

- Text: NUL (which PostgreSQL text and JSONB reject) and lone surrogates (which no database can
  encode as UTF-8: ``"\\ud800"`` from a broken decoder) become U+FFFD; ids are not cleaned but
  refused (`is_clean`), so that one id never names two things.
- JSON: anything becomes plain JSON (`jsonable`): datetimes ISO strings, NaN a string, objects
  their dict or ``repr``, objects whose attributes or ``repr`` fail a placeholder; it never
  raises.
- Size: long text is cut with a marker that says how long it was (`bounded`).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import json
import math
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import orjson

from ._errors import ValidationError

_MAX_DEPTH = 32
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
NUL_REPLACEMENT = "\ufffd"
MAX_ID = 255


def clean_text(value: str) -> str:
    """``value`` with NUL and lone surrogates replaced by U+FFFD (cheap when there are none)."""
    if value.isascii():
        return value.replace("\x00", NUL_REPLACEMENT) if "\x00" in value else value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate; a valid pair becomes its character
        value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return value.replace("\x00", NUL_REPLACEMENT) if "\x00" in value else value


def is_clean(value: str) -> bool:
    """Whether ``value`` has no NUL and no lone surrogate (what an id must be)."""
    return clean_text(value) == value


def checked_id(field: str, value: Any, *, required: bool = True) -> str | None:
    """An id-like field: a non-empty string of at most 255 characters, stored as it is given
    (an id with NUL or a lone surrogate is refused, never rewritten: it would name another)."""
    if type(value) is str and 0 < len(value) <= MAX_ID and value.isascii() and (
        "\x00" not in value and not value.isspace()
    ):
        return value  # the common case, checked at a quarter of the cost
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ValidationError(f"{field} must be a non-empty string, got {shown(value)}")
    if len(value) > MAX_ID:
        raise ValidationError(f"{field} is {len(value)} characters long; the limit is {MAX_ID}")
    if not is_clean(value):
        raise ValidationError(
            f"{field} {shown(value)} contains a NUL character or a lone surrogate: ids are "
            "stored as given, so they must be plain text"
        )
    return str.__str__(value)


def checked_label(field: str, value: Any) -> str | None:
    """A short label (a tool's or a source's name): like an id, but cleaned, not refused (a
    label names nothing that another row could be confused with)."""
    if value is None:
        return None
    if type(value) is str and 0 < len(value) <= MAX_ID and value.isascii() and "\x00" not in value:
        return value
    text = clean_text(value) if isinstance(value, str) else value
    return checked_id(field, text, required=False)


def checked_namespace(value: Any) -> str:
    """A checkpoint namespace: text (``""`` for the top graph) that is plain, as ids are."""
    if value == "":
        return ""
    return checked_id("checkpoint_ns", value)  # type: ignore[return-value]


def lookup_id(value: Any) -> str | None:
    """An id to look up, or None when no stored id can be it (reads then find nothing, the
    same on both databases)."""
    if type(value) is str and 0 < len(value) <= MAX_ID and is_clean(value):
        return value
    return None


def shown(value: Any) -> str:
    """A value for an error message: its ``repr``, cleaned and cut when long; never raises."""
    try:
        text = repr(clean_text(value) if isinstance(value, str) else value)
    except Exception:
        text = f"<a {type(value).__qualname__}>"
    return bounded(clean_text(text), 80)


def dumps(value: Any) -> str:
    """Compact JSON text, as ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))``
    gives it, at a tenth of the cost (orjson; the standard library for what orjson refuses,
    such as integers over 64 bits).  Every JSON column is written through it."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return clean_text(_ENCODE(jsonable(value)))


def to_text(value: Any) -> str:
    """Any value as storable text: strings cleaned, everything else as compact JSON."""
    if type(value) is str:
        return clean_text(value)
    if isinstance(value, str):
        return clean_text(str.__str__(value))
    return dumps(jsonable(value))


def truncate(text: str, limit: int) -> tuple[str, int | None]:
    """Cut ``text`` to ``limit`` characters; also return the original length if it was cut."""
    if limit < 0 or len(text) <= limit:
        return text, None
    return text[:limit], len(text)


def bounded(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters, with a marker saying how long it was."""
    cut, length = truncate(text, limit)
    return cut if length is None else f"{cut}… [truncated: {length} characters in all]"


def jsonable(value: Any, _depth: int = 0) -> Any:
    """A copy of ``value`` that plain JSON (and PostgreSQL JSONB) can hold; never raises.

    Datetimes become ISO strings, UUIDs and Decimals strings, sets sorted lists, pydantic models
    and dataclasses dicts, bytes base64, NaN and infinities strings; anything else its ``repr``
    (or a placeholder when even that fails).
    """
    kind = type(value)
    if kind is str:  # fast paths for the plain types that make up most events
        return value if value.isascii() and "\x00" not in value else clean_text(value)
    if value is None or kind is int or kind is bool:
        return value
    if kind is dict and _depth < _MAX_DEPTH:  # plain values inline: no call per value
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if type(k) is not str or not k.isascii() or "\x00" in k:
                k = _key_text(k)
            vkind = type(v)
            if vkind is str:
                out[k] = v if v.isascii() and "\x00" not in v else clean_text(v)
            elif v is None or vkind is int or vkind is bool:
                out[k] = v
            else:
                out[k] = jsonable(v, _depth + 1)
        return out
    try:
        return _other(value, _depth)
    except Exception:  # a property, a model_dump or a __repr__ that raises
        return _placeholder(value)


def _key_text(key: Any) -> str:
    try:
        return clean_text(key if isinstance(key, str) else str(key))
    except Exception:
        return _placeholder(key)


def _placeholder(value: Any) -> str:
    return f"<unrepresentable {type(value).__qualname__}>"


def _other(value: Any, _depth: int) -> Any:
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return clean_text(str.__str__(value))
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else str(float(value))
    if _depth >= _MAX_DEPTH:
        return clean_text(repr(value))
    depth = _depth + 1
    if isinstance(value, Mapping):
        return {_key_text(k): jsonable(v, depth) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v, depth) for v in value]
    if isinstance(value, set | frozenset):
        items = [jsonable(v, depth) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return sorted(items, key=repr)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID | Decimal):
        return clean_text(str(value))
    if isinstance(value, enum.Enum):
        return jsonable(value.value, depth)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode()
    if hasattr(value, "model_dump"):  # pydantic v2 models, LangChain messages
        try:
            return jsonable(value.model_dump(), depth)
        except Exception:
            pass
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        try:
            return jsonable(dataclasses.asdict(value), depth)
        except Exception:
            pass
    return clean_text(repr(value))
