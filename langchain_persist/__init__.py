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
from ._records import AgentResult, AgentTrace, CheckpointState, ExecutionLog, Page
from ._results.service import ResultsPersistenceService

results_persistence = ResultsPersistenceService()
"""The module-level service of the seed, configured lazily from the environment."""

__all__ = [
    "AgentResult",
    "AgentTrace",
    "BackgroundWriter",
    "CheckpointState",
    "ConfigurationError",
    "ExecutionLog",
    "ExecutionTracker",
    "NotFoundError",
    "OwnershipError",
    "Page",
    "PersistCallbackHandler",
    "PersistSaver",
    "PersistenceError",
    "ResultsPersistenceService",
    "SchemaError",
    "SerializationError",
    "StorageError",
    "ValidationError",
    "results_persistence",
]
