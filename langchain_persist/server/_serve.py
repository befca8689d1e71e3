"""`serve`: load a graph by name and run its application with uvicorn (the CLI's ``serve``)."""

from __future__ import annotations

from typing import Any

import uvicorn
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from .._db.engine import resolve_url
from .._errors import ConfigurationError
from ._app import create_app
from ._graphs import load_graph


def serve(
    graph: str | Any,
    *,
    url: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Serve ``graph`` (an object, or ``"module:attr"``) on ``host:port`` until stopped.

    ``options`` go to `create_app`.  Port 0 picks a free port (uvicorn logs which).  Raises
    `ConfigurationError` for a graph that cannot be loaded or a database that cannot be opened.
    """
    target = load_graph(graph) if isinstance(graph, str) else graph
    try:
        app = create_app(target, url=url, **options)
    except SQLAlchemyError as exc:
        where = make_url(resolve_url(url)).render_as_string()
        raise ConfigurationError(
            f"cannot open the database {where}: {str(exc).strip().splitlines()[0]} (is it "
            "running, and the URL right? pass --url or set LANGCHAIN_PERSIST_DATABASE_URL)"
        ) from exc
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
