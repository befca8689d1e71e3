"""Helpers shared by the benchmarks: statistics, Markdown tables, an event loop on a thread,
throw-away PostgreSQL databases and a description of the machine.

Nothing here imports langchain-persist, so a benchmark can compare it against its peers
without depending on its internals.
"""

# ruff: noqa: RUF001, RUF002
# (tables print a multiplication sign after ratios and an en dash for a missing value)

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import threading
import uuid
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DEFAULT_PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


# --------------------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Summary:
    """Median and quartiles of a list of samples (any unit)."""

    median: float
    p25: float
    p75: float
    n: int

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median (0.1 means ±5 % around the median)."""
        return (self.p75 - self.p25) / self.median if self.median else 0.0

    def to_dict(self) -> dict[str, float]:
        """The summary as a JSON-friendly dict."""
        return asdict(self)


def summarize(samples: Sequence[float]) -> Summary | None:
    """Median and quartiles of ``samples``; ``None`` when there are none."""
    if not samples:
        return None
    if len(samples) == 1:
        (only,) = samples
        return Summary(only, only, only, 1)
    q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    return Summary(statistics.median(samples), q1, q3, len(samples))


def ratio(value: float | None, reference: float | None) -> float | None:
    """``value / reference``, or ``None`` when either is missing or the reference is zero."""
    if value is None or not reference:
        return None
    return value / reference


# --------------------------------------------------------------------------- formatting


def fmt_num(value: float | None, digits: int = 3) -> str:
    """A number with about ``digits`` significant digits and thousands separators."""
    if value is None:
        return "–"
    if value == int(value) and abs(value) >= 1:
        return f"{int(value):,}"
    magnitude = abs(value)
    decimals = 0
    while decimals < 6 and magnitude * 10**decimals < 10 ** (digits - 1):
        decimals += 1
    return f"{value:,.{decimals}f}"


def fmt_ratio(value: float | None) -> str:
    """A ratio as ``0.42×``; an en dash when unknown."""
    return "–" if value is None else f"{value:.2f}×"


def fmt_bytes(value: float | None) -> str:
    """A byte count in B, kB, MB or GB (powers of 1000)."""
    if value is None:
        return "–"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def md_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A GitHub-flavoured Markdown table; the first column is left-aligned, the rest right."""
    lines = [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- event loop


class LoopThread:
    """One asyncio event loop running forever on a daemon thread.

    Async savers bind to the loop they were created on; keeping one loop alive for the whole
    benchmark lets them be opened once and driven between synchronous measurements taken on
    the main thread.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="bench-loop", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result (exceptions propagate)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        """Stop the loop and join its thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


# --------------------------------------------------------------------------- PostgreSQL


class PgDatabases:
    """Creates throw-away PostgreSQL databases through an admin URL and drops them again."""

    def __init__(self, admin_url: str, prefix: str) -> None:
        self.admin_url = admin_url
        self.prefix = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self._created: list[str] = []

    def admin(self) -> Any:
        """An autocommit connection on the admin URL."""
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5)

    def url_for(self, name: str) -> str:
        """The URL of database ``name`` on the admin URL's server."""
        return f"{self.admin_url.rsplit('/', 1)[0]}/{name}"

    def create(self, label: str, template: str | None = None) -> str:
        """Create a fresh, empty database (or a copy of the one at URL ``template``, which no
        connection may use meanwhile) and return its URL."""
        name = f"{self.prefix}_{len(self._created)}_{label}".lower().replace("-", "_")[:63]
        copy = f' TEMPLATE "{template.rsplit("/", 1)[1]}"' if template else ""
        with self.admin() as admin:
            admin.execute(f'CREATE DATABASE "{name}"{copy}')
        self._created.append(name)
        return self.url_for(name)

    def drop(self, url: str) -> None:
        """Drop the database at ``url`` (closing any connection still open on it)."""
        name = url.rsplit("/", 1)[1]
        with self.admin() as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._created:
            self._created.remove(name)

    def drop_all(self) -> None:
        """Drop every database this object created and has not dropped yet."""
        for name in list(self._created):
            with contextlib.suppress(Exception):
                self.drop(self.url_for(name))

    def server_version(self) -> str:
        """``SELECT version()`` of the server, or the error that prevented reaching it."""
        try:
            with self.admin() as admin:
                return str(admin.execute("SELECT version()").fetchone()[0])
        except Exception as exc:  # reported, not raised: the caller decides what to skip
            return f"unreachable ({exc.__class__.__name__})"


def pg_relations_size(url: str, tables: Sequence[str]) -> int:
    """Sum of ``pg_total_relation_size`` (heap, TOAST and indexes) of ``tables``, in bytes,
    measured after ``VACUUM ANALYZE`` of the database. Tables are looked up in every
    non-system schema; ``LookupError`` when none exists."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
        size, found = conn.execute(
            """
            SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0), count(*)
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relname = ANY(%s) AND c.relkind IN ('r', 'p')
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
            """,
            (list(tables),),
        ).fetchone()
    if not found:
        raise LookupError(f"none of the tables {', '.join(tables)} exists in {url}")
    return int(size)


def sqlite_tables_size(path: str | Path, tables: Sequence[str]) -> tuple[int, int]:
    """``(bytes of the pages of tables and their indexes, whole file size)`` of a SQLite
    database, after folding its WAL back into the file; ``LookupError`` when none of the
    tables exists."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        marks = ",".join("?" * len(tables))
        (found,) = conn.execute(
            f"SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ({marks})",
            tuple(tables),
        ).fetchone()
        if not found:
            raise LookupError(f"none of the tables {', '.join(tables)} exists in {path}")
        (pages,) = conn.execute(
            f"SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name IN "
            f"(SELECT name FROM sqlite_schema WHERE tbl_name IN ({marks}))",
            tuple(tables),
        ).fetchone()
    file_size = sum(os.path.getsize(p) for p in (str(path), f"{path}-wal") if os.path.exists(p))
    return int(pages), file_size


# --------------------------------------------------------------------------- environment


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed version of each distribution (``"not installed"`` when missing)."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def machine_info() -> dict[str, Any]:
    """CPU, cores, memory, OS and Python of this machine."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = None
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as f:
        memory = f"{int(f.readline().split()[1]) / 1024**2:.0f} GiB"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory": memory,
        "os": platform.platform(),
        "python": sys.version.split()[0],
    }


def write_json(path: str | Path, data: Any) -> None:
    """Write ``data`` as indented JSON, creating parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


@contextlib.contextmanager
def gc_collected() -> Iterator[None]:
    """Collect garbage before a measurement so a cycle left by the previous one is not
    charged to it."""
    import gc

    gc.collect()
    yield
