"""The graph `tests/test_langgraph_server.py` serves with ``langgraph dev``: the approval graph
of the saver tests (prepare, then an ``interrupt()`` for a decision, then act), compiled without
a checkpointer (the Agent Server gives it PersistSaver, from langgraph.json)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from saver_graphs import approval_graph

graph = approval_graph().compile()
