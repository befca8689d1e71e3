"""The architecture holds: layers import only downwards, and across layers only public names.

Layers, bottom to top (README, "Architecture"): the foundation modules at the package root (and
the public `testing`, which needs only langchain-core), then
``_db``, ``_checkpoint``, ``_results``, ``_callbacks``, ``server``, ``_cli``; the package's
``__init__`` and ``__main__``, and ``langgraph_server`` (the Agent Server's factory), sit on
top.  Route modules of the server share what
they need through ``server/_state.py``, never through each other.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "langchain_persist"
FOUNDATION = {"_errors", "_ids", "_sanitize", "_aio", "_records", "_process", "_imports", "testing"}
LAYERS = ["_db", "_checkpoint", "_results", "_callbacks", "server", "_cli"]
TOP = {"__init__", "__main__", "langgraph_server"}


def rank(module: tuple[str, ...]) -> int:
    """0 for the foundation, 1.. for the layers in order, above them the package's top."""
    head = module[0] if module else "__init__"
    if head in FOUNDATION:
        return 0
    if head in LAYERS:
        return 1 + LAYERS.index(head)
    assert head in TOP, f"{head} is in no layer: add it to the README's layers and here"
    return len(LAYERS) + 1


def imports(path: Path, module: tuple[str, ...]) -> list[tuple[tuple[str, ...], list[str]]]:
    """The package modules a file imports, each with the names it takes from it."""
    package = module[:-1] if path.name != "__init__.py" else module
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = (*base, *(node.module.split(".") if node.module else ()))
            elif node.module and node.module.split(".")[0] == "langchain_persist":
                target = tuple(node.module.split(".")[1:])
            else:
                continue
            found.append((target, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] == "langchain_persist":
                    found.append((tuple(parts[1:]), []))
    return found


def violations(files: dict[tuple[str, ...], Path]) -> list[str]:
    """Every import that breaks the rules, as text."""
    out = []
    for module, path in files.items():
        if module and module[-1] == "__init__":
            module = module[:-1]
        if module[:2] == ("_db", "migrations"):
            continue  # Alembic's scripts, run by _db.migrate
        for target, names in imports(path, module):
            where = f"{'.'.join(module)} imports {'.'.join(target)}"
            if rank(target) > rank(module):
                out.append(f"{where}: a lower layer imports an upper one")
            same_layer = target[:1] == module[:1] or rank(target) == 0 == rank(module)
            if same_layer:
                if target[:1] == ("server",) and module[:1] == ("server",):
                    a, b = module[-1], target[-1] if len(target) > 1 else ""
                    if a.endswith("_routes") and b.endswith("_routes") and a != b:
                        out.append(f"{where}: route modules share through server/_state.py")
                continue
            inner = target[1:] if rank(target) else ()
            private = [p for p in inner if p.startswith("_")] + [
                n for n in names if n.startswith("_") and not (
                    len(target) == 1 and n in FOUNDATION | set(LAYERS))]
            if private:
                out.append(f"{where}: private {private} across layers")
    return out


def package_files() -> dict[tuple[str, ...], Path]:
    return {path.relative_to(PACKAGE).with_suffix("").parts: path
            for path in PACKAGE.rglob("*.py")}


def test_layers_import_downwards_and_only_public_names():
    assert violations(package_files()) == []


def test_the_rules_catch_what_they_forbid(tmp_path):
    """The checker itself: each rule, broken once, is reported."""
    def file(name: str, text: str) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    broken = {
        ("_db", "engine"): file("a.py", "from .._callbacks.writer import BackgroundWriter\n"),
        ("_callbacks", "handler"): file("b.py", "from .._results.service import _key\n"),
        ("_results", "service"): file("c.py", "from .._db.sql._prepared import prepared\n"),
        ("server", "_read_routes"): file("d.py", "from ._run_routes import server\n"),
        ("_cli", "commands"): file("e.py", "import langchain_persist._checkpoint._saver\n"),
    }
    found = violations(broken)
    assert len(found) == 5, found
    assert "lower layer imports an upper one" in found[0]
    assert all("private" in f for f in (found[1], found[2], found[4]))
    assert "server/_state.py" in found[3]
