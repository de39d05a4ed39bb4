"""Stage 1 of a batch: find the submissions, inspect each one, and copy the readable ones into ``submitted/``.

Inspection reports unreadable JSON instead of crashing on it, and flags edited or deleted locked cells as
``tampered`` (nbgrader restores them, so the score is as if they had not been touched).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbgrader.utils import is_locked

from gradelib.grading.course import clear_submission, student_notebook
from gradelib.grading.result import Result, Status


def find_submissions(directory: Path, assignment: str) -> dict[str, Path]:
    """student -> notebook, from nbgrader's layout (DIR/student/assignment/assignment.ipynb) or DIR/student.ipynb."""
    found = {}
    for path in sorted(directory.glob(f"*/{assignment}/{assignment}.ipynb")):
        found[path.parent.parent.name] = path
    for path in sorted(directory.glob("*.ipynb")):
        found.setdefault(path.stem, path)
    return found


def shard(students: list[str], spec: str | None) -> list[str]:
    """Students of shard ``i/N`` (1-based): every N-th student of the sorted list, starting at the i-th."""
    if not spec:
        return students
    index, count = (int(part) for part in spec.split("/"))
    if not 1 <= index <= count:
        raise ValueError(f"--shard must be i/N with 1 <= i <= N, got {spec}")
    return sorted(students)[index - 1::count]


def _locked_sources(nb) -> dict[str, str]:
    """grade_id -> source of every cell nbgrader restores from the gradebook (nbgrader's own ``is_locked``)."""
    return {cell.metadata["nbgrader"].get("grade_id", ""): cell.source for cell in nb.cells if is_locked(cell)}


def inspect_submission(path: Path, released) -> tuple[object | None, list[str]]:
    """(notebook or None if unreadable, list of tampering findings) for one submitted file."""
    try:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
    except Exception as error:  # truncated JSON, wrong format, not a notebook at all
        return None, [f"unreadable: {type(error).__name__}: {str(error)[:200]}"]
    submitted = _locked_sources(nb)
    findings = []
    for grade_id, source in _locked_sources(released).items():
        if grade_id not in submitted:
            findings.append(f"locked cell {grade_id} was deleted (restored for grading)")
        elif submitted[grade_id].strip() != source.strip():
            findings.append(f"locked cell {grade_id} was edited (restored for grading)")
    return nb, findings


def stage_submissions(root: Path, assignment: str, submissions: dict[str, Path], released,
                      results: dict[str, Result]) -> dict:
    """Inspect every submission, forget any earlier grading of it, and copy the readable ones into
    ``submitted/``; findings go into ``results``. Returns student -> notebook for those staged."""
    staged = {}
    for student, path in submissions.items():
        result = results[student]
        nb, findings = inspect_submission(path, released)
        clear_submission(root, assignment, student)
        result.notes = findings
        if nb is None:
            result.status = Status.UNREADABLE
            continue
        target = student_notebook(root, "submitted", student, assignment)
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        staged[student] = nb
    return staged
