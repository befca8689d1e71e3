"""``python -m langchain_persist``: the same as the ``langchain-persist`` command."""

from ._cli.commands import app

app(prog_name="langchain-persist")
