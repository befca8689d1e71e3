"""The small, typed, read-only records the service returns (one per table row)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, fields
from typing import Any, Self, TypeVar

from sqlalchemy import Row

R = TypeVar("R")


class Record:
    """Builds a record from a database row, whatever the dialect returned."""

    @classmethod
    def from_row(cls, row: Row[Any] | Any) -> Self:
        """Make the record from a row (or a named tuple) that has at least its fields."""
        values = row._mapping if hasattr(row, "_mapping") else row._asdict()
        return cls(**{f.name: _normalize(values[f.name]) for f in fields(cls)})  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        """The record as a plain dict (datetimes stay datetimes)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}  # type: ignore[arg-type]


def _normalize(value: Any) -> Any:
    if isinstance(value, dt.datetime):  # SQLite gives naive UTC, PostgreSQL the session zone
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)
    return value


@dataclass(frozen=True, slots=True)
class AgentResult(Record):
    """One execution's result, updated incrementally while the run goes."""

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


class Page(list[R]):
    """A page of records: a list, plus the cursor that fetches the next page (None at the end)."""

    next_cursor: str | None

    def __init__(self, items: list[R], next_cursor: str | None = None) -> None:
        super().__init__(items)
        self.next_cursor = next_cursor
