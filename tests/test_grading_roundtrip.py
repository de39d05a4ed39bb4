"""Notebook 01 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

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


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_one_bug_gives_partial_credit_and_named_feedback(graded):
    assert_only_these_cells_lost_points(graded, "buggy", {"test_ex1_sdpa": 2.4, "test_q3_cross": 0})  # 4 of 5 cases pass
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 0.6 - 1)
    feedback = graded.feedback["buggy"]
    assert "Scaled dot-product attention: 2.4 / 3 points" in feedback
    assert "large scores stay finite" in feedback and "NaN or inf" in feedback
