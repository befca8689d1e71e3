"""The demo's agent: a travel assistant built with LangChain's `create_agent` and three tools.

- ``get_weather`` always works;
- ``search_flights`` fails on its first call (a timeout), so the run fails and is resumed;
- ``book_flight`` asks a human through LangGraph's ``interrupt()`` before it books.

The model is a `ScriptedChatModel` (offline, instant) unless a real one is given.
"""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.tools import BaseTool, tool
from langgraph.types import interrupt

from .._errors import ConfigurationError
from ..testing import ScriptedChatModel

AGENT_ID = "travel-agent"
TASK = "Plan my weekend in Lisbon: check the weather, find a flight from Berlin and book it."
SYSTEM_PROMPT = (
    "You are a travel assistant. Use the tools: check the weather, search flights, then book "
    "the cheapest flight with book_flight. If a tool fails, the run stops; it is resumed for "
    "you. Finish with a two-sentence summary."
)
WAIT_FOR_WEATHER_S = 2.0
SCRIPT = (
    [
        {"name": "get_weather", "args": {"city": "Lisbon"}},
        {"name": "search_flights", "args": {"origin": "Berlin", "destination": "Lisbon"}},
    ],
    [{"name": "book_flight", "args": {"flight": "TP 539", "price_eur": 129}}],
    "Booked! {book_flight}. Lisbon looks lovely: {get_weather}.",
)


class FlightApiTimeout(ConnectionError):
    """The flight search API timed out (the demo's planned failure)."""


class DemoTools:
    """The three tools, with a count of their calls; ``search_flights`` fails on its first."""

    def __init__(self, delay: float = 1.0) -> None:
        self.calls: Counter[str] = Counter()
        self.delay = delay
        self._weather_done = threading.Event()
        self.tools: list[BaseTool] = [self._weather(), self._flights(), self._booking()]

    def _sleep(self, seconds: float) -> None:
        time.sleep(seconds * self.delay)

    def _weather(self) -> BaseTool:
        @tool
        def get_weather(city: str) -> str:
            """The weather forecast for a city for the next three days."""
            self.calls["get_weather"] += 1
            self._sleep(0.04)
            self._weather_done.set()
            return f"{city}: 24°C and sunny through Sunday"

        return get_weather

    def _flights(self) -> BaseTool:
        @tool
        def search_flights(origin: str, destination: str) -> str:
            """Search this weekend's flights between two cities, cheapest first."""
            self.calls["search_flights"] += 1
            self._sleep(0.12)
            if self.calls["search_flights"] == 1:
                # time out only once the weather (asked for at the same time) has arrived: when a
                # task fails, LangGraph cancels the tasks of its step that are still running
                self._weather_done.wait(WAIT_FOR_WEATHER_S)
                raise FlightApiTimeout(
                    "flight search API timed out after 120 ms (it fails once, on purpose)"
                )
            return (
                f"TP 539 {origin} 07:05 → {destination} 09:20, €129; "
                f"LH 1166 {origin} 10:40 → {destination} 13:05, €187"
            )

        return search_flights

    def _booking(self) -> BaseTool:
        @tool
        def book_flight(flight: str, price_eur: int) -> str:
            """Book a flight. A human must approve the booking first."""
            decision = interrupt(
                {"action": "book_flight", "flight": flight, "price_eur": price_eur,
                 "question": f"Book {flight} for €{price_eur}?"}
            )
            self.calls["book_flight"] += 1
            if not (isinstance(decision, dict) and decision.get("approved")):
                return f"Booking of {flight} declined by the reviewer"
            self._sleep(0.06)
            return f"{flight} booked for €{price_eur}, confirmation LP-7Q2K"

        return book_flight


def scripted_model() -> ScriptedChatModel:
    """The offline model that plays the demo's script."""
    return ScriptedChatModel(script=SCRIPT)


def real_model(spec: str) -> BaseChatModel:
    """A provider's model from ``provider:name`` (LangChain's ``init_chat_model``)."""
    provider = spec.split(":", 1)[0] if ":" in spec else None
    key = f"{provider.upper()}_API_KEY" if provider else "its API key"
    try:
        from langchain.chat_models import init_chat_model

        return init_chat_model(spec, temperature=0)
    except ImportError as exc:
        named = re.search(r"pip install (\S+?)`?\.?$", str(exc).strip())
        package = named.group(1) if named else f"langchain-{provider or 'PROVIDER'}"
        raise ConfigurationError(
            f"--model {spec} needs the provider's package: pip install {package}, "
            f"and set {key}"
        ) from exc
    except Exception as exc:  # a missing key, an unknown provider or model
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ConfigurationError(
            f"--model {spec} could not be created: {type(exc).__name__}: {first} (give "
            f"provider:name, such as openai:gpt-4.1-mini, with the provider's package "
            f"installed and {key} set)"
        ) from exc


def build_agent(model: BaseChatModel, tools: DemoTools, checkpointer: Any) -> Any:
    """The agent graph: LangChain's `create_agent`, checkpointed by ``checkpointer``."""
    from langchain.agents import create_agent

    return create_agent(
        model, tools.tools, system_prompt=SYSTEM_PROMPT, checkpointer=checkpointer,
        name="travel-agent",
    )
