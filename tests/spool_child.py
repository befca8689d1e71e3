"""A child process for the spool tests: an agent run of N tool calls, then it waits to be killed.

    python spool_child.py URL RUN_ID CALLS sync|async [FLUSH_INTERVAL]

Nothing is stored in the database before the end of the run (a batch of 100,000 rows, an hour's
flush interval, unless FLUSH_INTERVAL says otherwise): what the test reads back later came
through the spool.  Prints "done" once the run has returned, then sleeps until the test kills it
with SIGKILL.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from handler_support import ScriptedChatModel, echo
from langchain.agents import create_agent

from langchain_persist import PersistCallbackHandler


def main() -> None:
    url, run_id, calls, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    flush_interval = float(sys.argv[5]) if len(sys.argv) > 5 else 3600
    handler = PersistCallbackHandler("spooled", url=url, flush_interval=flush_interval,
                                     batch_size=100_000)
    handler.writer.max_batch_bytes = 1 << 40
    agent = create_agent(ScriptedChatModel(plan=[["echo"]] * calls), [echo])
    config = {"callbacks": [handler], "run_id": uuid.UUID(run_id), "recursion_limit": 10_000}
    inputs = {"messages": [("user", "go")]}
    if mode == "async":
        asyncio.run(agent.ainvoke(inputs, config))
    else:
        agent.invoke(inputs, config)
    print("done", flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    main()
