"""Stage 4 of a batch: scores from the gradebook and the seal's findings into each student's ``Result``."""

from __future__ import annotations

from pathlib import Path

from gradelib.grading.course import gradebook
from gradelib.grading.result import Result, Status


def read_scores(root: Path, assignment: str, result: Result) -> None:
    """The assignment's maximum, and the student's total and per-cell scores if nbgrader recorded any."""
    from nbgrader.api import MissingEntry

    with gradebook(root) as gb:
        result.max_score = float(gb.find_assignment(assignment).max_score)
        try:
            submission = gb.find_submission_notebook(assignment, assignment, result.student)
        except MissingEntry:
            return
        result.cells = {grade.name: float(grade.score) for grade in submission.grades}
        result.score = float(submission.score)


def collect_results(root: Path, assignment: str, results: dict[str, Result], sealed: dict[str, list[str]]) -> None:
    """Scores into ``results``; ``sealed``: student -> the hidden-test seal's findings, for the students graded
    to the end. A student whose grading failed scores 0; any finding makes an ``ok`` student ``tampered``."""
    for result in results.values():
        read_scores(root, assignment, result)
        if not result.status.graded and result.student not in sealed:
            result.score, result.cells = 0.0, {}
        result.notes += sealed.get(result.student, [])
        if result.status == Status.OK and result.notes:
            result.status = Status.TAMPERED
