"""A travel agent to try the server with, offline: ``langchain-persist serve --graph
server_example:graph`` (run from this directory).

The model plays a fixed script and streams its answer word by word; ``search_flights`` fails
on its first call (the server retries from the last checkpoint) and ``book_flight`` stops at
``interrupt()`` until a human answers through the resume endpoint.  Swap in a real model
(``init_chat_model("openai:gpt-4.1-mini")``) and the same endpoints work unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.tools import tool
from langgraph.types import interrupt

SCRIPT: list[list[dict[str, Any]]] = [  # the tool calls of each turn
    [{"name": "get_weather", "args": {"city": "Lisbon"}}],
    [{"name": "search_flights", "args": {"origin": "Berlin", "destination": "Lisbon"}}],
    [{"name": "book_flight", "args": {"flight": "TP 539"}}],
]
ANSWER = "Booked TP 539 for Saturday; Lisbon will be sunny."
_calls = {"search_flights": 0}


class ScriptedModel(BaseChatModel):
    """Calls the tools of the script's next turn, then streams the answer."""

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> ScriptedModel:
        return self

    def _generate(self, messages: list[BaseMessage], stop: Any = None,
                  run_manager: Any = None, **kwargs: Any) -> ChatResult:
        start = max(i for i, m in enumerate(messages) if isinstance(m, HumanMessage))
        turn = sum(1 for m in messages[start:] if isinstance(m, AIMessage) and m.tool_calls)
        if turn < len(SCRIPT):
            calls = [{**call, "id": f"call-{turn}-{i}"} for i, call in enumerate(SCRIPT[turn])]
            message = AIMessage(content="", tool_calls=calls)
        else:
            message = AIMessage(content=ANSWER)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _stream(self, messages: list[BaseMessage], stop: Any = None,
                run_manager: Any = None, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        message = self._generate(messages).generations[0].message
        if message.tool_calls:
            yield ChatGenerationChunk(message=AIMessageChunk(
                content="", tool_calls=message.tool_calls))
            return
        for i, word in enumerate(str(message.content).split(" ")):
            yield ChatGenerationChunk(message=AIMessageChunk(content=f" {word}" if i else word))


@tool
def get_weather(city: str) -> str:
    """The weekend's weather in a city."""
    return f"{city}: 24°C and sunny"


@tool
def search_flights(origin: str, destination: str) -> str:
    """This weekend's flights, cheapest first (the first call times out, on purpose)."""
    _calls["search_flights"] += 1
    if _calls["search_flights"] == 1:
        raise TimeoutError("flight search API timed out")
    return f"TP 539 {origin} 07:05 -> {destination} 09:20, 129 EUR"


@tool
def book_flight(flight: str) -> str:
    """Book a flight, once a human approved it."""
    decision = interrupt({"question": f"Book {flight}?"})
    approved = isinstance(decision, dict) and decision.get("approved")
    return f"{flight} booked" if approved else f"{flight} not booked"


graph = create_agent(ScriptedModel(), [get_weather, search_flights, book_flight],
                     name="travel-agent")
