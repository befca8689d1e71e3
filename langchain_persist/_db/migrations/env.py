"""Alembic environment: migrations always run on a connection handed over by `_db.migrate`."""

from alembic import context

from langchain_persist._db.migrate import VERSION_TABLE
from langchain_persist._db.schema import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through `langchain-persist db upgrade`, not alembic")

context.configure(
    connection=connection,
    target_metadata=metadata,
    version_table=VERSION_TABLE,
    render_as_batch=True,
    transactional_ddl=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
