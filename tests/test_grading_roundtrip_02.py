"""Notebook 02 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "02_bert"
TOTAL = 21.0

# Two plausible mistakes: MLM masking that may select special tokens ([CLS], [SEP], [PAD]) in
# exercise 6, and a wrong concept answer.
BUGS = {
    "ex6_mask": ("selected = (torch.rand(input_ids.shape, generator=generator) < 0.15) & (input_ids >= NUM_SPECIAL)",
                 "selected = torch.rand(input_ids.shape, generator=generator) < 0.15"),
    "q3_why": ('answer_why_80_10_10 = "B"', 'answer_why_80_10_10 = "A"'),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_one_bug_gives_partial_credit_and_named_feedback(graded):
    assert_only_these_cells_lost_points(graded, "buggy", {"test_ex6_mask": 0.75, "test_q3_why": 0})  # only the reproducibility case passes
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 2.25 - 1)
    feedback = graded.feedback["buggy"]
    assert "MLM masking: 0.75 / 3 points" in feedback
    assert "they must never be masked" in feedback
