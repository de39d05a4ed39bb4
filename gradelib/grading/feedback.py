"""Stage 3 of a batch: feedback HTML for every student whose autograded notebook the hidden-test seal finished.

nbgrader's ``generate_feedback`` renders the autograded notebook. Only a notebook that went through
``gradelib.grading.hidden.SealFeedback`` has its hidden tests cut out, so no other gets feedback.
"""

from __future__ import annotations

from pathlib import Path

import nbformat

from gradelib import _notebooks
from gradelib.grading.course import student_notebook


def seal_findings(root: Path, assignment: str, student: str) -> list[str] | None:
    """What the hidden-test seal found while grading (quoted hidden source, forged results), or None when
    the autograded notebook was not sealed (nbgrader did not finish it): then no feedback is made from it."""
    try:
        nb = nbformat.read(student_notebook(root, "autograded", student, assignment), as_version=4)
    except (OSError, ValueError):
        return None
    seal = nb.metadata.get("gradelib", {})
    return list(seal.get("findings", [])) if seal.get("hidden_tests_sealed") else None


def generate_feedback(root: Path, assignment: str, students: list[str]) -> dict[str, list[str]]:
    """Feedback for each of ``students`` whose notebook was sealed; returns student -> seal findings for those."""

    sealed = {student: seal_findings(root, assignment, student) for student in students}
    graded = {student: findings for student, findings in sealed.items() if findings is not None}
    for student in graded:
        _notebooks.run_nbgrader(["generate_feedback", assignment, f"--student={student}", "--force"], cwd=root,
                                capture_output=True)
    return graded
