"""Notebook 09 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import html
import re

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "09_tvlt"
TOTAL = 25.0  # code 14, derive 5, predict 1, concept 5

# Plausible mistakes, one per kind of item: rounding the kept count up; the inverse mel scale with e^x where
# 10^x belongs; the encoder's sequence without [CLS]; the prediction counting weights but no biases; the
# speed-up of ASR alone (the notes' figure) instead of the whole pipeline.
BUGS = {
    "masking": ("keep = int(N * (1 - mask_ratio))", "keep = math.ceil(N * (1 - mask_ratio))"),
    "mel_scale": ("hz = f_b * (10**(m / A) - 1)", "hz = f_b * (sympy.exp(m / A) - 1)"),
    "token_counts": ("n_encoder = 1 + (1 - r)", "n_encoder = (1 - r)"),
    "encoder_params": ("predicted_encoder_params = 12 * (4 * (768 * 768 + 768) + 2 * 768 * 3072 + 3072 + 768 + 2 * 2 * 768) / 1e6",
                       "predicted_encoder_params = 12 * (4 * 768 * 768 + 2 * 768 * 3072) / 1e6"),
    "speedup": ("answer_speedup = (2890 + 103) / 103", "answer_speedup = 2890 / 103"),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_each_bug_loses_exactly_its_points_with_named_feedback(graded):
    lost = {
        "code_masking": 2.25,           # 3 of 4 cases: only N = 10 (K = int(2.5) = 2) tells ceil from int
        "derive_mel_scale": 1,          # mel right, hz wrong: 1 of 2
        "derive_token_counts": 2,       # n_video and n_audio right, n_encoder wrong: 2 of 3
        "predict_encoder_params": 0,
        "concept_speedup": 0,
    }
    assert_only_these_cells_lost_points(graded, "buggy", lost)
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 0.75 - 1 - 1 - 1 - 1)
    feedback = html.unescape(re.sub(r"<[^>]+>", "", graded.feedback["buggy"]))
    for text in ("Random masking: 2.25 / 3 points", "(round down)",
                 "The mel scale and its inverse: 1 / 2 points", "correct at m = 0 but not in general",
                 "Token counts of a clip: 2 / 3 points", "off by an additive constant",
                 "weights only: every linear layer also has a bias",
                 "that is ASR alone against TVLT: the pipeline also runs its second stage"):
        assert text in feedback, text
