"""A database released by the garbage collector while `acquire` holds the registry's lock (a
service dropped without close(), collected while an engine is being created) does not
deadlock."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path


def test_a_finalizer_inside_acquire_does_not_deadlock(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import gc, weakref
        from langchain_persist._db import engine

        first = engine.acquire("sqlite:///{tmp_path / 'one.db'}")
        class Dropped: pass
        dropped = Dropped()
        weakref.finalize(dropped, engine.release, first)  # as a Lease does
        make = engine.Database.__init__

        def collecting(self, url):  # the collector runs while acquire() holds the lock
            global dropped
            del dropped
            gc.collect()
            make(self, url)

        engine.Database.__init__ = collecting
        engine.acquire("sqlite:///{tmp_path / 'two.db'}")
        print("acquired", len(engine.open_databases()))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "acquired 1"  # the dropped one was released
