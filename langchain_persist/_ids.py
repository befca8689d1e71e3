"""Time-ordered ids (UUIDv7, RFC 9562) so that "oldest first" is stable and inserts stay local."""

from __future__ import annotations

import random
import threading
import time

from ._process import after_fork_in_child

_lock = threading.Lock()
_last_ms = 0
_counter = 0
# Random bits from a generator of our own, seeded by the OS and re-seeded in a forked child (an
# application's random.seed() does not touch it): ids need to be unique, not secret, and
# os.urandom costs a system call per id.
_random = random.Random()
_bits = _random.getrandbits
_watching = False


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork
    _random.seed()  # the child must not draw the parent's next ids


def uuid7() -> str:
    """Return a new UUIDv7 as a string; ids made in one process strictly increase."""
    text = uuid7_hex()  # what str(uuid.UUID(int=...)) gives, at a third of the cost
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def uuid7_hex() -> str:
    """A new UUIDv7 as 32 hex digits, without dashes (as SQLite stores a UUID column)."""
    global _last_ms, _counter, _watching
    if not _watching:
        _watching = True
        after_fork_in_child(_after_fork)
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms, _counter = ms, _bits(10)
        else:  # same millisecond (or the clock stepped back): count up within it
            _counter += 1
            if _counter > 0xFFF:
                _last_ms, _counter = _last_ms + 1, 0
        ms, counter = _last_ms, _counter
    rand = _bits(62)
    value = (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand
    return f"{value:032x}"
