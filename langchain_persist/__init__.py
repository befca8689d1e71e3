"""langchain-persist: durable LangChain and LangGraph runs in SQLite or PostgreSQL."""

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
from ._handler import PersistCallbackHandler
from ._records import AgentResult, AgentTrace, CheckpointState, ExecutionLog, Page
from ._saver import PersistSaver
from ._service import ResultsPersistenceService
from ._tracker import ExecutionTracker

results_persistence = ResultsPersistenceService()
"""The module-level service of the seed, configured lazily from the environment."""

__all__ = [
    "AgentResult",
    "AgentTrace",
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
