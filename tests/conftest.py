import shutil
from pathlib import Path

import pytest

from gradelib._notebooks import run_nbgrader

ROOT = Path(__file__).resolve().parents[1]


def assignment_names() -> list[str]:
    return sorted(p.name for p in (ROOT / "solutions").iterdir() if (p / f"{p.name}.ipynb").exists())


def nbgrader(*args: str, cwd: Path):
    """Run an nbgrader command in a course folder; fail the test with its output if it fails."""
    result = run_nbgrader(list(args), cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(f"nbgrader {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="session")
def released_course(tmp_path_factory) -> Path:
    """A scratch copy of the course in which nbgrader has generated every student version afresh."""
    root = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copytree(ROOT / "solutions", root / "solutions")
    for name in assignment_names():
        nbgrader("generate_assignment", name, "--create", "--force", cwd=root)
    return root
