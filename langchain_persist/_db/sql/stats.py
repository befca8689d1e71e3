"""Aggregate statistics over runs, tool calls and model calls, computed by the database.

Three sources, each filtered by agent and time range and grouped by one key:

- runs (`agent_results`, by ``created_at``): counts by status, durations (the run's own
  ``duration_ms`` in its metadata, else ``completed_at - created_at``; running runs have none),
  tokens (``usage`` in its metadata);
- tool calls (`agent_traces` of type ``tool_end`` and ``tool_error``, by ``timestamp``):
  counts, errors, durations;
- model calls (``llm_end`` and ``llm_error`` traces): counts and tokens.

Percentiles are continuous (linear interpolation between the two nearest values, as
``percentile_cont``): PostgreSQL's ``percentile_cont`` ordered-set aggregate; on SQLite, which
has none, each value is ranked with ``row_number()`` and ``count()`` windows per group, and
the aggregate picks the two values around each percentile's position.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    Select,
    String,
    case,
    cast,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import ColumnElement

from ..schema import agent_results, agent_traces

PERCENTILES = (0.5, 0.95, 0.99)
GROUPINGS = ("agent", "tool", "model", "status", "hour", "day")
TOOL_CALLS = ("tool_end", "tool_error")
MODEL_CALLS = ("llm_end", "llm_error")
ERROR_TEXT = 200  # errors are grouped by their first characters
# which sources a grouping applies to (runs have no tool or model, tool calls no status)
SOURCES = {
    None: ("runs", "tools", "models"),
    "agent": ("runs", "tools", "models"),
    "hour": ("runs", "tools", "models"),
    "day": ("runs", "tools", "models"),
    "status": ("runs",),
    "tool": ("tools",),
    "model": ("models",),
}


@dataclass(frozen=True, slots=True)
class Scope:
    """The rows the statistics cover: an agent's (or everyone's) within [since, until)."""

    agent_id: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None


def _number(column: Any, *path: str, integer: bool = False) -> Any:
    """A number inside a JSON column (NULL when absent)."""
    element = column[path] if len(path) > 1 else column[path[0]]
    return element.as_integer() if integer else element.as_float()


def _ms_between(conn: Connection, start: Any, end: Any) -> Any:
    if conn.dialect.name == "postgresql":
        return func.extract("epoch", end - start) * 1000
    return (func.julianday(end) - func.julianday(start)) * 86_400_000


def _bucket(conn: Connection, at: Any, by: str) -> Any:
    """The start of the hour or day (UTC) a moment falls in."""
    if conn.dialect.name == "postgresql":
        return func.date_trunc(by, at, "UTC")
    return func.strftime("%Y-%m-%d %H:00:00" if by == "hour" else "%Y-%m-%d 00:00:00", at)


def _within(column: Any, agent_column: Any, scope: Scope) -> list[ColumnElement[bool]]:
    where = []
    if scope.agent_id is not None:
        where.append(agent_column == scope.agent_id)
    if scope.since is not None:
        where.append(column >= scope.since)
    if scope.until is not None:
        where.append(column < scope.until)
    return where


def _percentiles(
    conn: Connection, facts: Any, value: str, sums: Callable[[Any], list[Any]]
) -> Select[Any]:
    """``sums`` of ``facts`` per key, with the percentiles of its ``value`` column."""
    if conn.dialect.name == "postgresql":
        pct = func.percentile_cont(postgresql.array(PERCENTILES)).within_group(facts.c[value])
        return select(facts.c.key, *sums(facts.c), pct.label("pcts")).group_by(facts.c.key)
    v = facts.c[value]
    ranked = select(
        facts,
        func.row_number().over(partition_by=facts.c.key, order_by=v.asc().nulls_last())
        .label("rn"),
        func.count(v).over(partition_by=facts.c.key).label("n"),
    ).subquery()
    r = ranked.c
    columns = []
    for p in PERCENTILES:
        position = p * (r.n - 1)
        low = cast(position, Integer) + 1  # the rank at or just below the percentile
        at_low = func.max(case((r.rn == low, r[value])))
        at_high = func.coalesce(func.max(case((r.rn == low + 1, r[value]))), at_low)
        fraction = func.max(position - cast(position, Integer))
        columns.append((at_low + fraction * (at_high - at_low)).label(f"p{p}"))
    return select(r.key, *sums(r), *columns).group_by(r.key)


def _key(conn: Connection, by: str | None, columns: dict[str, Any], at: Any) -> Any:
    if by is None:
        return literal("").label("key")
    if by in ("hour", "day"):
        return _bucket(conn, at, by).label("key")
    return columns[by].label("key")


def run_stats(conn: Connection, scope: Scope, by: str | None) -> list[Any]:
    """Per key: runs, completed, failed, interrupted, running, tokens, duration percentiles."""
    t = agent_results.c
    stopped = t.status.in_(("completed", "failed", "interrupted"))
    duration = case(
        (stopped, func.coalesce(_number(t.metadata, "duration_ms"),
                                _ms_between(conn, t.created_at, t.completed_at))),
    )
    facts = select(
        _key(conn, by, {"agent": t.agent_id, "status": t.status}, t.created_at),
        t.status, duration.label("duration"),
        *(_number(t.metadata, "usage", name, integer=True).label(name)
          for name in ("input_tokens", "output_tokens", "total_tokens")),
    ).where(*_within(t.created_at, t.agent_id, scope)).subquery()

    def sums(f: Any) -> list[Any]:
        counts = [func.count().label("runs")]
        for status in ("completed", "failed", "interrupted", "running"):
            counts.append(func.coalesce(func.sum(case((f.status == status, 1), else_=0)), 0)
                          .label(status))
        for name in ("input_tokens", "output_tokens", "total_tokens"):
            counts.append(func.coalesce(func.sum(f[name]), 0).label(name))
        return counts

    return list(conn.execute(_percentiles(conn, facts, "duration", sums)))


def tool_stats(conn: Connection, scope: Scope, by: str | None) -> list[Any]:
    """Per key: tool calls, tool errors, duration percentiles."""
    t = agent_traces.c
    facts = select(
        _key(conn, by, {"agent": t.agent_id, "tool": t.name}, t.timestamp),
        t.type, t.duration,
    ).where(t.type.in_(TOOL_CALLS), *_within(t.timestamp, t.agent_id, scope)).subquery()

    def sums(f: Any) -> list[Any]:
        return [func.count().label("calls"),
                func.coalesce(func.sum(case((f.type == "tool_error", 1), else_=0)), 0)
                .label("errors")]

    return list(conn.execute(_percentiles(conn, facts, "duration", sums)))


def model_stats(conn: Connection, scope: Scope, by: str | None) -> list[Any]:
    """Per key: model calls, model errors and tokens (from each call's usage)."""
    t = agent_traces.c
    model = func.coalesce(t.metadata["model"].as_string(), t.name)
    key = _key(conn, by, {"agent": t.agent_id, "model": model}, t.timestamp)
    facts = select(
        key, t.type,
        *(_number(t.metadata, "usage", name, integer=True).label(name)
          for name in ("input_tokens", "output_tokens", "total_tokens")),
    ).where(t.type.in_(MODEL_CALLS), *_within(t.timestamp, t.agent_id, scope)).subquery()
    query = select(
        facts.c.key, func.count().label("calls"),
        func.coalesce(func.sum(case((facts.c.type == "llm_error", 1), else_=0)), 0)
        .label("errors"),
        *(func.coalesce(func.sum(facts.c[name]), 0).label(name)
          for name in ("input_tokens", "output_tokens", "total_tokens")),
    ).group_by(facts.c.key)
    return list(conn.execute(query))


def top_errors(conn: Connection, scope: Scope, limit: int) -> list[Any]:
    """The most frequent errors of failed runs and of tool calls: (kind, name, message, count,
    last_seen), most frequent first."""
    r, t = agent_results.c, agent_traces.c
    run_error = func.substr(r.error, 1, ERROR_TEXT)
    runs = select(
        literal("run").label("kind"), literal(None, String).label("name"),
        run_error.label("message"), func.count().label("count"),
        func.max(r.completed_at).label("last_seen"),
    ).where(
        r.status == "failed", r.error.is_not(None), *_within(r.created_at, r.agent_id, scope)
    ).group_by(run_error)
    tool_error = func.substr(t.content, 1, ERROR_TEXT)
    tools = select(
        literal("tool").label("kind"), t.name.label("name"), tool_error.label("message"),
        func.count().label("count"), func.max(t.timestamp).label("last_seen"),
    ).where(
        t.type == "tool_error", *_within(t.timestamp, t.agent_id, scope)
    ).group_by(t.name, tool_error)
    both = union_all(runs, tools).subquery()
    return list(conn.execute(
        select(both).order_by(both.c["count"].desc(), both.c.last_seen.desc()).limit(limit)
    ))


def percentiles_of(row: Any) -> tuple[float | None, ...]:
    """The (p50, p95, p99) of a row of `run_stats` or `tool_stats`, whatever the database."""
    mapping = row._mapping
    if "pcts" in mapping:
        values = mapping["pcts"]
        return tuple(values) if values is not None else (None,) * len(PERCENTILES)
    return tuple(mapping[f"p{p}"] for p in PERCENTILES)


def bucket_start(value: Any) -> dt.datetime:
    """A time bucket's key as a UTC datetime (SQLite gives text)."""
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
