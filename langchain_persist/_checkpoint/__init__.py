"""LangGraph checkpoints: `PersistSaver`, how channel values become bytes (`codec`), the cache of
list bases that tails are stored against, and the planning of prunes and deletes."""
