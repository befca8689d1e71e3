"""Put the viewer on an application: `install_ui` (both apps), `create_ui_app` (read-only).

`create_app` (``langchain-persist serve``) installs it with its graph, so the pages offer
resume, answer and fork through the API; `create_ui_app` (``langchain-persist ui``) serves the
same pages, read-only, on any database, with no graph.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from .._checkpoint.saver import PersistSaver
from .._results.service import ResultsPersistenceService
from ._guards import BearerToken, load_tokens
from ._ui import STATIC_PREFIX, UiGate, UiState, static_files
from ._ui_routes import router


def install_ui(
    app: FastAPI, service: ResultsPersistenceService, saver: PersistSaver, *,
    graph: str | None = None, tokens: bool = False,
) -> None:
    """Serve the viewer's pages on ``app`` (at ``/``), reading ``service`` and ``saver``.

    ``graph`` names the graph ``app`` serves (the pages then offer its actions); ``tokens``
    says that ``app`` requires bearer tokens (the pages then ask for one once, and show only
    the agents its scope allows).  Call it after the app's own middleware is added: the
    viewer's gate must run first.
    """
    app.state.persist_ui = UiState(service, saver, graph=graph, token_required=tokens)
    app.include_router(router)
    app.mount(STATIC_PREFIX, static_files, name="ui-static")
    if tokens:
        app.add_middleware(UiGate)  # added last: it runs first


def create_ui_app(
    url: str | None = None,
    *,
    service: ResultsPersistenceService | None = None,
    saver: PersistSaver | None = None,
    serde: Any = None,
    api_token: str | None = None,
    api_tokens: Mapping[str, Any] | str | None = None,
) -> FastAPI:
    """The viewer alone, read-only: runs, traces, logs and checkpoints of any database.

    It needs no graph and changes nothing (the schema is not created or upgraded: a database
    without it is refused with the command that creates it).  ``serde`` decodes checkpoints
    written with another serializer (an ``EncryptedSerializer``); ``api_token`` and
    ``api_tokens`` (as `create_app` takes them) make the pages ask for a token, and show only
    the agents its scope allows.
    """
    own = service is None, saver is None
    if service is None:
        service = ResultsPersistenceService(url, migrate=False, serde=serde)
    if saver is None:
        saver = PersistSaver(service.url, migrate=False, serde=service.serde)
    service.db  # noqa: B018 - open it now: a wrong URL or an old schema fails here, clearly

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if own[0]:
            await asyncio.to_thread(service.close)
        if own[1]:
            await asyncio.to_thread(saver.close)

    app = FastAPI(title="langchain-persist viewer", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    tokens = load_tokens(api_token, api_tokens)
    if tokens:
        app.add_middleware(BearerToken, tokens=tokens)
    install_ui(app, service, saver, tokens=bool(tokens))
    return app
