"""What the callback handler knows about one execution while it runs."""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from .writer import ResultOwner

COUNTING = threading.Lock()
"""Guards the counters of every execution: their updates are rare and tiny."""


def reset_after_fork() -> None:
    """In a forked child: a new `COUNTING` lock (another thread may have held it)."""
    global COUNTING
    COUNTING = threading.Lock()


class ExecutionState:
    """What the handler knows about one execution while it runs.

    One per root run, and one per tool or model called on its own (made per call), so it sets
    only what every execution needs; the rest are class defaults until first changed.  A root
    run's result row is shared with the writer through ``row``.  ``execution_id`` stays the
    run's UUID until the writer formats it, unless a result row needs it as text.
    """

    row: ResultOwner | None = None
    opening: dict[str, Any] | None = None  # the save_result arguments of its running row
    llm_calls = 0
    tool_calls = 0
    usage: dict[str, int] | None = None
    first_step: int | None = None
    last_step: int | None = None
    limit: int | None = None
    near_limit = False
    partial: Any = None
    last_error: BaseException | None = None
    failed_tasks: set[str] | None = None  # LangGraph tasks that raised
    progress_at = 0.0
    interrupted = False  # a node called interrupt(): the run waits for input

    def __init__(
        self, agent_id: str, execution_id: str | UUID, root_run_id: UUID, name: str | None,
        thread_id: str | None,
    ) -> None:
        self.agent_id = agent_id
        self.execution_id = execution_id
        self.root_run_id = root_run_id
        self.name = name
        self.thread_id = thread_id
        self.started = time.time()

    def summary(self) -> dict[str, Any]:
        """The counters kept in the result's metadata."""
        steps = 0 if self.first_step is None else self.last_step - self.first_step + 1  # type: ignore[operator]
        return {
            "usage": dict(self.usage or {}), "steps": steps, "llm_calls": self.llm_calls,
            "tool_calls": self.tool_calls,
            "duration_ms": round((time.time() - self.started) * 1000, 3),
        }
