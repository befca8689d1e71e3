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

RESULT_STATUSES = ("running", "completed", "failed")
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
    Index(None, "agent_id"),
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
    Index(None, "agent_id"),
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
