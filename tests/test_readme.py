"""The README is the front door: every code block in it runs, unless it says plainly that it is a sketch.

A ``python`` block runs in a fresh interpreter and a ``bash`` block in bash (``-euo pipefail``), each in
an empty folder that sees the repository's ``examples/``. A block whose first line is a comment starting
with ``sketch`` is shown, not run (it names files the reader has and we do not).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
RUNNABLE = ("python", "bash")
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SKETCH = re.compile(r"^\s*#\s*sketch\b", re.IGNORECASE)


def readme_blocks() -> list[tuple[str, str, int]]:
    """Every fenced block as ``(language, code, line number)``."""
    text = README.read_text(encoding="utf-8")
    return [(match.group(1), match.group(2), text.count("\n", 0, match.start()) + 1) for match in _FENCE.finditer(text)]


def is_sketch(code: str) -> bool:
    first = next((line for line in code.splitlines() if line.strip()), "")
    return bool(_SKETCH.match(first))


RUN = [(language, code, line) for language, code, line in readme_blocks() if language in RUNNABLE and not is_sketch(code)]


def test_the_readme_runs_most_of_its_blocks() -> None:
    runnable = [block for block in readme_blocks() if block[0] in RUNNABLE]
    sketches = [line for language, code, line in runnable if is_sketch(code)]
    assert len(RUN) >= 6, f"only {len(RUN)} blocks run; sketches at lines {sketches}"
    # Every other block is a language nobody runs (a config or a citation), not a forgotten one.
    assert {language for language, _, _ in readme_blocks()} <= {*RUNNABLE, "yaml", "bibtex"}


@pytest.mark.parametrize(("language", "code", "line"), RUN, ids=[f"README.md:{line}" for _, _, line in RUN])
def test_readme_block_runs(language: str, code: str, line: int, tmp_path: Path) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    environment = {**os.environ, "MPLBACKEND": "Agg",
                   "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    command = [sys.executable, "-c", code] if language == "python" else ["bash", "-euo", "pipefail", "-c", code]
    completed = subprocess.run(command, cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, f"README.md:{line} failed:\n{completed.stdout[-2000:]}\n{completed.stderr[-3000:]}"
