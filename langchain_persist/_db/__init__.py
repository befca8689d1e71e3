"""The storage layer: URLs and engines, the registry of open databases, the schema (the single
source of truth), its Alembic migrations, and all SQL (`sql`).  Nothing here knows LangChain."""
