"""The ``langchain-persist`` command (the ``cli`` extra: Typer and Rich) and the demo."""

from __future__ import annotations

import sys

CLI_PACKAGES = ("typer", "rich", "langchain")


def main() -> None:
    """The ``langchain-persist`` entry point: the commands, or how to install them."""
    try:
        from .commands import app
    except ImportError as exc:
        if exc.name not in CLI_PACKAGES:
            raise
        sys.exit(
            f"error: the langchain-persist command needs the 'cli' extra ({exc.name} is not "
            "installed): pip install 'langchain-persist[cli]'"
        )
    app(prog_name="langchain-persist")
