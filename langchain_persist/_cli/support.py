"""What every CLI command shares: consoles, options, opening the database, errors that say what
to do, and parsing ages such as ``30d``."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, OperationalError

from .._checkpoint.codec import load_serde
from .._db.engine import Database, acquire, checked_url, is_locked, locked_hint, resolve_url
from .._errors import PersistenceError, ValidationError
from .._results import validate as ages
from .._results.service import ResultsPersistenceService

console = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

Url = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Database URL (default: $LANGCHAIN_PERSIST_DATABASE_URL, then $DATABASE_URL, "
        "then ./langchain_persist.db).",
        show_default=False,
    ),
]
Serde = Annotated[
    str | None,
    typer.Option(
        "--serde",
        help="The serializer the checkpoints were written with, as module:attr (an object, or a "
        "function returning one), e.g. an EncryptedSerializer. Default: LangGraph's.",
        show_default=False,
    ),
]
Json = Annotated[
    bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")
]
DryRun = Annotated[
    bool, typer.Option("--dry-run", help="Count what would be deleted; delete nothing.")
]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting.")]
Port = Annotated[int, typer.Option("--port", min=0, max=65535,
                                   help="The port (0: any free one).")]



def fail(message: str, code: int = 1, *, markup: bool = True) -> NoReturn:
    """Print an error in red on stderr and leave with ``code``.

    ``markup=False`` prints the message as it is (for text that may hold ``[...]``).
    """
    err.print(f"[bold red]error:[/] {message if markup else escape(message)}", highlight=False)
    raise typer.Exit(code)


def where(url: str | None) -> str:
    """The database a URL points at, for messages (passwords hidden)."""
    resolved = resolve_url(url)
    try:
        return make_url(resolved).render_as_string()
    except (ArgumentError, ValueError):
        return resolved


def open_database(url: str | None, *, create: bool = False) -> Database:
    """The database for a URL, with errors a user can act on (unless ``create``, a SQLite
    file that does not exist is one: see `read_service`)."""
    if not create:
        _existing(url)
    try:
        return acquire(url)
    except PersistenceError as exc:
        fail(str(exc), markup=False)


def _existing(url: str | None) -> None:
    """Fail unless ``url`` can be used and, for SQLite, its file exists."""
    try:
        parsed = checked_url(resolve_url(url))
    except PersistenceError as exc:
        fail(str(exc), markup=False)
    path = parsed.database
    if parsed.get_backend_name() == "sqlite" and path and not Path(path).expanduser().exists():
        fail(
            f"there is no database at {path}: run `langchain-persist demo` (or your agent) "
            "to create one, or point at yours with --url or LANGCHAIN_PERSIST_DATABASE_URL",
            markup=False,
        )


def serializer(spec: str | None) -> Any:
    """The serializer named by ``--serde`` (None: LangGraph's default)."""
    return None if spec is None else load_serde(spec)


def read_service(url: str | None, serde: str | None = None) -> ResultsPersistenceService:
    """A service for reading what was stored: it never creates or upgrades anything.

    A SQLite file that does not exist is an error naming how to make one, not a new empty
    file; a schema older than the code raises `SchemaError` naming ``db upgrade``.
    """
    _existing(url)
    return ResultsPersistenceService(url, migrate=False, serde=serializer(serde))


@contextmanager
def database_errors(url: str | None) -> Iterator[None]:
    """Turn an unreachable database or an old schema into one clear line instead of a
    traceback."""
    try:
        yield
    except OperationalError as exc:
        reason = str(exc.orig or exc).strip().splitlines()[0]
        if is_locked(exc):
            fail(f"{where(url)} is locked ({locked_hint()})", markup=False)
        fail(
            f"cannot reach {where(url)}: {reason} (is the server running and the URL right? "
            "pass --url or set LANGCHAIN_PERSIST_DATABASE_URL)",
            markup=False,
        )
    except DatabaseError as exc:  # (after OperationalError, a subclass) e.g. not a database
        reason = str(exc.orig or exc).strip().splitlines()[0]
        fail(f"cannot use {where(url)}: {reason} (is it the right file?)", markup=False)
    except PersistenceError as exc:
        fail(str(exc), markup=False)


def parse_age(text: str) -> dt.timedelta:
    """An age such as ``30d``, ``12h``, ``15m``, ``90s``, ``2w`` or ``1d12h``."""
    try:
        return ages.parse_age(text)
    except ValidationError as exc:
        raise typer.BadParameter(str(exc)) from None


def describe_age(age: dt.timedelta) -> str:
    """An age back in words: ``30 days``, ``12 hours``."""
    seconds = int(age.total_seconds())
    for size, name in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if seconds and seconds % size == 0:
            n = seconds // size
            return f"{n} {name}{'s' if n != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"
