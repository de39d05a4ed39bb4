"""The nbgrader round trip as a reusable helper: submit notebooks, autograde, feedback, export.

tests/test_grading_roundtrip.py holds one ``RoundTrip`` per assignment: its total and its ``Planted``
submissions (the solution with plausible mistakes, and what grading must make of each). ``grade_round_trip``
grades them with the solution and the untouched student version; the ``assert_*`` helpers check the scores
and the feedback.
"""

from __future__ import annotations

import csv
import html
import math
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import nbformat
import pytest
from conftest import ROOT, nbgrader

from gradelib._notebooks import nbgrader_environment


@dataclass
class Graded:
    seconds: float
    max_score: float
    totals: dict[str, float]            # student -> total score
    cells: dict[str, dict[str, float]]  # student -> grade_id -> score
    cell_max: dict[str, float]          # grade_id -> points
    feedback: dict[str, str]            # student -> feedback HTML


@dataclass(frozen=True)
class Planted:
    """A submission with planted mistakes, and what grading must make of it."""

    edits: Mapping[str, tuple[str, str]]  # answer cell's grade_id -> (old, new) in the solution's source
    scores: Mapping[str, float]           # grade cell's grade_id -> its score; every other cell earns full marks
    points_lost: float                    # the total is the assignment's total less this
    feedback: tuple[str, ...]             # each appears in the feedback as the student reads it
    repeated: Mapping[str, int] = field(default_factory=dict)  # text -> the fewest times the feedback says it


@dataclass(frozen=True)
class RoundTrip:
    """One assignment's round trip: the solution earns ``total``, the untouched notebook 0, each planted
    submission (student name -> Planted) what its Planted says."""

    assignment: str
    total: float
    planted: Mapping[str, Planted]


def as_read(page: str) -> str:
    """A feedback page as the student reads it: tags dropped (highlighted source splits lines into spans),
    entities decoded."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def solution_path(assignment: str) -> Path:
    return ROOT / "solutions" / assignment / f"{assignment}.ipynb"


def with_edits(assignment: str, edits: dict[str, tuple[str, str]]):
    """A submission: the solution with `old` replaced by `new` in the cells named by grade_id."""
    nb = nbformat.read(solution_path(assignment), as_version=4)
    pending = dict(edits)
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in pending:
            old, new = pending.pop(grade_id)
            assert old in cell.source, f"{grade_id}: {old!r} not found"
            cell.source = cell.source.replace(old, new)
    assert not pending, f"no cells named {sorted(pending)}"
    return nb


def autograde_in_parallel(course: Path, assignment: str, students: list[str], workers: int = 2) -> None:
    """``nbgrader autograde --student`` for each of ``students``, ``workers`` at a time (one core each, the way
    ``gradelib grade --workers`` runs them), longest first: the untouched notebook stops at its first unanswered
    exercise, so it goes last. The same nbgrader command as one serial autograde, only one student per process."""
    env = nbgrader_environment()
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
    order = sorted(students, key=lambda student: student == "untouched")

    def autograde(student: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "nbgrader", "autograde", assignment, f"--student={student}",
                               "--create", "--force", "--log-level=WARN"], cwd=course, env=env,
                              capture_output=True, text=True)

    with ThreadPoolExecutor(max_workers=workers) as pool:
        for student, result in zip(order, pool.map(autograde, order)):
            if result.returncode != 0:
                pytest.fail(f"nbgrader autograde --student={student} failed:\n{result.stdout}\n{result.stderr}")


def grade(course: Path, assignment: str, submissions: dict[str, nbformat.NotebookNode]) -> Graded:
    """Autograde ``submissions`` (student -> notebook) in the released ``course``; gather the results."""
    for student, nb in submissions.items():
        folder = course / "submitted" / student / assignment
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        nbformat.write(nb, folder / f"{assignment}.ipynb")
    start = time.perf_counter()
    autograde_in_parallel(course, assignment, list(submissions))
    seconds = time.perf_counter() - start
    nbgrader("generate_feedback", assignment, "--force", cwd=course)
    nbgrader("export", cwd=course)
    with open(course / "grades.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["assignment"] == assignment and row["student_id"] in submissions]

    from gradelib import grading

    with grading.gradebook(course) as gradebook:
        cells = {s: {g.name: g.score for g in gradebook.find_submission_notebook(assignment, assignment, s).grades}
                 for s in submissions}
        cell_max = {c.name: c.max_score for c in gradebook.find_notebook(assignment, assignment).grade_cells}
    feedback = {s: (course / "feedback" / s / assignment / f"{assignment}.html").read_text() for s in submissions}
    assert_feedback_hides_hidden_tests(assignment, feedback)
    return Graded(seconds=seconds, max_score=float(rows[0]["max_score"]),
                  totals={row["student_id"]: float(row["score"]) for row in rows},
                  cells=cells, cell_max=cell_max, feedback=feedback)


def assert_feedback_hides_hidden_tests(assignment: str, feedback: dict[str, str]) -> None:
    """No feedback page quotes a line of a hidden test (its seeds, its expected answers) or an answer key."""
    from gradelib.grading import hidden

    solution = nbformat.read(solution_path(assignment), as_version=4)
    originals = {c.metadata.nbgrader.grade_id: c.source for c in solution.cells
                 if c.metadata.get("nbgrader", {}).get("grade")}
    secrets = hidden.quoted_lines(originals)
    assert secrets, "the solution has hidden tests"
    for student, page in feedback.items():
        text = as_read(page)
        assert not hidden.quotes_hidden(text, secrets), f"{student}'s feedback quotes a hidden test"
        assert "expected=" not in text and "BEGIN HIDDEN TESTS" not in text, student


NUMBER = re.compile(r"(?<![\w.])-?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])|(?<![\w.])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?!\d)")


def _copies(text: str, expected: object, kind: str, rel_tol: float) -> str | None:
    """A spelling in ``text`` of an answer the check accepts, or None. Numbers count when they carry 3 or more
    significant digits (whole numbers: from 100 up), index sets when written as a set or list of 2 or more;
    letters and short numbers are too common in any text to mean a leak."""
    if kind == "indices":
        listed = ", ".join(map(str, sorted(expected)))
        return next((s for s in (f"{{{listed}}}", f"[{listed}]") if len(expected) >= 2 and s in text), None)
    if kind not in ("number", "integer") or isinstance(expected, bool):
        return None
    for match in NUMBER.finditer(text):
        token = match.group()
        value = float(token.replace(",", ""))
        mantissa = re.split(r"[eE]", token)[0]
        significant = len(re.sub(r"\D", "", mantissa).lstrip("0"))
        if kind == "integer":
            if value == expected and abs(value) >= 100:
                return token
        elif significant >= 3 and math.isclose(value, float(expected), rel_tol=rel_tol):
            return token
    return None


def _shown_text(cell) -> str:
    if cell.cell_type == "markdown":
        return cell.source
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif output.output_type in ("execute_result", "display_data"):
            parts += [str(output.data[mime]) for mime in ("text/plain", "text/markdown", "text/latex")
                      if mime in output.get("data", {})]
    return "\n".join(parts)


def answers_shown_before_their_question(solution_nb, executed_nb) -> list[str]:
    """Concept and prediction answers a student could copy: each answer key of ``solution_nb``'s hidden tests whose
    accepted answer appears in ``executed_nb`` (the same notebook, run) before its question, in an earlier cell's
    output or an earlier markdown cell."""
    from gradelib.grading import hidden

    keys = {c.metadata.nbgrader.grade_id: [k for part in hidden.hidden_parts(c.source) for k in hidden.answer_keys(part)]
            for c in solution_nb.cells if c.metadata.get("nbgrader", {}).get("grade")}
    found, shown = [], []
    for cell in executed_nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        for key in keys.get(grade_id, []):
            for where, text in enumerate(shown):
                spelling = _copies(text, key.expected, key.kind, key.rel_tol)
                if spelling is not None:
                    found.append(f"{grade_id} ({key.label}): an accepted answer, {spelling}, is shown in cell {where}")
                    break
        shown.append(_shown_text(cell))
    return found


def released_notebook(course: Path, assignment: str):
    return nbformat.read(course / "course" / assignment / f"{assignment}.ipynb", as_version=4)


def grade_round_trip(course: Path, trip: RoundTrip) -> Graded:
    """Grade the solution, the untouched student version and each of ``trip``'s planted submissions; check
    that no answer is shown before its question and that the untouched notebook's items say so."""
    assignment = trip.assignment
    submissions = {
        "solution": nbformat.read(solution_path(assignment), as_version=4),
        "untouched": released_notebook(course, assignment),
    } | {student: with_edits(assignment, planted.edits) for student, planted in trip.planted.items()}
    result = grade(course, assignment, submissions)
    print(f"\nautograde of {len(submissions)} submissions of {assignment}: {result.seconds:.0f} s")
    executed = nbformat.read(course / "autograded" / "solution" / assignment / f"{assignment}.ipynb", as_version=4)
    copyable = answers_shown_before_their_question(submissions["solution"], executed)
    assert not copyable, "concept or prediction answers printed before their question:\n" + "\n".join(copyable)
    untouched = nbformat.read(course / "autograded" / "untouched" / assignment / f"{assignment}.ipynb", as_version=4)
    assert_unanswered_items_say_so(untouched)
    return result


def assert_unanswered_items_say_so(executed_untouched) -> None:
    """In the untouched notebook, every derivation, prediction and concept item says "no answer yet", never a
    NameError: its answer cell defines the variable (as None) before the student writes anything."""
    for cell in executed_untouched.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if not cell.metadata.get("nbgrader", {}).get("grade") or grade_id.split("_")[0] not in ("derive", "predict", "concept"):
            continue
        text = "\n".join(str(o.get("text", "")) + str(o.get("evalue", "")) + "".join(o.get("traceback", []))
                         for o in cell.outputs)
        assert "NameError" not in text and "no answer yet" in text, f"{grade_id}: {text[-300:]}"


def assert_solution_full_and_untouched_zero(graded: Graded, total: float) -> None:
    """The solution earns every point; the untouched student version earns none, and grading did not crash."""
    assert graded.max_score == total
    assert graded.totals["solution"] == total
    assert graded.totals["untouched"] == 0.0
    assert set(graded.cells["untouched"].values()) == {0}


def assert_only_these_cells_lost_points(graded: Graded, student: str, expected: dict[str, float]) -> None:
    """``student`` scored ``expected`` (grade_id -> score) in those cells and full marks everywhere else."""
    for name, score in graded.cells[student].items():
        assert score == pytest.approx(expected.get(name, graded.cell_max[name])), name


def assert_planted_mistakes_graded(graded: Graded, student: str, planted: Planted, total: float) -> None:
    """``student``'s planted mistakes cost exactly their cells' points, and the feedback names them."""
    assert_only_these_cells_lost_points(graded, student, planted.scores)
    assert graded.totals[student] == pytest.approx(total - planted.points_lost)
    feedback = as_read(graded.feedback[student])
    for text in planted.feedback:
        assert text in feedback, text
    for text, times in planted.repeated.items():
        assert feedback.count(text) >= times, text
