"""Answers marked against a key: known mistakes get their own diagnosis, in the kernel and in the grader alike;
derivation checks declared once per exercise with ``derivation()``."""

import pytest
from nbformat.v4 import new_code_cell, new_output

from gradelib.checks import CheckFailed
from gradelib.checks.answers import ANSWER_MIME, answer_problem, check_answer, recorded_form
from gradelib.checks.derive import derivation, integer, interval, positive
from gradelib.grading import hidden

PREDICTION = ('from gradelib.checks import check_answer_form\n'
              'check_answer_form("Prediction 1", predicted, kind="number")\n'
              "### BEGIN HIDDEN TESTS\nfrom gradelib.checks import check_answer\n"
              'check_answer("Prediction 1", predicted, expected=6.364, kind="number", rel_tol=1e-2, points=1,\n'
              "             mistakes={1.636: \"that is the notes' value: recompute K = X W_K for this X\", 4.5: 'unscaled'})\n"
              "### END HIDDEN TESTS\n")


@pytest.mark.parametrize(("answer", "diagnosis"), [
    (6.36, None), (6.4, None),                                        # within 1 %
    (1.64, "that is the notes' value: recompute K = X W_K for this X"),
    (4.5, "unscaled"),
    (7.0, "not the expected answer"),
    ("6.4", "answer with a finite number, got '6.4'"),
])
def test_a_known_mistake_is_named_and_anything_else_is_not_the_expected_answer(answer, diagnosis):
    mistakes = {1.636: "that is the notes' value: recompute K = X W_K for this X", 4.5: "unscaled"}
    assert answer_problem(answer, expected=6.364, kind="number", rel_tol=1e-2, mistakes=mistakes) == diagnosis


def test_mistakes_work_for_choices_and_index_sets(capsys):
    assert answer_problem("c", expected="B", kind="choice", mistakes={"C": "C swaps queries and keys"}) == "C swaps queries and keys"
    assert answer_problem({0, 1}, expected={0, 1, 2}, kind="indices",
                          mistakes={(0, 1): "the diagonal is allowed: a token sees itself"}) == "the diagonal is allowed: a token sees itself"
    with pytest.raises(CheckFailed):
        check_answer("Q", 2, expected=3, kind="integer", points=1, mistakes={2: "off by one"})
    assert "off by one" in capsys.readouterr().out


def test_the_sealed_prediction_keeps_its_mistakes_out_of_the_kernel_and_the_grader_names_them():
    part = hidden.hidden_parts(PREDICTION)[0]
    sealed = hidden.seal(part)
    assert "mistakes" not in sealed and "1.636" not in sealed and "6.364" not in sealed
    (key,) = hidden.answer_keys(part)
    assert key.mistakes[1.636].startswith("that is the notes' value")

    def recorded(answer):
        return new_code_cell(outputs=[new_output("display_data", data={
            ANSWER_MIME: {"label": "Prediction 1", "kind": "number", "answer": recorded_form(answer, "number")},
            "text/plain": "recorded"})])

    wrong = recorded(1.636)
    hidden.mark_answers(wrong, [key])
    assert "that is the notes' value" in wrong.outputs[0].text
    assert any(o.output_type == "error" for o in wrong.outputs)
    right = recorded(6.36)
    hidden.mark_answers(right, [key])
    assert not any(o.output_type == "error" for o in right.outputs)


SYMBOLS = {"abar_prev": interval(0, 1), "beta_t": interval(0, 1), "alpha_t": "1 - beta_t", "abar_t": "abar_prev * alpha_t"}
POSTERIOR_VARIANCE = derivation("posterior variance", symbols=SYMBOLS,
                                expected={"beta_tilde": "(1 - abar_prev) / (1 - abar_t) * beta_t"},
                                special={"t = 1": {"abar_prev": 1}})


def test_a_declared_derivation_grades_like_check_derivation(capsys):
    abar_prev, beta_t, alpha_t, abar_t = POSTERIOR_VARIANCE.symbols_for_notebook()
    assert POSTERIOR_VARIANCE.results == ("beta_tilde",) and POSTERIOR_VARIANCE.title == "posterior variance"
    assert POSTERIOR_VARIANCE({"beta_tilde": (1 - abar_prev) * beta_t / (1 - abar_t)}, points=2) == 2
    assert POSTERIOR_VARIANCE({"beta_tilde": beta_t * (1 - abar_prev) / (1 - abar_prev + abar_prev * beta_t)},
                              points=2, seed=31) == 2
    with pytest.raises(CheckFailed):
        POSTERIOR_VARIANCE({"beta_tilde": -(1 - abar_prev) * beta_t / (1 - abar_t)}, points=2)
    assert "wrong sign" in capsys.readouterr().out


def test_a_derivation_with_a_typo_in_its_key_fails_when_declared():
    with pytest.raises(ValueError, match="undeclared symbols: sigma"):
        derivation("KL", symbols={"mu": interval(-2, 2), "s": positive()}, expected={"kl": "log(1/sigma)"})


def test_a_count_written_with_floors_is_evaluated_and_told_to_drop_the_rounding(capsys):
    """SymPy's evalf(subs=...) gives up on a product of floors; the check still evaluates it, and says why it
    differs from a count that assumes exact division."""
    import sympy

    tokens = derivation("tokens", symbols={"H": integer(16, 512), "p": integer(2, 32)}, expected={"n": "(H / p)**2"})
    H, p = sympy.symbols("H p", positive=True, integer=True)
    assert tokens({"n": H**2 / p**2}, points=1) == 1
    with pytest.raises(CheckFailed):
        tokens({"n": (H // p) * (H // p)}, points=1)
    assert "rounds (floor, ceiling or //) where the exercise assumes exact division" in capsys.readouterr().out


def test_a_large_result_off_by_a_varying_ratio_is_not_called_a_constant_factor(capsys):
    """A parameter count near 10⁷ answered without its linear term: the ratio is near 1 but varies, so it is
    no constant factor (the result's size must not serve as the tolerance of a ratio)."""
    import sympy

    block = derivation("block", symbols={"d": integer(64, 4096)}, expected={"params": "12*d**2 + 13*d"})
    d = sympy.Symbol("d", positive=True, integer=True)
    with pytest.raises(CheckFailed):
        block({"params": 12 * d**2}, points=1)
    out = capsys.readouterr().out
    assert "constant factor" not in out and "not equivalent" in out
    with pytest.raises(CheckFailed):
        block({"params": 2 * (12 * d**2 + 13 * d)}, points=1)
    assert "off by a constant factor (×2)" in capsys.readouterr().out
    with pytest.raises(CheckFailed):
        block({"params": 12 * d**2 + 13 * d + 1}, points=1)
    assert "off by an additive constant" in capsys.readouterr().out
