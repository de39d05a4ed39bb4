"""Notebook 06 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "06_ddpm"
TOTAL = 14.0

# Plausible mistakes: the posterior takes ᾱ_(t−1) as alpha_bars[t − 1], right except at t = 0 where it wraps round
# to the last entry (4 of 5 cases pass), and a wrong concept answer; a second student forgets the square root on
# q_sample's noise coefficient (a variance where a standard deviation belongs: every case fails).
BUGS = {
    "ex2_posterior": ("alpha_bars_prev[t].view(shape)", "alpha_bars[t - 1].view(shape)"),
    "q4_elbo": ('answer_constant_term = "A"', 'answer_constant_term = "C"'),
}
NO_SQRT = {
    "ex1_q_sample": ("noise_scale = (1 - alpha_bars[t]).sqrt().view(shape)", "noise_scale = (1 - alpha_bars[t]).view(shape)"),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS, no_sqrt=NO_SQRT)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_bugs_give_partial_credit_and_named_feedback(graded):
    assert_only_these_cells_lost_points(graded, "buggy", {"test_ex2_posterior": 2.4, "test_q4_elbo": 0})
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 0.6 - 1)
    feedback = graded.feedback["buggy"]
    assert "posterior_mean_variance: 2.4 / 3 points" in feedback
    assert "wraps round to alpha_bars[−1] at t = 0" in feedback


def test_a_missing_square_root_is_named(graded):
    assert_only_these_cells_lost_points(graded, "no_sqrt", {"test_ex1_q_sample": 0})
    feedback = graded.feedback["no_sqrt"]
    assert "q_sample: 0 / 2 points" in feedback
    assert "the noise coefficient lacks its square root" in feedback
