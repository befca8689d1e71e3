"""What a graph run shows its followers: model calls, tokens, tool calls, the recursion limit.

`RunEvents` is a LangChain callback handler that publishes ``thinking`` (a model call starts),
``tool_start``, ``tool_end``, ``tool_error`` and ``warning`` (the run nears its recursion
limit) into an execution's `EventLog`; `token_of` picks the text out of the chunks LangGraph
streams in ``stream_mode="messages"`` for ``token`` events.  Like the persistence handler, it
fails open: an error in here is logged once and never reaches the agent.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from uuid import UUID

from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessageChunk
from langgraph.errors import GraphBubbleUp

from .._sanitize import jsonable, to_text, truncate
from ._events import EventLog

logger = logging.getLogger("langchain_persist")

F = TypeVar("F", bound=Callable[..., Any])
WARN_AT = 0.8  # of the recursion limit, as the persistence handler's log warning


def _fail_open(method: F) -> F:
    @functools.wraps(method)
    def guarded(self: RunEvents, *args: Any, **kwargs: Any) -> None:
        try:
            method(self, *args, **kwargs)
        except Exception:
            self.errors += 1
            if self.errors == 1:
                logger.exception("langchain-persist server: %s failed (reported once)",
                                 method.__name__)

    return guarded  # type: ignore[return-value]


def token_of(chunk: Any) -> str:
    """The text a streamed message chunk adds ('' for anything but a model's own chunk)."""
    if not isinstance(chunk, AIMessageChunk):
        return ""
    return str(chunk.text)


class RunEvents(BaseCallbackHandler):
    """Publishes a graph run's model calls, tool calls and recursion warning as events."""

    run_inline = True
    raise_error = False

    def __init__(
        self, log: EventLog, *, recursion_limit: int | None, content_limit: int = 1000
    ) -> None:
        self.log = log
        self.recursion_limit = recursion_limit
        self.content_limit = content_limit
        self.errors = 0
        self._tools: dict[UUID, tuple[str | None, float, Any]] = {}
        self._first_step: int | None = None
        self._warned = False

    def begin_attempt(self) -> None:
        """A new run of the graph (a retry): its steps count afresh toward its limit."""
        self._first_step = None
        self._warned = False

    def _publish(self, name: str, **data: Any) -> None:
        self.log.publish(name, {"executionId": self.log.execution_id, **data})

    def _content(self, value: Any) -> tuple[Any, dict[str, Any]]:
        """The value as JSON; as text cut to the content limit (and a note) when too long."""
        text, length = truncate(to_text(value), self.content_limit)
        if length is None:
            return jsonable(value), {}
        return text, {"truncated": True, "length": length}

    # -- steps and the recursion limit ----------------------------------------------------------

    @_fail_open
    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: UUID,
        metadata: Mapping[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        """Count the top graph's super-steps; warn once near the recursion limit."""
        step = (metadata or {}).get("langgraph_step")
        if step is None or self._warned or not self.recursion_limit:
            return
        if "|" in ((metadata or {}).get("langgraph_checkpoint_ns") or ""):
            return  # a subgraph counts its own steps
        if self._first_step is None:
            self._first_step = step
        used = step - self._first_step + 1
        if used >= max(1, int(self.recursion_limit * WARN_AT)):
            self._warned = True
            self._publish(
                "warning", step=used, recursionLimit=self.recursion_limit,
                message=f"the run is at step {used} of its recursion limit "
                f"{self.recursion_limit}; it fails if it goes past the limit",
            )

    # -- models ---------------------------------------------------------------------------------

    @_fail_open
    def on_chat_model_start(
        self, serialized: Any, messages: Any, *, run_id: UUID,
        metadata: Mapping[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        """A model call starts: ``thinking``."""
        meta = metadata or {}
        name = kwargs.get("name") or (serialized or {}).get("name")
        self._publish("thinking", node=meta.get("langgraph_node"),
                      step=meta.get("langgraph_step"), model=name,
                      message="the agent is analyzing the task")

    @_fail_open
    def on_llm_start(self, serialized: Any, prompts: Any, **kwargs: Any) -> None:
        """A completion model call starts: ``thinking``."""
        self.on_chat_model_start(serialized, None, **kwargs)

    # -- tools ----------------------------------------------------------------------------------

    @_fail_open
    def on_tool_start(
        self, serialized: Any, input_str: str, *, run_id: UUID,
        metadata: Mapping[str, Any] | None = None, inputs: Any = None, **kwargs: Any,
    ) -> None:
        """``tool_start`` with the tool's input."""
        name = kwargs.get("name") or (serialized or {}).get("name")
        call_id = kwargs.get("tool_call_id")
        self._tools[run_id] = (name, time.monotonic(), call_id)
        text, extra = self._content(input_str if inputs is None else inputs)
        meta = metadata or {}
        self._publish("tool_start", tool=name, runId=str(run_id), toolCallId=call_id,
                      input=text, node=meta.get("langgraph_node"),
                      step=meta.get("langgraph_step"), **extra)

    @_fail_open
    def on_tool_end(self, output: Any, *, run_id: UUID, **kwargs: Any) -> None:
        """``tool_end`` with its output, or ``tool_error`` for a handled error."""
        name, started, call_id = self._tools.pop(run_id, (None, time.monotonic(), None))
        duration = round((time.monotonic() - started) * 1000, 3)
        content = getattr(output, "content", None)
        text, extra = self._content(output if content is None else content)
        if getattr(output, "status", None) == "error":
            self._publish("tool_error", tool=name, runId=str(run_id), toolCallId=call_id,
                          error=text, durationMs=duration, handled=True, **extra)
        else:
            self._publish("tool_end", tool=name, runId=str(run_id), toolCallId=call_id,
                          output=text, durationMs=duration, **extra)

    @_fail_open
    def on_tool_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        """``tool_error`` with the exception (not for an ``interrupt()``: it is no failure)."""
        name, started, call_id = self._tools.pop(run_id, (None, time.monotonic(), None))
        if isinstance(error, GraphBubbleUp):
            return
        self._publish("tool_error", tool=name, runId=str(run_id), toolCallId=call_id,
                      error=f"{type(error).__name__}: {error}", handled=False,
                      durationMs=round((time.monotonic() - started) * 1000, 3))


def interrupts_of(state: Any) -> list[dict[str, Any]]:
    """The interrupts a run stopped at, as JSON: ``[{"id": ..., "value": ...}]``."""
    return [{"id": i.id, "value": jsonable(i.value)} for i in getattr(state, "interrupts", ())]
