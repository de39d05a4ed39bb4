"""Notebook 01 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import nbformat
import pytest
from roundtrip import grade, released_notebook, solution_path, with_edits

ASSIGNMENT = "01_attention"
TOTAL = 19.0

# Two plausible mistakes: an unstable softmax (exp without subtracting the row maximum) in
# exercise 1, and a wrong concept answer.
BUGS = {
    "ex1_sdpa": ("weights = torch.softmax(scores, dim=-1)", "weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)"),
    "q3_cross": ('answer_cross_attention = "B"', 'answer_cross_attention = "A"'),
}


@pytest.fixture(scope="module")
def graded(released_course):
    result = grade(released_course, ASSIGNMENT, {
        "solution": nbformat.read(solution_path(ASSIGNMENT), as_version=4),
        "untouched": released_notebook(released_course, ASSIGNMENT),
        "buggy": with_edits(ASSIGNMENT, BUGS),
    })
    print(f"\nautograde of 3 submissions of {ASSIGNMENT}: {result.seconds:.0f} s")
    return result


def test_solution_scores_full_marks(graded):
    assert graded.max_score == TOTAL
    assert graded.totals["solution"] == TOTAL


def test_untouched_student_notebook_scores_zero_without_crashing(graded):
    assert graded.totals["untouched"] == 0.0
    assert set(graded.cells["untouched"].values()) == {0}


def test_one_bug_gives_partial_credit_and_named_feedback(graded):
    cells = graded.cells["buggy"]
    assert cells["test_ex1_sdpa"] == pytest.approx(2.4)  # 4 of 5 cases pass
    assert cells["test_q3_cross"] == 0
    for name, score in cells.items():
        if name not in ("test_ex1_sdpa", "test_q3_cross"):
            assert score == graded.cell_max[name], name
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 0.6 - 1)
    feedback = graded.feedback["buggy"]
    assert "Scaled dot-product attention: 2.4 / 3 points" in feedback
    assert "large scores stay finite" in feedback and "NaN or inf" in feedback
