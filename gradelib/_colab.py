"""The "Open in Colab" badge and the set-up cell of every notebook, both derived from one setting:
``[project.urls] Repository`` in pyproject.toml. ``gradelib release`` rewrites them in the solution
notebook before generating the student version, so changing the URL there updates every notebook."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import nbformat

BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
SETUP_MARK = "# Set-up (safe to rerun)."
_BADGE_LINE = re.compile(r"\A\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)\n*")


def repository_url(root: Path) -> str:
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["urls"]["Repository"].rstrip("/")


def colab_url(repository: str, name: str, branch: str = "main") -> str:
    """Colab opens notebooks straight from GitHub: .../github/ORG/REPO/blob/BRANCH/PATH."""
    match = re.fullmatch(r"https://github\.com/([^/]+)/([^/]+?)(?:\.git)?", repository)
    if not match:
        raise ValueError(f"the Repository URL must be a GitHub repository for Colab links, got {repository!r}")
    org, repo = match.groups()
    return f"https://colab.research.google.com/github/{org}/{repo}/blob/{branch}/course/{name}/{name}.ipynb"


def badge_markdown(repository: str, name: str) -> str:
    return f"[![Open In Colab]({BADGE_IMAGE})]({colab_url(repository, name)})"


def setup_cell_source(repository: str) -> str:
    # Only on Colab, and only once: a rerun finds gradelib and does nothing. gradelib asks for torch>=2.2, which
    # Colab's torch (CPU or CUDA build, any runtime) satisfies, so pip leaves it alone.
    return (f"{SETUP_MARK} On Colab, install the course package; Colab's own torch is kept.\n"
            "import importlib.util, subprocess, sys\n"
            'if "google.colab" in sys.modules and importlib.util.find_spec("gradelib") is None:\n'
            f'    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "gradelib @ git+{repository}"], check=True)')


def sync_notebook(nb, repository: str, name: str) -> bool:
    """Put the badge atop the title cell and the set-up cell right after it; return whether anything changed."""
    before = [cell.source for cell in nb.cells[:2]]
    title = nb.cells[0]
    if title.cell_type != "markdown":
        raise ValueError(f"{name}: the first cell should be the title (markdown)")
    title.source = badge_markdown(repository, name) + "\n\n" + _BADGE_LINE.sub("", title.source)
    setup = [i for i, cell in enumerate(nb.cells) if cell.cell_type == "code" and cell.source.startswith(SETUP_MARK)]
    if setup:
        nb.cells.insert(1, nb.cells.pop(setup[0]))
        nb.cells[1].source = setup_cell_source(repository)
    else:
        nb.cells.insert(1, nbformat.v4.new_code_cell(setup_cell_source(repository)))
    return [cell.source for cell in nb.cells[:2]] != before


def sync_solution(root: Path, name: str) -> bool:
    path = root / "solutions" / name / f"{name}.ipynb"
    nb = nbformat.read(path, as_version=4)
    changed = sync_notebook(nb, repository_url(root), name)
    if changed:
        nbformat.write(nb, path)
    return changed
