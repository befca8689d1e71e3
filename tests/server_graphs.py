"""The graph the server tests serve: a scripted agent whose plan is written in its task.

A task reads ``"<label> :: <step> / <step> ..."``, each step the tools to call at once
(``"a :: echo / flaky,echo"``); a task without ``::`` is answered at once.  The model streams
its answer word by word.  Tools:

- ``echo`` returns its text;
- ``flaky`` fails while `FAILURES` for the task's label is above zero (counting down);
- ``wait`` blocks until the test opens the gate of (label, call number), see `gate`;
- ``ask`` stops the run at ``interrupt()`` and returns the answer it is resumed with.

The server runs in the test process (in a thread), so tests set these knobs directly.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from handler_support import ScriptedChatModel
from langchain.agents import create_agent
from langchain_core.messages import AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from langgraph.graph import END, START, StateGraph
from langgraph.types import interrupt
from typing_extensions import TypedDict

FAILURES: defaultdict[str, int] = defaultdict(int)
_GATES: defaultdict[tuple[str, int], threading.Event] = defaultdict(threading.Event)
GATE_TIMEOUT = 20.0


def gate(label: str, call: int = 0) -> threading.Event:
    """The gate the ``wait`` tool's call number ``call`` of task ``label`` waits for."""
    return _GATES[(label, call)]


def _label_and_call(text: str) -> tuple[str, int]:
    task, _, call = text.rpartition("#")
    return task.split("::")[0].strip(), int(call)


def plan_of(task: str) -> list[list[str]]:
    """The tool steps written in a task (``"label :: echo / flaky,echo"``)."""
    if "::" not in task:
        return []
    steps = task.split("::", 1)[1].split("/")
    return [[name.strip() for name in step.split(",") if name.strip()] for step in steps]


class TaskScriptedModel(ScriptedChatModel):
    """`ScriptedChatModel` with its plan read from the last user message; it streams."""

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        human = next((m for m in reversed(messages) if isinstance(m, HumanMessage)), None)
        plan = plan_of(str(human.content)) if human is not None else []
        scripted = ScriptedChatModel(plan=plan, usage=self.usage)
        return scripted._generate(messages, stop, None, **kwargs)

    def _stream(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        message = self._generate(messages, stop, **kwargs).generations[0].message
        if message.tool_calls:
            chunks = [{"name": c["name"], "args": json.dumps(c["args"]), "id": c["id"],
                       "index": i} for i, c in enumerate(message.tool_calls)]
            yield ChatGenerationChunk(message=AIMessageChunk(
                content="", tool_call_chunks=chunks, usage_metadata=message.usage_metadata))
            return
        words = str(message.content).split(" ")
        for i, word in enumerate(words):
            last = i == len(words) - 1  # usage comes with the last chunk, as providers do
            yield ChatGenerationChunk(message=AIMessageChunk(
                content=word if i == 0 else f" {word}",
                usage_metadata=message.usage_metadata if last else None))


@tool
def echo(text: str) -> str:
    """Return the text."""
    return f"echo {text}"


@tool
def flaky(text: str) -> str:
    """Fail while the task's label has failures left."""
    label, _ = _label_and_call(text)
    if FAILURES[label] > 0:
        FAILURES[label] -= 1
        raise RuntimeError(f"flaky failed on {text}")
    return f"flaky ok {text}"


@tool
async def wait(text: str) -> str:
    """Wait until the test opens this call's gate (a server stop can cancel it)."""
    opened, deadline = gate(*_label_and_call(text)), time.monotonic() + GATE_TIMEOUT
    while not opened.is_set():
        if time.monotonic() > deadline:
            raise TimeoutError(f"nobody opened the gate of {text}")
        await asyncio.sleep(0.01)
    return f"waited {text}"


@tool
def ask(text: str) -> str:
    """Stop the run for a human answer."""
    answer = interrupt({"question": f"may I go on with {text}?"})
    return f"approved: {answer}"


agent = create_agent(TaskScriptedModel(), [echo, flaky, wait, ask], name="scripted-agent")


class TaskState(TypedDict, total=False):
    task: str
    result: str


def shout(state: TaskState) -> TaskState:
    return {"result": state["task"].upper()}


def task_builder() -> StateGraph:
    """A graph without messages: the task goes to its ``task`` key."""
    builder = StateGraph(TaskState)
    builder.add_node("shout", shout)
    builder.add_edge(START, "shout")
    builder.add_edge("shout", END)
    return builder


task_graph = task_builder()
