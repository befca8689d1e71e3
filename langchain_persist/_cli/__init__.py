"""The ``langchain-persist`` command (the ``cli`` extra: Typer and Rich) and the demo."""
