"""Notebook 01 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import grade_standard_submissions

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
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS)


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
