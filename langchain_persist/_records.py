"""The small, typed, read-only records the service returns (one per table row)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Self, TypeVar

import zstandard
from sqlalchemy import Row

R = TypeVar("R")


class Record:
    """Builds a record from a database row, whatever the dialect returned."""

    @classmethod
    def from_row(cls, row: Row[Any] | Any) -> Self:
        """Make the record from a row (or a named tuple, or a mapping) that has at least its
        fields."""
        values = (row._mapping if hasattr(row, "_mapping")
                  else row if isinstance(row, Mapping) else row._asdict())
        return cls(**{f.name: _normalize(values[f.name]) for f in fields(cls)})  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict (datetimes stay datetimes)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


def _normalize(value: Any) -> Any:
    if isinstance(value, dt.datetime):  # SQLite gives naive UTC, PostgreSQL the session zone
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return value


class _Zstd(threading.local):
    """A zstd compressor and decompressor per thread (they are not thread-safe)."""

    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=3)
        self.decompressor = zstandard.ZstdDecompressor()


_zstd = _Zstd()


def compress_text(text: str) -> bytes:
    """``text`` as zstd-compressed UTF-8 (a long result, on SQLite)."""
    return _zstd.compressor.compress(text.encode())


def decompress_text(blob: bytes) -> str:
    """Undo `compress_text`."""
    return _zstd.decompressor.decompress(blob).decode()


@dataclass(frozen=True, slots=True)
class AgentResult(Record):
    """One execution's result, updated incrementally while the run goes."""

    @classmethod
    def from_row(cls, row: Row[Any] | Any) -> AgentResult:
        """The record of a row, its result decompressed when it was stored compressed."""
        result = super(AgentResult, cls).from_row(row)
        values = (row._mapping if hasattr(row, "_mapping")
                  else row if isinstance(row, Mapping) else row._asdict())
        packed = values.get("result_zstd")
        if packed is None:
            return result
        return dataclasses.replace(result, result=decompress_text(packed))

    id: str
    agent_id: str
    execution_id: str | None
    thread_id: str | None
    checkpoint_id: str | None
    quest_id: str | None
    result: str | None
    metadata: dict[str, Any]
    status: str
    error: str | None
    created_at: dt.datetime
    updated_at: dt.datetime
    completed_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class ExecutionLog(Record):
    """One log line of an execution."""

    id: str
    agent_id: str
    execution_id: str
    level: str
    message: str
    source: str | None
    metadata: dict[str, Any]
    timestamp: dt.datetime


@dataclass(frozen=True, slots=True)
class AgentTrace(Record):
    """One trace event (tool_start, tool_end, tool_error, ...) of an execution."""

    id: str
    agent_id: str
    execution_id: str
    run_id: str | None
    parent_run_id: str | None
    type: str
    name: str | None
    content: str | None
    metadata: dict[str, Any]
    timestamp: dt.datetime
    duration: float | None


@dataclass(frozen=True, slots=True)
class CheckpointState(Record):
    """A checkpoint of a thread, as saved by the service or by `PersistSaver`."""

    id: str
    agent_id: str | None
    thread_id: str
    checkpoint_ns: str
    checkpoint_id: str
    parent_checkpoint_id: str | None
    state: Any
    metadata: dict[str, Any]
    created_at: dt.datetime


@dataclass(frozen=True, slots=True)
class SearchHit(Record):
    """A log line or a trace that matched a search, with the part of its text that matched.

    ``kind`` is ``"trace"`` or ``"log"``; ``type`` is the trace's type (``tool_error``, ...) or
    the log's level; ``name`` the trace's name (a tool or a model) or the log's source;
    ``text`` the whole searched text (a trace's content, a log's message).  ``snippet`` is a
    window of it around the first match, and ``highlights`` the (start, end) offsets of every
    match within the snippet.  ``execution_id`` links the hit to its run.
    """

    kind: str
    id: str
    agent_id: str
    execution_id: str
    timestamp: dt.datetime
    type: str
    name: str | None
    text: str | None
    snippet: str
    highlights: list[tuple[int, int]]
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StatsRow(Record):
    """Statistics of one group (an agent, a tool, a model, a status, an hour or a day), or of
    everything in the range (`Stats.totals`, whose ``key`` is None).

    Run figures (``runs`` ... ``run_p99_ms``) count results created in the range; the rates
    are shares of the runs that stopped (completed, failed or interrupted: running ones are
    counted apart) and durations are those of stopped runs.  Tool figures count ``tool_end``
    and ``tool_error`` traces, model figures ``llm_end`` and ``llm_error`` traces.  Tokens are
    the runs' usage, except in groups by model, where they are each model call's.  A figure
    that does not apply to the grouping (runs by tool, tool calls by status) is None.
    Durations are in milliseconds; percentiles interpolate linearly (``percentile_cont``).
    """

    key: str | dt.datetime | None
    runs: int | None = None
    completed: int | None = None
    failed: int | None = None
    interrupted: int | None = None
    running: int | None = None
    success_rate: float | None = None
    failure_rate: float | None = None
    interrupt_rate: float | None = None
    run_p50_ms: float | None = None
    run_p95_ms: float | None = None
    run_p99_ms: float | None = None
    tool_calls: int | None = None
    tool_errors: int | None = None
    tool_error_rate: float | None = None
    tool_p50_ms: float | None = None
    tool_p95_ms: float | None = None
    tool_p99_ms: float | None = None
    model_calls: int | None = None
    model_errors: int | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    total_tokens: int | None = None


@dataclass(frozen=True, slots=True)
class ErrorCount(Record):
    """An error message and how often it was seen: ``kind`` is ``"run"`` (a failed run's
    error) or ``"tool"`` (a tool call's, ``name`` being the tool).  Messages are grouped by
    their first 200 characters."""

    kind: str
    name: str | None
    message: str
    count: int
    last_seen: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Stats:
    """What `ResultsPersistenceService.stats` found: the totals, one row per group (time
    buckets oldest first, other groups busiest first), and the most frequent errors."""

    by: str | None
    agent_id: str | None
    since: dt.datetime | None
    until: dt.datetime | None
    totals: StatsRow
    groups: list[StatsRow]
    top_errors: list[ErrorCount]

    def to_dict(self) -> dict[str, Any]:
        """Plain data (datetimes stay datetimes)."""
        return {
            "by": self.by, "agent_id": self.agent_id, "since": self.since, "until": self.until,
            "totals": self.totals.to_dict(), "groups": [g.to_dict() for g in self.groups],
            "top_errors": [e.to_dict() for e in self.top_errors],
        }


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long an agent's rows are kept (``agent_id`` None: the default policy, for every
    agent without one of its own).  Each age is a timedelta, or None to keep that kind forever;
    ``checkpoints`` counts from a thread's last activity."""

    agent_id: str | None
    results: dt.timedelta | None
    logs: dt.timedelta | None
    traces: dt.timedelta | None
    checkpoints: dt.timedelta | None
    updated_at: dt.datetime

    def to_dict(self) -> dict[str, Any]:
        """Plain data; ages in seconds (None: forever)."""
        return {
            "agent_id": self.agent_id,
            **{kind: None if age is None else age.total_seconds()
               for kind, age in (("results", self.results), ("logs", self.logs),
                                 ("traces", self.traces), ("checkpoints", self.checkpoints))},
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True, slots=True)
class RetentionCounts:
    """What a retention run deleted (or, dry, would delete) under one policy: results, logs,
    traces, checkpoint threads and their checkpoints (``agent_id`` None: the default's)."""

    agent_id: str | None
    results: int = 0
    logs: int = 0
    traces: int = 0
    threads: int = 0
    checkpoints: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class RetentionReport:
    """A retention run: when its ages were counted from (``at``), whether it was a dry run
    (nothing deleted), and the counts per policy."""

    at: dt.datetime
    dry_run: bool
    policies: list[RetentionCounts]

    @property
    def totals(self) -> RetentionCounts:
        """The counts of every policy added up."""
        names = ("results", "logs", "traces", "threads", "checkpoints")
        return RetentionCounts(None, **{n: sum(getattr(c, n) for c in self.policies)
                                        for n in names})

    def to_dict(self) -> dict[str, Any]:
        """Plain data, with the totals."""
        return {"at": self.at, "dry_run": self.dry_run,
                "policies": [c.to_dict() for c in self.policies],
                "totals": {k: v for k, v in self.totals.to_dict().items() if k != "agent_id"}}


class Page(list[R]):
    """A page of records: a list, plus the cursor that fetches the next page (None at the end)."""

    next_cursor: str | None

    def __init__(self, items: list[R], next_cursor: str | None = None) -> None:
        super().__init__(items)
        self.next_cursor = next_cursor
