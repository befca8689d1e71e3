"""A scripted fake chat model and small tools for the callback handler tests and benchmark."""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import ToolException, tool

from langchain_persist import testing


class ScriptedChatModel(testing.ScriptedChatModel):
    """A chat model that calls tools by a fixed plan, then answers.

    ``plan`` lists the steps of one run: each step is the names of the tools to call at once.
    The model finds its place in the plan from the messages since the last human message, so
    one instance serves any number of concurrent runs.  Tool arguments carry the human
    message, so every trace says which run it belongs to.
    """

    plan: Sequence[Sequence[str]] = (("echo",),)
    usage: bool = True
    input_tokens: int = 10
    output_tokens: int = 5

    def _reply(self, human: BaseMessage | None, since: Sequence[BaseMessage]) -> AIMessage:
        text = human.content if human is not None else ""
        step = sum(1 for m in since if isinstance(m, AIMessage) and m.tool_calls)
        done = sum(1 for m in since if isinstance(m, ToolMessage))
        if step < len(self.plan):
            names = self.plan[step]
            calls = [(name, {"text": f"{text}#{done + i}"}) for i, name in enumerate(names)]
            message = self._message("", calls)
        else:
            message = self._message(f"answer to {text}")
        if not self.usage:
            message.usage_metadata = None
        return message


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
