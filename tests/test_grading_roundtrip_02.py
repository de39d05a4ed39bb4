"""Notebook 02 through nbgrader: generate_assignment -> autograde -> generate_feedback -> export."""

import pytest
from roundtrip import assert_only_these_cells_lost_points, assert_solution_full_and_untouched_zero, grade_standard_submissions

ASSIGNMENT = "02_bert"
TOTAL = 28.0  # code 17, derive 4, predict 1, concept 6

# Plausible mistakes, each costing only its own cell: MLM masking that may select special tokens ([CLS],
# [SEP], [PAD]) in exercise 6 (every case checks that first), a wrong concept answer, the 12 d² + 13 d
# shortcut for a layer with an FFN of any width (derivation 1: one of its two results), and a prediction
# that takes BERT-base's real FFN instead of the notes' one.
BUGS = {
    "mask": ("selected = (torch.rand(input_ids.shape, generator=generator) < 0.15) & (input_ids >= NUM_SPECIAL)",
             "selected = torch.rand(input_ids.shape, generator=generator) < 0.15"),
    "why_80_10_10": ('answer_why_80_10_10 = "B"\n', 'answer_why_80_10_10 = "A"\n'),
    "bert_size": ("layer_params = attention + ffn + layer_norms", "layer_params = 12 * d**2 + 13 * d"),
    "notes_bert_base": ("predicted_bert_base_millions = float(", "predicted_bert_base_millions = 109.48 + 0 * float("),
}


@pytest.fixture(scope="module")
def graded(released_course):
    return grade_standard_submissions(released_course, ASSIGNMENT, BUGS)


def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded):
    assert_solution_full_and_untouched_zero(graded, TOTAL)


def test_each_bug_costs_its_own_cell_and_is_named_in_the_feedback(graded):
    assert_only_these_cells_lost_points(graded, "buggy", {"code_mask": 0, "concept_why_80_10_10": 0,
                                                          "derive_bert_size": 1, "predict_notes_bert_base": 0})
    assert graded.totals["buggy"] == pytest.approx(TOTAL - 3 - 1 - 1 - 1)
    feedback = graded.feedback["buggy"]
    assert "MLM masking: 0 / 3 points" in feedback
    assert "they must never be masked" in feedback
    assert "Parameters of BERT&#x27;s layer and embeddings: 1 / 2 points" in feedback or \
        "Parameters of BERT's layer and embeddings: 1 / 2 points" in feedback
    assert "misses a dependence on d_ff" in feedback
    assert "the question takes the notes" in feedback
