"""Notebook 03 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "03_gpt"
TOTAL = 28.0  # code 16, derive 5, predict 1, concept 6

# Plausible mistakes, each costing only its own cell: a causal-LM loss whose mask also lets each position see
# the next token (a look-ahead mask), a perplexity that reads a loss in bits as nats, "temperature 0 is greedy,
# so the top token gets probability 1" in derivation 2 (one of its two results), and a prediction that takes the
# arithmetic mean of 1/p.
BUGS = {
    "lm_loss": ("logits = model(inputs, causal_mask(inputs.shape[1], inputs.device))",
                "logits = model(inputs, torch.ones(inputs.shape[1], inputs.shape[1], dtype=torch.bool).tril(1))"),
    "ppl_bits": ("answer_perplexity = 2 ** 2.5", "answer_perplexity = math.exp(2.5)"),
    "temperature_limits": ("p_cold = 1 / k", "p_cold = k / k"),
    "nll_example": ("predicted_perplexity = (2 * 4 * 8 * 2) ** (1 / 4)", "predicted_perplexity = (2 + 4 + 8 + 2) / 4"),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_bugs_cost_only_their_own_cells_and_are_named_in_the_feedback(graded):
    assert_only_these_cells_lost_points(graded, "buggy", {"code_lm_loss": 0, "concept_ppl_bits": 0,
                                                          "derive_temperature_limits": 1, "predict_nll_example": 0})
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 3 - 1 - 1 - 1)
    feedback = graded.feedback["buggy"]
    assert "Causal language-modelling loss: 0 / 3 points" in feedback
    assert "look-ahead mask" in feedback
    assert "Temperature limits: 1 / 2 points" in feedback
    assert "misses a dependence on k" in feedback
    assert "that reads the loss as nats" in feedback
    assert "that is the arithmetic mean of 1/p" in feedback
