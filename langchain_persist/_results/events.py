"""Trace and log events, and the one place that turns them into rows.

A `TraceEvent` or `LogEvent` is what happened, as the caller saw it: the callback handler
makes one per event (no I/O, no validation), and the service makes one per `save_trace` or
`save_log`.  `to_values` validates it and builds its row in the form the database driver takes
(`EventFormat`), in column order: the background writer and the service store rows built here
and nowhere else.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any, NamedTuple

from .._db.sql.events import EventFormat
from .._sanitize import bounded, checked_label, dumps, jsonable, to_text, truncate
from .validate import key, level

DEFAULT_MAX_TEXT = 100_000  # characters of a log message (the service's ``max_text``)
# Run-metadata keys worth keeping on a trace (the rest of the run metadata is not stored).
CONTEXT_KEYS = {
    "langgraph_node": "node",
    "langgraph_step": "step",
    "thread_id": "thread_id",
    "langgraph_checkpoint_ns": "checkpoint_ns",
    "ls_model_name": "model",  # a chat model's run: the model it called (stats by model)
}


def _text(run_id: Any) -> str | None:
    return None if run_id is None else str(run_id)


class TraceEvent(NamedTuple):
    """A trace event (``tool_start``, ``tool_end``, ``tool_error``, ``llm_end``, ...).

    ``timestamp`` is seconds since the epoch (or a UTC datetime); ``context`` is the run's
    metadata, of which `CONTEXT_KEYS` are kept; ``extra`` is stored in the metadata as it is.
    ``type`` and ``duration`` are trusted here: the service checks those it is given.
    """

    agent_id: str
    execution_id: Any  # a str, or a run's UUID
    type: str
    name: str | None
    content: Any
    run_id: Any
    parent_run_id: Any
    duration: float | None
    timestamp: float | dt.datetime
    context: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] | None = None

    def to_values(self, fmt: EventFormat, limit: int) -> tuple[Any, ...]:
        """The `agent_traces` row as the driver takes it, content cut to ``limit`` characters
        (raises `ValidationError`)."""
        meta: dict[str, Any] = {}
        if self.context:
            for name, alias in CONTEXT_KEYS.items():
                value = self.context.get(name)
                if value is not None:
                    meta[alias] = value
        if self.extra:
            meta.update(self.extra)
        content = self.content
        if content is not None:
            content, length = truncate(to_text(content), limit)
            if length is not None:
                meta["truncated"] = True
                meta["content_length"] = length
        return (
            key("execution_id", str(self.execution_id)), fmt.timestamp(self.timestamp),
            fmt.new_id(), key("agent_id", self.agent_id), _text(self.run_id),
            _text(self.parent_run_id), self.type, checked_label("name", self.name),
            content, dumps(jsonable(meta)), self.duration,
        )


class LogEvent(NamedTuple):
    """A log line; ``detail`` (any value) is stored as truncated text in its metadata."""

    agent_id: str
    execution_id: Any  # a str, or a run's UUID
    level: str
    message: Any
    source: str | None
    timestamp: float | dt.datetime
    metadata: Mapping[str, Any] | None = None
    detail: Any = None

    def to_values(
        self, fmt: EventFormat, limit: int, max_text: int = DEFAULT_MAX_TEXT
    ) -> tuple[Any, ...]:
        """The `execution_logs` row as the driver takes it, the message cut at ``max_text``
        characters and the detail at ``limit`` (raises `ValidationError`)."""
        meta = dict(self.metadata or {})
        if self.detail is not None:
            text, length = truncate(to_text(self.detail), limit)
            meta["detail"] = text
            if length is not None:
                meta["detail_length"] = length
        return (
            key("execution_id", str(self.execution_id)), fmt.timestamp(self.timestamp),
            fmt.new_id(), key("agent_id", self.agent_id), level(self.level),
            bounded(to_text(self.message), max_text), checked_label("source", self.source),
            dumps(jsonable(meta)),
        )
