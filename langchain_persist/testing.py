"""Helpers for tests, demos and notebooks that must run offline.

`ScriptedChatModel` is a real LangChain chat model (callbacks, token usage, tool calls) whose
turns (tool calls, then an answer) are written in advance, so an agent runs without an LLM, a
network or a key; LangChain and LangGraph treat it like any provider's model.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from langchain_core.language_models.chat_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

_ids = itertools.count(1)

ToolCall = Mapping[str, Any]  # {"name": "get_weather", "args": {"city": "Lisbon"}}
Turn = str | Sequence[ToolCall]


class ScriptedChatModel(BaseChatModel):
    """A chat model whose turns are written in advance.

    ``script`` lists the model's turns after each human message: a list of tool calls
    (``{"name": ..., "args": {...}}``, made at once), or a final answer.  A final answer may
    name tool results, ``"It is {get_weather}."``, filled with the content of the latest
    `ToolMessage` of that tool.  The model finds its place from the messages since the last
    human message, so a resumed or forked run picks up where its state is, and one instance
    serves any number of threads.  After the last turn it repeats the last answer.
    """

    script: Sequence[Turn] = ("Done.",)
    input_tokens: int = 120
    output_tokens: int = 25

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedChatModel:
        """The script already names the tools to call."""
        return self

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: Any = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        start = max((i for i, m in enumerate(messages) if isinstance(m, HumanMessage)), default=-1)
        human = messages[start] if start >= 0 else None
        message = self._reply(human, messages[start + 1 :])
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _reply(self, human: BaseMessage | None, since: Sequence[BaseMessage]) -> AIMessage:
        """The next turn of the script, given the messages since the last human message."""
        turn = self.script[min(sum(isinstance(m, AIMessage) for m in since), len(self.script) - 1)]
        if isinstance(turn, str):
            return self._message(_fill(turn, since))
        return self._message("", [(c["name"], c.get("args", {})) for c in turn])

    def _message(
        self, content: str, calls: Sequence[tuple[str, Mapping[str, Any]]] = ()
    ) -> AIMessage:
        """An answer, or tool calls (name, args) with fresh ids, with this model's token usage."""
        usage = {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
        }
        tool_calls = [
            {"name": name, "args": dict(args), "id": f"call_{next(_ids)}"} for name, args in calls
        ]
        return AIMessage(content=content, tool_calls=tool_calls, usage_metadata=usage)


def _fill(text: str, messages: Sequence[BaseMessage]) -> str:
    """Put the latest result of each named tool into ``text``."""
    results: dict[str, str] = {}
    for m in messages:
        if isinstance(m, ToolMessage) and m.name:
            results[m.name] = str(m.content)
    try:
        return text.format_map(_Missing(results))
    except (ValueError, IndexError):
        return text


class _Missing(dict[str, str]):
    def __missing__(self, key: str) -> str:
        return f"{{{key}}}"


__all__ = ["ScriptedChatModel"]
