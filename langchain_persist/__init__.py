"""langchain-persist: durable LangChain and LangGraph runs in SQLite or PostgreSQL."""

from ._callbacks.handler import PersistCallbackHandler
from ._callbacks.tracker import ExecutionTracker
from ._callbacks.writer import BackgroundWriter
from ._checkpoint.saver import PersistSaver
from ._errors import (
    ConfigurationError,
    NotFoundError,
    OwnershipError,
    PersistenceError,
    SchemaError,
    SerializationError,
    StorageError,
    ValidationError,
)
from ._records import (
    AgentResult,
    AgentTrace,
    CheckpointState,
    ErrorCount,
    ExecutionLog,
    Page,
    RetentionCounts,
    RetentionPolicy,
    RetentionReport,
    SearchHit,
    Stats,
    StatsRow,
)
from ._results.service import ResultsPersistenceService

results_persistence = ResultsPersistenceService()
"""The module-level service of the seed, configured lazily from the environment."""

__all__ = [
    "AgentResult",
    "AgentTrace",
    "BackgroundWriter",
    "CheckpointState",
    "ConfigurationError",
    "ErrorCount",
    "ExecutionLog",
    "ExecutionTracker",
    "NotFoundError",
    "OwnershipError",
    "Page",
    "PersistCallbackHandler",
    "PersistSaver",
    "PersistenceError",
    "ResultsPersistenceService",
    "RetentionCounts",
    "RetentionPolicy",
    "RetentionReport",
    "SchemaError",
    "SearchHit",
    "SerializationError",
    "Stats",
    "StatsRow",
    "StorageError",
    "ValidationError",
    "results_persistence",
]
