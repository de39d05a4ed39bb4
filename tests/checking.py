"""Helpers shared by the tests of every topic's checks."""

import types

import pytest

from gradelib.checks import CheckFailed


def own_copy(function):
    """The reference's code as a separate function object: what a student who wrote the same code
    would submit (a check rejects the reference object itself as "calls gradelib.reference")."""
    copy = types.FunctionType(function.__code__.replace(), function.__globals__, function.__name__, function.__defaults__)
    copy.__kwdefaults__ = function.__kwdefaults__
    return copy


def assert_accepted(check, candidate, capsys, points, *, seeds=(), **kwargs):
    """The check gives ``candidate`` full marks and its table shows no failed case: at its default seed, or
    at each of ``seeds``."""
    for seeded in [{"seed": seed} for seed in seeds] or [{}]:
        assert check(candidate, points=points, **seeded, **kwargs) == points
        assert "✗" not in capsys.readouterr().out


def assert_rejected(check, candidate, capsys, *diagnoses: str, **kwargs):
    """The check fails and its table names each of ``diagnoses``."""
    with pytest.raises(CheckFailed):
        check(candidate, **kwargs)
    printed = capsys.readouterr().out
    assert "✗" in printed
    for diagnosis in diagnoses:
        assert diagnosis in printed, printed


def score_of(check, candidate, points=3.0, **kwargs) -> float:
    """The score a check gives ``candidate``, passing or failing (its table is printed; pytest captures it)."""
    try:
        return check(candidate, points=points, **kwargs)
    except CheckFailed as failure:
        return failure.score


def score_and_table(check, candidate, capsys, points=2, **kwargs) -> tuple[float, str]:
    """The score a check gives ``candidate``, and the table it printed."""
    return score_of(check, candidate, points, **kwargs), capsys.readouterr().out
