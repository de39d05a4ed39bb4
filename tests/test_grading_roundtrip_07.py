"""Notebook 07 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "07_stable_diffusion"
TOTAL = 21.0  # code 11, derivations 4, prediction 1, concept questions 5

# Plausible mistakes: the guidance difference with its sign flipped, in the code (right only at w = 0, which no
# longer earns points on its own) and in the derivation; the image-to-image start step one too late (right only
# at strength 1, where it is clamped to T - 1); the ratio of positions predicted for self-attention's saving
# instead of its square; and the forward process taken to be absent from training.
BUGS = {
    "guidance": ("return eps_uncond + guidance_scale * (eps_cond - eps_uncond)",
                 "return eps_uncond + guidance_scale * (eps_uncond - eps_cond)"),
    "sdedit": ("t = max(int(round(strength * len(alpha_bars))) - 1, 0)",
               "t = min(int(round(strength * len(alpha_bars))), len(alpha_bars) - 1)"),
    "guidance_score": ("eps_guided = eps_u + w * (eps_c - eps_u)", "eps_guided = eps_u + w * (eps_u - eps_c)"),
    "attention_saving": ("predicted_attention_saving = ((512 * 512) // (64 * 64)) ** 2",
                         "predicted_attention_saving = (512 * 512) // (64 * 64)"),
    "training_step": ('answer_training_step = "C"', 'answer_training_step = "B"'),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_bugs_give_partial_credit_and_named_feedback(graded):
    assert_only_these_cells_lost_points(graded, "buggy", {"code_guidance": 0, "code_sdedit": 0, "derive_guidance_score": 1,
                                                          "predict_attention_saving": 0, "concept_training_step": 0})
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 2 - 2 - 1 - 1 - 1)
    feedback = graded.feedback["buggy"]
    assert "Classifier-free guidance: 0 / 2 points" in feedback
    assert "points away from the caption" in feedback
    assert "SDEdit noising: 0 / 2 points" in feedback
    assert "one step too late" in feedback
    assert "Guidance as the score of p(z_t) p(y|z_t)^w: 1 / 2 points" in feedback
    assert "correct at w = 0 but not in general" in feedback
    assert "the ratio of positions" in feedback
    assert "in one jump from z_0" in feedback
