"""``python -m langchain_persist``: the same as the ``langchain-persist`` command."""

from ._cli import main

main()
