"""The machinery shared by every exercise check.

A check runs the student's code on a list of *cases*. Each case returns ``None`` when it passes or a
short diagnosis when it fails ("rows of the weights do not sum to 1"). The check prints a compact
✓/✗ table and turns the cases into a score.

How the score reaches nbgrader (0.9): for a grade cell, nbgrader walks the cell's outputs in order
and stops at the first one that is an error, anything on stderr (score 0), or an ``execute_result``
whose text is a number (that number is the partial score, in points). So when some cases fail, a
check first *publishes its partial score as an execute_result* and then raises ``CheckFailed``:
nbgrader records the partial score, and the student still sees a failed cell. When every case
passes, the check returns the full points, which the cell displays as its result.

Checks never write to stderr: a stray warning would score the cell 0.
"""

from __future__ import annotations

import math
import sys
import types
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

# Bound when gradelib is imported (the first cell of every notebook), before any student code runs,
# so that rebinding torch.allclose, torch.equal or friends in the notebook cannot change what a check
# concludes. Topic checks take these from here rather than from torch, whenever they are imported.
_Tensor = torch.Tensor
_isfinite = torch.isfinite
_abs = torch.abs
equal = torch.equal
isnan = torch.isnan
nan_to_num = torch.nan_to_num
softmax = torch.softmax
log_softmax = torch.log_softmax
logsumexp = torch.logsumexp
sigmoid = torch.sigmoid
xlogy = torch.xlogy
randn = torch.randn
rand = torch.rand
randint = torch.randint
manual_seed = torch.manual_seed
fork_rng = torch.random.fork_rng
grad = torch.autograd.grad
kl_divergence = torch.distributions.kl_divergence
Normal = torch.distributions.Normal
Bernoulli = torch.distributions.Bernoulli
MultivariateNormal = torch.distributions.MultivariateNormal

Case = tuple[str, Callable[[], "str | None"]]


class CheckFailed(AssertionError):
    """Raised by a check when at least one of its cases failed; ``score`` is the partial score in points."""

    def __init__(self, message: str, score: float = 0.0):
        super().__init__(message)
        self.score = score


class ReferenceUsed(Exception):
    """The answer ran gradelib.reference's implementation of the very exercise being graded."""


class ReadOnlyModule(types.ModuleType):
    """A module whose attributes cannot be rebound from outside, e.g. ``checks.check_x = lambda *a: 1.0``."""

    def __setattr__(self, name, value):
        raise AttributeError(f"{self.__name__} is read-only while grading: cannot rebind {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"{self.__name__} is read-only while grading: cannot delete {name!r}")


def make_read_only(module_name: str) -> None:
    """Freeze a gradelib module's attributes (call at the end of the module)."""
    sys.modules[module_name].__class__ = ReadOnlyModule


@contextmanager
def forbid(*functions, exercise: str):
    """Fail with ReferenceUsed if any of ``functions`` (the reference for this exercise) runs inside the block.

    Wrap only the call into the student's code: the check itself may use the reference outside it.
    """
    codes = {id(f.__code__): f.__code__ for f in functions if hasattr(f, "__code__")}
    caught: list[str] = []
    previous = sys.getprofile()

    def watch(frame, event, arg):
        if event == "call" and id(frame.f_code) in codes:
            caught.append(frame.f_code.co_name)

    sys.setprofile(watch)
    try:
        yield
    finally:
        sys.setprofile(previous)
    if caught:
        raise ReferenceUsed(f"your answer calls gradelib.reference's {caught[0]}: the {exercise} must be your own code")


@dataclass(frozen=True)
class CaseResult:
    name: str
    passed: bool
    diagnosis: str = ""
    used_reference: bool = False


def run_check(title: str, cases: Sequence[Case], points: float) -> float:
    """Run ``cases``, print the table, and return (or publish) the score in points.

    Returns ``points`` when every case passes. Otherwise publishes the partial score (if above 0)
    and raises :class:`CheckFailed`.
    """
    results = [_run_case(name, case) for name, case in cases]
    passed = sum(result.passed for result in results)
    # Calling the reference for the graded exercise earns nothing, whatever else passed.
    score = 0.0 if any(r.used_reference for r in results) else round(points * passed / len(results), 2)
    print(format_table(title, results, score, points))
    if passed == len(results):
        return float(points)
    if score > 0:
        _publish_score(score)
    failed = len(results) - passed
    raise CheckFailed(f"{failed} of {len(results)} checks failed for {title}: see the table above.", score)


def _run_case(name: str, case: Callable[[], "str | None"]) -> CaseResult:
    try:
        with warnings.catch_warnings():
            # A warning printed on stderr would cost the student the whole cell.
            warnings.simplefilter("ignore")
            diagnosis = case()
    except NotImplementedError:
        diagnosis = "not implemented yet (the function still raises NotImplementedError)"
    except ReferenceUsed as error:
        return CaseResult(name, False, str(error), used_reference=True)
    except Exception as error:  # the student's code raised: report it as a diagnosis, not a crash
        diagnosis = f"raised {type(error).__name__}: {_shorten(str(error))}"
    return CaseResult(name, diagnosis is None, diagnosis or "")


def format_table(title: str, results: Iterable[CaseResult], score: float, points: float) -> str:
    lines = [f"{title}: {score:g} / {points:g} points"]
    for result in results:
        mark = "✓" if result.passed else "✗"
        line = f"  {mark} {result.name}"
        if not result.passed:
            line += f"  <- {result.diagnosis}"
        lines.append(line)
    return "\n".join(lines)


def _bind_displayhook():
    """The kernel's display hook and its call method, bound now, before any student code runs,
    so that rebinding ``get_ipython().displayhook`` later cannot change the score a check publishes."""
    try:
        from IPython import get_ipython
    except ImportError:  # plain Python: nothing to publish to
        return None
    shell = get_ipython()
    hook = getattr(shell, "displayhook", None)
    return None if hook is None else (hook, type(hook).__call__)


_DISPLAYHOOK = _bind_displayhook()


def _publish_score(score: float) -> None:
    """Emit ``score`` as the cell's execute_result, which nbgrader reads as partial credit."""
    if _DISPLAYHOOK is not None:
        hook, call = _DISPLAYHOOK
        call(hook, score)


def _shorten(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# Helpers for writing cases. They take nothing on trust from the object under test: a tensor
# subclass or an object whose __eq__ always says True is rejected by type before any comparison.


def tensor_problem(value: object, name: str, shape: Sequence[int] | None = None, dtype: torch.dtype | None = None) -> str | None:
    """A diagnosis if ``value`` is not a finite tensor of the given shape and dtype, else None."""
    if type(value) is not _Tensor and not isinstance(value, torch.nn.Parameter):
        return f"{name} should be a torch.Tensor, got {type(value).__name__}"
    if shape is not None and tuple(value.shape) != tuple(shape):
        return f"{name} has shape {tuple(value.shape)}, expected {tuple(shape)}"
    if dtype is not None and value.dtype != dtype:
        return f"{name} has dtype {value.dtype}, expected {dtype}"
    if value.is_floating_point() and not bool(_isfinite(value).all()):
        return f"{name} contains NaN or inf"
    return None


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute elementwise difference, computed in float64 (inf when shapes differ)."""
    if tuple(a.shape) != tuple(b.shape):
        return math.inf
    return float(_abs(a.detach().double() - b.detach().double()).max()) if a.numel() else 0.0


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> bool:
    return max_abs_diff(a, b) <= atol


def first_match(candidate: torch.Tensor, variants: Iterable[tuple[str, torch.Tensor]], atol: float = 1e-4) -> str | None:
    """The diagnosis of the first known-wrong variant that ``candidate`` reproduces, if any."""
    for diagnosis, variant in variants:
        if close(candidate, variant, atol):
            return diagnosis
    return None


def unpack_pair(result: object, what: str) -> tuple[object, object]:
    """Split a function result that must be a pair, or raise a readable error."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"{what} should return a pair (output, weights), got {type(result).__name__}")
    return result[0], result[1]


make_read_only(__name__)
