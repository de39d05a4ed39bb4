"""The course folder nbgrader grades in: its gradebook and the notebooks each step leaves for a student.

nbgrader's layout, relative to the course root: ``gradebook.db``, ``course/A/A.ipynb`` (released),
``submitted/S/A/``, ``autograded/S/A/``, ``feedback/S/A/``.
"""

from __future__ import annotations

import shutil
from contextlib import contextmanager
from pathlib import Path

from gradelib import _notebooks

GRADEBOOK_FILE = "gradebook.db"


@contextmanager
def gradebook(root: Path):
    """nbgrader's ``Gradebook`` of the course at ``root``, open for the ``with`` block.

    The one place that spells the database URL; ``with gradebook(root) as gb: gb.find_assignment(...)``."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{Path(root) / GRADEBOOK_FILE}") as opened:
        yield opened


def student_notebook(root: Path, step: str, student: str, assignment: str) -> Path:
    """A student's notebook after an nbgrader step (``submitted``, ``autograded``)."""
    return root / step / student / assignment / f"{assignment}.ipynb"


def released_notebook(root: Path, assignment: str) -> Path:
    """The released notebook, generating it (and the gradebook's record of its cells) when missing."""
    from nbgrader.api import MissingEntry


    path = root / "course" / assignment / f"{assignment}.ipynb"
    if not path.exists() or not (root / GRADEBOOK_FILE).exists():
        _notebooks.generate_assignment(root, assignment)
        return path
    with gradebook(root) as gb:  # make sure the gradebook knows this assignment's cells
        try:
            gb.find_assignment(assignment)
            return path
        except MissingEntry:
            pass
    _notebooks.generate_assignment(root, assignment)
    return path


def clear_submission(root: Path, assignment: str, student: str) -> None:
    """Forget an earlier grading of this student: the gradebook's submission and the autograded and feedback folders."""
    from nbgrader.api import MissingEntry

    with gradebook(root) as gb:
        try:
            gb.remove_submission(assignment, student)
        except MissingEntry:
            pass
    for step in ("autograded", "feedback"):
        shutil.rmtree(root / step / student / assignment, ignore_errors=True)
