"""Notebook 07 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "07_stable_diffusion"
TOTAL = 15.0

# Three plausible mistakes: the guidance difference with its sign flipped (right only at w = 0), the
# image-to-image start step one too late (right only at strength 1, where it is clamped to T - 1), and the
# notes' wrong answer about what the training MSE compares.
BUGS = {
    "ex3_guidance": ("return eps_uncond + guidance_scale * (eps_cond - eps_uncond)",
                     "return eps_uncond + guidance_scale * (eps_uncond - eps_cond)"),
    "ex4_sdedit": ("t = max(int(round(strength * len(alpha_bars))) - 1, 0)",
                   "t = min(int(round(strength * len(alpha_bars))), len(alpha_bars) - 1)"),
    "q3_loss": ('answer_loss = "B"', 'answer_loss = "A"'),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_bugs_give_partial_credit_and_named_feedback(graded):
    assert_only_these_cells_lost_points(graded, "buggy", {"test_ex3_guidance": 0.5, "test_ex4_sdedit": 0.5, "test_q3_loss": 0})
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 1.5 - 1.5 - 1)
    feedback = graded.feedback["buggy"]
    assert "Classifier-free guidance: 0.5 / 2 points" in feedback
    assert "points away from the caption" in feedback
    assert "SDEdit noising: 0.5 / 2 points" in feedback
    assert "one step too late" in feedback
