"""What every check of every topic guarantees, found from the package rather than from a hand-kept list:
comparison functions rebound in the notebook cannot fool it, and the exercise's own reference given as the
answer scores 0."""

import importlib
import pkgutil
import sys

import numpy
import pytest
import torch

import gradelib.checks
from gradelib.checks import CheckFailed

PATCHED_TORCH = ["equal", "allclose", "isclose", "randn", "rand", "randint", "softmax", "log_softmax", "logsumexp", "sigmoid", "xlogy"]
PATCHED_NUMPY = ["allclose", "array_equal", "isclose", "array_equiv"]
NOT_TOPICS = {"_core", "answers", "derive"}  # the machinery; concept questions and derivations (values, no reference code to forbid)

TOPICS = sorted(m.name for m in pkgutil.iter_modules(gradelib.checks.__path__) if m.name not in NOT_TOPICS)


def topic_checks(topic: str):
    module = importlib.import_module(f"gradelib.checks.{topic}")
    return [value for name, value in sorted(vars(module).items()) if name.startswith("check_") and callable(value)]


CHECKS = [pytest.param(check, id=f"{topic}.{check.__name__}") for topic in TOPICS for check in topic_checks(topic)]


def test_the_topics_are_discovered():
    assert {"attention", "bert", "gpt", "vae", "gan", "ddpm", "latent_diffusion", "clip", "tvlt"} <= set(TOPICS)
    assert len(CHECKS) >= 50


@pytest.mark.parametrize("check", CHECKS)
def test_every_check_declares_its_reference(check):
    reference = getattr(check, "reference", None)
    assert reference, f"{check.__name__} is not declared with @exercise(..., reference=...)"
    assert all(getattr(obj, "__module__", "").startswith("gradelib.reference") for obj in reference)


def patch_comparisons(monkeypatch) -> set[int]:
    fakes = set()
    for module, names in ((torch, PATCHED_TORCH), (numpy, PATCHED_NUMPY)):
        for name in names:
            fake = lambda *a, **k: True  # noqa: E731
            fakes.add(id(fake))
            monkeypatch.setattr(module, name, fake)
    return fakes


@pytest.mark.parametrize("topic", TOPICS)
def test_checks_imported_after_torch_is_patched_still_use_the_real_functions(topic, monkeypatch):
    fakes = patch_comparisons(monkeypatch)
    monkeypatch.delitem(sys.modules, f"gradelib.checks.{topic}", raising=False)
    module = importlib.import_module(f"gradelib.checks.{topic}")
    assert not [name for name, value in vars(module).items() if id(value) in fakes]


def run_quietly(check, answer, capsys) -> tuple[float, str]:
    try:
        score = check(answer, points=1)
    except CheckFailed as failure:
        score = failure.score
    return score, capsys.readouterr().out


@pytest.mark.parametrize("check", CHECKS)
def test_rebound_comparisons_do_not_make_a_wrong_answer_pass(check, monkeypatch, capsys):
    """A notebook that rebinds torch.allclose, torch.equal, numpy.allclose, ... to always say True, then
    submits an answer that computes nothing, still scores 0."""
    patch_comparisons(monkeypatch)
    score, out = run_quietly(check, lambda *args, **kwargs: None, capsys)
    assert score == 0, out


@pytest.mark.parametrize("check", CHECKS)
def test_the_reference_itself_scores_zero(check, capsys):
    """Submitting the exercise's own reference (what the check forbids) earns nothing, with the message,
    unless the reference cannot even be called with the exercise's arguments (vae's negative_elbo takes a model)."""
    score, out = run_quietly(check, check.reference[0], capsys)
    assert score == 0, out
    failures = [line for line in out.splitlines() if "✗" in line]
    assert failures and (any("your answer calls gradelib.reference's" in line for line in failures)
                         or all("raised TypeError" in line and "argument" in line for line in failures)), out


def test_compare_case_message_and_variant_tolerance():
    """compare_case: the variants are matched with ``variant_atol`` where given, and ``otherwise`` may be a
    function giving the whole message (called only when nothing matched)."""
    from gradelib.checks._core import compare_case

    want, wrong = torch.zeros(3), torch.ones(3)
    near_wrong = wrong + 5e-5
    assert compare_case(want + 1e-6, want, 1e-5, [("wrong", wrong)], "differs") is None
    assert compare_case(near_wrong, want, 1e-5, [("wrong", wrong)], "differs") == "differs (max error 1)"
    assert compare_case(near_wrong, want, 1e-5, [("wrong", wrong)], "differs", variant_atol=1e-4) == "wrong"
    assert compare_case(near_wrong, want, 1e-5, [], lambda: "my own message") == "my own message"
    assert compare_case(want, want, 1e-5, [], lambda: 1 / 0) is None


DERIVATIONS = [pytest.param(value, id=f"{topic}.{name}") for topic in TOPICS
               for name, value in sorted(vars(importlib.import_module(f"gradelib.checks.{topic}")).items())
               if name.startswith("derive_")]


@pytest.mark.parametrize("check", DERIVATIONS)
def test_every_derivation_is_declared_with_its_results(check):
    """A topic's derive_* checks are declared with derivation(): their keys parsed at import, their results named."""
    assert getattr(check, "results", None) and getattr(check, "title", None), check
    assert callable(getattr(check, "symbols_for_notebook", None))


@pytest.mark.parametrize("check", DERIVATIONS)
def test_a_derivation_left_unanswered_says_so(check, capsys):
    with pytest.raises(CheckFailed):
        check({name: None for name in check.results}, points=1)
    out = capsys.readouterr().out
    assert out.count("no answer yet") == len(check.results), out
