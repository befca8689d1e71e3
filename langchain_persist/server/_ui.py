"""The viewer's shared parts: its state, its templates, its assets, and its token gate.

The viewer is server-rendered HTML (Jinja2, autoescaped) with one small script and one
stylesheet, shipped in this package (``templates/``, ``static/``): nothing is fetched from
elsewhere and nothing is built.  Every page is sent with a Content-Security-Policy that allows
only this server's own script and styles, so even a stored value that escaped escaping could not
run.

With an API token set, `UiGate` asks for it once (a form), keeps it in a same-site cookie, and
hands it to the API's token check as the bearer header for the viewer's own pages; the ``/api``
routes keep their rules unchanged (the header, never the cookie).  The page's script reads the
cookie to send that header when it calls the API (resume, answer, fork).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .._checkpoint.saver import PersistSaver
from .._results.service import ResultsPersistenceService
from . import _ui_insight as insight
from . import _ui_views as views

HERE = Path(__file__).parent
TOKEN_COOKIE = "langchain_persist_token"
MAX_LOGIN_BYTES = 16_384
STATIC_PREFIX = "/ui/static"
PAGE_PREFIXES = ("/runs/", "/threads/", "/stats", "/ui/")
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True, slots=True)
class UiState:
    """What the viewer's routes share: where to read, and whether actions are on."""

    service: ResultsPersistenceService
    saver: PersistSaver
    graph: str | None = None  # the served graph's name; None: read-only, no actions
    token_required: bool = False

    @property
    def actions(self) -> bool:
        """Whether the page offers resume, answer and fork (a graph is served)."""
        return self.graph is not None


def ui_state(request: Request) -> UiState:
    """The viewer's state, as `install_ui` set it."""
    return request.app.state.persist_ui  # type: ignore[no-any-return]


templates = jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,  # every value is escaped; only the templates' own markup is HTML
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=jinja2.StrictUndefined,
)
templates.filters.update(ms=views.ms, when=views.when, iso=views.iso, clip=views.clip,
                         pretty=views.pretty)
templates.globals.update(STATUS=views.STATUS, CALL_STATE=views.CALL_STATE, SCALE=views.BAR_SCALE,
                         as_payload=views.Payload.of, question=views.question,
                         messages=views.messages, CHART_WIDTH=insight.CHART_WIDTH,
                         CHART_HEIGHT=insight.CHART_HEIGHT)

static_files = StaticFiles(directory=HERE / "static")


def render(name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """A page from its template, with the viewer's security headers."""
    html = templates.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status_code, headers=SECURITY_HEADERS)


def is_page(path: str) -> bool:
    """Whether a path is one of the viewer's (not the API's)."""
    return path == "/" or path.startswith(PAGE_PREFIXES)


class UiGate:
    """The token prompt of the viewer's pages (installed when an API token is set).

    - ``/ui/static/...``: the package's assets, served to anyone (they hold no data);
    - ``POST /ui/login``: keep the token in a cookie (same-site, this server only), then back;
    - ``/ui/logout``: forget it;
    - the viewer's pages: the cookie's token becomes the bearer header the API's token check
      reads; a page that check refuses (no token, a wrong one) is answered with the prompt;
    - anything else (``/api/...``): passed on untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not is_page(path):
            await self.app(scope, receive, send)
            return
        if path.startswith(STATIC_PREFIX + "/"):
            try:
                await static_files(
                    {**scope, "root_path": scope.get("root_path", "") + STATIC_PREFIX},
                    receive, send)
            except HTTPException as exc:  # no such file, or not a GET (outside FastAPI's handler)
                await PlainTextResponse(exc.detail, exc.status_code, exc.headers)(
                    scope, receive, send)
            return
        if path == "/ui/login" and scope["method"] == "POST":
            await self._login(scope, receive, send)
            return
        if path == "/ui/logout":
            response = RedirectResponse("/", status_code=303)
            response.delete_cookie(TOKEN_COOKIE, path="/", samesite="strict")
            await response(scope, receive, send)
            return
        headers = Headers(scope=scope)
        given = _cookie(headers, TOKEN_COOKIE)
        if given and "authorization" not in headers:
            raw = [(k, v) for k, v in scope["headers"] if k != b"authorization"]
            raw.append((b"authorization", f"Bearer {given}".encode("latin-1", "replace")))
            scope = {**scope, "headers": raw}
        refused = False

        async def send_or_prompt(message: Message) -> None:
            nonlocal refused
            if message["type"] == "http.response.start" and message["status"] == 401:
                refused = True
                return
            if refused:  # the refusal's body: replaced by the prompt below
                return
            await send(message)

        await self.app(scope, receive, send_or_prompt)
        if refused:
            await _prompt(scope, wrong=bool(given))(scope, receive, send)

    async def _login(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = b""
        while len(body) <= MAX_LOGIN_BYTES:  # a token, not a body to hold on to
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        target = (form.get("next") or ["/"])[0]
        if not target.startswith("/") or target.startswith("//"):
            target = "/"  # only this server's own pages
        response = RedirectResponse(target, status_code=303)
        if token:
            response.set_cookie(
                TOKEN_COOKIE, urllib.parse.quote(token, safe=""), path="/", samesite="strict",
                httponly=False,  # the page's script sends it to the API as the bearer header
                secure=scope.get("scheme") == "https",
            )
        await response(scope, receive, send)


def _cookie(headers: Headers, name: str) -> str | None:
    for part in headers.get("cookie", "").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return urllib.parse.unquote(value)
    return None


def _prompt(scope: Scope, *, wrong: bool) -> Response:
    query = scope.get("query_string", b"").decode("latin-1")
    target = scope.get("path", "/") + (f"?{query}" if query else "")
    if target.startswith("/ui/"):
        target = "/"
    return render("login.html", status_code=401, next=target, wrong=wrong)
