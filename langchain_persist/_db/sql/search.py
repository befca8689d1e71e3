"""Full-text search over logs and traces: the query language, its SQL on each database, and
the snippets that show where a hit matched.

The searched text is a trace's name and content and a log's message (see ``SEARCHED`` in the
schema).  Both databases cut it into words the same way: at whitespace and ASCII punctuation
(so ``openai.RateLimitError`` holds the word ``RateLimitError`` and ``rate-limit`` the words
``rate`` and ``limit``), any letters and digits (``Zürich``, ``東京``) making up words, compared
without regard to case.  A query is a list of terms that must all match:

- a word matches that word;
- words joined by punctuation (``rate-limit``, ``openai.RateLimitError``, ``429:``) or quoted
  (``"rate limit exceeded"``) match those words in that order;
- a term ending in ``*`` matches its last word as a prefix (``Timeout*``).

PostgreSQL matches a ``to_tsquery('simple', ...)`` against the ``search_vector`` column (GIN);
SQLite matches an FTS5 query against the table's FTS5 index.  Hits come newest first, in
(timestamp, id) order, one page at a time.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    bindparam,
    column,
    func,
    literal,
    literal_column,
    select,
    table,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement

from ..._errors import ValidationError
from ..schema import SEARCH_COLUMN, agent_results, agent_traces, execution_logs
from .paging import after_cursor

MAX_QUERY = 1000
# a word: a run of characters that are neither whitespace nor ASCII punctuation
_WORD = re.compile(r"[^\s!-/:-@\[-`{-~]+")
_TERM = re.compile(r'"([^"]*)"(\*?)|(\S+)')
# event tables by kind, with the columns a hit shows: its type and name, and its text
KINDS: dict[str, tuple[Table, str, str, str]] = {
    "trace": (agent_traces, "type", "name", "content"),
    "log": (execution_logs, "level", "source", "message"),
}


@dataclass(frozen=True, slots=True)
class Term:
    """Words that must appear in this order; the last one may be a prefix."""

    words: tuple[str, ...]
    prefix: bool = False


def parse_query(text: str) -> list[Term]:
    """The terms of a search query (raises `ValidationError` for one with no word in it)."""
    if not isinstance(text, str) or not text.strip():
        raise ValidationError("the search query is empty: give a word or two to look for")
    if len(text) > MAX_QUERY:
        raise ValidationError(f"the search query is {len(text)} characters; the limit is "
                              f"{MAX_QUERY}")
    terms = []
    for quoted, star, bare in _TERM.findall(text):
        part = bare or quoted
        words = tuple(w for w in _WORD.findall(part) if any(c.isalnum() for c in w))
        if words:
            terms.append(Term(words, prefix=bool(star) or bare.endswith("*")))
    if not terms:
        raise ValidationError(
            f"the search query {text!r} has no word in it (punctuation alone is not searched)"
        )
    return terms


def tsquery(terms: Sequence[Term]) -> str:
    """The terms as a PostgreSQL ``tsquery`` (for ``to_tsquery('simple', ...)``)."""
    parts = []
    for term in terms:
        words = [f"'{w}'" for w in term.words]
        if term.prefix:
            words[-1] += ":*"
        parts.append(" <-> ".join(words) if len(words) == 1 else f"({' <-> '.join(words)})")
    return " & ".join(parts)


def fts5_query(terms: Sequence[Term]) -> str:
    """The terms as an SQLite FTS5 query (each a quoted phrase, all of them required)."""
    return " AND ".join(
        f'"{" ".join(term.words)}"' + (" *" if term.prefix else "") for term in terms
    )


@dataclass(frozen=True, slots=True)
class Filters:
    """What narrows a search besides its words (None: no condition)."""

    agent_id: str | None = None
    execution_id: str | None = None
    thread_id: str | None = None
    status: str | None = None  # the status of the hit's run (its execution's result)
    types: tuple[str, ...] | None = None  # trace types, and "log" for log lines
    since: dt.datetime | None = None  # inclusive
    until: dt.datetime | None = None  # exclusive


def search(
    conn: Connection, terms: Sequence[Term], filters: Filters, *, limit: int,
    cursor: str | None = None,
) -> list[Any]:
    """Up to ``limit`` hits (rows: kind, id, agent_id, execution_id, timestamp, type, name,
    text, metadata), newest first, after ``cursor``."""
    parts = []
    for kind in KINDS:
        query = _matching(conn, kind, terms, filters, limit, cursor)
        if query is not None:
            parts.append(query)
    if not parts:
        return []
    if len(parts) == 1:
        return list(conn.execute(parts[0]))
    both = union_all(*(select(p.subquery()) for p in parts)).subquery()
    return list(conn.execute(
        select(both).order_by(both.c.timestamp.desc(), both.c.id.desc()).limit(limit)
    ))


def _matching(
    conn: Connection, kind: str, terms: Sequence[Term], filters: Filters, limit: int,
    cursor: str | None,
) -> Any:
    """One table's hits, newest first, or None when the filters leave that table out."""
    t, type_, name, text = KINDS[kind]
    where: list[ColumnElement[bool]] = []
    if filters.types is not None:
        if kind == "log":
            if "log" not in filters.types:
                return None
        else:
            wanted = [x for x in filters.types if x != "log"]
            if not wanted:
                return None
            where.append(t.c.type.in_(wanted))
    if conn.dialect.name == "postgresql":
        where.append(literal_column(SEARCH_COLUMN).op("@@")(func.to_tsquery(
            literal_column("'simple'::regconfig"), bindparam(f"{kind}_query", tsquery(terms))
        )))
    else:  # the rowids the table's FTS5 index matches
        fts = table(f"{t.name}_search", column("rowid"))
        where.append(literal_column(f"{t.name}.rowid").in_(
            select(fts.c.rowid).where(literal_column(fts.name).match(fts5_query(terms)))
        ))
    for col, value in ((t.c.agent_id, filters.agent_id),
                       (t.c.execution_id, filters.execution_id)):
        if value is not None:
            where.append(col == value)
    if filters.thread_id is not None or filters.status is not None:
        runs = select(agent_results.c.execution_id)
        if filters.thread_id is not None:
            runs = runs.where(agent_results.c.thread_id == filters.thread_id)
        if filters.status is not None:
            runs = runs.where(agent_results.c.status == filters.status)
        if filters.agent_id is not None:
            runs = runs.where(agent_results.c.agent_id == filters.agent_id)
        where.append(t.c.execution_id.in_(runs))
    if filters.since is not None:
        where.append(t.c.timestamp >= filters.since)
    if filters.until is not None:
        where.append(t.c.timestamp < filters.until)
    if cursor:
        where.append(after_cursor(t.c.timestamp, t.c.id, cursor, descending=True))
    return (
        select(
            literal(kind).label("kind"), t.c.id, t.c.agent_id, t.c.execution_id, t.c.timestamp,
            t.c[type_].label("type"), t.c[name].label("name"), t.c[text].label("text"),
            t.c.metadata,
        )
        .where(*where)
        .order_by(t.c.timestamp.desc(), t.c.id.desc())
        .limit(limit)
    )


# -- snippets -----------------------------------------------------------------------------------


def snippet(
    text: str | None, terms: Sequence[Term], width: int = 160
) -> tuple[str, list[tuple[int, int]]]:
    """A window of ``text`` around its first match, and the (start, end) of every match in it.

    Words are found as the databases find them (see the module's docstring); the window is cut
    at ``width`` characters, with ``…`` where text was left out.
    """
    if not text:
        return "", []
    words = [(m.start(), m.end(), m.group().lower()) for m in _WORD.finditer(text)]
    spans: list[tuple[int, int]] = []
    for term in terms:
        wanted = [w.lower() for w in term.words]
        n = len(wanted)
        for i in range(len(words) - n + 1):
            if all(words[i + j][2] == wanted[j] for j in range(n - 1)) and (
                words[i + n - 1][2].startswith(wanted[-1]) if term.prefix
                else words[i + n - 1][2] == wanted[-1]
            ):
                spans.append((words[i][0], words[i + n - 1][1]))
    spans.sort()
    if len(text) <= width:
        return text, spans
    first = spans[0][0] if spans else 0
    start = max(0, min(first - width // 3, len(text) - width))
    end = min(len(text), start + width)
    head = "…" if start > 0 else ""
    tail = "…" if end < len(text) else ""
    shift = len(head) - start
    inside = [(a + shift, b + shift) for a, b in spans if a >= start and b <= end]
    return f"{head}{text[start:end]}{tail}", inside
