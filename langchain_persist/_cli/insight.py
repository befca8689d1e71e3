"""The commands that look across runs: ``search``, ``stats`` and ``retention``.

Like the other commands, they parse options, call the service and hand the data to
`insight_views` (or print JSON); `commands` registers them on the application.
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from .._db.backfill import describe
from .._db.schema import RESULT_STATUSES
from .._db.sql.stats import GROUPINGS
from .support import (
    DryRun,
    Json,
    Url,
    Yes,
    console,
    database_errors,
    err,
    fail,
    parse_age,
    read_service,
    where,
)
from .views import to_json

retention_app = typer.Typer(
    help="Retention policies: how long each agent's rows are kept, and applying them.",
    no_args_is_help=True,
)

Agent = Annotated[str | None, typer.Option("--agent", help="Only this agent's.")]
Since = Annotated[
    str | None,
    typer.Option("--since", help="Only what is younger than this age: 7d, 12h, 30m, 2w."),
]


def _since(text: str | None) -> dt.timedelta | None:
    return None if text is None else parse_age(text)


def _status(status: str | None) -> None:
    if status is not None and status not in RESULT_STATUSES:
        fail(f"--status must be one of {', '.join(RESULT_STATUSES)}, got {status!r}", 2,
             markup=False)


def search(
    query: Annotated[str, typer.Argument(help='Words to find: timeout, "rate limit", '
                                              "openai.RateLimitError, Timeout* (a prefix).")],
    agent: Agent = None,
    execution: Annotated[str | None, typer.Option("--execution", help="Only this run's.")] = None,
    thread: Annotated[str | None, typer.Option("--thread", help="Only its runs'.")] = None,
    type_: Annotated[
        list[str] | None,
        typer.Option("--type", help="Only these kinds (repeatable): a trace type such as "
                                    "tool_error or llm_end, or log for log lines."),
    ] = None,
    status: Annotated[
        str | None, typer.Option("--status", help="Only hits of runs in this status.")
    ] = None,
    since: Since = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="How many.")] = 20,
    json_: Json = False,
    url: Url = None,
) -> None:
    """Search logs and traces (messages, tool names, inputs, outputs, errors), newest first."""
    _status(status)
    with database_errors(url):
        service = read_service(url)
        page = service.search(query, agent_id=agent, execution_id=execution, thread_id=thread,
                              types=type_ or None, status=status, since=_since(since),
                              limit=limit)
        left = service.unindexed()
    if left:
        err.print(f"[yellow]warning:[/] {describe(left)} stored before the search index "
                  "existed are not indexed yet: run `langchain-persist db upgrade`",
                  highlight=False)
    if json_:
        typer.echo(to_json({"query": query, "hits": [h.to_dict() for h in page],
                            "more": page.next_cursor is not None}))
        return
    if not page:
        console.print(f"Nothing matches {escape(repr(query))}.")
        return
    from .insight_views import search_view

    console.print(search_view(page, f"{len(page)} matches for {query!r}, newest first"))
    if page.next_cursor:
        console.print(f"[dim]The newest {limit} are shown; pass --limit for more.[/]")
    console.print(f"[dim]A run in full: langchain-persist runs show {page[0].execution_id}[/]")


def stats(
    agent: Agent = None,
    since: Annotated[
        str, typer.Option("--since", help="Over this age back from now: 7d, 24h, 4w.")
    ] = "7d",
    by: Annotated[
        str | None,
        typer.Option("--by", help=f"Group by {', '.join(GROUPINGS)}.", show_default=False),
    ] = None,
    top_errors: Annotated[
        int, typer.Option("--top-errors", min=0, max=100, help="How many errors to list.")
    ] = 5,
    json_: Json = False,
    url: Url = None,
) -> None:
    """Runs, success and failure rates, durations (p50, p95, p99), tool errors, tokens."""
    if by is not None and by not in GROUPINGS:
        fail(f"--by must be one of {', '.join(GROUPINGS)}, got {by!r}", 2, markup=False)
    age = parse_age(since)
    with database_errors(url):
        found = read_service(url).stats(agent_id=agent, since=age, by=by, top_errors=top_errors)
    if json_:
        typer.echo(to_json(found.to_dict()))
        return
    from .insight_views import stats_view
    from .support import describe_age

    who = f"agent {agent}" if agent else "every agent"
    console.print(stats_view(found, f"Statistics of {who} over the last {describe_age(age)}"))


# -- retention ---------------------------------------------------------------------------------


def _age_or_forever(kind: str, text: str) -> dt.timedelta | None:
    if text.strip().lower() in ("forever", "keep", "never", "none"):
        return None
    try:
        age = parse_age(text)
    except typer.BadParameter as exc:
        fail(f"--{kind}: {exc} (or forever)", 2, markup=False)
    if age <= dt.timedelta(0):
        fail(f"--{kind} must be longer than 0 (or forever)", 2, markup=False)
    return age


@retention_app.command("set")
def retention_set(
    agent: Annotated[
        str | None,
        typer.Option("--agent", help="The agent the policy is for (default: the default "
                                     "policy, for every agent without one)."),
    ] = None,
    results: Annotated[str | None, typer.Option(
        "--results", help="Keep finished results this long: 90d, 12w, or forever.")] = None,
    logs: Annotated[str | None, typer.Option("--logs", help="Keep logs this long.")] = None,
    traces: Annotated[str | None, typer.Option("--traces", help="Keep traces this long.")] = None,
    checkpoints: Annotated[str | None, typer.Option(
        "--checkpoints",
        help="Keep checkpoint threads this long after their last activity (a thread with a "
             "running or interrupted run is never deleted).")] = None,
    url: Url = None,
) -> None:
    """Store how long an agent's rows (or, without --agent, everyone's) are kept."""
    given = {k: v for k, v in (("results", results), ("logs", logs), ("traces", traces),
                               ("checkpoints", checkpoints)) if v is not None}
    if not given:
        fail("say what to keep for how long: --results, --logs, --traces or --checkpoints "
             "(an age such as 30d, or forever)", 2, markup=False)
    ages = {kind: _age_or_forever(kind, text) for kind, text in given.items()}
    with database_errors(url):
        policy = read_service(url).set_retention_policy(agent, **ages)
    from .insight_views import policies_table

    console.print(policies_table([policy]))
    console.print("[dim]Apply it with `langchain-persist retention run` (the server applies "
                  "it on a schedule).[/]")


@retention_app.command("show")
def retention_show(json_: Json = False, url: Url = None) -> None:
    """Show the stored retention policies."""
    with database_errors(url):
        policies = read_service(url).get_retention_policies()
    if json_:
        typer.echo(to_json([p.to_dict() for p in policies]))
        return
    if not policies:
        console.print(f"No retention policy is stored in {escape(where(url))}: everything is "
                      "kept. Set one with `langchain-persist retention set --logs 30d ...`.")
        return
    from .insight_views import policies_table

    console.print(policies_table(policies))
    if policies[0].agent_id is not None:
        console.print("[dim]No default policy: agents without a policy keep everything.[/]")


@retention_app.command("delete")
def retention_delete(
    agent: Annotated[str | None, typer.Option(
        "--agent", help="Whose policy to remove (default: the default policy).")] = None,
    url: Url = None,
) -> None:
    """Remove a policy: the agent follows the default again (without --agent: no default)."""
    with database_errors(url):
        removed = read_service(url).delete_retention_policy(agent)
    name = "the default policy" if agent is None else f"the policy of {agent}"
    console.print(f"Removed {escape(name)}." if removed else f"There was no {escape(name)}.")


@retention_app.command("run")
def retention_run(
    dry_run: DryRun = False,
    yes: Yes = False,
    json_: Json = False,
    url: Url = None,
) -> None:
    """Delete what the retention policies make old, in short batches, with progress."""
    from .insight_views import report_table

    with database_errors(url):
        service = read_service(url)
        at = dt.datetime.now(dt.UTC)
        planned = service.apply_retention(dry_run=True, at=at)
        if dry_run or not any(planned.totals.to_dict()[k] for k in
                              ("results", "logs", "traces", "threads")):
            if json_:
                typer.echo(to_json(planned.to_dict()))
            else:
                console.print(report_table(planned))
            return
        if not yes and not json_ and sys.stdin.isatty():
            t = planned.totals
            typer.confirm(
                f"Delete {t.results:,} results, {t.logs:,} logs, {t.traces:,} traces and "
                f"{t.threads:,} checkpoint threads from {where(url)}?", abort=True)
        if json_:
            report = service.apply_retention(at=at)
        else:
            progress = Progress(TextColumn("{task.description:<12}"), BarColumn(),
                                TextColumn("{task.completed:,}/{task.total:,}"),
                                TimeElapsedColumn(), console=console)
            t = planned.totals
            with progress:
                tasks = {kind: progress.add_task(kind, total=getattr(t, kind) or 1)
                         for kind in ("results", "logs", "traces", "checkpoints")}
                report = service.apply_retention(
                    at=at, on_progress=lambda kind, n: progress.advance(tasks[kind], n))
                for task in tasks.values():
                    progress.update(task, completed=progress.tasks[task].total)
    if json_:
        typer.echo(to_json(report.to_dict()))
    else:
        console.print(report_table(report))
