"""The instructors' similarity report (gradelib.grading.similarity): copies are flagged, independent work is not.

Fast: no nbgrader, no kernels. The independent solutions under tests/fixtures/independent_solutions were written
from each exercise's statement, in different styles; every one of them is first shown to earn full marks from the
exercise's own grade cell (visible and hidden tests), then measured against the reference and against each other.
"""

from __future__ import annotations

import ast
import copy
import json
import re
from pathlib import Path

import nbformat
import pytest

from gradelib.grading import similarity as sim

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "independent_solutions"
ASSIGNMENTS = ("01_attention", "06_ddpm")


def released(assignment: str):
    return nbformat.read(str(ROOT / "course" / assignment / f"{assignment}.ipynb"), as_version=4)


def solution(assignment: str):
    return nbformat.read(str(ROOT / "solutions" / assignment / f"{assignment}.ipynb"), as_version=4)


def fixtures(assignment: str, grade_id: str) -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted((FIXTURES / assignment / grade_id).glob("*.py"))}


FIXTURE_CASES = [(a, p.parent.name, p.stem) for a in ASSIGNMENTS for p in sorted((FIXTURES / a).glob("*/*.py"))]


# ------------------------------------------------------------------------------------------------------------
# The fixtures are correct: each one earns full marks from its exercise's grade cell


def notebook_namespace(assignment: str) -> dict:
    """What an exercise cell sees in the notebook: the set-up cell's imports, and the earlier exercises' names
    (taken from gradelib.reference, standing in for the student's own answers)."""
    import math

    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    namespace = {"math": math, "np": np, "torch": torch, "nn": nn, "F": F}
    if assignment == "01_attention":
        from gradelib.reference import attention as ref
        names = ["split_heads", "merge_heads", "KVCache", "scaled_dot_product_attention", "causal_mask",
                 "sinusoidal_positional_encoding", "MultiHeadAttention", "apply_rope"]
    else:
        from gradelib.reference import ddpm as ref
        names = ["q_sample", "posterior_mean_variance", "predict_x0", "ddim_step"]
    namespace.update({name: getattr(ref, name) for name in names})
    namespace["reference"] = ref
    return namespace


def grade_cell(assignment: str, grade_id: str) -> str:
    ids = (f"code_{grade_id}", f"test_{grade_id}")        # a code exercise's grade cell: code_<name> (06), test_<id> (before #14)
    cells = [c for c in solution(assignment).cells if c.metadata.get("nbgrader", {}).get("grade_id") in ids]
    assert len(cells) == 1, f"no grade cell {' or '.join(ids)}"
    return cells[0].source


@pytest.mark.parametrize("assignment, grade_id, style", FIXTURE_CASES)
def test_independent_solution_earns_full_marks(assignment, grade_id, style, capsys):
    namespace = notebook_namespace(assignment)
    source = (FIXTURES / assignment / grade_id / f"{style}.py").read_text()
    exec(compile(source, f"{grade_id}/{style}.py", "exec"), namespace)
    calls = 0
    for statement in ast.parse(grade_cell(assignment, grade_id)).body:   # visible and hidden tests alike
        if isinstance(statement, (ast.Import, ast.ImportFrom)):
            exec(compile(ast.Module([statement], []), "<grade cell>", "exec"), namespace)
            continue
        call = statement.value
        points = next(k.value.value for k in call.keywords if k.arg == "points")
        score = eval(compile(ast.Expression(call), "<grade cell>", "eval"), namespace)
        assert score == points, capsys.readouterr().out
        calls += 1
    assert calls >= 2     # the visible test and at least one hidden one


def test_every_exercise_has_five_independent_styles():
    for assignment in ASSIGNMENTS:
        graded = [g for g, s in sim.exercise_sources(released(assignment)).items() if sim.defined_names(s)]
        assert graded, assignment
        for grade_id in graded:
            assert len(fixtures(assignment, grade_id)) >= 5, (assignment, grade_id)


# ------------------------------------------------------------------------------------------------------------
# The building blocks


def test_exercise_and_reference_sources_are_found_without_a_list():
    nb = released("06_ddpm")
    exercises = sim.exercise_sources(nb)
    assert {"q_sample", "simple_loss", "snr_crossing", "posterior"} <= set(exercises)
    refs = sim.reference_sources(nb)
    assert set(refs) == {"q_sample", "posterior_mean_variance", "predict_x0", "ddpm_step", "ddim_step", "simple_loss"}
    # the function wraps DDPMSchedule's method, where the maths is: both are included, and the helper they call
    assert "def posterior_mean_variance(self" in refs["posterior_mean_variance"] and "def _expand(" in refs["posterior_mean_variance"]
    assert "class MultiHeadAttention" in sim.reference_sources(released("01_attention"))["mha"]


def test_own_code_drops_the_released_lines():
    given = sim.exercise_sources(released("01_attention"))["causal_mask"]
    assert sim.own_code(given, given) == ""
    answer = given.replace("    # YOUR CODE HERE\n    raise NotImplementedError()", "    return torch.ones(T, T).tril().bool()")
    assert sim.own_code(answer, given) == "    return torch.ones(T, T).tril().bool()"


# ------------------------------------------------------------------------------------------------------------
# Copies are flagged


def with_answers(assignment: str, answers: dict[str, str]):
    """The released notebook with some exercise cells' sources replaced."""
    nb = copy.deepcopy(released(assignment))
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    return nb


REFERENCE_SDPA_DISGUISED = '''def scaled_dot_product_attention(q, k, v, mask=None):
    """softmax(q kᵀ / √d_k) v.  q: (..., T_q, d_k), k: (..., T_k, d_k), v: (..., T_k, d_v);
    mask: bool broadcastable to (..., T_q, T_k), True = may attend.
    Returns (output (..., T_q, d_v), weights (..., T_q, T_k))."""
    width = q.shape[-1]
    logits = q @ k.transpose(-2, -1) / math.sqrt(
        width
    )
    if mask is None:
        probs = logits.softmax(dim=-1)
    else:
        assert mask.dtype == torch.bool, f"bad mask {mask.dtype}"
        logits = logits.masked_fill(~mask, float('-inf'))
        empty_rows = ~mask.any(dim=-1, keepdim=True)   # nothing to look at
        logits = logits.masked_fill(empty_rows, 0.0)
        probs = logits.softmax(dim=-1).masked_fill(empty_rows, 0.0)
    return probs @ v, probs
'''


def test_verbatim_and_disguised_copies_of_the_reference_are_flagged():
    refs = sim.reference_sources(released("01_attention"))
    verbatim = refs["sdpa"].split("\n\n\n")[0]      # the reference function exactly as gradelib ships it
    submissions = {"verbatim": with_answers("01_attention", {"sdpa": verbatim, "kv_cache": refs["kv_cache"]}),
                   "disguised": with_answers("01_attention", {"sdpa": REFERENCE_SDPA_DISGUISED}),
                   "auto_disguised": with_answers("01_attention", {"rope": sim.disguise(refs["rope"])})}
    report = sim.similarity_report(submissions, released("01_attention"))
    value = lambda s, g: report.results[(s, g)].reference.similarity
    assert value("verbatim", "sdpa") > 0.99 and value("verbatim", "kv_cache") > 0.99
    assert value("disguised", "sdpa") >= 0.9 > sim.DEFAULT_THRESHOLD
    assert value("auto_disguised", "rope") >= sim.DEFAULT_THRESHOLD
    flagged = {(m.student, m.grade_id) for m in report.flagged() if m.kind == "reference"}
    assert {("verbatim", "sdpa"), ("verbatim", "kv_cache"), ("disguised", "sdpa"), ("auto_disguised", "rope")} <= flagged
    best = sim.max_similarity(report)
    assert best["verbatim"][0] > 0.99 and best["verbatim"][1].endswith("~ gradelib.reference")


def test_students_with_identical_code_flag_each_other():
    answer = fixtures("06_ddpm", "posterior_mean_variance")["eps_form"]
    submissions = {"ann": with_answers("06_ddpm", {"posterior_mean_variance": answer}),
                   "bob": with_answers("06_ddpm", {"posterior_mean_variance": answer}),
                   "cy": with_answers("06_ddpm", {"posterior_mean_variance": fixtures("06_ddpm", "posterior_mean_variance")["per_example_loops"]})}
    report = sim.similarity_report(submissions, released("06_ddpm"))
    ann, bob = report.results[("ann", "posterior_mean_variance")].peer, report.results[("bob", "posterior_mean_variance")].peer
    assert (ann.other, bob.other) == ("bob", "ann") and ann.similarity == bob.similarity == 1.0
    assert report.results[("cy", "posterior_mean_variance")].peer.similarity < sim.DEFAULT_THRESHOLD
    peer_flags = [m for m in report.flagged() if m.kind == "peer"]
    assert len(peer_flags) == 1 and {peer_flags[0].student, peer_flags[0].other} == {"ann", "bob"}
    assert sim.max_similarity(report)["ann"] == (1.0, "posterior_mean_variance ~ bob")


def test_untouched_notebooks_flag_nothing():
    for assignment in ASSIGNMENTS:
        nb = released(assignment)
        report = sim.similarity_report({"a": nb, "b": copy.deepcopy(nb), "c": copy.deepcopy(nb)}, nb)
        assert report.results == {} and report.flagged(0.0) == []
        assert sim.max_similarity(report) == {"a": (None, ""), "b": (None, ""), "c": (None, "")}


# ------------------------------------------------------------------------------------------------------------
# Independent work is not flagged: the false-positive measurement


@pytest.fixture(scope="module")
def measurement():
    return sim.measure_false_positives()


def test_independent_solutions_stay_below_the_threshold(measurement):
    for assignment, exercises in measurement["exercises"].items():
        for grade_id, stats in exercises.items():
            assert stats["to_reference"]["max"] < sim.DEFAULT_THRESHOLD, (assignment, grade_id, stats)
            assert stats["to_peers"]["max"] < sim.DEFAULT_THRESHOLD, (assignment, grade_id, stats)
            assert stats["disguised_reference_copy"] >= sim.DEFAULT_THRESHOLD, (assignment, grade_id, stats)


def test_committed_false_positive_report_is_current(measurement):
    committed = json.loads((ROOT / "reports" / "similarity-fp.json").read_text())
    assert committed == json.loads(json.dumps(measurement)), \
        "regenerate it: python -m gradelib.grading.similarity --measure-false-positives"


# ------------------------------------------------------------------------------------------------------------
# The HTML page


def test_html_shows_both_sides_of_a_match_and_fetches_nothing(tmp_path):
    submissions = {"ann": with_answers("01_attention", {"sdpa": REFERENCE_SDPA_DISGUISED}),
                   "bob": with_answers("01_attention", {"sdpa": REFERENCE_SDPA_DISGUISED}),
                   "cy": with_answers("01_attention", {"sinusoidal_pe": fixtures("01_attention", "sinusoidal_pe")["loops"]})}
    report = sim.similarity_report(submissions, released("01_attention"))
    page = sim.write_html(report, tmp_path / "similarity.html").read_text()
    assert "logits.masked_fill(empty_rows, 0.0)" in page                               # the student's side
    assert "no_key = ~mask.any(dim=-1, keepdim=True)" in page                           # the reference's side
    assert page.count("<mark class='left'>") >= 2 and page.count("<mark class='right'>") >= 2
    assert "ann ~ bob" in page or "bob ~ ann" in page
    assert "<b>cy</b>" not in page                                                     # nothing to flag for cy
    assert not re.search(r"https?://|<script|<link|src=|url\(", page)
    # flagged highest first
    values = [float(v) for v in re.findall(r"<td>(\d+)%</td><td>\d+%</td></tr>", page)]
    assert values == sorted(values, reverse=True) and values
