"""Notebook 05 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "05_gan"
TOTAL = 17.0

# Two plausible mistakes: log(sigmoid(.)) instead of logsigmoid in the discriminator loss (fine until the
# discriminator is confident, then -inf), and a wrong concept answer (the VAE/AAE roles swapped).
BUGS = {
    "ex1_d_loss": ("return -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()",
                   "return -torch.log(torch.sigmoid(real_logits)).mean() - torch.log(1 - torch.sigmoid(fake_logits)).mean()"),
    "q4_aae": ('answer_aae = "C"', 'answer_aae = "A"'),
}


# And the shortcut of calling the reference for the exercise itself: it must earn nothing.
CALLS_REFERENCE = {
    "ex1_d_loss": ("return -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()",
                   "return reference.discriminator_loss(real_logits, fake_logits)"),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS, calls_reference=CALLS_REFERENCE)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_one_bug_gives_partial_credit_and_named_feedback(graded):
    assert_only_these_cells_lost_points(graded, "buggy", {"test_ex1_d_loss": 1.5, "test_q4_aae": 0})  # 3 of 4 cases pass: only the confident, wrong D overflows
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 0.5 - 1)
    feedback = graded.feedback["buggy"]
    assert "Discriminator loss: 1.5 / 2 points" in feedback
    assert "a confident, wrong D" in feedback and "NaN or inf" in feedback


def test_calling_the_reference_scores_zero_for_that_exercise_only(graded):
    assert_only_these_cells_lost_points(graded, "calls_reference", {"test_ex1_d_loss": 0})
    assert "calls gradelib.reference's discriminator_loss" in graded.feedback["calls_reference"]
