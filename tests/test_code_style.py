"""pyflakes over the package and the tests: no unused imports, no undefined or shadowed names."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Independent student answers: cell fragments that run in a notebook's namespace (torch, F, math, ...
# come from the notebook), so pyflakes would call those names undefined.
SNIPPETS = ROOT / "tests" / "fixtures" / "independent_solutions"


def test_pyflakes_is_clean():
    files = [str(p) for folder in ("gradelib", "tests") for p in sorted((ROOT / folder).rglob("*.py"))
             if SNIPPETS not in p.parents]
    result = subprocess.run([sys.executable, "-m", "pyflakes", *files], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
