"""Find the graph to serve, see that it checkpoints with PersistSaver, make its input."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.pregel import Pregel

from .._checkpoint.saver import PersistSaver
from .._errors import ConfigurationError
from .._imports import load_object

TaskInput = Callable[[str], Any]


def load_graph(spec: str) -> Any:
    """The graph named by ``"module:attr"``, imported from the working directory."""
    return load_object(spec, "--graph")


def with_saver(target: Any, make_saver: Callable[[], PersistSaver]) -> tuple[Pregel, PersistSaver]:
    """A compiled graph that checkpoints into a `PersistSaver`, and that saver.

    ``target`` may be a compiled graph, a `StateGraph` (compiled here), or a callable taking no
    arguments that returns either.  A graph compiled with its own `PersistSaver` keeps it, and
    its serializer with it (an ``EncryptedSerializer`` stays in force); a graph without a
    checkpointer gets ``make_saver()``; a graph with another kind of checkpointer is refused,
    since the server resumes and reads runs through the tables `PersistSaver` writes.
    """
    if isinstance(target, StateGraph):
        saver = make_saver()
        return target.compile(checkpointer=saver), saver
    if isinstance(target, Pregel):
        own = target.checkpointer
        if isinstance(own, PersistSaver):
            return target, own
        if own in (None, False):
            saver = make_saver()
            return target.copy(update={"checkpointer": saver}), saver
        raise ConfigurationError(
            f"graph {target.name!r} was compiled with a {type(own).__name__}, but the server "
            "stores and resumes runs through PersistSaver: compile it with "
            "checkpointer=PersistSaver.from_url(...) (with your serde), or with no "
            "checkpointer and the server gives it one"
        )
    if callable(target):
        try:
            inspect.signature(target).bind()
        except TypeError:
            raise ConfigurationError(
                f"{_name(target)} needs arguments: name a graph, or a function that takes none "
                "and returns one"
            ) from None
        except ValueError:  # no signature to check (a builtin): just call it
            pass
        made = target()
        if isinstance(made, StateGraph | Pregel):
            return with_saver(made, make_saver)
        raise ConfigurationError(
            f"{_name(target)}() returned a {type(made).__name__}, not a graph: return a "
            "StateGraph or a compiled graph"
        )
    raise ConfigurationError(
        f"cannot serve a {type(target).__name__}: pass a compiled graph, a StateGraph, or a "
        "function returning one"
    )


def has_messages(graph: Pregel) -> bool:
    """Whether the graph's state has a ``messages`` channel (a chat agent's history)."""
    return "messages" in graph.channels


def default_task_input(graph: Pregel) -> TaskInput:
    """How a task becomes the graph's input.

    A user message when the state has ``messages``; ``{"task": task}`` when it has ``task``;
    the task itself for a functional-API graph (``@entrypoint``).
    """
    if has_messages(graph):
        return lambda task: {"messages": [HumanMessage(task)]}
    if "task" in graph.channels:
        return lambda task: {"task": task}
    if not isinstance(graph, CompiledStateGraph):
        return lambda task: task
    raise ConfigurationError(
        f"graph {graph.name!r} has neither a 'messages' nor a 'task' key in its state, so the "
        "server cannot tell where the task goes: pass create_app(graph, task_input=lambda "
        "task: {...}) with the input your graph expects"
    )


def _name(obj: Any) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__name__
