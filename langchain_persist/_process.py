"""Hooks into the life of the process: what to redo in a child after ``os.fork()``.

Nothing is registered with the interpreter when the package is imported: the one
``os.register_at_fork`` hook is installed by the first object that needs it (a database, a
background writer, the id generator), and then runs every callback registered here, in order.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

_callbacks: list[Callable[[], None]] = []
_lock = threading.Lock()
_installed = False


def after_fork_in_child(callback: Callable[[], None]) -> None:
    """Run ``callback`` in the child of every later ``os.fork()`` (once per registration)."""
    global _installed
    with _lock:
        _callbacks.append(callback)
        if not _installed:
            os.register_at_fork(after_in_child=_run_in_child)
            _installed = True


def _run_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it when the process forked
    for callback in list(_callbacks):
        callback()
