"""Full-text search over logs and traces, on SQLite (FTS5) and PostgreSQL (tsvector + GIN)."""
# ruff: noqa: RUF001  (non-ASCII text, on purpose: a minus sign among the searched words)

from __future__ import annotations

import datetime as dt
import random
import uuid

import pytest
from handler_support import ScriptedChatModel, echo, explode
from langchain.agents import create_agent

from langchain_persist import PersistCallbackHandler, ResultsPersistenceService, ValidationError

NOW = dt.datetime.now(dt.UTC)


def _trace(service: ResultsPersistenceService, agent: str, execution: str, content: str, *,
           type: str = "tool_error", name: str = "search_flights", ago: float = 0) -> None:
    assert service.save_trace(agent_id=agent, execution_id=execution, type=type, name=name,
                              content=content, timestamp=NOW - dt.timedelta(hours=ago))


def _log(service: ResultsPersistenceService, agent: str, execution: str, message: str, *,
         ago: float = 0) -> None:
    assert service.save_log(agent_id=agent, execution_id=execution, message=message,
                            timestamp=NOW - dt.timedelta(hours=ago))


def _found(service: ResultsPersistenceService, query: str, **filters: object) -> list[str]:
    return [f"{h.kind}:{h.execution_id}" for h in service.search(query, **filters)]


@pytest.fixture
def stored(service: ResultsPersistenceService) -> ResultsPersistenceService:
    _trace(service, "travel", "x1", "openai.RateLimitError: rate-limit reached (HTTP 429) for "
           "gpt-4.1; retry after 20s", ago=5)
    _trace(service, "travel", "x2", "FlightApiTimeout: flight search API timed out after "
           "120 ms", ago=4)
    _log(service, "travel", "x2", "execution failed: FlightApiTimeout: flight search API timed "
         "out", ago=4)
    _trace(service, "travel", "x3", '{"city": "Zürich", "note": "Grüße aus der Schweiz"}',
           type="tool_start", name="get_weather", ago=3)
    _trace(service, "travel", "x3", "Москва: −3 °C, снег; 東京タワー is open", type="tool_end",
           name="get_weather", ago=2)
    _log(service, "travel", "x4", "C:\\temp\\report.csv saved; e-mail sent to ops@example.com",
         ago=1)
    # another agent with the same words
    _trace(service, "billing", "y1", "openai.RateLimitError: rate-limit reached (HTTP 429)",
           ago=0.5)
    _log(service, "billing", "y1", "FlightApiTimeout seen in billing too", ago=0.5)
    return service


def test_finds_error_class_names_alone_and_qualified(stored: ResultsPersistenceService) -> None:
    assert _found(stored, "RateLimitError") == ["trace:y1", "trace:x1"]
    assert _found(stored, "openai.RateLimitError") == ["trace:y1", "trace:x1"]
    assert _found(stored, "FlightApiTimeout") == ["log:y1", "log:x2", "trace:x2"]
    assert _found(stored, "FlightApi*") == ["log:y1", "log:x2", "trace:x2"]  # a prefix
    assert _found(stored, "flightapitimeout: flight search") == ["log:x2", "trace:x2"]


def test_finds_text_with_punctuation(stored: ResultsPersistenceService) -> None:
    assert _found(stored, "rate-limit") == ["trace:y1", "trace:x1"]
    assert _found(stored, "HTTP 429") == ["trace:y1", "trace:x1"]
    assert _found(stored, "(HTTP 429)") == ["trace:y1", "trace:x1"]
    assert _found(stored, "gpt-4.1;") == ["trace:x1"]
    assert _found(stored, "report.csv") == ["log:x4"]
    assert _found(stored, "C:\\temp\\report.csv") == ["log:x4"]
    assert _found(stored, "ops@example.com") == ["log:x4"]
    assert _found(stored, '"timed out after 120 ms"') == ["trace:x2"]
    assert _found(stored, "e-mail sent") == ["log:x4"]
    assert _found(stored, "rate limit reached 429") == ["trace:y1", "trace:x1"]  # all words
    assert _found(stored, '"limit rate"') == []  # a phrase keeps its order
    with pytest.raises(ValidationError, match="no word"):
        stored.search("?!-")
    with pytest.raises(ValidationError, match="empty"):
        stored.search("  ")


def test_nul_and_lone_surrogates_separate_words_as_stored(
        service: ResultsPersistenceService) -> None:
    """Stored, NUL and a lone surrogate became U+FFFD, which separates words; in a query they
    separate words too (PostgreSQL refused a NUL in the query as a storage error)."""
    _log(service, "a", "e1", "before\x00after and left\ud800right")
    assert _found(service, "before\x00after") == ["log:e1"]
    assert _found(service, "left\ud800right") == ["log:e1"]
    assert _found(service, "\x00before") == ["log:e1"]
    (hit,) = service.search("after")
    assert [hit.snippet[a:b] for a, b in hit.highlights] == ["after"]
    with pytest.raises(ValidationError, match="no word"):
        service.search("\x00\ud800")


def test_a_cursor_that_was_not_ours_is_refused_matches_or_not(
        stored: ResultsPersistenceService) -> None:
    for query in ("RateLimitError", "xylophone"):
        with pytest.raises(ValidationError, match="invalid cursor"):
            stored.search(query, cursor="zzz")


def test_finds_non_ascii_words(stored: ResultsPersistenceService) -> None:
    assert _found(stored, "Zürich") == ["trace:x3"]
    assert _found(stored, "zürich") == ["trace:x3"]  # any case
    assert _found(stored, "GRÜSSE") == []  # case folding, not German spelling rules
    assert _found(stored, "Grüße") == ["trace:x3"]
    assert _found(stored, "москва") == ["trace:x3"]
    assert _found(stored, "снег") == ["trace:x3"]
    assert _found(stored, "東京タワー") == ["trace:x3"]
    assert _found(stored, "get_weather") == ["trace:x3", "trace:x3"]  # the tool's name


def test_filters_never_match_across_agents(stored: ResultsPersistenceService) -> None:
    for query in ("RateLimitError", "FlightApiTimeout", "429", "billing", "rate-limit"):
        for agent in ("travel", "billing", "nobody"):
            hits = stored.search(query, agent_id=agent, limit=100)
            assert {h.agent_id for h in hits} <= {agent}, (query, agent)
    assert _found(stored, "FlightApiTimeout", agent_id="travel") == ["log:x2", "trace:x2"]
    assert _found(stored, "FlightApiTimeout", agent_id="billing") == ["log:y1"]
    assert _found(stored, "billing", agent_id="travel") == []


def test_filters_by_execution_type_time_thread_and_status(
    stored: ResultsPersistenceService,
) -> None:
    s = stored
    assert _found(s, "FlightApiTimeout", execution_id="x2") == ["log:x2", "trace:x2"]
    assert _found(s, "FlightApiTimeout", types="log") == ["log:y1", "log:x2"]
    assert _found(s, "FlightApiTimeout", types=["tool_error"]) == ["trace:x2"]
    assert _found(s, "FlightApiTimeout", types=["tool_end", "tool_start"]) == []
    assert _found(s, "RateLimitError", since=dt.timedelta(hours=1)) == ["trace:y1"]
    assert _found(s, "RateLimitError", since=NOW - dt.timedelta(hours=6),
                  until=NOW - dt.timedelta(hours=1)) == ["trace:x1"]
    s.save_result(agent_id="travel", execution_id="x2", thread_id="trip-1", status="failed",
                  error="FlightApiTimeout")
    s.save_result(agent_id="billing", execution_id="y1", thread_id="trip-2")
    assert _found(s, "FlightApiTimeout", thread_id="trip-1") == ["log:x2", "trace:x2"]
    assert _found(s, "FlightApiTimeout", status="failed") == ["log:x2", "trace:x2"]
    assert _found(s, "FlightApiTimeout", status="running") == ["log:y1"]
    assert _found(s, "FlightApiTimeout", status="completed") == []
    with pytest.raises(ValidationError, match="status"):
        s.search("x", status="done")


def test_pages_newest_first_with_snippets(service: ResultsPersistenceService) -> None:
    long_text = "x " * 300 + "the connection to db-7 timed out" + " y" * 300
    for i in range(7):
        _trace(service, "a", f"e{i}", f"{i}: " + long_text, ago=i)
    seen, cursor = [], None
    while True:
        page = service.search("\"timed out\"", limit=3, cursor=cursor)
        seen += [h.execution_id for h in page]
        for hit in page:
            assert len(hit.snippet) <= 162 and hit.snippet.startswith("…")
            assert [hit.snippet[a:b] for a, b in hit.highlights] == ["timed out"]
            assert hit.text.startswith(hit.execution_id[1:])  # the whole text is there too
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == [f"e{i}" for i in range(7)]  # newest first, each once
    with pytest.raises(ValidationError, match="cursor"):
        service.search("timed out", cursor="garbage")


async def test_async_twin(stored: ResultsPersistenceService) -> None:
    hits = await stored.asearch("Zürich")
    assert [h.name for h in hits] == ["get_weather"]
    assert await stored.aunindexed() == {}


def test_a_real_agent_run_is_searchable(service: ResultsPersistenceService) -> None:
    handler = PersistCallbackHandler("searcher", service=service, flush_interval=0.05)
    agent = create_agent(ScriptedChatModel(plan=[["echo", "explode"]]), [echo, explode])
    run = uuid.uuid4()
    with pytest.raises(RuntimeError, match="exploded"):
        agent.invoke({"messages": [("user", "Lyon-Perrache")]},
                     {"callbacks": [handler], "run_id": run})
    handler.close()
    hits = service.search("exploded Lyon-Perrache", agent_id="searcher")
    assert {(h.kind, h.type, h.name) for h in hits} >= {("trace", "tool_error", "explode")}
    assert all(h.execution_id == str(run) for h in hits)
    (result,) = service.find_results(execution_id=hits[0].execution_id)  # the link to its run
    assert result.status == "failed"
    assert service.search("RuntimeError", types="log", agent_id="searcher")[0].text.startswith(
        "execution failed: RuntimeError: exploded")


@pytest.mark.parametrize("plan", ["lookup", "probe", "ask", "window"])
def test_every_plan_finds_the_same_hits_in_the_same_order(
    service: ResultsPersistenceService, monkeypatch: pytest.MonkeyPatch, plan: str
) -> None:
    """The plans chosen by how many rows match (SQLite) or found in two steps (PostgreSQL)
    give what reading every row would: all the matches, newest first, page after page."""
    from langchain_persist._db.sql import search as search_sql

    rng = random.Random(5)
    words = ["alpha", "beta", "gamma", "delta"]
    for i in range(400):
        agent = rng.choice(["a", "b"])
        text = " ".join(rng.choice(words) for _ in range(3)) + f" n{i}"
        _trace(service, agent, f"e{i % 37}", text, ago=rng.random() * 48)
        if i % 3 == 0:
            _log(service, agent, f"e{i % 37}", text, ago=rng.random() * 48)
    monkeypatch.setattr(search_sql, "LOOKUP_MAX", 10_000 if plan == "lookup" else 5)
    monkeypatch.setattr(search_sql, "DENSE", 0.0 if plan == "ask" else 1.0)
    monkeypatch.setattr(search_sql, "RECENT_WINDOW", 7 if plan == "window" else 5_000)
    for query, filters in (("alpha", {}), ("beta gamma", {"agent_id": "a"}),
                           ('"delta alpha"', {"types": "log"}), ("n1*", {"agent_id": "b"}),
                           ("alpha", {"since": dt.timedelta(hours=20)})):
        seen, cursor = [], None
        while True:
            page = service.search(query, limit=9, cursor=cursor, **filters)
            seen += page
            cursor = page.next_cursor
            if cursor is None:
                break
        terms = search_sql.parse_query(query)
        expected = [(h.timestamp, h.id) for h in seen if search_sql.snippet(h.text, terms)[1]]
        assert [(h.timestamp, h.id) for h in seen] == expected  # each hit matches
        assert [h.timestamp for h in seen] == sorted((h.timestamp for h in seen), reverse=True)
        assert len({h.id for h in seen}) == len(seen)
        everything = service.search(query, limit=10_000, **filters)
        monkeypatch.setattr(search_sql, "RECENT_WINDOW", 5_000)
        monkeypatch.setattr(search_sql, "LOOKUP_MAX", 10_000)
        assert [h.id for h in service.search(query, limit=10_000, **filters)] == [
            h.id for h in everything] == [h.id for h in seen], (plan, query)
        monkeypatch.setattr(search_sql, "LOOKUP_MAX", 10_000 if plan == "lookup" else 5)
        monkeypatch.setattr(search_sql, "RECENT_WINDOW", 7 if plan == "window" else 5_000)
