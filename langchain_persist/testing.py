"""Helpers for tests, demos and notebooks that must run offline.

`ScriptedChatModel` is a real LangChain chat model whose turns (tool calls, then an answer) are
written in advance, so an agent runs without an LLM, a network or a key.
"""

from ._demo_model import ScriptedChatModel

__all__ = ["ScriptedChatModel"]
