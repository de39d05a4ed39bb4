"""generate_assignment -> submissions -> autograde -> generate_feedback -> export, headless."""

import csv
import shutil
import time

import nbformat
import pytest
from conftest import ROOT, nbgrader

ASSIGNMENT = "01_attention"
TOTAL = 19.0


def buggy_submission(solution_path, target_path):
    """The solution with two plausible mistakes: an unstable softmax (exp without subtracting the max)
    in exercise 1, and a wrong concept answer."""
    nb = nbformat.read(solution_path, as_version=4)
    edits = {
        "ex1_sdpa": ("weights = torch.softmax(scores, dim=-1)",
                     "weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)"),
        "q3_cross": ('answer_cross_attention = "B"', 'answer_cross_attention = "A"'),
    }
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in edits:
            old, new = edits.pop(grade_id)
            assert old in cell.source
            cell.source = cell.source.replace(old, new)
    assert not edits
    nbformat.write(nb, target_path)


@pytest.fixture(scope="module")
def graded(released_course):
    root = released_course
    released = root / "course" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    solution = ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
    for student in ("solution", "untouched", "buggy"):
        folder = root / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        target = folder / f"{ASSIGNMENT}.ipynb"
        if student == "solution":
            shutil.copy(solution, target)
        elif student == "untouched":
            shutil.copy(released, target)
        else:
            buggy_submission(solution, target)
    start = time.perf_counter()
    nbgrader("autograde", ASSIGNMENT, "--create", "--force", cwd=root)
    seconds = time.perf_counter() - start
    print(f"\nautograde of 3 submissions of {ASSIGNMENT}: {seconds:.0f} s")
    nbgrader("generate_feedback", ASSIGNMENT, "--force", cwd=root)
    nbgrader("export", cwd=root)
    with open(root / "grades.csv") as f:
        scores = {row["student_id"]: row for row in csv.DictReader(f)}
    return root, scores


def cell_scores(root, student):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        notebook = gradebook.find_submission_notebook(ASSIGNMENT, ASSIGNMENT, student)
        return {grade.name: grade.score for grade in notebook.grades}


def test_solution_scores_full_marks(graded):
    root, scores = graded
    assert float(scores["solution"]["max_score"]) == TOTAL
    assert float(scores["solution"]["score"]) == TOTAL


def test_untouched_student_notebook_scores_zero(graded):
    root, scores = graded
    assert float(scores["untouched"]["score"]) == 0.0
    assert all(score == 0 for score in cell_scores(root, "untouched").values())


def test_one_bug_gives_partial_credit_and_named_feedback(graded):
    root, scores = graded
    per_cell = cell_scores(root, "buggy")
    assert per_cell["test_ex1_sdpa"] == pytest.approx(2.4)  # 4 of 5 cases pass
    assert per_cell["test_q3_cross"] == 0
    for name, score in per_cell.items():
        if name not in ("test_ex1_sdpa", "test_q3_cross"):
            assert score == cell_max_points(root, name), name
    assert float(scores["buggy"]["score"]) == pytest.approx(TOTAL - 0.6 - 1)
    feedback = (root / "feedback" / "buggy" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()
    assert "Scaled dot-product attention: 2.4 / 3 points" in feedback
    assert "large scores stay finite" in feedback and "NaN or inf" in feedback


def cell_max_points(root, grade_id):
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        return gradebook.find_grade_cell(grade_id, ASSIGNMENT, ASSIGNMENT).max_score
