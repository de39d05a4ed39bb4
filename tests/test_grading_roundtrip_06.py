"""Notebook 06 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import html
import re

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "06_ddpm"
TOTAL = 25.0  # code 12, derive 7, predict 2, concept 4

# Plausible mistakes, each costing only its own cell: the posterior takes ᾱ_(t−1) as alpha_bars[t − 1], right except
# at t = 0 where it wraps round to the last entry (4 of 5 cases pass); a wrong concept answer the question diagnoses;
# derivation 2 with √ᾱ_t where √α_t belongs in the x_t coefficient (right at t = 1 only: one of its three results);
# derivation 3 without the ½ of the KL in the weight (one of its two results); and prediction 2 made with the notes'
# rule x_t − ε. A second student forgets the square root on q_sample's noise coefficient (every case fails).
BUGS = {
    "posterior_mean_variance": ("alpha_bars_prev[t].view(shape)", "alpha_bars[t - 1].view(shape)"),
    "short_chain": ('answer_short_chain = "B"\n', 'answer_short_chain = "C"\n'),
    "posterior": ("coef_xt = beta_tilde * sympy.sqrt(alpha_t) / beta_t", "coef_xt = beta_tilde * sympy.sqrt(abar_t) / beta_t"),
    "elbo_term": ("weight = beta_t**2 / (2 * beta_t * alpha_t * (1 - abar_t))", "weight = beta_t**2 / (beta_t * alpha_t * (1 - abar_t))"),
    "backward_example": ("predicted_reverse_mean = (2.0 - 0.5 / math.sqrt(1 - 0.5) * 0.9) / math.sqrt(0.5)",
                         "predicted_reverse_mean = 2.0 - 0.9"),
}
NO_SQRT = {
    "q_sample": ("noise_scale = (1 - alpha_bars[t]).sqrt().view(shape)", "noise_scale = (1 - alpha_bars[t]).view(shape)"),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS, no_sqrt=NO_SQRT)


def text(page: str) -> str:
    """A feedback page as the student reads it (tags dropped, entities decoded)."""
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_each_bug_costs_its_own_cell_and_is_named_in_the_feedback(graded):
    assert_only_these_cells_lost_points(graded, "buggy", {"code_posterior_mean_variance": 2.4, "concept_short_chain": 0,
                                                          "derive_posterior": 2, "derive_elbo_term": 1,
                                                          "predict_backward_example": 0})
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 0.6 - 1 - 1 - 1 - 1)
    feedback = text(graded.feedback["buggy"])
    assert "posterior_mean_variance: 2.4 / 3 points" in feedback
    assert "wraps round to alpha_bars[−1] at t = 0" in feedback
    assert "The posterior q(x_(t−1) | x_t, x_0): 2 / 3 points" in feedback
    assert "correct at t = 1 (ᾱ_0 = 1) but not in general" in feedback
    assert "One ELBO term L_(t−1) for 1-D data, σ_t² = β_t: 1 / 2 points" in feedback
    assert "off by a constant factor (×2)" in feedback
    assert "that is the notes' rule x_t - eps" in feedback
    assert "no trainable parameters: no loss can reduce it" in feedback


def test_a_missing_square_root_is_named(graded):
    assert_only_these_cells_lost_points(graded, "no_sqrt", {"code_q_sample": 0})
    feedback = text(graded.feedback["no_sqrt"])
    assert "q_sample: 0 / 2 points" in feedback
    assert "the noise coefficient lacks its square root" in feedback
