"""LangGraph's checkpointer conformance suite, every capability, on both databases.

The suite calls only the async methods.  It runs twice: as shipped, and through a subclass whose
async methods call the sync ones directly on the event loop, so the sync API passes it too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from langchain_persist import PersistSaver


class SyncDriven(PersistSaver):
    """PersistSaver whose async methods are the sync ones, called inline."""

    async def aget_tuple(self, config):  # type: ignore[no-untyped-def, override]
        return self.get_tuple(config)

    async def alist(self, config, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        for tup in self.list(config, **kwargs):
            yield tup

    async def aput(self, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def, override]
        return self.put(*args, **kwargs)

    async def aput_writes(self, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        self.put_writes(*args, **kwargs)

    async def adelete_thread(self, thread_id: str) -> None:  # type: ignore[override]
        self.delete_thread(thread_id)

    async def adelete_for_runs(self, run_ids) -> None:  # type: ignore[no-untyped-def, override]
        self.delete_for_runs(run_ids)

    async def acopy_thread(self, source: str, target: str) -> None:  # type: ignore[override]
        self.copy_thread(source, target)

    async def aprune(self, thread_ids, **kwargs: Any) -> None:  # type: ignore[no-untyped-def, override]
        self.prune(thread_ids, **kwargs)


@pytest.mark.parametrize("saver_class", [PersistSaver, SyncDriven], ids=["async", "sync"])
async def test_conformance_all_capabilities(db_url: str, saver_class: type[PersistSaver]) -> None:
    @checkpointer_test(name=f"{saver_class.__name__}[{db_url.split(':')[0]}]")
    async def saver():
        async with saver_class.from_url(db_url) as instance:
            yield instance

    report = await validate(saver)
    failures = {name: r.failures for name, r in report.results.items() if not r.passed}
    assert not failures, failures
    passed = {name for name, r in report.results.items() if r.passed}
    assert {c.value for c in ALL_CAPABILITIES} <= passed
    assert report.passed_all()
    assert sum(r.tests_passed for r in report.results.values()) >= 60
