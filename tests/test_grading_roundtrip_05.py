"""Notebook 05 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import grade_standard_submissions

ASSIGNMENT = "05_gan"
TOTAL = 17.0

# Two plausible mistakes: log(sigmoid(.)) instead of logsigmoid in the discriminator loss (fine until the
# discriminator is confident, then -inf), and a wrong concept answer (the VAE/AAE roles swapped).
BUGS = {
    "ex1_d_loss": ("return -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()",
                   "return -torch.log(torch.sigmoid(real_logits)).mean() - torch.log(1 - torch.sigmoid(fake_logits)).mean()"),
    "q4_aae": ('answer_aae = "C"', 'answer_aae = "A"'),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS)


def test_solution_scores_full_marks(graded):
    assert graded.max_score == TOTAL
    assert graded.totals["solution"] == TOTAL


def test_untouched_student_notebook_scores_zero_without_crashing(graded):
    assert graded.totals["untouched"] == 0.0
    assert set(graded.cells["untouched"].values()) == {0}


def test_one_bug_gives_partial_credit_and_named_feedback(graded):
    cells = graded.cells["buggy"]
    assert cells["test_ex1_d_loss"] == pytest.approx(1.5)  # 3 of 4 cases pass: only the confident, wrong D overflows
    assert cells["test_q4_aae"] == 0
    for name, score in cells.items():
        if name not in ("test_ex1_d_loss", "test_q4_aae"):
            assert score == graded.cell_max[name], name
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 0.5 - 1)
    feedback = graded.feedback["buggy"]
    assert "Discriminator loss: 1.5 / 2 points" in feedback
    assert "a confident, wrong D" in feedback and "NaN or inf" in feedback
