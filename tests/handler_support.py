"""A scripted fake chat model and small tools for the callback handler tests and benchmark."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import ToolException, tool

_ids = itertools.count()


class ScriptedChatModel(BaseChatModel):
    """A chat model that calls tools by a fixed plan, then answers.

    ``plan`` lists the steps of one run: each step is the names of the tools to call at once.
    The model finds its place in the plan from the messages since the last human message, so
    one instance serves any number of concurrent runs.  Tool arguments carry the human
    message, so every trace says which run it belongs to.
    """

    plan: Sequence[Sequence[str]] = (("echo",),)
    usage: bool = True

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        """Tools are part of the plan already."""
        return self

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        start = max(
            (i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1
        )
        human = messages[start].content if start >= 0 else ""
        step = sum(
            1 for m in messages[start + 1:] if isinstance(m, AIMessage) and m.tool_calls
        )
        done = sum(1 for m in messages[start + 1:] if isinstance(m, ToolMessage))
        usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15} if self.usage else None
        if step < len(self.plan):
            calls = [
                {"name": name, "args": {"text": f"{human}#{done + i}"}, "id": f"call-{next(_ids)}"}
                for i, name in enumerate(self.plan[step])
            ]
            message = AIMessage(content="", tool_calls=calls, usage_metadata=usage)
        else:
            message = AIMessage(content=f"answer to {human}", usage_metadata=usage)
        return ChatResult(generations=[ChatGeneration(message=message)])


@tool
def echo(text: str) -> str:
    """Return the text."""
    return f"echo {text}"


@tool
def explode(text: str) -> str:
    """Always fails."""
    raise RuntimeError(f"exploded on {text}")


@tool
def refuse(text: str) -> str:
    """Fails with an error that LangChain hands back to the model."""
    raise ToolException(f"refused {text}")


refuse.handle_tool_error = True


TOOLS = [echo, explode, refuse]
