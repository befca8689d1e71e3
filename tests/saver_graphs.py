"""Small real LangGraph graphs for the saver tests: no LLM, deterministic, agent-shaped."""

from __future__ import annotations

import operator
from typing import Annotated, Any, TypedDict

from langchain_core.messages import AIMessage, ToolMessage
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import interrupt


def agent_graph(steps: int = 10, text: str = "step") -> StateGraph:
    """agent -> tools -> agent ... : each pair of super-steps appends a tool call and its result."""

    def agent(state: MessagesState) -> dict[str, Any]:
        n = sum(isinstance(m, ToolMessage) for m in state["messages"])
        if n >= steps:
            return {"messages": [AIMessage(f"done after {n} tool calls")]}
        call = {"name": "lookup", "args": {"n": n, "q": f"{text} {n}"}, "id": f"call-{n}"}
        return {"messages": [AIMessage(f"{text} {n}: " + "thinking " * 20, tool_calls=[call])]}

    def tools(state: MessagesState) -> dict[str, Any]:
        call = state["messages"][-1].tool_calls[0]
        result = f"result of {call['args']['q']}: " + "data " * 40
        return {"messages": [ToolMessage(result, tool_call_id=call["id"])]}

    def route(state: MessagesState) -> str:
        return "tools" if getattr(state["messages"][-1], "tool_calls", None) else END

    builder = StateGraph(MessagesState)
    builder.add_node("agent", agent)
    builder.add_node("tools", tools)
    builder.add_edge(START, "agent")
    builder.add_conditional_edges("agent", route, ["tools", END])
    builder.add_edge("tools", "agent")
    return builder


class ApprovalState(TypedDict):
    """State of the approval graph."""

    request: str
    log: Annotated[list[str], operator.add]


def approval_graph() -> StateGraph:
    """prepare -> approve (interrupts for a human decision) -> act."""

    def prepare(state: ApprovalState) -> dict[str, Any]:
        return {"log": [f"prepared {state['request']}"]}

    def approve(state: ApprovalState) -> dict[str, Any]:
        decision = interrupt({"question": f"approve {state['request']}?"})
        return {"log": [f"decision: {decision}"]}

    def act(state: ApprovalState) -> dict[str, Any]:
        return {"log": ["acted"]}

    builder = StateGraph(ApprovalState)
    for name, node in (("prepare", prepare), ("approve", approve), ("act", act)):
        builder.add_node(name, node)
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "approve")
    builder.add_edge("approve", "act")
    builder.add_edge("act", END)
    return builder


def nested_graph() -> StateGraph:
    """A parent graph whose middle node is a subgraph that interrupts (checkpoint namespaces)."""
    child = approval_graph().compile()

    def before(state: ApprovalState) -> dict[str, Any]:
        return {"log": ["parent before"]}

    def after(state: ApprovalState) -> dict[str, Any]:
        return {"log": ["parent after"]}

    builder = StateGraph(ApprovalState)
    builder.add_node("before", before)
    builder.add_node("child", child)
    builder.add_node("after", after)
    builder.add_edge(START, "before")
    builder.add_edge("before", "child")
    builder.add_edge("child", "after")
    builder.add_edge("after", END)
    return builder
