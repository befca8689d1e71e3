"""The spool: local, append-only files between the writer's queue and the database.

Whatever the background writer takes from its queue it appends, within a few milliseconds, to
a file of its own process (``<host>-<pid>-<random>.spool`` in the spool directory, locked with
``flock`` while the process lives), and stores in the database in batches, as before; a
sidecar file (``.done``) holds how far the database has everything.  So a process killed with
SIGKILL, or a database away for a while, loses nothing the writer took: the next writer that
opens the same directory (or ``langchain-persist spool replay``) stores what a dead process
left, and a live writer drains its own file once the database is back.

Each line of a spool file is JSON: ``["t", *row]`` (a trace row, as `TraceEvent.to_values`
built it, with its id and time), ``["l", *row]`` (a log row), ``["r", key, change]`` (the end
of a run that could not be written when the run ended) and ``["d", key]`` (that end, stored).
Rows carry their ids, so a replay never stores a row twice.  The first line names the database.

The spool is bounded (``max_bytes`` not yet stored, per process): past it, events are dropped
and counted, as the queue drops them when full.  A file whose every line is stored is emptied.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy.engine import make_url

from .._errors import ConfigurationError, NotFoundError, ValidationError
from .._results.storage import EventStore, ResultStore

logger = logging.getLogger("langchain_persist")

DEFAULT_MAX_BYTES = 256 * 1024 * 1024
SPOOL_VARIABLE = "LANGCHAIN_PERSIST_SPOOL"
SUFFIX = ".spool"
KINDS = {"t": "traces", "l": "logs"}
REPLAY_BATCH = 500


def default_directory(url: str) -> Path | None:
    """Where a database's spool lives: ``$LANGCHAIN_PERSIST_SPOOL`` (a directory, or ``off``),
    else beside a SQLite file (``<file>-spool``), else in the user's cache directory (one
    folder per database); None when spooling is off."""
    setting = os.environ.get(SPOOL_VARIABLE, "").strip()
    if setting.lower() in ("off", "0", "false", "no"):
        return None
    if setting and setting.lower() not in ("on", "1", "true", "yes"):
        return Path(setting).expanduser()
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":  # (a file: in-memory ones are refused)
        file = Path(parsed.database).expanduser()  # type: ignore[arg-type]
        return file.with_name(file.name + "-spool")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    digest = hashlib.sha256(_public(url).encode()).hexdigest()[:16]
    return cache / "langchain-persist" / "spool" / digest


def _public(url: str) -> str:
    """The URL without its password: what a spool file records of its database."""
    return make_url(url).render_as_string(hide_password=True)


class Spool:
    """This process's spool file: appended by the writer (and, for ends of runs, by the caller),
    emptied once everything in it is stored."""

    def __init__(self, directory: Path, url: str, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cannot make the spool directory {directory}: {exc} (set "
                f"${SPOOL_VARIABLE} to a writable directory, or to 'off')"
            ) from exc
        self.directory = directory
        self.url = url
        self.max_bytes = max_bytes
        name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        self.path = directory / (name + SUFFIX)
        self._done_path = directory / (name + ".done")
        self._lock = threading.Lock()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # alive: nobody replays it
        self._done_fd = os.open(self._done_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._header = orjson.dumps({"langchain_persist_spool": 1, "url": _public(url)}) + b"\n"
        os.write(self._fd, self._header)
        self.end = self.done = self.events_end = len(self._header)
        self.generation = 0  # how many times the file was emptied: offsets restart each time
        self._open_ends: set[str] = set()  # keys of run ends spooled and not yet stored
        self._mark(self.done)

    def __repr__(self) -> str:
        return f"Spool({str(self.path)!r}, {self.waiting} bytes not yet stored)"

    @property
    def waiting(self) -> int:
        """Bytes of events appended and not yet stored."""
        return max(0, self.events_end - self.done)

    def append(self, lines: list[bytes]) -> tuple[int, int, int] | None:
        """Append event lines (one write): their generation, start and end offsets; None,
        appending nothing, past ``max_bytes``."""
        data = b"".join(lines)
        with self._lock:
            if self.end - self.done + len(data) > self.max_bytes:
                return None
            start = self.end
            os.write(self._fd, data)
            self.end = self.events_end = start + len(data)
            return self.generation, start, self.end

    def append_end(self, key: str, change: dict[str, Any]) -> None:
        """Spool the end of a run (not bounded: it is one line a run, and it must not be lost)."""
        line = orjson.dumps(["r", key, change], option=orjson.OPT_NON_STR_KEYS) + b"\n"
        with self._lock:
            os.write(self._fd, line)
            self.end += len(line)
            self._open_ends.add(key)

    def end_stored(self, key: str) -> None:
        """The spooled end of run ``key`` is in the database."""
        with self._lock:
            if key not in self._open_ends:
                return
            self._open_ends.discard(key)
            if not self._open_ends and self.done >= self.events_end:
                self._empty()  # nothing left: no need to say it
                return
            line = orjson.dumps(["d", key]) + b"\n"
            os.write(self._fd, line)
            self.end += len(line)

    def stored(self, upto: int) -> None:
        """Every event line before offset ``upto`` is in the database; a file with nothing
        left to store is emptied (down to its first line)."""
        with self._lock:
            self.done = max(self.done, upto)
            if self.done >= self.events_end and not self._open_ends:
                self._empty()
            else:
                self._mark(self.done)

    def lines_from(self, offset: int) -> Iterator[tuple[int, list[Any]]]:
        """The lines from ``offset`` on, each with the offset just past it."""
        return _lines(self.path, offset)

    def close(self) -> None:
        """Release the file; remove it when everything in it is stored."""
        with self._lock:
            empty = self.done >= self.events_end and not self._open_ends
            if empty:
                for path in (self.path, self._done_path):
                    path.unlink(missing_ok=True)
            os.close(self._done_fd)
            os.close(self._fd)  # releases the lock: a file left behind can be replayed

    def forget_after_fork(self) -> None:
        """In a forked child: drop this (the parent's) file without touching it (the lock stays
        the parent's once the child's copy of the descriptor is closed)."""
        for fd in (self._fd, self._done_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _empty(self) -> None:
        os.ftruncate(self._fd, len(self._header))
        self.end = self.done = self.events_end = len(self._header)
        self.generation += 1
        self._mark(self.done)

    def _mark(self, offset: int) -> None:
        os.pwrite(self._done_fd, offset.to_bytes(8, "little"), 0)


def _lines(path: Path, offset: int) -> Iterator[tuple[int, list[Any]]]:
    with path.open("rb") as file:
        file.seek(offset)
        position = offset
        for raw in file:
            position += len(raw)
            if not raw.endswith(b"\n"):
                return  # cut short by a crash in the middle of a write: never acknowledged
            try:
                yield position, orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue


# -- what dead processes left ------------------------------------------------------------------


@dataclass
class SpoolFile:
    """A spool file found in a directory: whose, for which database, how much is left."""

    path: Path
    url: str | None
    alive: bool
    waiting: int  # bytes not yet stored

    @property
    def done_path(self) -> Path:
        """The sidecar that says how far the file is stored."""
        return self.path.with_suffix(".done")


def files(directory: Path) -> list[SpoolFile]:
    """The spool files of a directory, oldest first."""
    found = []
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*" + SUFFIX), key=lambda p: p.stat().st_mtime):
        found.append(SpoolFile(path, _url_of(path), _alive(path),
                               max(0, path.stat().st_size - _done(path))))
    return found


def _url_of(path: Path) -> str | None:
    try:
        with path.open("rb") as file:
            return str(orjson.loads(file.readline())["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(path: Path) -> bool:
    """Whether the process that writes ``path`` still holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # (releases the lock it may have taken)
    return False


def _done(path: Path) -> int:
    try:
        return int.from_bytes(path.with_suffix(".done").read_bytes()[:8], "little")
    except (OSError, ValueError):
        return 0


@dataclass
class Replayed:
    """What a replay stored: rows by kind, ends of runs, and files emptied."""

    rows: dict[str, int]
    ends: int
    files: int
    refused: int = 0  # ends of runs the database can never take (an id refused)


def replay(
    directory: Path, events: EventStore, results: ResultStore, url: str,
    progress: Callable[[int], None] | None = None,
) -> Replayed:
    """Store what dead processes left in ``directory`` for database ``url``, then remove their
    files.  Rows already stored are skipped, so a replay never stores a row twice; a
    database that cannot be reached raises `StorageError` and leaves the files for later.
    ``progress`` is told the bytes of each batch stored."""
    done = Replayed({"traces": 0, "logs": 0}, 0, 0)
    fmt = events.event_format()
    for spooled in files(directory):
        if spooled.alive or spooled.url != _public(url):
            continue
        ends: dict[str, Any] = {}
        for _, line in _lines(spooled.path, 0):  # ends of runs, wherever they are
            if isinstance(line, list) and line and line[0] == "r":
                ends[line[1]] = line[2]
            elif isinstance(line, list) and line and line[0] == "d":
                ends.pop(line[1], None)
        for change in ends.values():
            try:
                apply_end(results, change)
            except ValidationError as exc:  # never storable: the others still are
                logger.error("langchain-persist could not store the end of a run from the "
                             "spool %s: %s", spooled.path, exc)
                done.refused += 1
                continue
            done.ends += 1
        batch: dict[str, list[list[Any]]] = {"traces": [], "logs": []}
        start, offset = _done(spooled.path), 0
        for offset, line in _lines(spooled.path, max(start, 0)):
            kind = KINDS.get(line[0]) if isinstance(line, list) and line else None
            if kind is None:
                continue
            batch[kind].append(fmt.from_spool(line[1:]))
            if len(batch[kind]) >= REPLAY_BATCH:
                done.rows[kind] += _store(events, kind, batch[kind])
                batch[kind] = []
                if progress is not None:
                    progress(offset - start)
                    start = offset
        for kind, rows in batch.items():
            done.rows[kind] += _store(events, kind, rows)
        if progress is not None and offset > start:
            progress(offset - start)
        for path in (spooled.path, spooled.done_path):
            path.unlink(missing_ok=True)
        done.files += 1
    return done


def _store(events: EventStore, kind: str, rows: list[Any]) -> int:
    return events.insert_events(kind, rows, skip_existing=True).stored if rows else 0


def apply_end(results: ResultStore, change: dict[str, Any]) -> None:
    """Store an end of run: an update of its row, or the whole row (with its id, so that a
    retry makes no second row; a running row of that id, stored first, is updated), naming the
    newest checkpoint of thread ``latest_of``; then the thread's runs that waited at an
    interrupt() are resumed by execution ``resumed_by``.  A row that moved on already stays as
    it is; every step can be retried."""
    fields, create = dict(change.get("fields") or {}), change.get("create")
    thread = change.get("latest_of")
    if thread and "checkpoint_id" not in fields:
        latest = results.latest_checkpoint_id(thread)
        if latest is not None:
            fields["checkpoint_id"] = latest
    if change.get("result_id"):
        # finished since (a finished row keeps its end), or deleted: nothing to store
        with contextlib.suppress(ValidationError, NotFoundError):
            results.update_result(change["result_id"], **fields)
    elif create is not None:  # an id refused raises ValidationError
        row = results.save_result(**{**create, **fields})
        if (str(row.id) == str(create.get("id")) and row.status == "running"
                and fields.get("status", "running") != "running"):  # its running row, first
            with contextlib.suppress(ValidationError, NotFoundError):  # (finished since)
                results.update_result(row.id, **fields)
    if thread and change.get("resumed_by"):
        own = change.get("result_id") or (create or {}).get("id")
        results.resolve_interrupted(
            thread, status="failed" if fields.get("status") == "failed" else "completed",
            resumed_by=change["resumed_by"], keep=own,
        )
