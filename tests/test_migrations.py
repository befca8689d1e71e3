"""The packaged Alembic migrations create, check and upgrade the schema on both databases."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import inspect

from langchain_persist import ResultsPersistenceService, SchemaError
from langchain_persist._db.engine import acquire
from langchain_persist._db.migrate import check, current_revision, head_revision, upgrade
from langchain_persist._db.schema import metadata

CLI = [sys.executable, "-m", "langchain_persist._cli.commands"]


def test_migrations_match_schema_module(db_url: str) -> None:
    db = acquire(db_url)
    assert current_revision(db) is None
    upgrade(db)
    assert current_revision(db) == head_revision()
    check(db)  # raises if autogenerate finds any difference from _schema.py
    tables = set(inspect(db.engine).get_table_names())
    assert set(metadata.tables) <= tables


def test_schema_older_than_code_names_the_fix(db_url: str) -> None:
    with pytest.raises(SchemaError, match="langchain-persist db upgrade"):
        ResultsPersistenceService(db_url, migrate=False).get_agent_results("a")


def test_cli_db_commands(db_url: str) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, "db", *args, "--url", db_url], capture_output=True,
                              text=True, timeout=60)

    assert run("current").returncode == 1
    assert run("check").returncode == 1
    out = run("upgrade")
    assert out.returncode == 0 and f"to schema {head_revision()}" in out.stdout
    assert "already at schema" in run("upgrade").stdout
    assert run("current").returncode == 0
    checked = run("check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_cli_unreachable_database_is_one_clear_line() -> None:
    out = subprocess.run([*CLI, "db", "current", "--url", "postgresql://u@127.0.0.1:1/x"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert "cannot reach" in out.stderr and "Traceback" not in out.stderr


def test_two_processes_upgrade_one_empty_database(pg_url: str) -> None:
    code = (
        "import sys; from langchain_persist._db.engine import acquire;"
        "from langchain_persist._db.migrate import upgrade; upgrade(acquire(sys.argv[1]))"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, pg_url], stderr=subprocess.PIPE,
                              text=True) for _ in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert current_revision(acquire(pg_url)) == head_revision()
