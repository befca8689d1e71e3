"""What the write path needs from storage, as two small protocols.

`ResultsPersistenceService` provides both.  The callback handler writes result rows through a
`ResultStore` and hands events to a background writer, which stores them through an
`EventStore`; the execution tracker gives its handlers a `ResultStore` of its own (one result
row shared by every run of an execution).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from .._db.sql.events import EventFormat
from .._records import AgentResult

if TYPE_CHECKING:
    from .service import Inserted


class ResultStore(Protocol):
    """Creates and updates result rows (blocking: a failure raises `PersistenceError`)."""

    def save_result(self, **fields: Any) -> AgentResult:
        """Create a result row (the arguments of `ResultsPersistenceService.save_result`)."""
        ...

    def update_result(self, result_id: str, **fields: Any) -> AgentResult:
        """Update a result row (the arguments of `ResultsPersistenceService.update_result`)."""
        ...

    def latest_checkpoint_id(self, thread_id: str, checkpoint_ns: str = "") -> str | None:
        """The newest checkpoint id of a thread, or None."""
        ...

    def resolve_interrupted(
        self, thread_id: str, *, status: str, resumed_by: str | None = None,
        keep: str | None = None,
    ) -> list[str]:
        """A later run of the thread ended: move its interrupted results to ``status`` (see
        `ResultsPersistenceService.resolve_interrupted`)."""
        ...


class EventStore(Protocol):
    """Stores trace and log rows built by `TraceEvent.to_values` / `LogEvent.to_values`."""

    trace_content_limit: int
    max_text: int

    def event_format(self) -> EventFormat:
        """The driver's form of the database's event rows."""
        ...

    def insert_events(
        self, kind: str, rows: list[tuple[Any, ...]], *, skip_existing: bool = False
    ) -> Inserted:
        """Store ``"traces"`` or ``"logs"`` rows: what was stored and what the database
        refused, row by row (``skip_existing``: leave out rows already stored); raise
        `StorageError` when it cannot be reached."""
        ...
