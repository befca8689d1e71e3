"""Every table langchain-persist owns: the single source of truth for the schema.

Alembic migrations (``langchain_persist/migrations``) are generated from this module, and a test
proves the two agree on SQLite and PostgreSQL.  Keys are laid out to let PostgreSQL grow: every
unique key of a checkpoint table starts with ``thread_id`` and every key of a log or trace table
with ``execution_id``; log and trace keys also hold ``timestamp`` so that those tables can be
range-partitioned by time; no foreign key crosses threads or executions.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    Uuid,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

RESULT_STATUSES = ("running", "completed", "failed", "interrupted")
"""A result is ``running`` until its run ends ``completed`` or ``failed``, or stops at an
``interrupt()`` to wait for input: ``interrupted``, until a later run resumes its thread (then it
becomes ``completed`` or ``failed``, as that run ends)."""
LOG_LEVELS = ("debug", "info", "warn", "error")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = JSON().with_variant(JSONB(), "postgresql")
# indexes on run_id cover only the rows that have one (delete_for_runs looks them up)
_WHEN_RUN_ID = {f"{d}_where": text("run_id IS NOT NULL") for d in ("postgresql", "sqlite")}
Id = Uuid(as_uuid=False)
Key = String(255)


def _at(name: str, *, nullable: bool = False) -> Column:
    return Column(name, DateTime(timezone=True), nullable=nullable)


agent_results = Table(
    "agent_results",
    metadata,
    Column("id", Id, primary_key=True),
    Column("agent_id", Key, nullable=False),
    Column("execution_id", Key),
    Column("thread_id", Key),
    Column("checkpoint_id", Key),
    Column("quest_id", Key),
    Column("result", Text),
    Column("metadata", Json, nullable=False),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    _at("created_at"),
    _at("updated_at"),
    _at("completed_at", nullable=True),
    # on SQLite, which compresses nothing, a long result is stored here (zstd) instead of in
    # `result` (PostgreSQL compresses long values itself: TOAST)
    Column("result_zstd", LargeBinary),
    CheckConstraint(f"status IN {RESULT_STATUSES!r}", name="status"),
    Index(None, "agent_id", "created_at", "id"),
    Index(None, "created_at", "id"),  # every agent's runs, newest first (the viewer's list)
    Index(None, "execution_id"),
    Index(None, "thread_id"),
    Index(None, "checkpoint_id"),
    Index(None, "completed_at"),
)

execution_logs = Table(
    "execution_logs",
    metadata,
    Column("execution_id", Key, primary_key=True),
    Column("timestamp", DateTime(timezone=True), primary_key=True),
    Column("id", Id, primary_key=True),
    Column("agent_id", Key, nullable=False),
    Column("level", String(8), nullable=False),
    Column("message", Text, nullable=False),
    Column("source", Key),
    Column("metadata", Json, nullable=False),
    CheckConstraint(f"level IN {LOG_LEVELS!r}", name="level"),
    Index(None, "agent_id", "timestamp"),  # an agent's events over a time range (search, stats)
    Index(None, "timestamp"),
)

agent_traces = Table(
    "agent_traces",
    metadata,
    Column("execution_id", Key, primary_key=True),
    Column("timestamp", DateTime(timezone=True), primary_key=True),
    Column("id", Id, primary_key=True),
    Column("agent_id", Key, nullable=False),
    Column("run_id", Key),
    Column("parent_run_id", Key),
    Column("type", String(32), nullable=False),
    Column("name", Key),
    Column("content", Text),
    Column("metadata", Json, nullable=False),
    Column("duration", Float),
    Index(None, "agent_id", "timestamp"),  # an agent's events over a time range (search, stats)
    Index(None, "timestamp"),
)

checkpoint_states = Table(
    "checkpoint_states",
    metadata,
    Column("thread_id", Key, primary_key=True),
    Column("checkpoint_ns", Text, primary_key=True),
    Column("checkpoint_id", Key, primary_key=True),
    Column("id", Id, nullable=False),
    Column("agent_id", Key),
    Column("parent_checkpoint_id", Key),
    Column("run_id", Key),
    Column("state", Json),  # a JSON state saved through the service
    Column("type", String(32)),  # how `checkpoint` is encoded (rows written by PersistSaver)
    Column("checkpoint", LargeBinary),  # the LangGraph checkpoint, without values and versions
    Column("versions", Json),  # its channel_versions, readable by SQL
    Column("metadata", Json, nullable=False),
    _at("created_at"),
    Index(None, "checkpoint_id"),
    Index(None, "run_id", **_WHEN_RUN_ID),
    Index(None, "created_at"),
)

checkpoint_state_values = Table(
    "checkpoint_state_values",
    metadata,
    Column("thread_id", Key, primary_key=True),
    Column("checkpoint_ns", Text, primary_key=True),
    Column("channel", Key, primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("type", String(32), nullable=False),
    Column("blob", LargeBinary),
    # set when `blob` holds only what was appended to the list stored at this version
    Column("base_version", String(64)),
)

checkpoint_state_writes = Table(
    "checkpoint_state_writes",
    metadata,
    Column("thread_id", Key, primary_key=True),
    Column("checkpoint_ns", Text, primary_key=True),
    Column("checkpoint_id", Key, primary_key=True),
    Column("task_id", Key, primary_key=True),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("channel", Key, nullable=False),
    Column("type", String(32), nullable=False),
    Column("blob", LargeBinary),
    Column("task_path", Text, nullable=False),
    Column("run_id", Key),
    Index(None, "run_id", **_WHEN_RUN_ID),
)

retention_policies = Table(
    "retention_policies",
    metadata,
    # an agent's id, or DEFAULT_POLICY for the policy of every agent without one of its own
    Column("agent_id", Key, primary_key=True),
    # how long to keep each kind of row, in seconds; NULL keeps it forever
    Column("keep_results", Float),
    Column("keep_logs", Float),
    Column("keep_traces", Float),
    Column("keep_checkpoints", Float),  # a thread, counted from its last activity
    _at("updated_at"),
)
DEFAULT_POLICY = "*"

backfills = Table(
    "langchain_persist_backfill",
    metadata,
    # a derived structure still being filled for the rows written before it existed (the
    # search index of a table, see SEARCH_OBJECTS): from `position` up to `until`
    Column("name", Key, primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("until", BigInteger, nullable=False),
)

# -- full-text search: what SQLAlchemy Core cannot declare --------------------------------------
#
# Logs and traces are searched through structures that Core has no words for, created by the
# migration that introduced them (0002) and kept out of Alembic's comparison by name
# (migrations/env.py):
#
# - PostgreSQL: a ``search_vector tsvector`` column on each event table, filled by a BEFORE
#   INSERT OR UPDATE trigger (a generated column would rewrite the whole table, under an
#   exclusive lock, when an existing database is upgraded; the trigger lets old rows be filled
#   in batches), a GIN index on it, and a partial index of the rows not yet filled.
# - SQLite: an FTS5 table per event table (external content: it indexes the table's own text
#   by rowid and stores none of it), fed each insert statement's new rows by `insert_values`
#   (migration 0004: a trigger a row cost three times as much) and kept in step by AFTER
#   UPDATE / DELETE triggers.
#
# The searched text is a trace's name and content, a log's message, with ASCII punctuation
# read as spaces on both databases, so that ``openai.RateLimitError`` holds the word
# ``RateLimitError`` and ``rate-limit`` the words ``rate`` and ``limit``.
SEARCHED = {"agent_traces": ("name", "content"), "execution_logs": ("message",)}
SEARCH_COLUMN = "search_vector"
SEARCH_OBJECTS = frozenset({
    SEARCH_COLUMN,
    *(f"{table}_search" for table in SEARCHED),  # the FTS5 tables
    *(f"ix_{table}_search_vector" for table in SEARCHED),  # the GIN indexes
    *(f"ix_{table}_unindexed" for table in SEARCHED),  # rows awaiting the backfill
})
"""The names of the search structures that live outside this module (see above)."""
