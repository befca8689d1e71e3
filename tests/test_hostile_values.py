"""Hostile values never escape the error tree, never cost their neighbours, and never split an
identity (issue 13), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest
from handler_support import ScriptedChatModel
from hostile import Unprintable, hostile_text, ids, values
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain.agents import create_agent
from langchain_core.tools import tool
from langgraph.checkpoint.base import empty_checkpoint
from saver_graphs import agent_graph

from langchain_persist import (
    PersistCallbackHandler,
    PersistenceError,
    PersistSaver,
    ResultsPersistenceService,
    StorageError,
    ValidationError,
)
from langchain_persist._sanitize import bounded, clean_text

EXAMPLES = settings(max_examples=80, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])
CALLS = [
    ("save_result", lambda v: {"agent_id": v[0], "execution_id": v[1], "thread_id": v[2],
                               "result": v[3], "metadata": v[4], "error": v[5]}),
    ("update_result", lambda v: {"result_id": v[0], "result": v[3], "metadata": v[4],
                                 "status": v[5], "thread_id": v[2]}),
    ("get_result", lambda v: {"result_id": v[0]}),
    ("find_results", lambda v: {"agent_id": v[0], "execution_id": v[1], "thread_id": v[2],
                                "cursor": v[3] if isinstance(v[3], str) else None}),
    ("get_agent_results", lambda v: {"agent_id": v[0], "limit": v[1]}),
    ("get_execution_logs", lambda v: {"execution_id": v[0], "cursor": v[3]}),
    ("get_execution_traces", lambda v: {"execution_id": v[1], "since": v[2]}),
    ("save_checkpoint_state", lambda v: {"agent_id": v[0], "checkpoint_id": v[1],
                                         "thread_id": v[2], "state": v[3], "metadata": v[4],
                                         "checkpoint_ns": v[5]}),
    ("get_checkpoint_state", lambda v: {"checkpoint_id": v[0], "thread_id": v[1],
                                        "agent_id": v[2]}),
    ("latest_checkpoint_id", lambda v: {"thread_id": v[0], "checkpoint_ns": v[1]}),
    ("cleanup_old_logs", lambda v: {"older_than": v[3]}),
    ("count_old_results", lambda v: {"older_than": v[3]}),
    ("search", lambda v: {"query": v[3], "agent_id": v[0], "execution_id": v[1],
                          "thread_id": v[2], "types": v[4], "status": v[5], "since": v[4],
                          "cursor": v[5] if isinstance(v[5], str) else None}),
    ("stats", lambda v: {"agent_id": v[0], "since": v[3], "by": v[5], "top_errors": v[4]}),
    ("set_retention_policy", lambda v: {"agent_id": v[0], "logs": v[3], "traces": v[4]}),
    ("delete_retention_policy", lambda v: {"agent_id": v[0]}),
    ("resolve_interrupted", lambda v: {"thread_id": v[0], "status": v[5], "resumed_by": v[1],
                                       "keep": v[2]}),
]


@EXAMPLES
@given(st.sampled_from(CALLS), st.tuples(ids, ids, ids, values, values, values))
def test_the_service_raises_nothing_outside_the_error_tree(service, call, args):
    name, make = call
    kwargs = make(args)
    if name == "update_result" and args[1] == "agent-1":  # now and then, a real row
        kwargs["result_id"] = service.save_result(agent_id="agent-1").id
    try:
        getattr(service, name)(**kwargs)
    except StorageError:
        raise  # the database is up: an input it cannot take is a ValidationError, said so
    except PersistenceError:
        pass


@EXAMPLES
@given(st.tuples(ids, ids, values, values, st.one_of(st.none(), values)))
def test_logs_and_traces_never_raise(service, args):
    agent, execution, message, content, metadata = args
    service.save_log(agent_id=agent, execution_id=execution, message=message,
                     metadata=metadata, level="info")
    service.save_trace(agent_id=agent, execution_id=execution, type="tool_end",
                       content=content, metadata=metadata, name=agent)


@EXAMPLES
@given(hostile_text, values)
def test_text_reads_back_as_cleaned(service, text, metadata):
    """The same text and JSON come back on both databases: NUL and lone surrogates as U+FFFD,
    long text cut with a marker."""
    row = service.save_result(agent_id="a", result=text, error=text, metadata={"m": metadata})
    stored = service.get_result(row.id)
    expected = bounded(clean_text(text), service.max_text)
    assert stored is not None and stored.result == expected and stored.error == expected
    assert stored == row
    assert service.save_log(agent_id="a", execution_id=row.id, message=text)
    (log,) = service.get_execution_logs(row.id)
    assert log.message == expected


def test_one_refused_row_costs_no_other(service, caplog):
    """A row the database itself refuses (here, a log level its CHECK constraint forbids,
    written as a raw row) is found by halving the batch; the other 40 are stored."""
    good = [service.log_row(agent_id="a", execution_id="batch", message=f"m{i}")
            for i in range(40)]
    bad = list(service.log_row(agent_id="a", execution_id="batch", message="bad"))
    bad[4] = "bogus"  # the level column
    done = service.insert_events("logs", [*good[:17], tuple(bad), *good[17:]])
    assert (done.stored, done.refused) == (40, 1)
    assert len(service.get_execution_logs("batch")) == 40
    more = [service.log_row(agent_id="a", execution_id="batch", message=f"n{i}") for i in range(3)]
    assert service.save_logs([tuple(bad), *more]) == 3  # the service's own path too
    assert service.dropped == {"logs": 1}


@EXAMPLES
@given(batch=st.lists(st.booleans(), min_size=1, max_size=60))
def test_refused_rows_anywhere_in_a_batch_cost_no_other(service, batch):
    """Any mix of good rows and rows the database refuses: every good one is stored, every
    refused one counted."""
    execution = f"mix-{uuid.uuid4()}"
    rows = []
    for i, good in enumerate(batch):
        row = list(service.log_row(agent_id="a", execution_id=execution, message=f"m{i}"))
        if not good:
            row[4] = "bogus"  # a level the CHECK constraint forbids
        rows.append(tuple(row))
    done = service.insert_events("logs", rows)
    assert (done.stored, done.refused) == (sum(batch), len(batch) - sum(batch))
    stored = sorted(log.message for log in service.get_execution_logs(execution, limit=100))
    assert stored == sorted(f"m{i}" for i, good in enumerate(batch) if good)


def test_a_hostile_argument_costs_no_trace(service):
    """40 good tool calls and one whose argument holds a lone surrogate (and a NUL): every
    trace is stored, the bad one cleaned (0 of 84 were stored before)."""
    handler = PersistCallbackHandler("a", service=service, flush_interval=0.05)

    @tool
    def echo(text: str) -> str:
        """Return the text."""
        return f"echo {text}"

    for i in range(40):
        echo.invoke({"text": f"good {i}"}, {"callbacks": [handler],
                                            "metadata": {"execution_id": "e"}})
    echo.invoke({"text": "bad \ud800 \x00"}, {"callbacks": [handler],
                                               "metadata": {"execution_id": "e"}})
    assert handler.flush(30)
    traces = service.get_execution_traces("e")
    assert len(traces) == 82 and not handler.dropped
    assert traces[-1].content == "echo bad \ufffd \ufffd"
    handler.close()


@EXAMPLES
@given(st.lists(st.one_of(values, hostile_text), min_size=1, max_size=3))
def test_the_handler_never_reaches_the_agent(service, arguments):
    """Tools fed and returning hostile values: the run completes, every call is traced."""
    handler = PersistCallbackHandler("a", service=service, flush_interval=0.05)

    @tool
    def hostile(text: str) -> Any:
        """Return something awkward."""
        return arguments[len(text) % len(arguments)]

    agent = create_agent(ScriptedChatModel(plan=[["hostile"]] * len(arguments)), [hostile])
    run = uuid.uuid4()
    out = agent.invoke({"messages": [("user", clean_text(str(len(arguments))))]},
                       {"callbacks": [handler], "run_id": run})
    assert out["messages"][-1].content.startswith("answer to")
    assert handler.flush(30) and handler.internal_errors == 0
    traces = service.get_execution_traces(str(run))
    assert sum(t.type == "tool_end" for t in traces) == len(arguments)
    (result,) = service.find_results(execution_id=str(run))
    assert result.status == "completed" and not handler.dropped
    handler.close()


# -- one agent, one identity ------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["nul\x00a", "surrogate\ud800"])
def test_an_id_with_nul_or_a_surrogate_is_refused_before_the_run(service, bad):
    with pytest.raises(ValidationError, match=r"agent_id .* NUL character or a lone surrogate"):
        PersistCallbackHandler(bad, service=service)
    strict = PersistCallbackHandler(service=service, raise_error=True)
    agent = create_agent(ScriptedChatModel(plan=[["echo"]]), [_echo])
    for key in ("agent_id", "thread_id", "execution_id"):
        with pytest.raises(ValidationError, match=f"{key} .* NUL character or a lone"):
            agent.invoke({"messages": [("user", "hi")]},
                         {"callbacks": [strict], "metadata": {key: bad}})
    saver = PersistSaver.from_url(service.url)
    graph = agent_graph(1).compile(checkpointer=saver)
    for configurable in ({"thread_id": bad}, {"thread_id": "t", "agent_id": bad}):
        with pytest.raises(ValidationError, match="NUL character or a lone surrogate"):
            graph.invoke({"messages": [("user", "hi")]}, {"configurable": configurable})
    assert strict.flush(10)
    assert service.find_results(limit=100) == []  # nothing stored under any rewritten id
    assert list(saver.list(None)) == []
    assert service.get_agent_results(bad) == [] and service.get_execution_logs(bad) == []
    strict.close()
    saver.close()


@pytest.mark.parametrize("key", ["agent_id", "thread_id", "quest_id"])
@pytest.mark.parametrize("spool", [True, False], ids=["spool", "no-spool"])
def test_a_run_whose_id_is_refused_is_counted_not_lost_in_silence(service, key, spool, caplog):
    handler = PersistCallbackHandler(service=service, spool=spool)
    agent = create_agent(ScriptedChatModel(plan=[["echo"]]), [_echo])
    good = agent.invoke({"messages": [("user", "hi")]},
                        {"callbacks": [handler], "metadata": {"thread_id": "t-good"}})
    out = agent.invoke({"messages": [("user", "hi")]},
                       {"callbacks": [handler], "metadata": {key: "bad\x00id"}})
    assert out["messages"][-1].content == good["messages"][-1].content  # the agent went on
    assert handler.flush(30)
    assert handler.dropped["results"] == 1  # the refused row is counted, once
    assert len(service.find_results(limit=10)) == 1  # the good run's row
    said = caplog.text
    assert "NUL character or a lone surrogate" in said
    assert "as soon as the database is back" not in said  # not an outage: it is refused
    handler.close()
    assert handler.dropped["results"] == 1  # and never replayed from the spool


def test_a_write_of_a_task_with_a_nul_in_its_id_is_refused_on_both_databases(service):
    saver = PersistSaver.from_url(service.url)
    graph = agent_graph(1).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "t"}}
    graph.invoke({"messages": [("user", "hi")]}, config)
    latest = saver.get_tuple(config).config
    for task_id, task_path in (("task\x00id", ""), ("task", "path\x00")):
        with pytest.raises(ValidationError, match="NUL character or a lone surrogate"):
            saver.put_writes(latest, [("messages", "x")], task_id, task_path)
    assert saver.get_tuple(config).pending_writes == []  # nothing half-written
    saver.close()


@pytest.mark.parametrize("where", ["checkpoint id", "channel", "version", "write channel"])
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800b", "x" * 300])
def test_a_checkpoint_with_an_id_no_row_can_hold_is_refused_whole(service, where, bad):
    """Found by a review: these raised the driver's errors, differently on each database (on
    SQLite a NUL in a channel name lost its value in silence)."""
    saver = PersistSaver.from_url(service.url)
    config = {"configurable": {"thread_id": "t", "checkpoint_ns": ""}}
    version = saver.get_next_version(None, None)
    checkpoint = {**empty_checkpoint(), "channel_values": {"c": "v", bad: "w"},
                  "channel_versions": {"c": version}}
    new_versions: dict[str, Any] = {"c": version}
    if where == "checkpoint id":
        checkpoint["id"] = bad
    elif where == "channel":
        new_versions[bad] = version
    elif where == "version":
        new_versions["c"] = bad
    if where != "write channel":
        with pytest.raises(ValidationError):
            saver.put(config, checkpoint, {}, new_versions)
        assert saver.get_tuple(config) is None  # nothing half-written
    else:
        stored = saver.put(config, checkpoint, {}, new_versions)
        with pytest.raises(ValidationError):
            saver.put_writes(stored, [("c", "x"), (bad, "y")], "task")
        assert saver.get_tuple(stored).pending_writes == []
    saver.close()


def test_two_writes_to_one_special_channel_in_one_call_keep_the_last(service):
    """As InMemorySaver does (PostgreSQL refused the statement: one row updated twice)."""
    saver = PersistSaver.from_url(service.url)
    stored = saver.put({"configurable": {"thread_id": "t", "checkpoint_ns": ""}},
                       empty_checkpoint(), {}, {})
    saver.put_writes(stored, [("__error__", "first"), ("__error__", "second"), ("a", 1)], "task")
    assert saver.get_tuple(stored).pending_writes == [
        ("task", "__error__", "second"), ("task", "a", 1)]
    saver.close()


@tool
def _echo(text: str) -> str:
    """Return the text."""
    return text


def test_sizes_are_capped_with_a_marker(db_url):
    service = ResultsPersistenceService(db_url, max_text=1000)
    row = service.save_result(agent_id="a", result="x" * 10_000_000)
    assert row.result == "x" * 1000 + "… [truncated: 10000000 characters in all]"
    assert service.save_log(agent_id="a", execution_id="e", message="y" * 5000)
    assert service.get_execution_logs("e")[0].message.endswith("[truncated: 5000 characters "
                                                               "in all]")
    assert service.get_execution_logs("e", since=dt.datetime(2000, 1, 1))
    assert Unprintable  # the strategies' awkward object, used above through `values`
    service.close()
