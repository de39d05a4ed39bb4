"""Notebook 09 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "09_tvlt"
TOTAL = 18.0

# Two plausible mistakes: a random mask with 1 on the *kept* patches (MAE's convention inverted), and a
# wrong concept answer (a joint decoder, which the paper's ablation found worse).
BUGS = {
    "ex4_masking": ("mask[:, :keep] = 0", "mask[:, keep:] = 0"),
    "q1_ablation": ('answer_ablation = "B"', 'answer_ablation = "C"'),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_one_bug_gives_partial_credit_and_named_feedback(graded):
    # Only the reproducibility case passes: 1 of 5 cases, 3 x 1/5 = 0.6 points.
    assert_only_these_cells_lost_points(graded, "buggy", {"test_ex4_masking": 0.6, "test_q1_ablation": 0})
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 2.4 - 1)
    feedback = graded.feedback["buggy"]
    assert "Random masking: 0.6 / 3 points" in feedback
    assert "the mask is inverted" in feedback
