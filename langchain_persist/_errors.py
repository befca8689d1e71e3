"""The exceptions langchain-persist raises, all under one base class.

    PersistenceError
    ├── ConfigurationError      bad database URL, missing driver or extra
    ├── SchemaError             the database schema is older (or newer) than the code, or a
    │                           table is missing (a database recreated under the same URL)
    ├── ValidationError         bad input: unknown status, an id with NUL, illegal status move
    ├── NotFoundError           an id that does not exist (also a KeyError)
    ├── OwnershipError          a checkpoint or result that belongs to another agent
    ├── SerializationError      a value that cannot be stored (names the channel and type), or
    │                           a checkpoint the reader's serializer cannot decode
    └── StorageError            the database cannot be reached, or refused a blocking write

Everything the public API raises on bad input or a storage failure is one of these, with a
message that names the fix; writes of logs and traces never raise (they count what they drop).
"""

from __future__ import annotations


class PersistenceError(Exception):
    """Base class of every error raised by langchain-persist."""


class ConfigurationError(PersistenceError):
    """The database URL or a setting cannot be used as given."""


class SchemaError(PersistenceError):
    """The database schema does not match this version of the code."""


class ValidationError(PersistenceError, ValueError):
    """Input that cannot be stored as given; the message names the field and the fix."""


class NotFoundError(PersistenceError, KeyError):
    """An id that does not exist in the database."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class OwnershipError(PersistenceError, PermissionError):
    """A record that exists but belongs to another agent."""


class SerializationError(PersistenceError, TypeError):
    """A value that cannot be serialized for storage."""


class StorageError(PersistenceError):
    """The database failed a blocking write (results and checkpoints)."""
