"""Checks for short concept questions: a letter, a number, or a set of indices.

The answer key never ships in gradelib. The visible test in a notebook only checks the *form* of an
answer (``check_answer_form``); the correctness test (``check_answer``) lives in the notebook's
hidden tests, which nbgrader strips from the student version, and carries the expected answer there.

The key never reaches a grading kernel either: before grading, ``gradelib.grading.hidden`` rewrites each
hidden ``check_answer(..., expected=...)`` as ``record_answer(...)``, which only reports the student's
answer (as an output of type ``ANSWER_MIME``); the grader marks it outside the kernel with ``answer_problem``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from numbers import Integral, Real

from IPython.display import display as _display

from gradelib.checks._core import make_read_only, run_check

KINDS = ("choice", "integer", "number", "indices")
ANSWER_MIME = "application/vnd.gradelib.answer+json"


def _form_problem(answer: object, kind: str, options: str = "ABCD") -> str | None:
    if answer is None or answer is Ellipsis:
        return "no answer yet: replace the placeholder with your answer"
    if kind == "choice":
        if type(answer) is not str or answer.strip().upper() not in options:
            return f"answer with one letter from {', '.join(options)} as a string, e.g. \"{options[0]}\""
    elif kind == "integer":
        if isinstance(answer, bool) or not isinstance(answer, Integral):
            return f"answer with a whole number (an int), got {type(answer).__name__}"
    elif kind == "number":
        if isinstance(answer, bool) or not isinstance(answer, Real) or not math.isfinite(float(answer)):
            return f"answer with a finite number, got {answer!r}"
    elif kind == "indices":
        if type(answer) not in (set, list, tuple) or not all(isinstance(i, Integral) and not isinstance(i, bool) for i in answer):
            return "answer with a set of integer positions, e.g. {0, 3}"
    else:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return None


def _canonical(answer: object, kind: str):
    if kind == "choice":
        return answer.strip().upper()
    if kind == "indices":
        return frozenset(int(i) for i in answer)
    return answer


def check_answer_form(label: str, answer: object, *, kind: str, options: str = "ABCD") -> None:
    """Visible test: the answer is present and well-formed (says nothing about correctness)."""
    problem = _form_problem(answer, kind, options)
    if problem is not None:
        raise AssertionError(f"{label}: {problem}")


def check_answer(label: str, answer: object, *, expected: object, kind: str, points: float,
                 options: str = "ABCD", rel_tol: float = 1e-3, mistakes: Mapping | None = None) -> float:
    """Hidden test: the answer equals ``expected`` (numbers to ``rel_tol``). All or nothing.

    ``mistakes`` maps plausible wrong answers to their diagnosis (``{1.636: "that is the notes' value"}``):
    an answer equal to one of them (numbers to ``rel_tol``) is told why, instead of "not the expected answer".
    """

    def is_correct() -> str | None:
        return answer_problem(answer, expected=expected, kind=kind, options=options, rel_tol=rel_tol,
                              mistakes=mistakes)

    return run_check(label, [("answer", is_correct)], points, reference=())  # a value, not code: nothing to forbid


def answer_problem(answer: object, *, expected: object, kind: str, options: str = "ABCD",
                   rel_tol: float = 1e-3, mistakes: Mapping | None = None) -> str | None:
    """None when ``answer`` is well-formed and equals ``expected`` (numbers to ``rel_tol``), else the diagnosis:
    a known mistake's own message, or "not the expected answer". It never names the expected answer."""
    problem = _form_problem(answer, kind, options)
    if problem is not None:
        return problem
    given = _canonical(answer, kind)

    def equals(value: object) -> bool:
        wanted = _canonical(value, kind)
        if kind == "number":
            return math.isclose(float(given), float(wanted), rel_tol=rel_tol)
        return given == wanted

    if equals(expected):
        return None
    for wrong, diagnosis in (mistakes or {}).items():
        if _form_problem(wrong, kind, options) is None and equals(wrong):
            return str(diagnosis)
    return "not the expected answer"


def recorded_form(answer: object, kind: str) -> object:
    """The answer as JSON carries it (a sorted list for a set of indices), and back again on the grader's side."""
    canonical = _canonical(answer, kind)
    return sorted(canonical) if kind == "indices" else canonical


def record_answer(label: str, answer: object, *, kind: str, points: float, options: str = "ABCD") -> None:
    """Grading kernels run this in place of ``check_answer``: it checks the answer's form and reports the
    answer to the autograder, which marks it against a key that never enters the kernel."""
    check_answer_form(label, answer, kind=kind, options=options)
    _display({ANSWER_MIME: {"label": label, "kind": kind, "answer": recorded_form(answer, kind)},
              "text/plain": f"{label}: answer recorded; the autograder marks it"}, raw=True)


make_read_only(__name__)
