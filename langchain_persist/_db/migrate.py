"""Alembic glue: the migrations ship inside the package and run on our own connections."""

from __future__ import annotations

import functools
import logging

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from .._errors import SchemaError
from . import backfill
from .engine import Database, MissingTableError
from .sql import retention

logger = logging.getLogger("langchain_persist")

VERSION_TABLE = "langchain_persist_version"
_LOCK_KEY = 0x6C635F70  # "lc_p": serializes concurrent upgrades of one PostgreSQL database


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic config pointing at the packaged migrations (and at ``connection``)."""
    cfg = Config()
    cfg.set_main_option("script_location", "langchain_persist._db:migrations")
    cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head_revision() -> str:
    """The newest migration this code ships."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(db: Database) -> str | None:
    """The migration the database is at, or None for an empty database (read directly: the
    check runs whenever a database is opened, and Alembic's context took 2 ms to set up)."""
    try:
        with db.read() as conn:
            found = conn.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars().all()
    except MissingTableError:
        return None
    if len(found) > 1:
        raise SchemaError(f"the database {db!r} is at several schema versions at once "
                          f"({', '.join(found)}): run `langchain-persist db upgrade --url URL`")
    return found[0] if found else None


def upgrade(
    db: Database, revision: str = "head", *, on_progress: backfill.Progress | None = None
) -> None:
    """Upgrade the schema; concurrent callers wait for each other, then find nothing to do.

    At the head, the rows stored before a new search index existed are then indexed, in
    short batches (see `backfill`), with ``on_progress`` called after each batch.
    """
    with db.write() as conn:  # BEGIN IMMEDIATE on SQLite: one upgrader at a time
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        command.upgrade(alembic_config(conn), revision)
    db.schema_checked = False
    if revision == "head":
        backfill.run(db, on_progress)


def check(db: Database) -> None:
    """Raise if the database schema differs from the schema module (Alembic's ``check``)."""
    with db.read() as conn:
        command.check(alembic_config(conn))


def ensure_schema(db: Database, *, migrate: bool = True) -> None:
    """Make sure the schema is current: upgrade it, or raise `SchemaError` naming the fix."""
    if db.schema_checked:
        return
    with db.lock:
        if db.schema_checked:
            return
        current, head = current_revision(db), head_revision()
        if current != head:
            script = ScriptDirectory.from_config(alembic_config())
            known = {s.revision for s in script.walk_revisions()}
            if current is not None and current not in known:
                raise SchemaError(
                    f"the database {db!r} is at schema {current}, newer than this "
                    f"langchain-persist (which knows up to {head}): upgrade the package"
                )
            if not migrate:
                raise SchemaError(
                    f"the database {db!r} is at schema {current or 'none'}, older than this code "
                    f"({head}): run `langchain-persist db upgrade --url URL`"
                )
            upgrade(db)
        elif migrate:  # an upgrade that stopped before its backfill was done
            backfill.run(db)
        if migrate and db.dialect == "sqlite":
            _merging_on_again(db)
        db.schema_checked = True


def _merging_on_again(db: Database) -> None:
    """A cleanup killed while FTS5's merging was off (see `retention.cleaning`) left it off,
    and every insert since added a segment to the search index: turn it on again, unless a
    cleanup still runs."""
    with db.read() as conn:
        left = retention.merging_left_off(conn)
    if left:
        with db.write() as conn:
            if retention.restore_merging(conn, db.engine.url.database, left):
                logger.warning(
                    "langchain-persist: a cleanup of %r stopped (killed?) before it turned the "
                    "search index's merging on again; it is on again", db)

