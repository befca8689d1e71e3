"""What a run produced and how it failed, as text and values worth storing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def error_text(error: BaseException) -> str:
    """An exception as ``Type: message``."""
    return f"{type(error).__name__}: {error}"


def final_output(outputs: Any) -> Any:
    """What a run produced, without the rest of its state: the last message's content."""
    if isinstance(outputs, Mapping):
        if outputs.get("structured_response") is not None:
            return outputs["structured_response"]
        messages = outputs.get("messages")
        if isinstance(messages, Sequence) and messages and not isinstance(messages, str):
            outputs = messages[-1]
    content = getattr(outputs, "content", None)
    return outputs if content is None else content
