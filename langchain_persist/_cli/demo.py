"""The main job: an agent run fails, resumes from its checkpoint, waits for approval, completes.

Everything is stored by the two entry points a user adds to their own agent: a
`PersistCallbackHandler` in the run config and a `PersistSaver` as the checkpointer.  Then the
demo reads back and shows what was stored, with the same views as the CLI.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from langgraph.types import Command
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .._callbacks.handler import PersistCallbackHandler
from .._checkpoint.saver import PersistSaver
from .._db.embedded import INSTALL_HINT, throwaway_postgres
from .._db.engine import dispose_database
from .._errors import ConfigurationError, PersistenceError
from .._ids import uuid7
from .._results.inspect import Execution, find_execution, thread_checkpoints, was_interrupted
from .._results.service import ResultsPersistenceService
from .demo_agent import (
    AGENT_ID,
    TASK,
    DemoTools,
    FlightApiTimeout,
    build_agent,
    real_model,
    scripted_model,
)
from .views import checkpoints_table, logs_table, results_table, trace_view

MAX_ROUNDS = 6  # a real model may take a different path; never loop for ever
APPROVAL = {"approved": True, "by": "demo reviewer"}


class DemoError(PersistenceError):
    """The demo could not run to the end (a real model's error, for example)."""


@dataclass
class DemoOutcome:
    """What the demo did: its thread, the execution id of each run, and the final answer."""

    url: str
    thread_id: str
    model: str | None = None
    execution_ids: list[str] = field(default_factory=list)
    failures: int = 0
    approvals: int = 0
    answer: str | None = None


def run_demo(
    url: str | None,
    console: Console,
    *,
    model: str | None = None,
    delay: float = 1.0,
    throwaway: bool = False,
    approve: bool = True,
) -> DemoOutcome:
    """Run the demo agent on ``url`` (default: ./langchain_persist.db) and show what was stored.

    ``model`` is ``provider:name`` for a real model (needs its package and API key); ``delay``
    scales the tools' simulated latency; ``throwaway`` says the database is gone afterwards;
    ``approve=False`` leaves the run waiting at its ``interrupt()`` (to answer it later, from
    the viewer of a served graph, say).
    """
    chat_model = real_model(model) if model else scripted_model()
    service = ResultsPersistenceService(url)
    saver = PersistSaver(url)
    handler = PersistCallbackHandler(agent_id=AGENT_ID, service=service)
    tools = DemoTools(delay)
    agent = build_agent(chat_model, tools, saver)
    outcome = DemoOutcome(
        url=service.db.url, thread_id=f"trip-{uuid.uuid4().hex[:8]}", model=model
    )
    config: dict[str, Any] = {
        "callbacks": [handler],
        "configurable": {"thread_id": outcome.thread_id, "agent_id": AGENT_ID},
    }
    _intro(console, service, outcome, model)
    try:
        _run(console, agent, config, tools, handler, outcome, approve=approve)
        handler.flush()
        _show(console, service, saver, outcome)
    finally:
        handler.close()
    if not throwaway:  # commands to look again at the database; a throwaway one is gone
        _next_steps(console, url, outcome)
    return outcome


def run_postgres_demo(
    console: Console, *, model: str | None = None, delay: float = 1.0
) -> DemoOutcome:
    """Run the demo on a throwaway PostgreSQL server, started for it and removed after it.

    Needs the ``embedded`` extra (`ConfigurationError` naming it otherwise).
    """
    console.print("[dim]Starting a throwaway PostgreSQL server for the demo...[/]")
    with throwaway_postgres() as admin_url:
        try:
            import psycopg
        except ImportError as exc:  # the embedded extra installs it (the postgres extra)
            raise ConfigurationError(f"the PostgreSQL demo needs psycopg: {INSTALL_HINT}") from exc
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute("CREATE DATABASE demo")
            version = admin.execute("SHOW server_version").fetchone()
        url = f"{admin_url.rsplit('/', 1)[0]}/demo"
        console.print(
            f"PostgreSQL {escape(str(version[0] if version else '?'))} is running at "
            f"[bold]{escape(url)}[/], in a temporary directory; it is stopped and removed when "
            "the demo ends.\n"
        )
        try:
            outcome = run_demo(url, console, model=model, delay=delay, throwaway=True)
        finally:
            dispose_database(url)  # close the pools before the server goes
    console.print()
    console.rule("[bold]The end")
    console.print(
        "The throwaway PostgreSQL server is stopped and its directory removed, with what it "
        "stored. To keep it, run the demo on your own server: [bold cyan]langchain-persist "
        "demo --url postgresql://user@host:5432/dbname[/] (the database must exist; the tables "
        "need not)."
    )
    return outcome


def _intro(
    console: Console, service: ResultsPersistenceService, outcome: DemoOutcome, model: str | None
) -> None:
    console.rule("[bold]langchain-persist demo")
    console.print(
        "An agent plans a trip with three tools: [bold]get_weather[/], [bold]search_flights[/] "
        "(its API times out once) and [bold]book_flight[/] (a human approves it through "
        "LangGraph's [italic]interrupt()[/]).\n"
        "Two lines of setup store everything it does:\n"
        "  [cyan]PersistCallbackHandler[/] in the run config → each run's result, tool traces "
        "and logs\n"
        "  [cyan]PersistSaver[/] as the graph's checkpointer  → a checkpoint after every step, "
        "for resume"
    )
    where = escape(service.db.url)
    console.print(
        f"database [bold]{where}[/] · agent [bold]{AGENT_ID}[/] · thread "
        f"[bold]{outcome.thread_id}[/] · model "
        f"[bold]{model or 'scripted (offline; --model provider:name for a real one)'}[/]\n"
    )


def _run(
    console: Console,
    agent: Any,
    config: dict[str, Any],
    tools: DemoTools,
    handler: PersistCallbackHandler,
    outcome: DemoOutcome,
    *,
    approve: bool = True,
) -> None:
    """Invoke until the run completes: resume after a failure, approve at an interrupt
    (or, with ``approve=False``, stop there)."""
    real = outcome.model is not None
    inputs: Any = {"messages": [("user", TASK)]}
    _say(console, 1, "Run the agent", 'agent.invoke({"messages": [("user", task)]}, config)')
    console.print(f"   [dim]task:[/] {TASK}")
    for number in range(1, MAX_ROUNDS + 1):
        run_id = uuid.UUID(uuid7())
        outcome.execution_ids.append(str(run_id))
        try:
            out = agent.invoke(inputs, {**config, "run_id": run_id})
        except FlightApiTimeout as exc:
            outcome.failures += 1
            console.print(Text(f"   ✘ the run failed: {type(exc).__name__}: {exc}", style="red"))
            console.print(
                "     Stored: its result (status [red]failed[/] and the error), the traces of "
                "both tool calls, and the checkpoint of the step that failed, with "
                "get_weather's finished result kept as a pending write."
            )
            _say(console, number + 1, "Resume from the last checkpoint",
                 "agent.invoke(None, config)  # same thread_id: LangGraph reloads its state")
            inputs = None
            continue
        except PersistenceError:
            raise
        except Exception as exc:
            hint = " (check the provider's API key, and that the model can call tools)"
            raise DemoError(
                f"the agent run failed: {type(exc).__name__}: {exc}{hint if real else ''}"
            ) from exc
        if outcome.failures and number == outcome.failures + 1:
            _reused(console, tools)
        interrupts = out.get("__interrupt__") if isinstance(out, dict) else None
        if interrupts:
            value = getattr(interrupts[0], "value", interrupts[0])
            question = value.get("question") if isinstance(value, dict) else str(value)
            console.print(Text(f"   ⏸ the agent stopped to ask a human: {question!r}",
                               style="yellow"))
            console.print(
                "     The run ended here; the question waits in the thread's checkpoint, so any "
                "process can answer it later."
            )
            if not approve:
                return
            _say(console, number + 1, "Approve the booking",
                 f"agent.invoke(Command(resume={APPROVAL!r}), config)")
            outcome.approvals += 1
            inputs = Command(resume=APPROVAL)
            continue
        messages = out.get("messages") if isinstance(out, dict) else None
        outcome.answer = str(messages[-1].content) if messages else str(out)
        console.print(Text(f"   ✔ completed: {outcome.answer}", style="green"))
        return
    raise DemoError(f"the agent did not finish within {MAX_ROUNDS} runs")


def _reused(console: Console, tools: DemoTools) -> None:
    if tools.calls["get_weather"] == 1 and tools.calls["search_flights"] >= 2:
        console.print(
            "   ✔ only the failed call ran again: search_flights succeeded, and get_weather, "
            "which had finished before the failure, was not called a second time."
        )


def _say(console: Console, number: int, title: str, code: str) -> None:
    console.print(f"\n[bold]{number}. {title}[/]  [dim]{code}[/]")


def _show(
    console: Console,
    service: ResultsPersistenceService,
    saver: PersistSaver,
    outcome: DemoOutcome,
) -> None:
    console.print()
    console.rule("[bold]What was stored")
    executions: list[Execution] = [
        e for e in (find_execution(service, x) for x in outcome.execution_ids) if e is not None
    ]
    paused = [e.execution_id for e in executions if was_interrupted(e)]
    results = [e.result for e in executions if e.result is not None]
    console.print(
        "\n[bold]Results[/] [dim](agent_results: one row per run, written as it starts and "
        "when it ends)[/]"
    )
    console.print(results_table(results, interrupted=paused, numbered=True, context=False))
    console.print(
        "\n[bold]Traces[/] [dim](agent_traces: every model and tool call, by graph step, with "
        "durations and a timeline)[/]"
    )
    for number, execution in enumerate(executions, 1):
        console.print(trace_view(execution, title=f"run {number}: {execution.execution_id}"))
    console.print(
        "\n[bold]Logs[/] [dim](execution_logs: start, end and failure of each run)[/]"
    )
    logs = [log for e in executions for log in e.logs]
    runs = {e.execution_id: f"run {n}" for n, e in enumerate(executions, 1)}
    console.print(logs_table(logs, runs=runs))
    checkpoints = list(reversed(thread_checkpoints(saver, outcome.thread_id)))
    console.print(
        f"\n[bold]Checkpoints[/] [dim](checkpoint_states: {len(checkpoints)} checkpoints of "
        f"thread {outcome.thread_id}, oldest first; a run resumes from the newest)[/]"
    )
    console.print(checkpoints_table(checkpoints, width=console.width))


def _next_steps(console: Console, url: str | None, outcome: DemoOutcome) -> None:
    where = f" --url {url}" if url else ""
    first = outcome.execution_ids[0] if outcome.execution_ids else "EXECUTION_ID"
    console.print()
    console.rule("[bold]Look again")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold cyan", overflow="fold")
    grid.add_column(style="dim", overflow="fold")
    for command, what in (
        (f"langchain-persist runs list{where}", "every stored run, newest first"),
        (f"langchain-persist runs show {first}{where}", "one run: result, trace tree, logs"),
        (f"langchain-persist checkpoints {outcome.thread_id}{where}", "the thread's checkpoints"),
        (f"langchain-persist cleanup --older-than 30d --dry-run{where}", "what retention removes"),
    ):
        grid.add_row(command, what)
    console.print(grid)
    console.print("[dim]Add --json to any of them for scripts. Re-run the demo any time: each "
                  "run uses a new thread.[/]")
    console.print(f"\nSee it all in your browser: [bold cyan]langchain-persist ui{where}[/] "
                  "[dim](the web viewer: runs, the waterfall of each run's calls, every "
                  "checkpoint's state)[/]")
