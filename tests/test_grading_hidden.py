"""Hidden tests stay hidden (gradelib.grading.hidden), tested on notebook cells without running nbgrader.

The end-to-end attacks (hooks that capture or forge, reading In) are graded for real in
tests/test_grading_adversarial.py; these tests pin down each step on its own, over all nine notebooks.
"""

import ast
import json
import re

import nbformat
import pytest
from conftest import ROOT, assignment_names
from nbformat.v4 import new_code_cell, new_output
from nbgrader.utils import is_grade

from gradelib.checks.answers import ANSWER_MIME, recorded_form
from gradelib.grading import hidden


def grade_cells(name: str):
    nb = nbformat.read(ROOT / "solutions" / name / f"{name}.ipynb", as_version=4)
    return [c for c in nb.cells if c.cell_type == "code" and is_grade(c)]


def concept_cell(label="Q3", expected='"B"', kind="choice", points=1):
    return (f'from gradelib.checks import check_answer_form\ncheck_answer_form("{label}", answer, kind="{kind}")\n'
            f"### BEGIN HIDDEN TESTS\nfrom gradelib.checks import check_answer\n"
            f'check_answer("{label}", answer, expected={expected}, kind="{kind}", points={points})\n'
            f"### END HIDDEN TESTS\n")


def record(label, answer, kind="choice"):
    return new_output("display_data", data={ANSWER_MIME: {"label": label, "kind": kind, "answer": recorded_form(answer, kind)},
                                            "text/plain": f"{label}: answer recorded"})


def verdict(cell) -> tuple[float | None, bool]:
    """(first numeric result, whether an error follows), as nbgrader's determine_grade reads them."""
    score = next((float(o.data["text/plain"]) for o in cell.outputs if o.output_type == "execute_result"), None)
    return score, any(o.output_type == "error" for o in cell.outputs)


@pytest.mark.parametrize("name", assignment_names())
def test_every_concept_key_leaves_the_sealed_source(name):
    cells = grade_cells(name)
    keys = [key for cell in cells for part in hidden.hidden_parts(cell.source) for key in hidden.answer_keys(part)]
    assert len(keys) >= 4, "each notebook has concept questions"
    for cell in cells:
        for part in hidden.hidden_parts(cell.source):
            sealed = hidden.seal(part)
            assert "expected=" not in sealed and "check_answer" not in sealed
            calls = [node for node in ast.walk(ast.parse(sealed)) if isinstance(node, ast.Call)
                     and getattr(node.func, "id", getattr(node.func, "attr", "")) == "record_answer"]
            assert len(calls) == len(hidden.answer_keys(part))
            assert not [k for call in calls for k in call.keywords if k.arg in ("expected", "rel_tol")]


@pytest.mark.parametrize("name", assignment_names())
def test_visible_part_keeps_no_hidden_line(name):
    for cell in grade_cells(name):
        shown = hidden.visible_part(cell.source)
        assert "HIDDEN TESTS" not in shown and "seed=" not in shown and "expected=" not in shown
        if hidden.hidden_parts(cell.source):
            assert hidden.SHOWN_INSTEAD in shown


def test_a_concept_answer_is_marked_outside_the_kernel():
    (key,) = hidden.answer_keys(hidden.hidden_parts(concept_cell())[0])
    assert (key.label, key.expected, key.kind, key.points) == ("Q3", "B", "choice", 1)

    right = new_code_cell(outputs=[record("Q3", "b")])
    assert hidden.mark_answers(right, [key]) == []
    assert verdict(right) == (1.0, False)
    assert "✓ answer" in right.outputs[0].text

    wrong = new_code_cell(outputs=[record("Q3", "C")])
    hidden.mark_answers(wrong, [key])
    assert verdict(wrong) == (None, True)
    assert "not the expected answer" in wrong.outputs[0].text and '"B"' not in json.dumps(wrong.outputs)


def test_indices_and_numbers_round_trip_through_the_record():
    indices = hidden.AnswerKey("Q1", {0, 1, 2}, "indices", 1)
    cell = new_code_cell(outputs=[record("Q1", [2, 0, 1], "indices")])
    hidden.mark_answers(cell, [indices])
    assert verdict(cell) == (1.0, False)
    number = hidden.AnswerKey("Q2", 8.0, "number", 2)
    cell = new_code_cell(outputs=[record("Q2", 8.004, "number")])
    hidden.mark_answers(cell, [number])
    assert verdict(cell) == (2.0, False)


@pytest.mark.parametrize(("outputs", "finding"), [
    ([], None),                                                                       # record suppressed
    ([record("Q3", "A"), record("Q3", "B"), record("Q3", "C")], "recorded 3 different answers to Q3"),
    ([new_output("execute_result", data={"text/plain": "1"}, execution_count=1), record("Q3", "A")],
     "published a result of its own"),
])
def test_a_concept_cell_cannot_be_gamed(outputs, finding):
    key = hidden.AnswerKey("Q3", "B", "choice", 1)
    cell = new_code_cell(outputs=outputs)
    findings = hidden.mark_answers(cell, [key])
    assert verdict(cell) == (None, True), "no points"
    if finding:
        assert any(finding in f for f in findings)


def test_a_cell_that_raised_keeps_its_error_and_scores_zero():
    error = new_output("error", ename="AssertionError", evalue="Q3: no answer yet", traceback=["AssertionError: Q3: no answer yet"])
    cell = new_code_cell(outputs=[error])
    hidden.mark_answers(cell, [hidden.AnswerKey("Q3", "B", "choice", 1)])
    assert cell.outputs == [error]


def test_quoted_hidden_lines_are_removed_from_every_kind_of_output():
    source = ("from gradelib.checks.attention import check_causal_mask\ncheck_causal_mask(causal_mask, points=1)\n"
              "### BEGIN HIDDEN TESTS\ncheck_causal_mask(causal_mask, points=1, seed=4242)\n### END HIDDEN TESTS\n")
    secrets = hidden.quoted_lines({"code_causal_mask": source, "concept_q3": concept_cell()})
    assert "check_causal_mask(causal_mask, points=1, seed=4242)" in secrets
    assert "check_causal_mask(causal_mask, points=1)" not in secrets, "visible lines stay visible"
    captured = repr(source)  # what a pre_run_cell hook printing info.raw_cell shows
    traceback = "\x1b[32m----> 4\x1b[39m check_causal_mask(causal_mask, points=\x1b[32m1\x1b[39m, seed=\x1b[32m4242\x1b[39m)\n"
    cell = new_code_cell(outputs=[
        new_output("stream", name="stdout", text=f"CAPTURED {captured}\nordinary line\n"),
        new_output("display_data", data={"text/html": f"<pre>{source}</pre>", "text/plain": "x"}),
        new_output("error", ename="CheckFailed", evalue="1 of 2 failed", traceback=[traceback]),
    ])
    in_tracebacks, elsewhere = hidden.scrub_outputs(cell, secrets)
    assert (in_tracebacks, elsewhere) == (1, 4)
    text = json.dumps(cell.outputs)
    assert "4242" not in text and "expected" not in text
    assert "ordinary line" in text and hidden.REMOVED_LINE in text


def test_a_score_no_check_printed_is_dropped():
    forged = new_output("execute_result", data={"text/plain": "3"}, execution_count=1)
    table = new_output("stream", name="stdout", text="Causal mask: 0.5 / 1 points\n  ✓ a\n  ✗ b  <- wrong\n")
    honest = new_output("execute_result", data={"text/plain": "0.5"}, execution_count=1)
    error = new_output("error", ename="CheckFailed", evalue="1 of 2", traceback=[])
    cell = new_code_cell(outputs=[forged, table, honest, error])
    assert hidden.unvouched_results(cell) == 1
    assert verdict(cell) == (0.5, True)
    cell = new_code_cell(outputs=[table, new_output("execute_result", data={"text/plain": "1"}, execution_count=1)])
    assert hidden.unvouched_results(cell) == 1, "a result that disagrees with the table before it"


def test_a_full_pass_keeps_its_result():
    cell = new_code_cell(outputs=[new_output("stream", name="stdout", text="Causal mask: 1 / 1 points\n  ✓ a\n"),
                                  new_output("stream", name="stdout", text="Causal mask: 1 / 1 points\n  ✓ b\n"),
                                  new_output("execute_result", data={"text/plain": "1"}, execution_count=1)])
    assert hidden.unvouched_results(cell) == 0 and verdict(cell) == (1.0, False)


def test_table_header_pattern_matches_what_checks_print(capsys):
    from gradelib.checks._core import CaseResult, format_table

    text = format_table("Scaled dot-product attention", [CaseResult("a", True), CaseResult("b", False, "x")], 2.4, 3)
    assert re.findall(hidden.TABLE_HEADER, text) == [("2.4", "3")]


def test_a_visible_line_that_begins_like_a_hidden_one_is_not_a_quote():
    secrets = {"from gradelib.checks import check_answer"}
    assert hidden.quotes_hidden("from gradelib.checks import check_answer_form", secrets) == []
    assert hidden.quotes_hidden("x = 1; from gradelib.checks import check_answer\n", secrets) == list(secrets)
