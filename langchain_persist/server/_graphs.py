"""Find the graph to serve, give it the server's checkpointer, and turn a task into its input."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from langchain_core.messages import HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.pregel import Pregel

from .._errors import ConfigurationError

TaskInput = Callable[[str], Any]


def load_graph(spec: str) -> Any:
    """The object named by ``"module:attr"`` (``attr`` may be dotted), imported from here.

    The working directory is put on ``sys.path`` first, as uvicorn does, so that
    ``--graph my_agent:graph`` finds ``./my_agent.py``.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigurationError(
            f"--graph {spec!r} is not of the form module:attr, e.g. my_agent:graph"
        )
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(
            f"cannot import module {module_name!r} for --graph {spec!r}: {exc} (run from the "
            "directory that holds it, or install it)"
        ) from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigurationError(
                f"module {module_name!r} has no attribute {attr!r} (--graph {spec!r})"
            ) from None
    return target


def with_checkpointer(target: Any, saver: BaseCheckpointSaver) -> Pregel:
    """A compiled graph that checkpoints into ``saver``.

    ``target`` may be a compiled graph (its checkpointer is replaced), a `StateGraph` (it is
    compiled), or a callable taking no arguments that returns either.
    """
    if isinstance(target, StateGraph):
        return target.compile(checkpointer=saver)
    if isinstance(target, Pregel):
        return target.copy(update={"checkpointer": saver})
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
            return with_checkpointer(made, saver)
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
