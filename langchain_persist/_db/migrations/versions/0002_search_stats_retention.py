"""search, stats and retention: full-text search over logs and traces, an interrupted status,
retention policies, indexes by agent and time, long results compressed on SQLite

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27

The search structures (a tsvector column, its trigger and GIN index on PostgreSQL; FTS5 tables
and their triggers on SQLite) are created here for new rows only: rows already stored are
indexed afterwards, in batches, by `langchain_persist._db.backfill` (``langchain-persist db
upgrade`` shows its progress), from the entries this migration leaves in
``langchain_persist_backfill``.  This keeps the upgrade itself short on a large database.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# the searched text of each event table (see SEARCHED in _db/schema.py)
SEARCHED = {"agent_traces": ("name", "content"), "execution_logs": ("message",)}
# ASCII punctuation, read as spaces (SQLite's unicode61 tokenizer does the same by itself)
PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
OLD_STATUSES = ("running", "completed", "failed")
STATUSES = ("running", "completed", "failed", "interrupted")


def upgrade() -> None:
    """Upgrade schema."""
    dialect = op.get_bind().dialect.name
    with op.batch_alter_table("agent_results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("result_zstd", sa.LargeBinary(), nullable=True))
        batch_op.drop_constraint(op.f("ck_agent_results_status"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_agent_results_status"), f"status IN {STATUSES!r}"
        )
    for table in SEARCHED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_agent_id"))
            batch_op.create_index(
                batch_op.f(f"ix_{table}_agent_id_timestamp"), ["agent_id", "timestamp"],
                unique=False,
            )

    op.create_table(
        "langchain_persist_backfill",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("until", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_langchain_persist_backfill")),
    )
    op.create_table(
        "retention_policies",
        sa.Column("agent_id", sa.String(length=255), nullable=False),
        sa.Column("keep_results", sa.Float(), nullable=True),
        sa.Column("keep_logs", sa.Float(), nullable=True),
        sa.Column("keep_traces", sa.Float(), nullable=True),
        sa.Column("keep_checkpoints", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("agent_id", name=op.f("pk_retention_policies")),
    )

    for table, columns in SEARCHED.items():
        if dialect == "postgresql":
            _postgres_search(table, columns)
        else:
            _sqlite_search(table, columns)

    # A run stopped at interrupt() was stored as completed with "interrupted": true in its
    # metadata.  It is interrupted now, unless a later run of its thread resumed it.
    flagged = (
        "r.metadata @> '{\"interrupted\": true}'" if dialect == "postgresql"
        else "json_extract(r.metadata, '$.interrupted') = 1"
    )
    op.execute(
        f"""UPDATE agent_results SET status = 'interrupted' WHERE id IN (
            SELECT r.id FROM agent_results r WHERE r.status = 'completed' AND {flagged}
            AND NOT EXISTS (SELECT 1 FROM agent_results later WHERE later.thread_id = r.thread_id
                            AND later.created_at > r.created_at))"""
    )


def _postgres_search(table: str, columns: tuple[str, ...]) -> None:
    text = " || ' ' || ".join(f"coalesce(NEW.{c}, '')" for c in columns)
    spaces = " " * len(PUNCTUATION)
    punctuation = PUNCTUATION.replace("'", "''")
    op.execute(f"ALTER TABLE {table} ADD COLUMN search_vector tsvector")
    op.execute(
        f"""CREATE FUNCTION {table}_search_vector() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            NEW.search_vector := to_tsvector('simple', translate({text}, '{punctuation}',
                                                                 '{spaces}'));
            RETURN NEW;
        END $$"""
    )
    op.execute(
        f"""CREATE TRIGGER {table}_search BEFORE INSERT OR UPDATE OF {", ".join(columns)}
        ON {table} FOR EACH ROW EXECUTE FUNCTION {table}_search_vector()"""
    )
    op.execute(f"CREATE INDEX ix_{table}_search_vector ON {table} USING gin (search_vector)")
    op.execute(
        f'CREATE INDEX ix_{table}_unindexed ON {table} ("timestamp") WHERE search_vector IS NULL'
    )
    op.execute(
        f"""INSERT INTO langchain_persist_backfill (name, position, until)
        SELECT '{table}', 0, count(*) FROM {table} HAVING count(*) > 0"""
    )


def _sqlite_search(table: str, columns: tuple[str, ...]) -> None:
    fts = f"{table}_search"
    names = ", ".join(columns)
    new = ", ".join(f"new.{c}" for c in columns)
    old = ", ".join(f"old.{c}" for c in columns)
    op.execute(
        f"""CREATE VIRTUAL TABLE {fts} USING fts5({names}, content='{table}',
        content_rowid='rowid', tokenize='unicode61 remove_diacritics 0')"""
    )
    # rows the backfill has not reached yet are not in the index: removing them from it would
    # corrupt it, so the delete and update triggers skip them
    indexed = f"""NOT EXISTS (SELECT 1 FROM langchain_persist_backfill b
        WHERE b.name = '{table}' AND old.rowid BETWEEN b.position AND b.until)"""
    op.execute(
        f"""CREATE TRIGGER {fts}_insert AFTER INSERT ON {table} BEGIN
            INSERT INTO {fts} (rowid, {names}) VALUES (new.rowid, {new});
        END"""
    )
    op.execute(
        f"""CREATE TRIGGER {fts}_delete AFTER DELETE ON {table} WHEN {indexed} BEGIN
            INSERT INTO {fts} ({fts}, rowid, {names}) VALUES ('delete', old.rowid, {old});
        END"""
    )
    op.execute(
        f"""CREATE TRIGGER {fts}_update AFTER UPDATE OF {names} ON {table} WHEN {indexed} BEGIN
            INSERT INTO {fts} ({fts}, rowid, {names}) VALUES ('delete', old.rowid, {old});
            INSERT INTO {fts} (rowid, {names}) VALUES (new.rowid, {new});
        END"""
    )
    op.execute(
        f"""INSERT INTO langchain_persist_backfill (name, position, until)
        SELECT '{table}', min(rowid), max(rowid) FROM {table} HAVING count(*) > 0"""
    )


def downgrade() -> None:
    """Downgrade schema."""
    dialect = op.get_bind().dialect.name
    for table in SEARCHED:
        if dialect == "postgresql":
            op.execute(f"DROP INDEX ix_{table}_unindexed")
            op.execute(f"DROP INDEX ix_{table}_search_vector")
            op.execute(f"DROP TRIGGER {table}_search ON {table}")
            op.execute(f"DROP FUNCTION {table}_search_vector()")
            op.execute(f"ALTER TABLE {table} DROP COLUMN search_vector")
        else:
            for trigger in ("insert", "delete", "update"):
                op.execute(f"DROP TRIGGER {table}_search_{trigger}")
            op.execute(f"DROP TABLE {table}_search")
    op.drop_table("retention_policies")
    op.drop_table("langchain_persist_backfill")
    for table in SEARCHED:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(batch_op.f(f"ix_{table}_agent_id_timestamp"))
            batch_op.create_index(batch_op.f(f"ix_{table}_agent_id"), ["agent_id"], unique=False)
    op.execute("UPDATE agent_results SET status = 'completed' WHERE status = 'interrupted'")
    with op.batch_alter_table("agent_results", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_agent_results_status"), type_="check")
        batch_op.create_check_constraint(
            op.f("ck_agent_results_status"), f"status IN {OLD_STATUSES!r}"
        )
        batch_op.drop_column("result_zstd")
