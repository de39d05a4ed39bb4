"""Notebook 08 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "08_clip"
TOTAL = 21.0  # code 11, derivations 4, prediction 1, concept questions 5

# Plausible mistakes: the logit scale left unclamped (right until log_scale passes log 100), padding kept as a
# caption target, the −1 of the target forgotten in the gradient of InfoNCE, the softmax of the raw cosines
# predicted (the temperature forgotten), and more varied few-shot examples taken to be always better.
BUGS = {
    "infonce": ("logits = log_scale.clamp(max=math.log(100)).exp() * image @ text.T",
                "logits = log_scale.exp() * image @ text.T"),
    "targets": ("next_tokens.masked_fill(next_tokens == pad_id, -100)", "next_tokens"),
    "infonce_gradient": ("grad_positive = sympy.exp(l1) / partition - 1", "grad_positive = sympy.exp(l1) / partition"),
    "initial_softmax": ("predicted_best_probability = 0.578", "predicted_best_probability = 0.350"),
    "few_shot": ('answer_few_shot = "B"', 'answer_few_shot = "C"'),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_bugs_give_partial_credit_and_named_feedback(graded):
    print(graded.cells["buggy"])
    assert_only_these_cells_lost_points(graded, "buggy", {"code_infonce": 2.25, "code_targets": 0, "derive_infonce_gradient": 1,
                                                          "predict_initial_softmax": 0, "concept_few_shot": 0})
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 0.75 - 2 - 1 - 1 - 1)
    feedback = graded.feedback["buggy"]
    assert "Symmetric InfoNCE: 2.25 / 3 points" in feedback and "not clamped" in feedback
    assert "Caption targets: 0 / 2 points" in feedback and "padding is a target" in feedback
    assert "The gradient of InfoNCE: 1 / 2 points" in feedback and "off by an additive constant" in feedback
    assert "softmax of the raw cosines" in feedback
    assert "varied examples help only when" in feedback
