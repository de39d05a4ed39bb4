"""Executing and locating course notebooks (shared by the CLI, the benchmark and the tests)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import nbformat

CHECK_OUTPUT_MARK = "# NBVAL_CHECK_OUTPUT"


def project_root(start: Path | None = None) -> Path:
    """The repository root: the nearest folder above ``start`` (default: cwd) holding nbgrader_config.py."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "nbgrader_config.py").exists() and (folder / "solutions").is_dir():
            return folder
    raise FileNotFoundError("run this from inside the course repository (no nbgrader_config.py with a solutions/ folder found)")


def assignments(root: Path) -> list[str]:
    """Assignment names in course order (01_attention, 02_bert, ...)."""
    return sorted(p.name for p in (root / "solutions").iterdir() if (p / f"{p.name}.ipynb").exists())


def solution_notebook(root: Path, name_or_path: str) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".ipynb" and candidate.exists():
        return candidate.resolve()
    name = candidate.stem
    path = root / "solutions" / name / f"{name}.ipynb"
    if not path.exists():
        raise FileNotFoundError(f"no solution notebook for {name_or_path!r} (looked for {path})")
    return path


def _set_environment(variables: dict[str, str | None]) -> None:
    """Set each variable, or unset it where its value is None."""
    for key, value in variables.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@contextmanager
def environment(**variables: str | None):
    """Temporarily set (or, with None, unset) environment variables; kernels inherit them."""
    saved = {key: os.environ.get(key) for key in variables}
    try:
        _set_environment(variables)
        yield
    finally:
        _set_environment(saved)


def execute_notebook(path: Path, *, profile: str, timeout: int = 900, allow_errors: bool = False,
                     extra_env: dict[str, str | None] | None = None, kernel_manager_class=None):
    """Run a notebook top to bottom in a fresh kernel of this Python; return (notebook, seconds)."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=allow_errors,
        # Always on (nbclient's default): with it off, nbclient 0.11 raises KeyError whenever an Output widget
        # receives output, and the course site reads the widget state to freeze explorers into pictures.
        store_widget_state=True,
        resources={"metadata": {"path": str(path.parent)}},
        **({"kernel_manager_class": kernel_manager_class} if kernel_manager_class else {}),
    )
    with environment(GRADELIB_PROFILE=profile, MPLBACKEND=None, **(extra_env or {})):
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    return nb, seconds


def nbgrader_environment() -> dict[str, str]:
    """The environment to run nbgrader in with this Python. nbgrader itself shells out to `alembic`, found on
    PATH, so the folder of this interpreter's scripts (the venv's bin/) goes first on PATH even when it is not
    activated."""
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def run_nbgrader(args: list[str], cwd: Path, **kwargs) -> subprocess.CompletedProcess:
    """Run nbgrader with this Python (in :func:`nbgrader_environment`)."""
    return subprocess.run([sys.executable, "-m", "nbgrader", *args, "--log-level=WARN"], cwd=cwd,
                          env=nbgrader_environment(), **kwargs)


def generate_assignment(root: Path, assignment: str) -> None:
    """Regenerate course/<assignment>/ from solutions/<assignment>/ with nbgrader's own generate_assignment."""
    run_nbgrader(["generate_assignment", assignment, "--force", "--create"], cwd=root, check=True)
