"""Notebook 03 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "03_gpt"
TOTAL = 21.0

# Two plausible mistakes: a causal-LM loss whose mask also lets each position see the next token
# (a look-ahead mask), and a concept answer that forgets the exponential (perplexity = the loss).
BUGS = {
    "ex1_lm_loss": ("logits = model(inputs, causal_mask(inputs.shape[1], inputs.device))",
                    "logits = model(inputs, torch.ones(inputs.shape[1], inputs.shape[1], dtype=torch.bool).tril(1))"),
    "q2_perplexity": ("answer_perplexity = math.exp(1.5)", "answer_perplexity = 1.5"),
}
# And one that costs part of an exercise: top-p that forgets to renormalise the nucleus, which only
# passes the case p = 1 (nothing is cut, so nothing needs renormalising).
PARTIAL_BUG = {
    "ex5_top_p": ("return kept / kept.sum(dim=-1, keepdim=True)", "return kept"),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS, nucleus=PARTIAL_BUG)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_bugs_cost_only_their_own_cells_and_are_named_in_the_feedback(graded):
    assert_only_these_cells_lost_points(graded, "buggy", {"test_ex1_lm_loss": 0, "test_q2_perplexity": 0})  # every case sees the look-ahead
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 3 - 1)
    feedback = graded.feedback["buggy"]
    assert "Causal language-modelling loss: 0 / 3 points" in feedback
    assert "look-ahead mask" in feedback


def test_an_unnormalised_nucleus_gets_partial_credit(graded):
    cells = graded.cells["nucleus"]
    assert cells["test_ex5_top_p"] == pytest.approx(0.75)  # 1 of 4 cases passes
    assert graded.totals["nucleus"] == pytest.approx(TOTAL - 2.25)
    feedback = graded.feedback["nucleus"]
    assert "Top-p (nucleus) sampling distribution: 0.75 / 3 points" in feedback
    assert "not renormalised" in feedback
