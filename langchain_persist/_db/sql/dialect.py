"""The few statements that SQLite and PostgreSQL spell differently."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Table, func, text, type_coerce
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.selectable import Join

_SIMPLE_KEY = re.compile(r"[A-Za-z0-9_\-]+")
RANDOM_PAGE_COST = 1.1  # searches and statistics: see `custom_plans`


def upsert(conn: Connection, table: Table) -> Any:
    """An INSERT with ``on_conflict_do_update`` / ``on_conflict_do_nothing`` for this dialect."""
    module = postgresql if conn.dialect.name == "postgresql" else sqlite
    return module.insert(table)


def metadata_filter(conn: Connection, column: Any, filter: dict[str, Any]) -> list[Any]:
    """Conditions that narrow rows to those whose JSON ``column`` may match ``filter``.

    PostgreSQL checks containment (served by the JSONB column); SQLite compares scalar values
    with ``json_extract``.  Callers still compare exactly in Python, as `InMemorySaver` does.
    """
    if conn.dialect.name == "postgresql":
        return [type_coerce(column, postgresql.JSONB).contains(filter)]
    conditions = []
    for key, value in filter.items():
        if not _SIMPLE_KEY.fullmatch(key):
            continue
        path = f'$."{key}"'
        if value is None:
            conditions.append(func.json_type(column, path) == "null")
        elif isinstance(value, bool | int | float | str):
            conditions.append(func.json_extract(column, path) == value)
    return conditions


class _OrderedJoin(Join):
    """An inner join whose left side stays the outer loop: ``CROSS JOIN`` on SQLite, whose
    planner reorders every other inner join (and would scan a thread's values to probe a
    ``json_each`` list, rather than probe the values' primary key per list item)."""

    inherit_cache = True


@compiles(_OrderedJoin, "sqlite")
def _ordered_join_sqlite(
    join: _OrderedJoin, compiler: Any, asfrom: bool = False, from_linter: Any = None, **kw: Any
) -> str:
    # SQLAlchemy's visit_join, with the one keyword changed
    if from_linter:
        from_linter.edges.update(
            itertools.product(join.left._from_objects, join.right._from_objects)
        )
    left = join.left._compiler_dispatch(compiler, asfrom=True, from_linter=from_linter, **kw)
    right = join.right._compiler_dispatch(compiler, asfrom=True, from_linter=from_linter, **kw)
    on = join.onclause._compiler_dispatch(compiler, from_linter=from_linter, **kw)
    return f"{left} CROSS JOIN {right} ON {on}"


def ordered_join(left: Any, right: Any, onclause: Any) -> Join:
    """``left JOIN right ON onclause``, with ``left`` kept as the outer loop on SQLite."""
    return _OrderedJoin(left, right, onclause)


@contextmanager
def custom_plans(conn: Connection) -> Iterator[None]:
    """On PostgreSQL, plan each statement for its own parameters while in this block.

    Statements are prepared (see `engine`), and after a few runs PostgreSQL may keep one
    generic plan for all parameters: fine for the hot paths, wrong for searches and
    statistics, whose best plan depends on the values (how many rows a word matches, how much
    of a table a time range covers): a generic plan read a whole table for a 7-day range.
    Reads through an agent's index are costed as near-sequential (``RANDOM_PAGE_COST``): the
    handler stores a run's events together, so an agent's rows lie in runs of pages, and at
    PostgreSQL's default cost (4, for spinning disks) the planner walked every agent's rows
    along the time index instead (8,600 pages against 850 for an agent's newest 5,000).
    """
    if conn.dialect.name != "postgresql":
        yield
        return
    conn.execute(text("SELECT set_config('plan_cache_mode', 'force_custom_plan', false), "
                      f"set_config('random_page_cost', '{RANDOM_PAGE_COST}', false)"))
    try:
        yield
    finally:
        conn.execute(text("SELECT set_config(name, reset_val, false) FROM pg_settings "
                          "WHERE name IN ('plan_cache_mode', 'random_page_cost')"))
