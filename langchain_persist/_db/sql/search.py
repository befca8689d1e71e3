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
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Table,
    bindparam,
    column,
    exists,
    func,
    literal,
    literal_column,
    or_,
    select,
    table,
    tuple_,
    type_coerce,
    union_all,
)
from sqlalchemy.sql.elements import ColumnElement

from ..._errors import ValidationError
from ..schema import SEARCH_COLUMN, SEARCHED, agent_results, agent_traces, execution_logs
from .paging import after_cursor, decode_cursor

MAX_QUERY = 1000
# what separates words: whitespace, ASCII punctuation and control characters, and what the
# sanitizer makes of NUL and lone surrogates (U+FFFD) or leaves of them in a query
_SEPARATORS = r"\s\x00-\x1f\x7f!-/:-@\[-`{-~\ufffd\ud800-\udfff"
# a word: a run of characters that are not separators
_WORD = re.compile(f"[^{_SEPARATORS}]+")
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
    if cursor:
        decode_cursor(cursor)  # a cursor that was not ours is refused, matches or not
    plans = [p for kind in KINDS
             if (p := _plan(conn, kind, terms, filters, cursor)) is not None]
    if conn.dialect.name == "postgresql":
        rows = [row for plan in plans for row in _postgres_hits(conn, plan, limit)]
        rows.sort(key=lambda r: (r.timestamp, str(r.id)), reverse=True)
        return rows[:limit]
    parts = [plan.query().limit(limit) for plan in plans]
    if not parts:
        return []
    if len(parts) == 1:
        return list(conn.execute(parts[0]))
    both = union_all(*(select(p.subquery()) for p in parts)).subquery()
    return list(conn.execute(
        select(both).order_by(both.c.timestamp.desc(), both.c.id.desc()).limit(limit)
    ))


@dataclass(frozen=True)
class _Plan:
    """One table's part of a search: its rows' columns, the filters, the match condition, and
    the (timestamp, id) columns to order by (plain columns, or ones no index serves)."""

    table: Table
    columns: tuple[Any, ...]
    where: tuple[Any, ...]
    match: Any
    at: Any
    id: Any

    def query(self, *, matching: bool = True) -> Any:
        """The hits (or, ``matching=False``, every row the filters let through), newest first."""
        conditions = (*self.where, self.match) if matching else self.where
        return (select(*self.columns).where(*conditions)
                .order_by(self.at.desc(), self.id.desc()))


def _plan(
    conn: Connection, kind: str, terms: Sequence[Term], filters: Filters, cursor: str | None,
) -> _Plan | None:
    """One table's part of a search, or None when there can be no hit in it."""
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
    col = {c: t.c[c] for c in ("agent_id", "timestamp", "id")}
    if conn.dialect.name == "postgresql":
        query = bindparam(f"{kind}_query", tsquery(terms))  # planned for its value: the
        # service runs searches with custom plans (`dialect.custom_plans`)
        match = literal_column(SEARCH_COLUMN).op("@@")(func.to_tsquery(
            literal_column("'simple'::regconfig"), query))
    else:
        match, lookup = _fts5_match(conn, t, fts5_query(terms))
        if match is None:
            return None
        if lookup:  # the few matching rows are read by rowid: no index is to compete
            col = {c: _plain(conn, t.c[c]) for c in col}
    if filters.agent_id is not None:
        where.append(col["agent_id"] == filters.agent_id)
    if filters.execution_id is not None:
        where.append(t.c.execution_id == filters.execution_id)
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
        where.append(col["timestamp"] >= filters.since)
    if filters.until is not None:
        where.append(col["timestamp"] < filters.until)
    if cursor:
        at, _ = decode_cursor(cursor)
        where.append(col["timestamp"] <= at)  # a range the time index can serve
        where.append(after_cursor(col["timestamp"], col["id"], cursor, descending=True))
    columns = (
        literal(kind).label("kind"), t.c.id, t.c.agent_id, t.c.execution_id, t.c.timestamp,
        t.c[type_].label("type"), t.c[name].label("name"), t.c[text].label("text"),
        t.c.metadata,
    )
    return _Plan(t, columns, tuple(where), match, col["timestamp"], col["id"])


# PostgreSQL: how many of the newest rows (that the filters let through) a search reads first
RECENT_WINDOW = 5_000


def _postgres_hits(conn: Connection, plan: _Plan, limit: int) -> list[Any]:
    """A table's hits on PostgreSQL, newest first, found in two steps.

    PostgreSQL's planner picks between walking the time index newest first (quick when
    matches are many) and reading every match through the GIN index, then sorting (quick when
    they are few) by its estimate of how many rows match; for a word it has no statistics of,
    it guesses "many", and a walk over a million rows for a word that matches none takes a
    second.  So: first the ``RECENT_WINDOW`` newest rows are read along the (agent and) time
    index and matched (enough when matches are dense), in one statement that also gives the
    window's oldest row; if they hold fewer than ``limit`` hits and the window was full, the
    older matches come from the GIN index (and'ed with the agent's index, when filtered by
    agent), sorted by an expression no index serves, so that the planner cannot walk.
    """
    t = plan.table
    window = (plan.query(matching=False)
              .add_columns(literal_column(SEARCH_COLUMN).label("search_vector"))
              .limit(RECENT_WINDOW).subquery())
    names = [c.name for c in plan.columns]
    ranked = select(
        *(window.c[n] for n in names),
        window.c.search_vector.op("@@")(plan.match.right).label("hit"),
        func.row_number().over(order_by=(window.c.timestamp.desc(), window.c.id.desc()))
        .label("rn"),
    ).subquery()
    rows = list(conn.execute(
        select(*(ranked.c[n] for n in names), ranked.c.hit, ranked.c.rn)
        .where(or_(ranked.c.hit, ranked.c.rn == RECENT_WINDOW))
        .order_by(ranked.c.timestamp.desc(), ranked.c.id.desc()).limit(limit + 1)))
    hits = [r for r in rows if r.hit][:limit]
    edge = next((r for r in rows if r.rn == RECENT_WINDOW), None)
    if len(hits) >= limit or edge is None:  # enough, or the window held every row
        return hits
    before_edge = tuple_(t.c.timestamp, t.c.id) < tuple_(
        literal(edge.timestamp, t.c.timestamp.type), literal(edge.id, t.c.id.type))
    older = (select(*plan.columns)
             .where(*plan.where, plan.match, before_edge)
             .order_by((t.c.timestamp + literal_column("interval '0 seconds'")).desc(),
                       t.c.id.desc())
             .limit(limit - len(hits)))
    return hits + list(conn.execute(older))


def index_sqlite_rows(conn: Connection, table_name: str, *, after: int) -> None:
    """Add the rows of SQLite table ``table_name`` past rowid ``after`` to its FTS5 index (the
    rows one insert statement just stored: one statement, rather than a trigger a row)."""
    names = ", ".join(SEARCHED[table_name])
    conn.exec_driver_sql(f"INSERT INTO {table_name}_search (rowid, {names}) SELECT rowid, "
                         f"{names} FROM {table_name} WHERE rowid > ?", (after,))


# SQLite plans a search by how many rows of the table match, and how densely:
LOOKUP_MAX = 2_000  # up to this many: read each matching row by rowid, then sort them
DENSE = 0.2  # more than this share of the newest rows match: ask FTS5 about each row


def _fts5_match(conn: Connection, t: Table, query: str) -> tuple[Any, bool]:
    """The condition that a row of ``t`` matches ``query``, written for the plan that suits
    how many rows match, and whether that plan reads the matches by rowid; (None, False) when
    no row matches.

    SQLite's planner cannot tell how many rows an FTS5 query matches, so it reads every match
    by rowid and sorts them all, even when there are a hundred thousand and a page needs 50.
    The newest matches (FTS5 reads its index backwards cheaply) decide instead: when there
    are at most ``LOOKUP_MAX``, they are read by rowid; when there are more, the rows are walked
    newest first along the (agent and) time index until the page is full, and each is checked
    against the set of matches (``rowid + 0 IN``: not a rowid lookup), or, when matches are
    dense (rows are stored about in time order, so the share of matches among the newest
    rowids tells how many rows the walk will take), asked of FTS5 one by one (``EXISTS ...
    rowid =``), which costs more per row but builds no set.
    """
    fts = table(f"{t.name}_search", column("rowid"))
    match = literal_column(fts.name).match(query)
    newest = select(fts.c.rowid).where(match).order_by(fts.c.rowid.desc()).limit(1)
    first = conn.execute(newest).scalar()
    if first is None:
        return None, False
    matches = select(fts.c.rowid).where(match)
    rowid = literal_column(f"{t.name}.rowid")
    last = conn.execute(newest.offset(LOOKUP_MAX)).scalar()
    if last is None:
        return rowid.in_(matches), True
    if LOOKUP_MAX / (first - last + 1) <= DENSE:
        return (rowid + 0).in_(matches), False
    probe = fts.alias("probe")
    return exists(select(literal(1)).select_from(probe).where(
        literal_column("probe." + fts.name).match(query), probe.c.rowid == rowid)), False


def _plain(conn: Connection, col: Any) -> Any:
    """``+column``: the same value, which SQLite will not look up through an index."""
    quote = conn.dialect.identifier_preparer.quote
    return type_coerce(literal_column(f"+{quote(col.table.name)}.{quote(col.name)}"), col.type)


# -- snippets -----------------------------------------------------------------------------------


def snippet(
    text: str | None, terms: Sequence[Term], width: int = 160
) -> tuple[str, list[tuple[int, int]]]:
    """A window of ``text`` around its first match, and the (start, end) of every match in it.

    Words are found as the databases find them (see the module's docstring), in any case; the
    window is cut at ``width`` characters, with ``…`` where text was left out.
    """
    if not text:
        return "", []
    spans = sorted(m.span() for m in _matcher(tuple(terms)).finditer(text))
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


_GAP = f"[{_SEPARATORS}]"  # what separates words
_LETTER = f"[^{_SEPARATORS}]"  # a character of a word


@functools.lru_cache(maxsize=256)
def _matcher(terms: tuple[Term, ...]) -> re.Pattern[str]:
    """A regular expression of the terms: each a whole word sequence (its last word a prefix
    for a prefix term), separated by anything that is not a word character."""
    alternatives = []
    for term in terms:
        words = f"{_GAP}+".join(re.escape(w) for w in term.words)
        end = "" if term.prefix else f"(?!{_LETTER})"
        alternatives.append(f"(?<!{_LETTER}){words}{end}")
    return re.compile("|".join(alternatives), re.IGNORECASE)
