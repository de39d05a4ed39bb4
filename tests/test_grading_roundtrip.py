"""Notebook 01 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "01_attention"
TOTAL = 29.0  # code 17, derive 4, predict 3, concept 5

# Plausible mistakes: an unstable softmax (exp without subtracting the row maximum) in exercise 1, a wrong
# concept answer, a derivation that forgets to divide by √d_k (one of its two results wrong), and the notes' own value
# as the prediction.
BUGS = {
    "sdpa": ("weights = torch.softmax(scores, dim=-1)", "weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)"),
    "cross_attention": ('answer_cross_attention = "B"', 'answer_cross_attention = "C"'),
    "scaling": ("std_scaled = sympy.sqrt(var_qk / d_k)", "std_scaled = sympy.sqrt(var_qk)"),
    "example_2_score": ("predicted_top_left_score = 9 / math.sqrt(2)", "predicted_top_left_score = 1.636"),
}
# One slip in exercise 1 (no 1/√d_k), on which exercises 4, 6 and 7 build: it costs exercise 1 only.
NO_SCALE = {
    "sdpa": ("scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)", "scores = q @ k.transpose(-2, -1)"),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS, no_scale=NO_SCALE)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_bugs_give_partial_credit_and_named_feedback(graded):
    assert_only_these_cells_lost_points(graded, "buggy", {"code_sdpa": 2.4, "concept_cross_attention": 0,  # 4 of 5 cases
                                                          "derive_scaling": 1.0, "predict_example_2_score": 0})
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 0.6 - 1 - 1 - 1)
    feedback = graded.feedback["buggy"]
    assert "Scaled dot-product attention: 2.4 / 3 points" in feedback
    assert "large scores stay finite" in feedback and "NaN or inf" in feedback
    assert "Why √d_k: the variance of q·k: 1 / 2 points" in feedback and "depends on d_k, which it should not" in feedback
    assert "recompute K = X W_K for this X" in feedback
    assert "the queries come from the caption being generated" in feedback


def test_a_slip_in_exercise_1_costs_exercise_1_only(graded):
    assert_only_these_cells_lost_points(graded, "no_scale", {"code_sdpa": 0})
    feedback = graded.feedback["no_scale"]
    assert "1/√d_k scaling missing" in feedback
    assert feedback.count("fix exercise 1 (scaled_dot_product_attention)") >= 3  # in exercises 4, 6 and 7
