"""One code path for sync and async: an async twin runs the blocking method in a worker thread.

The thread comes from the object's own ``executor`` when it has one (so that, in a server,
database reads never queue behind the graph's sync tools in the event loop's default pool),
else from the loop's default executor, as ``asyncio.to_thread`` would.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")
S = TypeVar("S")


def async_twin(
    fn: Callable[Concatenate[S, P], T],
) -> Callable[Concatenate[S, P], Coroutine[Any, Any, T]]:
    """The ``a``-prefixed twin of method ``fn``: the same body, off the event loop."""

    @functools.wraps(fn)
    async def twin(self: S, *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        call = functools.partial(contextvars.copy_context().run, fn, self, *args, **kwargs)
        return await loop.run_in_executor(getattr(self, "executor", None), call)

    twin.__name__ = twin.__qualname__ = f"a{fn.__name__}"
    twin.__doc__ = f"Async twin of `{fn.__name__}` (runs it in a worker thread)."
    return twin
