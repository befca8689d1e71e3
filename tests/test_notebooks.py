"""The notebooks run top to bottom, offline, on the venv's Python, and show what they promise."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
KERNEL = "langchain-persist-tests"
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")

EXPECTED = {
    "01_quickstart.ipynb": [
        "Pack sunglasses: Lisbon: 24°C and sunny.",
        "agent_results",
        "tool_end",
        "execution completed: weather-bot",
        "messages in thread trip-1",
        "last message: Pack sunglasses",
        "results for weather-bot",
        "weather-bot · trip-1",  # the CLI's runs list
    ],
    "02_resume_and_time_travel.ipynb": [
        "the run failed: the flight API timed out",
        "ConnectionError: the flight API timed out",
        "task tools: error=\"ConnectionError('the flight API timed out')\"",
        "messages so far: ['human', 'ai', 'tool', 'ai']",
        "tool calls so far: {'get_weather': 1, 'search_flights': 2}",
        "tool calls so far: {'get_weather': 2, 'search_flights': 3}",
        "Weather: Lisbon: storm warning, 14°C.",
        "│ fork ",
        "Thread weekend: 4 checkpoints",  # the CLI's checkpoints
    ],
    "03_cleanup_and_retention.ipynb": [
        "{'results': 0, 'logs': 20000, 'traces': 6000}",
        "deleted 20,000 logs in batches of [5000, 5000, 5000, 5000] and 6,000 traces",
        "left: {'logs': 0, 'traces': 0}",
        "marked failed: True",
        "after:  {'thread-1': 1, 'thread-2': 0, 'thread-3': 10}",
        "thread-1 still has its conversation: 8 messages",
        "dry run: nothing was deleted",  # the CLI's cleanup --dry-run
        '"deleted": {',  # the CLI's cleanup --json
    ],
    "04_analytics.ipynb": [
        "TimeoutError: flight search API timed out for",  # a search hit's snippet
        "matched: timed out for Zürich",
        "its run: failed",
        "80 runs: 84% completed, 16% failed",
        "tool_p95_ms",
        "<Figure size 1100x350 with 2 Axes>",
        "openai.RateLimitError: Error code: 429",  # the top errors
        "- exactly the dry run: True",
        "3 matches for 'TimeoutError Zürich'",  # the CLI's search
        "By tool",  # the CLI's stats
        "Retention policies",  # the CLI's retention show
    ],
}


def _kernelspec(root: Path) -> None:
    """A kernel that runs this interpreter (the venv's), whatever kernels the machine has."""
    spec = root / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "langchain-persist tests",
        "language": "python",
    }))


async def _run(path: Path, workdir: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, kernel_name=KERNEL, timeout=120, resources={"metadata": {"path": str(workdir)}}
    )
    await client.async_execute()
    return nb


@pytest.fixture(scope="module")
def executed(tmp_path_factory) -> dict[str, nbformat.NotebookNode | BaseException]:
    """Every notebook, executed at once (one kernel each); an exception for one that failed."""
    root = tmp_path_factory.mktemp("jupyter")
    _kernelspec(root)
    paths = sorted(NOTEBOOKS.glob("*.ipynb"))

    async def run_all() -> list[nbformat.NotebookNode | BaseException]:
        return await asyncio.gather(
            *(_run(p, tmp_path_factory.mktemp(p.stem)) for p in paths), return_exceptions=True
        )

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", str(root))
        mp.setenv("JUPYTER_PLATFORM_DIRS", "1")
        done = asyncio.run(run_all())
    return {p.name: nb for p, nb in zip(paths, done, strict=True)}


def _text(nb: nbformat.NotebookNode) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            elif "data" in out:
                parts.append(out.data.get("text/plain", ""))
    return ANSI.sub("", "".join(parts))


def test_every_notebook_is_tested() -> None:
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_notebook_runs_and_shows_its_point(executed, name: str) -> None:
    nb = executed[name]
    if isinstance(nb, BaseException):
        raise AssertionError(f"{name} did not run to the end") from nb
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    text = _text(nb)
    for expected in EXPECTED[name]:
        assert expected in text, f"{name}: {expected!r} not in its outputs"
