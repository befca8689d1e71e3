"""The viewer's pages: runs, a run, a thread, stats; and the live feed of the runs list.

Pages read through the service and the saver (in FastAPI's thread pool: they are plain
functions), shape what they read with `_ui_views`, and render a template.  Each answer says in
its ``Server-Timing`` header how long the server took.  Actions (resume, answer, fork) are not
routes of the viewer: the page's script calls the API's execute and resume endpoints.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
import urllib.parse
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.engine import make_url
from sse_starlette import EventSourceResponse, ServerSentEvent

from .._errors import ValidationError
from .._records import AgentResult
from .._results import validate as check
from .._results.inspect import find_execution, thread_checkpoints
from .._sanitize import to_text
from . import _ui_insight as insight
from . import _ui_views as views
from ._guards import Scope
from ._state import scope_of
from ._ui import UiState, render, templates, ui_state

router = APIRouter(include_in_schema=False)
PAGE = 50
MAX_CHECKPOINTS = 300  # the newest checkpoints a thread page lists
MAX_THREAD_RUNS = 200
LIVE_POLL_SECONDS = 1.0
Text = Annotated[str | None, Query(max_length=255)]


def _page(request: Request, name: str, started: float, status_code: int = 200,
          **context: Any) -> HTMLResponse:
    s = ui_state(request)
    response = render(name, status_code, ui=s, page=name.removesuffix(".html"),
                      database=_where(s), **context)
    response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - started) * 1000:.1f}"
    return response


def _where(s: UiState) -> str:
    try:
        return make_url(s.service.url).render_as_string()  # the password hidden
    except Exception:
        return "the database"


def _forbidden(request: Request, started: float, what: str) -> HTMLResponse:
    return _page(request, "forbidden.html", started, 403, what=what)


def _not_found(request: Request, started: float, what: str) -> HTMLResponse:
    return _page(request, "missing.html", started, 404, what=what)


# -- runs ------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def runs_page(
    request: Request, q: Annotated[str | None, Query(max_length=1000)] = None,
    agent: Text = None, status: Text = None, thread: Text = None, since: Text = None,
    until: Text = None, cursor: Annotated[str | None, Query(max_length=1000)] = None,
) -> HTMLResponse:
    """Stored runs, newest first, filtered, a page at a time; running ones update live.  With
    ``q``, the logs and traces of those runs that match it instead, their matches marked."""
    started = time.perf_counter()
    s = ui_state(request)
    q = (q or "").strip() or None
    filters = {"agent": agent or None, "status": status or None, "thread": thread or None,
               "since": since or None, "until": until or None}
    problem = None
    rows: list[views.RunRow] = []
    hits: list[insight.Hit] = []
    next_cursor = None
    scope = scope_of(request)
    if filters["agent"] and not scope.allows(filters["agent"]):
        return _forbidden(request, started, f"the runs of agent {filters['agent']!r}")
    try:
        chosen: dict[str, Any] = {
            "agent_id": filters["agent"], "thread_id": filters["thread"],
            "status": filters["status"], "since": _local_time("from", filters["since"]),
            "until": _local_time("to", filters["until"]), "limit": PAGE,
            "cursor": cursor or None}
        if q:
            found = s.service.search(q, **chosen)
            hits = [insight.hit(h) for h in found if scope.allows(h.agent_id)]
        else:
            found = s.service.find_results(**chosen)
            now = dt.datetime.now(dt.UTC)
            rows = [views.run_row(r, now) for r in found if scope.allows(r.agent_id)]
        next_cursor = found.next_cursor
    except ValidationError as exc:
        problem = str(exc)
    query = {k: v for k, v in {"q": q, **filters}.items() if v}
    live = None
    running = [r.result.id for r in rows if r.running]
    if running or (not cursor and not problem and not q):
        live = "/ui/live?" + urllib.parse.urlencode(
            [("run", i) for i in running]
            + ([("newer", rows[0].result.created_at.isoformat())] if rows and not cursor else [])
            + ([("watch", "1")] if not cursor else [])
            + [(k, v) for k, v in filters.items() if v], doseq=True)
    return _page(
        request, "runs.html", started, 400 if problem else 200, rows=rows, hits=hits, q=q,
        filters=filters, problem=problem, cursor=cursor,
        next_url="/?" + urllib.parse.urlencode({**query, "cursor": next_cursor})
        if next_cursor else None,
        first_url="/?" + urllib.parse.urlencode(query), live=live,
        agents=sorted({r.result.agent_id for r in rows} | {h.hit.agent_id for h in hits}),
    )


def _local_time(name: str, value: str | None) -> dt.datetime | None:
    """A time from the filter form (``2026-11-27T13:17``, the server's zone unless given)."""
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value).astimezone(dt.UTC)  # naive: the server's zone
    except (ValueError, OverflowError):  # not a time, or out of range once in UTC
        raise ValidationError(
            f"'{name}' must be a date and time from year 1 to 9999, such as 2026-11-27T13:17;"
            f" got {value!r}"
        ) from None


# -- one run ---------------------------------------------------------------------------------


@router.get("/runs/{execution_id:path}", response_class=HTMLResponse)
def run_page(request: Request, execution_id: str) -> HTMLResponse:
    """One run: header, the waterfall of its calls by graph step, each call's input and
    output, its logs; and what can be done next."""
    started = time.perf_counter()
    s = ui_state(request)
    execution = find_execution(s.service, execution_id)
    if execution is None:
        return _not_found(request, started, f"run {execution_id!r}")
    owner = execution.result or next(iter(execution.traces or execution.logs), None)
    if not scope_of(request).allows(owner.agent_id if owner else None):
        return _forbidden(request, started, f"run {execution_id!r}")
    result = execution.result
    fall = views.waterfall(result, execution.traces)
    waiting: list[dict[str, Any]] = []
    latest = None
    if result is not None and result.thread_id and views.run_status(result) in (
            "interrupted", "failed"):
        found = thread_checkpoints(s.saver, result.thread_id, limit=1, state=True)
        latest = found[0] if found else None
        if latest is not None:
            waiting = [i for i in latest.interrupts if not i["answered"]]
    return _page(
        request, "run.html", started, execution=execution, result=result, fall=fall,
        status=views.run_status(result) if result else "running",
        row=views.run_row(result) if result else None,
        tokens=views.tokens(result) if result else {},
        output=views.Payload.of(result.result) if result else None,
        waiting=waiting, latest=latest, log_icon=views.log_icon,
    )


# -- one thread ------------------------------------------------------------------------------


@router.get("/threads/{thread_id:path}", response_class=HTMLResponse)
def thread_page(
    request: Request, thread_id: str, checkpoint: Text = None,
    step: Annotated[int | None, Query(ge=-1)] = None, run: Text = None,
) -> HTMLResponse:
    """A thread: its checkpoints as a timeline; the chosen one's state, next step, pending
    writes and diff from the one before; the runs that touched the thread."""
    started = time.perf_counter()
    s = ui_state(request)
    try:
        summaries = thread_checkpoints(s.saver, thread_id, limit=MAX_CHECKPOINTS + 1,
                                       state=True)
    except ValidationError:  # an id no thread can have
        return _not_found(request, started, f"thread {thread_id!r}")
    runs = list(s.service.find_results(thread_id=thread_id, limit=MAX_THREAD_RUNS))
    if not summaries and not runs:
        return _not_found(request, started, f"thread {thread_id!r}")
    scope = scope_of(request)
    owners = {r.agent_id for r in runs} | {c.metadata.get("agent_id") for c in summaries}
    if not all(scope.allows(owner) for owner in owners - {None}) or (
            not scope.everything and owners <= {None}):
        return _forbidden(request, started, f"thread {thread_id!r}")
    more = len(summaries) > MAX_CHECKPOINTS
    items = views.timeline(summaries[:MAX_CHECKPOINTS], runs)
    chosen = views.select(items, checkpoint, step, run)
    by_id = {c.id: c for c in items}
    parent = by_id.get(chosen.summary.parent_checkpoint_id) if chosen else None
    changes = views.diff(parent.summary.state if parent else None,
                         chosen.summary.state or {}) if chosen else []
    after = [c for c in items if chosen and c.summary.parent_checkpoint_id == chosen.id]
    ordered = sorted(runs, key=views.run_started)
    agent = None
    if chosen is not None:
        agent = chosen.summary.metadata.get("agent_id")
    agent = agent or (ordered[-1].agent_id if ordered else None)
    return _page(
        request, "thread.html", started, thread_id=thread_id, items=items, chosen=chosen,
        parent=parent, changes=changes, after=after, runs=ordered, more=more, agent=agent,
        rows={r.execution_id: views.run_row(r) for r in ordered},
        missing=checkpoint if checkpoint and chosen is None else None,
        latest=items[-1] if items else None,
    )


# -- stats -----------------------------------------------------------------------------------


@router.get("/stats", response_class=HTMLResponse)
def stats_page(request: Request, agent: Text = None, span: Text = None) -> HTMLResponse:
    """Runs, failures, p95 durations and tokens over the last day, week or month, charted by
    hour or day; the same by agent and by tool; the most frequent errors."""
    started = time.perf_counter()
    s = ui_state(request)
    agent = agent or None
    span = span or "7d"
    scope = scope_of(request)
    if agent and not scope.allows(agent):
        return _forbidden(request, started, f"the statistics of agent {agent!r}")
    if span not in insight.RANGES:
        return _page(request, "stats.html", started, 400, agent=agent, span=span,
                     problem=f"the range must be one of {', '.join(insight.RANGES)}, "
                             f"got {span!r}", ranges=insight.RANGES, agents=[], found=None)
    until = dt.datetime.now(dt.UTC)
    since = until - insight.RANGES[span]
    window = {"since": since, "until": until}
    by_agent = s.service.stats(**window, by="agent", top_errors=0)
    agents = [g for g in by_agent.groups if scope.allows(g.key)]  # type: ignore[arg-type]
    found = by_tool = None
    if agent or scope.everything:  # a token scoped to some agents sees one agent at a time
        bucket = insight.bucket_of(insight.RANGES[span])
        found = s.service.stats(**window, agent_id=agent, by=bucket, top_errors=10)
        by_tool = s.service.stats(**window, agent_id=agent, by="tool", top_errors=0)
    return _page(
        request, "stats.html", started, agent=agent, span=span, problem=None,
        ranges=insight.RANGES, agents=agents, found=found,
        tiles=insight.tiles(found.totals) if found else [],
        charts=insight.charts(found, since, until) if found else [],
        tools=by_tool.groups if by_tool else [], percent=insight.percent,
    )


# -- live ------------------------------------------------------------------------------------


@router.get("/ui/live")
async def live(
    request: Request,
    run: Annotated[list[str] | None, Query(max_length=255)] = None,
    newer: Text = None, watch: bool = False, agent: Text = None, status: Text = None,
    thread: Text = None, since: Text = None, until: Text = None,
) -> EventSourceResponse:
    """Server-sent events for the runs list (and a running run's page).

    ``run`` (result ids, repeatable): a ``run`` event with the row re-rendered each time one of
    them changes, until it finishes.  ``watch`` with ``newer`` (the newest row's start time): a
    ``new`` event counting the runs that matched the filters since.  Ends with ``done`` once
    there is nothing left to watch.
    """
    s = ui_state(request)
    scope = scope_of(request)
    try:  # filters the runs page itself refused: nothing to watch
        filters = {"agent_id": agent or None, "thread_id": thread or None,
                   "status": status and check.status(status), "until": _local_time("to", until)}
        start, after = _local_time("from", since), _local_time("newer", newer)
    except ValidationError:
        watch, filters, start, after = False, {}, None, None
    return EventSourceResponse(
        _live(request, s, scope, list(dict.fromkeys(run or ()))[:PAGE], watch, after, start,
              filters),
        ping=15,
    )


async def _live(
    request: Request, s: UiState, scope: Scope, watched: list[str], watch: bool,
    after: dt.datetime | None, start: dt.datetime | None, filters: dict[str, Any],
) -> AsyncIterator[ServerSentEvent]:
    seen: dict[str, dt.datetime] = {}
    new_count = 0
    row_template = templates.get_template("_run_row.html")
    while watched or watch:
        if await request.is_disconnected():
            return
        for result_id in list(watched):
            result = await s.service.aget_result(result_id)
            if result is None or not scope.allows(result.agent_id):
                watched.remove(result_id)
                continue
            if seen.get(result_id) != result.updated_at or result.status == "running":
                seen[result_id] = result.updated_at
                html = row_template.render(row=views.run_row(result))
                yield ServerSentEvent(
                    data=to_text({"id": result.id, "status": views.run_status(result),
                                  "html": html}),
                    event="run")
            if result.status != "running":
                watched.remove(result_id)
        if watch:
            count = await _count_newer(s, scope, after, start, filters)
            if count != new_count:
                new_count = count
                yield ServerSentEvent(data=to_text({"count": count}), event="new")
        await asyncio.sleep(LIVE_POLL_SECONDS)
    yield ServerSentEvent(data="{}", event="done")


async def _count_newer(s: UiState, scope: Scope, after: dt.datetime | None,
                       start: dt.datetime | None, filters: dict[str, Any]) -> int:
    since = max(filter(None, (after, start)), default=None)
    page: list[AgentResult] = await s.service.afind_results(
        **filters, since=since, limit=PAGE)
    return sum(1 for r in page if (after is None or r.created_at > after)
               and scope.allows(r.agent_id))
