"""`serve`: load a graph by name and run its application with uvicorn (the CLI's ``serve``)."""

from __future__ import annotations

from typing import Any

import uvicorn

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

    ``options`` go to `create_app`.  Port 0 picks a free port (uvicorn logs which).
    """
    target = load_graph(graph) if isinstance(graph, str) else graph
    app = create_app(target, url=url, **options)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
