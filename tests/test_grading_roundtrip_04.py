"""Notebook 04 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "04_vae"
TOTAL = 23.0  # code 13, derive 4, predict 1, concept 5

# Plausible mistakes: the KL term of the negative ELBO without its ½ (written out by hand instead of calling
# the reference), a wrong concept answer (exp(logvar) as the standard deviation), a derivation without its ½,
# a gap computed against the prior instead of the posterior (one of the derivation's two results), and a
# prediction that forgets to divide by the evidence.
BUGS = {
    "neg_elbo": ("return reconstruction + reference.gaussian_kl_standard_normal(mu, logvar)",
                 "return reconstruction + (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=-1)"),
    "reparam_trick": ('answer_reparameterization = "C"', 'answer_reparameterization = "A"'),
    "kl_1d": ("kl_1d = (mu**2 + sigma**2 - sympy.log(sigma**2) - 1) / 2",
              "kl_1d = mu**2 + sigma**2 - sympy.log(sigma**2) - 1"),
    "elbo_gap": ("gap = log_px - elbo", "gap = (v + m**2 - 1 - sympy.log(v)) / 2"),
    "bayes_banana": ("predicted_p_banana = 0.38 * 0.2 / (0.24 * 0.3 + 0.15 * 0.4 + 0.38 * 0.2)",
                     "predicted_p_banana = 0.38 * 0.2"),
}
# One that costs part of an exercise: a log-mean-exp without the max trick, which only fails on the case
# with very negative log-weights; with it, a correct negative ELBO through torch.distributions' Bernoulli,
# which torch validates against grey-level targets (issue #14 §6: it must earn full marks).
PARTIAL_BUG = {
    "iwae": ("return torch.logsumexp(log_w, dim=0) - math.log(z.shape[0])",
             "return torch.log(torch.exp(log_w).mean(dim=0))"),
    "neg_elbo": ("return reconstruction + reference.gaussian_kl_standard_normal(mu, logvar)",
                 "return -torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1) + reference.gaussian_kl_standard_normal(mu, logvar)"),
}


# And the shortcut of calling the reference for the exercise itself: it must earn nothing.
CALLS_REFERENCE = {
    "kl": ("return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=-1)",
           "return reference.gaussian_kl_standard_normal(mu, logvar)"),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS, unstable=PARTIAL_BUG,
                                      calls_reference=CALLS_REFERENCE)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_bugs_cost_only_their_own_cells_and_are_named_in_the_feedback(graded):
    assert_only_these_cells_lost_points(graded, "buggy", {"code_neg_elbo": 0, "concept_reparam_trick": 0,
                                                          "derive_kl_1d": 0, "derive_elbo_gap": 1,
                                                          "predict_bayes_banana": 0})  # every ELBO case has a non-zero KL
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 2 - 1 - 2 - 1 - 1)
    feedback = graded.feedback["buggy"]
    assert "Negative ELBO, Bernoulli decoder: 0 / 2 points" in feedback
    assert "missing its factor ½" in feedback
    assert "off by a constant factor (×2)" in feedback
    assert "misses a dependence on x, s2" in feedback
    assert "divide it by the evidence p(x)" in feedback
    assert "exp(l) is the variance σ²" in feedback


def test_an_unstable_log_mean_exp_gets_partial_credit_and_a_bernoulli_distribution_full_marks(graded):
    assert_only_these_cells_lost_points(graded, "unstable", {"code_iwae": 2.25})  # 3 of 4 cases pass
    assert graded.totals["unstable"] == pytest.approx(TOTAL - 0.75)
    feedback = graded.feedback["unstable"]
    assert "IWAE estimate of log p(x): 2.25 / 3 points" in feedback
    assert "use logsumexp" in feedback
    assert "Negative ELBO, Bernoulli decoder: 2 / 2 points" in feedback


def test_calling_the_reference_scores_zero_for_that_exercise_only(graded):
    assert_only_these_cells_lost_points(graded, "calls_reference", {"code_kl": 0})
    assert "calls gradelib.reference's gaussian_kl_standard_normal" in graded.feedback["calls_reference"]
