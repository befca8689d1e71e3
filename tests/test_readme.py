"""The README's Python snippets run as they are, in order, offline, in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_snippets_run(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 3
    script = tmp_path / "readme_snippets.py"
    check = "print('snippets ran:', latest.status, len(traces), len(state['messages']))"
    script.write_text("\n\n".join([*blocks, check]) + "\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("LANGCHAIN_PERSIST_DATABASE_URL", "DATABASE_URL")}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "snippets ran: completed 4 4" in done.stdout, done.stdout
    assert (tmp_path / "langchain_persist.db").exists()  # the embedded default, in the cwd
