"""A child process for the exit tests: an agent run of N tool calls, recorded by the handler.

    python handler_child.py URL RUN_ID MODE CALLS [THREAD_ID]

MODE: ``exit`` (return normally), ``raise`` (an uncaught exception after the run), ``block``
(the call after CALLS prints "ready" and waits forever: the parent then sends a signal), and
``resume`` (like ``block`` but with `PersistSaver` as checkpointer; run again with
``continue`` to resume the thread in a new process).
"""

from __future__ import annotations

import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from handler_support import ScriptedChatModel
from langchain.agents import create_agent
from langchain_core.tools import tool

from langchain_persist import PersistCallbackHandler


def main() -> None:
    url, run_id, mode, calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    thread_id = sys.argv[5] if len(sys.argv) > 5 else None
    block = mode in ("block", "resume")

    @tool
    def step(text: str) -> str:
        """One step of the run."""
        if block and text.endswith(f"#{calls}"):
            print("ready", flush=True)
            time.sleep(3600)
        return f"done {text}"

    checkpointer = None
    if mode in ("resume", "continue"):
        from langchain_persist import PersistSaver

        checkpointer = PersistSaver.from_url(url)
    plan = [["step"]] * (calls + 1 if block or mode == "continue" else calls)
    agent = create_agent(ScriptedChatModel(plan=plan), [step], checkpointer=checkpointer)
    handler = PersistCallbackHandler("exit-agent", url=url, flush_interval=0.2)
    config = {"callbacks": [handler], "run_id": uuid.UUID(run_id), "recursion_limit": 10_000,
              "configurable": {"thread_id": thread_id} if thread_id else {}}
    inputs = None if mode == "continue" else {"messages": [("user", "go")]}
    # durability="sync": each step's checkpoint is committed before the next step starts
    agent.invoke(inputs, config, **({"durability": "sync"} if checkpointer else {}))
    print("finished", flush=True)
    if mode == "raise":
        raise RuntimeError("the script fails after the run")


if __name__ == "__main__":
    main()
