"""The agent service: an HTTP server that runs a LangGraph graph with durable results.

``create_app(graph)`` is a FastAPI application; ``serve("module:attr")`` (the
``langchain-persist serve`` command) runs it with uvicorn; it serves the viewer at ``/`` too.
``create_ui_app()`` (``langchain-persist ui``) is the viewer alone: read-only, no graph.
Needs the ``server`` extra: ``pip install 'langchain-persist[server]'``.  The endpoints are
listed in ``docs/server.md``.
"""

try:
    import fastapi  # noqa: F401
    import sse_starlette  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        f"langchain_persist.server needs the 'server' extra ({exc.name} is missing): "
        "pip install 'langchain-persist[server]'"
    ) from exc

from ._app import create_app
from ._graphs import load_graph
from ._serve import serve
from ._ui_app import create_ui_app

__all__ = ["create_app", "create_ui_app", "load_graph", "serve"]
