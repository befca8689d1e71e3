"""PersistSaver as the checkpointer of LangGraph's Agent Server (``langgraph dev``, deployments).

In ``langgraph.json``::

    "checkpointer": {"path": "langchain_persist.langgraph_server.checkpointer"}

(the Agent Server imports an installed module by its dotted path; a file of your own is
``"./my_checkpointer.py:checkpointer"``).  The database is the usual one:
``LANGCHAIN_PERSIST_DATABASE_URL``, then ``DATABASE_URL``, then ``./langchain_persist.db``.
Install the extra for the server and its client: ``pip install
'langchain-persist[langgraph-server,postgres]'``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from ._checkpoint.saver import PersistSaver

__all__ = ["checkpointer"]


@contextlib.asynccontextmanager
async def checkpointer() -> AsyncIterator[PersistSaver]:
    """The Agent Server's checkpointer factory: an async context manager yielding a
    `PersistSaver` on the configured database (the server enters it once per thread that
    needs it and leaves it at shutdown, which closes its pools)."""
    saver = await asyncio.to_thread(PersistSaver.from_url)  # the schema check, off the loop
    try:
        yield saver
    finally:
        await saver.aclose()
