"""The cache of list bases that `PersistSaver` stores tails against (see `codec`)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from .._db.engine import Database

MAX_BYTES = 64 * 1024 * 1024
MAX_NAMESPACES = 65536  # (thread, ns) pairs whose last checkpoint is remembered


class Bases:
    """The last full list stored per (thread, ns, channel): what tails are built on.

    One per open database (a cache of the `Database`, see `for_database`), shared by its
    savers, and dropped with it.  Entries are added only after their row committed and dropped
    when a saver of this process deletes rows of the thread.  Another process may delete the
    thread, or write it, unseen: a base is used only by a checkpoint whose parent is the last
    one this process put on the namespace (`follows`), and the statement that stores a tail
    stores it only if its base is there (else the value is missing, as the thread's other
    values are once it was deleted).  Bounded in bytes (``MAX_BYTES``), least recently used
    first.
    """

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self._entries: OrderedDict[tuple[str, str, str], tuple[str, str, bytes]] = OrderedDict()
        self._last: OrderedDict[tuple[str, str], str] = OrderedDict()  # (thread, ns): its id
        self._bytes = 0
        self._max_bytes = max_bytes
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> tuple[str, str, bytes] | None:
        """The base stored for a channel of a thread: (version, type, bytes), or None."""
        with self._lock:
            return self._entries.get(key)

    def follows(self, thread_id: str, ns: str, parent_id: str | None) -> bool:
        """Whether a checkpoint with this parent continues the last one this process put on
        the namespace (only then are its bases known to be stored)."""
        with self._lock:
            return parent_id is not None and self._last.get((thread_id, ns)) == parent_id

    def add(
        self,
        items: list[tuple[tuple[str, str, str], tuple[str, str, bytes]]],
        put: tuple[str, str, str],
    ) -> None:
        """Remember bases whose rows committed (the oldest go past ``max_bytes``), and the
        checkpoint that ``put`` (thread, ns, id) committed with them."""
        with self._lock:
            self._last[put[:2]] = put[2]
            self._last.move_to_end(put[:2])
            if len(self._last) > MAX_NAMESPACES:
                self._last.popitem(last=False)
            for key, entry in items:
                old = self._entries.pop(key, None)
                self._bytes += len(entry[2]) - (len(old[2]) if old else 0)
                self._entries[key] = entry
            while self._bytes > self._max_bytes and self._entries:
                self._bytes -= len(self._entries.popitem(last=False)[1][2])

    def forget(self, thread_ids: Sequence[str]) -> None:
        """Forget the bases of threads whose rows are being deleted."""
        with self._lock:
            for key in [k for k in self._entries if k[0] in thread_ids]:
                self._bytes -= len(self._entries.pop(key)[2])
            for space in [k for k in self._last if k[0] in thread_ids]:
                del self._last[space]


def for_database(db: Database) -> Bases:
    """The bases of an open database (made on first use, dropped when it closes)."""
    return db.cache("checkpoint-bases", Bases)
