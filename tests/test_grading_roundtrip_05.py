"""Notebook 05 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "05_gan"
TOTAL = 23.0  # code 13, derive 4, predict 1, concept 5

# Plausible mistakes: log(sigmoid(.)) instead of logsigmoid in the discriminator loss (fine until the
# discriminator is confident, then -inf), a wrong concept answer (each code matched to the prior, as in a
# VAE), real and fake swapped in D*, the notes' extra −log 4 in C(G) (one of the derivation's two results),
# and the notes' claim (≥ 0) in place of the value of their expression.
BUGS = {
    "d_loss": ("return -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()",
               "return -torch.log(torch.sigmoid(real_logits)).mean() - torch.log(1 - torch.sigmoid(fake_logits)).mean()"),
    "aae": ('answer_aae = "B"', 'answer_aae = "A"'),
    "optimal_discriminator": ("d_star = a / (a + b)", "d_star = b / (a + b)"),
    "value_at_optimum": ("c_of_g = -sympy.log(4) + 2 * jsd", "c_of_g = -2 * sympy.log(4) + 2 * jsd"),
    "notes_c_of_g": ("predicted_notes_at_equilibrium = -2 * math.log(4)", "predicted_notes_at_equilibrium = 0.0"),
}


# And the shortcut of calling the reference for the exercise itself: it must earn nothing.
CALLS_REFERENCE = {
    "d_loss": ("return -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()",
               "return reference.discriminator_loss(real_logits, fake_logits)"),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS, calls_reference=CALLS_REFERENCE)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_bugs_cost_only_their_own_cells_and_are_named_in_the_feedback(graded):
    assert_only_these_cells_lost_points(graded, "buggy", {"code_d_loss": 1.5, "concept_aae": 0,
                                                          "derive_optimal_discriminator": 0, "derive_value_at_optimum": 1,
                                                          "predict_notes_c_of_g": 0})  # 3 of 4 d_loss cases pass
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 0.5 - 1 - 2 - 1 - 1)
    feedback = graded.feedback["buggy"]
    assert "Discriminator loss: 1.5 / 2 points" in feedback
    assert "a confident, wrong D" in feedback and "NaN or inf" in feedback
    assert "correct at p_data = p_g (a = b) but not in general" in feedback
    assert "off by an additive constant" in feedback
    assert "that is the notes' claim (≥ 0), not the value of their expression" in feedback
    assert "pooled over all images" in feedback


def test_calling_the_reference_scores_zero_for_that_exercise_only(graded):
    assert_only_these_cells_lost_points(graded, "calls_reference", {"code_d_loss": 0})
    assert "calls gradelib.reference's discriminator_loss" in graded.feedback["calls_reference"]
