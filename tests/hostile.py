"""Hostile values for property-based tests: what careless callers and attackers pass.

Text with NUL, lone surrogates, control and right-to-left characters; floats that JSON has no
word for; integers past 64 bits; recursive containers; objects whose attributes, ``repr`` or
``str`` raise; and mixtures of all of them, nested.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from hypothesis import strategies as st

ANY_CHAR = st.characters(exclude_categories=())  # surrogates and controls included
SPECIALS = st.sampled_from(["\x00", "\ud800", "\udfff", "\ud83d", "\u202e", "\ufeff", "\n",
                            "'", '"', "\\", "%00", "<script>", "🙂", "é", " "])
hostile_text = st.one_of(
    st.text(ANY_CHAR, max_size=40),
    st.lists(st.one_of(SPECIALS, st.text(ANY_CHAR, max_size=5)), max_size=8).map("".join),
    st.builds(lambda c, n: c * n, SPECIALS, st.integers(1, 3000)),
)


class Unprintable:
    """An object whose public attributes, ``repr`` and ``str`` raise (its private ones are
    missing as usual, so that Hypothesis can still describe it)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise RuntimeError(f"no {name}")

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__


def _recursive(_: Any) -> list[Any]:
    looped: list[Any] = []
    looped.append(looped)
    return looped


scalars = st.one_of(
    hostile_text, st.none(), st.booleans(), st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**40), max_value=10**40), st.binary(max_size=20),
    st.builds(Unprintable), st.builds(_recursive, st.none()),
    st.just(dt.datetime(2026, 1, 1, tzinfo=dt.UTC)), st.just(uuid.UUID(int=7)),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(hostile_text, st.integers()), inner, max_size=4),
        st.tuples(inner, inner), st.frozensets(st.one_of(hostile_text, st.integers()),
                                               max_size=3),
    ),
    max_leaves=12,
)
ids = st.one_of(hostile_text, st.just("agent-1"), st.integers(), st.none(), st.builds(Unprintable))
