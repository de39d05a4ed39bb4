"""Notebook 04 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "04_vae"
TOTAL = 18.0

# Two plausible mistakes: the KL term of the negative ELBO without its ½ (written out by hand instead
# of calling the reference), and a wrong concept answer (the notes' "z = μ + ε").
BUGS = {
    "ex4_neg_elbo": ("return reconstruction + reference.gaussian_kl_standard_normal(mu, logvar)",
                     "return reconstruction + (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=-1)"),
    "q2_reparam": ('answer_reparameterization = "B"', 'answer_reparameterization = "A"'),
}
# And one that costs part of an exercise: a log-mean-exp without the max trick, which only fails
# on the case with very negative log-weights.
PARTIAL_BUG = {
    "ex5_iwae": ("return torch.logsumexp(log_w, dim=0) - math.log(z.shape[0])",
                 "return torch.log(torch.exp(log_w).mean(dim=0))"),
}


# And the shortcut of calling the reference for the exercise itself: it must earn nothing.
CALLS_REFERENCE = {
    "ex1_kl": ("return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=-1)",
               "return reference.gaussian_kl_standard_normal(mu, logvar)"),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS, unstable=PARTIAL_BUG,
                                      calls_reference=CALLS_REFERENCE)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_bugs_cost_only_their_own_cells_and_are_named_in_the_feedback(graded):
    assert_only_these_cells_lost_points(graded, "buggy", {"test_ex4_neg_elbo": 0, "test_q2_reparam": 0})  # every case has a non-zero KL
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 2 - 1)
    feedback = graded.feedback["buggy"]
    assert "Negative ELBO, Bernoulli decoder: 0 / 2 points" in feedback
    assert "missing its factor ½" in feedback


def test_an_unstable_log_mean_exp_gets_partial_credit(graded):
    cells = graded.cells["unstable"]
    assert cells["test_ex5_iwae"] == pytest.approx(2.25)  # 3 of 4 cases pass
    assert graded.totals["unstable"] == pytest.approx(TOTAL - 0.75)
    feedback = graded.feedback["unstable"]
    assert "IWAE estimate of log p(x): 2.25 / 3 points" in feedback
    assert "use logsumexp" in feedback


def test_calling_the_reference_scores_zero_for_that_exercise_only(graded):
    assert_only_these_cells_lost_points(graded, "calls_reference", {"test_ex1_kl": 0})
    assert "calls gradelib.reference's gaussian_kl_standard_normal" in graded.feedback["calls_reference"]
