"""Notebook 08 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "08_clip"
TOTAL = 15.0

# Three plausible mistakes: the logit scale left unclamped (right until log_scale passes log 100), padding
# kept as a caption target, and the notes' explanation of the few-shot drop taken at face value.
BUGS = {
    "ex2_infonce": ("logits = log_scale.clamp(max=math.log(100)).exp() * image @ text.T",
                    "logits = log_scale.exp() * image @ text.T"),
    "ex5_targets": ("next_tokens.masked_fill(next_tokens == pad_id, -100)", "next_tokens"),
    "q3_few_shot": ('answer_few_shot = "B"', 'answer_few_shot = "D"'),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_bugs_give_partial_credit_and_named_feedback(graded):
    print(graded.cells["buggy"])
    assert_only_these_cells_lost_points(graded, "buggy", {"test_ex2_infonce": 2.25, "test_ex5_targets": 0, "test_q3_few_shot": 0})
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 0.75 - 2 - 1)
    feedback = graded.feedback["buggy"]
    assert "Symmetric InfoNCE: 2.25 / 3 points" in feedback and "not clamped" in feedback
    assert "Caption targets: 0 / 2 points" in feedback and "padding is a target" in feedback
