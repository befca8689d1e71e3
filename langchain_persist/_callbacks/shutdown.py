"""What happens to queued events when the process ends or forks.

Every live `BackgroundWriter` is registered here (weakly).  Nothing is installed when the
package is imported; the first writer installs:

- an ``atexit`` hook that closes every writer (storing what it queued) at normal exit, also
  after an uncaught exception;
- a SIGTERM handler, when the writer is made in the main thread, SIGTERM still has its
  default disposition, and neither ``install_signal_handler=False`` nor the environment
  variable ``LANGCHAIN_PERSIST_SIGTERM=off`` says otherwise.  It flushes every writer (within
  ``SHUTDOWN_TIMEOUT``), restores the default disposition and sends SIGTERM again, so the
  process still dies by SIGTERM, as it would have.  An application's own SIGTERM handler is
  kept; if it exits through ``sys.exit``, the ``atexit`` hook runs;
- a fork hook: in the child, each writer starts afresh on its first record, and a child of
  ``multiprocessing`` (which leaves through ``os._exit``, skipping ``atexit``) closes its
  writers in its exit finalizers.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

from .._process import after_fork_in_child
from .execution import reset_after_fork

if TYPE_CHECKING:
    from .writer import BackgroundWriter

SHUTDOWN_TIMEOUT = 10.0
SIGTERM_VARIABLE = "LANGCHAIN_PERSIST_SIGTERM"

_writers: weakref.WeakSet[BackgroundWriter] = weakref.WeakSet()
_lock = threading.RLock()  # re-entrant: a finalizer may close a writer while it is held
_installed = False
_sigterm_installed = False


def lock() -> threading.RLock:
    """The lock that guards the registry (and a writer's restart in a forked child)."""
    return _lock


def register(writer: BackgroundWriter, install_signal_handler: bool = True) -> None:
    """Flush ``writer`` at exit and on SIGTERM, and restart it in forked children."""
    global _installed, _sigterm_installed
    with _lock:
        _writers.add(writer)
        if not _installed:
            atexit.register(_at_exit)
            after_fork_in_child(_after_fork)
            _installed = True
        if (
            install_signal_handler
            and not _sigterm_installed
            and os.environ.get(SIGTERM_VARIABLE, "on").strip().lower() not in ("off", "0", "no")
            and threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
        ):
            signal.signal(signal.SIGTERM, _on_sigterm)
            _sigterm_installed = True


def unregister(writer: BackgroundWriter) -> None:
    """Forget a writer that closed."""
    with _lock:
        _writers.discard(writer)


def flush_all(timeout: float = SHUTDOWN_TIMEOUT) -> bool:
    """Flush every live writer of this process, within ``timeout`` seconds in all."""
    deadline = time.monotonic() + timeout
    ok = True
    for writer in list(_writers):
        ok = writer.flush(max(0.0, deadline - time.monotonic())) and ok
    return ok


def _at_exit() -> None:
    for writer in list(_writers):
        writer.close(SHUTDOWN_TIMEOUT)


def _on_sigterm(signum: int, _frame: Any) -> None:
    try:
        flush_all()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _after_fork() -> None:
    global _lock
    _lock = threading.RLock()  # another thread may have held it at the fork
    reset_after_fork()
    for writer in list(_writers):
        writer.after_fork()
    if "multiprocessing.util" in sys.modules:  # its children leave through os._exit
        from multiprocessing.util import Finalize

        Finalize(None, _at_exit, exitpriority=100)
