"""Alembic environment: migrations always run on a connection handed over by `_db.migrate`."""

from alembic import context

from langchain_persist._db.migrate import VERSION_TABLE
from langchain_persist._db.schema import SEARCH_OBJECTS, SEARCHED, metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `langchain-persist db upgrade`, not alembic")

# FTS5 keeps its index in shadow tables named after its own table (agent_traces_search_data...)
_SHADOWS = tuple(f"{table}_search_" for table in SEARCHED)


def include_name(name: str | None, type_: str, parent_names: dict[str, str | None]) -> bool:
    """Leave out of the comparison only the search structures that SQLAlchemy Core cannot
    declare (see SEARCH_OBJECTS in _db/schema.py): the tsvector column and its indexes on
    PostgreSQL, the FTS5 tables (and their shadow tables) on SQLite.  Their triggers and
    functions are not reflected by Alembic at all.  Everything else is compared."""
    if name is None:
        return True
    if name in SEARCH_OBJECTS and type_ in ("table", "column", "index"):
        return False
    return not (type_ == "table" and name.startswith(_SHADOWS))


context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,
    transactional_ddl=True,
    compare_type=True,
    include_name=include_name,
)
with context.begin_transaction():
    context.run_migrations()
