"""LangGraph's checkpointer conformance suite, every capability, on both databases."""

from __future__ import annotations

from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES

from langchain_persist import PersistSaver


async def test_conformance_all_capabilities(db_url: str) -> None:
    @checkpointer_test(name=f"PersistSaver[{db_url.split(':')[0]}]")
    async def persist_saver():
        async with PersistSaver.from_url(db_url) as saver:
            yield saver

    report = await validate(persist_saver)
    failures = {
        name: result.failures for name, result in report.results.items() if not result.passed
    }
    assert not failures, failures
    assert {c.value for c in ALL_CAPABILITIES} <= {
        name for name, result in report.results.items() if result.passed
    }
    assert report.passed_all()
