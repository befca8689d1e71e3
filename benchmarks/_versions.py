"""Another revision of langchain-persist, importable beside this one (``--before REV``).

The package as it was at a git revision is exported into a temporary directory under another
name (every ``langchain_persist`` inside it renamed), so that a benchmark can run the old and
the new code in one process, interleaved, against the same peers.
"""

from __future__ import annotations

import importlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def import_revision(revision: str, name: str = "langchain_persist_before") -> ModuleType:
    """``langchain_persist`` as of ``revision``, imported as ``name``."""
    archive = subprocess.run(["git", "archive", revision, "langchain_persist"], cwd=ROOT,
                             check=True, capture_output=True).stdout
    where = Path(tempfile.mkdtemp(prefix="lp-revision-"))
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(where, filter="data")
    package = where / name
    (where / "langchain_persist").rename(package)
    for path in package.rglob("*.py"):  # the package's name, not names made from it
        path.write_text(re.sub(r"\blangchain_persist\b(?!_)", name, path.read_text()))
    sys.path.insert(0, str(where))
    return importlib.import_module(name)


def find(module: ModuleType, *paths: str) -> object:
    """The first of ``"submodule:attr"`` paths that exists in ``module`` (names moved between
    revisions)."""
    for path in paths:
        sub, _, attr = path.partition(":")
        try:
            return getattr(importlib.import_module(f"{module.__name__}.{sub}"), attr)
        except (ImportError, AttributeError):
            continue
    raise LookupError(f"none of {paths} in {module.__name__}")
