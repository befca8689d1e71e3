"""Where PersistCallbackHandler's time in an agent run goes: its parts switched off one by one.

    python benchmarks/handler_parts.py [sqlite|postgres] [ROUNDS]   # ~1 min for 40 rounds

Contenders, interleaved round by round (the order rotates), each one `create_agent` run with
20 tool calls: no handler; LangChain's no-op handler; the empty handler (LangChain's dispatch
alone); the full handler; the handler without its queue (records are dropped, so the writer
stores nothing); without the blocking end write of the result row; and with neither (its
callbacks alone).  Printed: the median, over rounds, of each contender minus no handler in the
same round, per tool call.
"""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import bench_handler as bench
from handler_support import ScriptedChatModel, echo
from langchain.agents import create_agent

from langchain_persist import PersistCallbackHandler, ResultsPersistenceService


class _NoEndWrite(ResultsPersistenceService):
    """A service whose result rows are never written (the handler's one blocking write): it
    answers as if they were."""

    def save_result(self, **fields: Any) -> Any:
        return SimpleNamespace(id=fields.get("id"), status=fields.get("status", "running"))

    def update_result(self, result_id: str, **fields: Any) -> Any:
        return None

    def latest_checkpoint_id(self, thread_id: str, checkpoint_ns: str = "") -> str | None:
        return None


def parts(url: str) -> dict[str, list[Any]]:
    """Every contender's callbacks list, by name."""
    full = PersistCallbackHandler("a", url=url)
    full.service.find_results(limit=1)
    no_queue = PersistCallbackHandler("a", service=full.service)
    no_end_write = _NoEndWrite(url)
    no_end = PersistCallbackHandler("a", service=no_end_write)
    alone = PersistCallbackHandler("a", service=no_end_write)
    for handler in (no_queue, alone):
        handler._put = lambda record: True  # the records go nowhere
    return {
        "no handler": [], "no-op handler": [bench.NoopHandler()],
        "empty handler": [bench.EmptyHandler()], "full handler": [full],
        "without the queue": [no_queue], "without the end write": [no_end],
        "callbacks alone": [alone],
    }


def main() -> None:
    database = sys.argv[1] if len(sys.argv) > 1 else "sqlite"
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    agent = create_agent(ScriptedChatModel(plan=[["echo"]] * bench.TOOL_CALLS), [echo])
    with bench.pg_database() as pg_url:
        url = pg_url if database == "postgres" else (
            f"sqlite:///{Path('/tmp') / f'lp-parts-{uuid.uuid4().hex[:8]}.db'}")
        contenders = parts(url)

        def timed(callbacks: list[Any]) -> Any:
            def work() -> None:
                agent.invoke({"messages": [("user", "bench")]}, {"callbacks": callbacks})

            return lambda: bench.measure(work, 1, bench.flusher(callbacks))

        samples = bench.interleave({n: timed(c) for n, c in contenders.items()}, rounds)
        print(f"{database}, {rounds} rounds: µs added per tool call (median of paired rounds)")
        for name, sample in samples.items():
            added = bench.added(sample, samples["no handler"])[0]
            print(f"  {name:24s} {added * 1e6 / bench.TOOL_CALLS:+6.0f}")
        for callbacks in contenders.values():
            for cb in callbacks:
                if isinstance(cb, PersistCallbackHandler):
                    cb.close()


if __name__ == "__main__":
    main()
