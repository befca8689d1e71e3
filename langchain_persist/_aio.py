"""One code path for sync and async: an async twin runs the blocking method in a worker thread."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


def async_twin(fn: Callable[P, T]) -> Callable[P, Coroutine[Any, Any, T]]:
    """The ``a``-prefixed twin of ``fn``: the same body, off the event loop."""

    @functools.wraps(fn)
    async def twin(*args: P.args, **kwargs: P.kwargs) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    twin.__name__ = twin.__qualname__ = f"a{fn.__name__}"
    twin.__doc__ = f"Async twin of `{fn.__name__}` (runs it in a worker thread)."
    return twin
