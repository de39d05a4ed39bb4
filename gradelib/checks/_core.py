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

import functools
import inspect
import math
import sys
import types
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch


def bound_now(owner: object, names: str) -> tuple:
    """``owner``'s attributes ``names`` (separated by spaces; dotted paths reach into submodules), looked up now.

    Checks bind every library function they rely on when gradelib is imported (the first cell of every
    notebook), before any student code runs, so that rebinding torch.allclose, sympy.simplify or friends in
    the notebook cannot change what a check concludes::

        equal, isnan = bound_now(torch, "equal isnan")
    """
    return tuple(functools.reduce(getattr, name.split("."), owner) for name in names.split())


# Topic checks take these from here rather than from torch, whenever they are imported.
_Tensor, _Generator, _isfinite, _abs = bound_now(torch, "Tensor Generator isfinite abs")
equal, isnan, nan_to_num = bound_now(torch, "equal isnan nan_to_num")
softmax, log_softmax, logsumexp, sigmoid, xlogy = bound_now(torch, "softmax log_softmax logsumexp sigmoid xlogy")
randn, rand, randint, manual_seed, fork_rng = bound_now(torch, "randn rand randint manual_seed random.fork_rng")
grad, kl_divergence = bound_now(torch, "autograd.grad distributions.kl_divergence")
Normal, Bernoulli, MultivariateNormal = bound_now(torch.distributions, "Normal Bernoulli MultivariateNormal")

Case = tuple[str, Callable[[], "str | None"]]

# How many standard errors a statistic may stray from its expected value before a check calls it wrong
# (see within_sigmas).
SIGMAS = 6


class CheckFailed(AssertionError):
    """Raised by a check when at least one of its cases failed; ``score`` is the partial score in points."""

    def __init__(self, message: str, score: float = 0.0):
        super().__init__(message)
        self.score = score


class ReferenceUsed(Exception):
    """The answer is gradelib.reference's implementation of the very exercise being graded (raised by a case)."""


class ReadOnlyModule(types.ModuleType):
    """A module whose attributes cannot be rebound from outside, e.g. ``checks.check_x = lambda *a: 1.0``."""

    def __setattr__(self, name, value):
        raise AttributeError(f"{self.__name__} is read-only while grading: cannot rebind {name!r}")

    def __delattr__(self, name):
        raise AttributeError(f"{self.__name__} is read-only while grading: cannot delete {name!r}")


def make_read_only(module_name: str) -> None:
    """Freeze a gradelib module's attributes (call at the end of the module)."""
    sys.modules[module_name].__class__ = ReadOnlyModule


def _codes(obj: object) -> list[types.CodeType]:
    """The code objects that run when ``obj`` (a function, method, partial, class or callable object) is used."""
    if isinstance(obj, (staticmethod, classmethod)):
        return _codes(obj.__func__)
    if isinstance(obj, property):
        return [code for f in (obj.fget, obj.fset, obj.fdel) if f is not None for code in _codes(f)]
    if isinstance(obj, functools.partial):
        return _codes(obj.func)
    if isinstance(obj, type):
        return [code for klass in obj.__mro__ if klass.__module__.split(".")[0] not in ("builtins", "torch")
                for member in vars(klass).values() for code in _codes(member)]
    function = getattr(obj, "__func__", obj)  # a bound method runs its function
    if isinstance(function, types.FunctionType):
        wrapped = getattr(function, "__wrapped__", None)
        return [function.__code__] + (_codes(wrapped) if wrapped is not None else [])
    if callable(obj) and not isinstance(obj, types.BuiltinFunctionType) and type(obj).__module__.split(".")[0] != "torch":
        return _codes(type(obj))  # a callable object runs its class's __call__
    return []


def _names_used(obj: object) -> set[str]:
    """Every global name the code of ``obj`` reads, nested functions and comprehensions included."""
    names: set[str] = set()
    pending = list(_codes(obj))
    while pending:
        code = pending.pop()
        names.update(code.co_names)
        pending += [const for const in code.co_consts if isinstance(const, types.CodeType)]
    return names


def _notebook_namespaces(answer: object) -> list[dict]:
    """The global namespaces the answer's own code reads: the notebook's, for an answer written in one
    (gradelib's and torch's modules are left alone)."""
    spaces: dict[int, dict] = {}
    for code_owner in ([answer] if not isinstance(answer, type) else
                       [m for k in answer.__mro__ if k.__module__.split(".")[0] not in ("builtins", "torch", "gradelib")
                        for m in vars(k).values()]):
        function = getattr(code_owner, "__func__", code_owner)
        function = getattr(function, "fget", function)   # a property reads its getter's globals
        function = getattr(function, "func", function)   # a partial, its function's
        space = getattr(function, "__globals__", None)
        if isinstance(space, dict) and not str(space.get("__name__", "")).startswith(("gradelib", "torch")):
            spaces[id(space)] = space
    return list(spaces.values())


class EarlierExercises:
    """One mistake costs one exercise, for exercises whose answer calls the student's earlier ones.

    A later exercise's code calls the earlier pieces by their names in the notebook (``MultiHeadAttention``
    calls ``scaled_dot_product_attention``). :meth:`cases` wraps a check's cases so that each runs the answer
    as it is first; where that fails, it runs again with gradelib's reference standing in for the earlier
    pieces the answer uses. If that makes it right, the case passes, and a note (printed once per check)
    names the earlier exercise to fix, the earliest that alone explains the failure::

        EARLIER = EarlierExercises({"predict_x0": ("exercise 3 (predict_x0)", ref.predict_x0)})
        return EARLIER.cases(fn, ("predict_x0",), "ddim_step", cases)      # at the end of a check's cases
    """

    def __init__(self, pieces: "dict[str, tuple[str, object]]"):
        self.pieces = dict(pieces)  # name in the notebook -> (the exercise that writes it, its reference)

    @contextmanager
    def _swapped(self, spaces: list[dict], names: Iterable[str]):
        saved = []
        try:
            for space in spaces:
                for name in names:
                    if name in space:
                        saved.append((space, name, space[name]))
                        space[name] = self.pieces[name][1]
            yield
        finally:
            for space, name, value in reversed(saved):
                space[name] = value

    def _used(self, answer: object, spaces: list[dict]) -> set[str]:
        """The earlier pieces the answer uses, directly or through the student's other pieces (a block builds
        MultiHeadAttention, which calls scaled_dot_product_attention)."""
        used, seen = _names_used(answer), set()
        while True:
            more = [space[name] for name in self.pieces if name in used and name not in seen
                    for space in spaces if name in space]
            seen |= {name for name in self.pieces if name in used}
            if not more:
                return used
            for piece in more:
                used |= _names_used(piece)

    def grade(self, answer: object, names: Iterable[str], attempt: Callable[[], "str | None"], what: str,
              noted: set) -> "str | None":
        """The diagnosis of ``attempt`` (a case that runs ``answer``), forgiving a failure that gradelib's
        pieces for the earlier exercises ``names`` cure; ``noted`` holds the notes printed so far."""
        failure = None
        try:
            own = attempt()
        except ReferenceUsed:
            raise
        except Exception as error:  # the earlier piece may be what raised
            failure, own = error, f"raised {type(error).__name__}: {error}"
        if own is None:
            return None
        spaces = _notebook_namespaces(answer)
        used = self._used(answer, spaces)
        swappable = [n for n in self.pieces if n in names and n in used and any(n in space for space in spaces)]
        if not swappable:
            if failure is not None:
                raise failure
            return own
        with self._swapped(spaces, swappable):
            fixed = attempt()
        if fixed is not None:
            return fixed
        culprits = swappable
        for name in swappable:  # in course order: the earliest exercise that alone explains the failure
            with self._swapped(spaces, [name]):
                try:
                    alone = attempt()
                except Exception:  # noqa: BLE001 (still failing, for whatever reason)
                    alone = "failed"
            if alone is None:
                culprits = [name]
                break
        exercises = " and ".join(self.pieces[name][0] for name in culprits)
        if exercises not in noted:
            noted.add(exercises)
            print(f"note: {what} is right when it uses gradelib's reference for {exercises}; with yours it fails "
                  f"({_shorten(str(own), 120)}). It earns its points here: fix {exercises}.")
        return None

    def cases(self, answer: object, names: Iterable[str], what: str, cases: "list[Case]") -> "list[Case]":
        """``cases``, each graded by :meth:`grade`, with one note per check."""
        noted: set = set()
        names = tuple(names)
        return [(name, (lambda case=case: self.grade(answer, names, case, what, noted))) for name, case in cases]


class _ReferenceWatch:
    """Notices, while a case runs, every call of the exercise's reference that the answer makes.

    A call counts as the answer's when, walking up the stack from the reference's frame, a frame of the
    answer's own code comes before any frame of a check (``gradelib.checks``): the check computing its
    expected value, or a callback a check hands to the answer, is not the answer calling the reference.
    Code objects are compared by identity, so a copy of the reference's code (a student who wrote the same
    lines) is not mistaken for the reference itself.
    """

    def __init__(self, reference: tuple, answer: object, title: str):
        self.reference = {id(code): code for obj in reference for code in _codes(obj)}
        self.answer = {id(code): code for code in _codes(answer)}
        self.title = title

    def _by_answer(self, frame) -> bool:
        while frame is not None:
            if id(frame.f_code) in self.answer:
                return True
            if frame.f_globals.get("__name__", "").startswith("gradelib.checks"):
                return False
            frame = frame.f_back
        return False

    @contextmanager
    def watching(self):
        caught: list[str] = []

        def watch(frame, event, arg):
            if event == "call" and id(frame.f_code) in self.reference and self._by_answer(frame):
                caught.append(frame.f_code.co_name)

        previous = sys.getprofile()
        sys.setprofile(watch)
        try:
            yield caught
        finally:
            sys.setprofile(previous)

    def message(self, name: str) -> str:
        return f"your answer calls gradelib.reference's {name}: {self.title} must be your own code"


@dataclass(frozen=True)
class CaseResult:
    name: str
    passed: bool
    diagnosis: str = ""
    used_reference: bool = False


def _as_tuple(reference: object) -> tuple:
    return tuple(reference) if isinstance(reference, (tuple, list)) else (reference,)


def run_check(title: str, cases: Sequence[Case], points: float, *, reference: object, answer: object = None) -> float:
    """Run ``cases``, print the table, and return (or publish) the score in points.

    ``reference`` is what the answer must not call: the function(s) or class(es) of ``gradelib.reference``
    that implement the exercise, or ``()`` where there is no code to forbid (a concept question). Every
    case runs watched: if ``answer`` (the student's function or class) calls the reference, directly or
    through its own helpers, that case fails with a message and the whole check scores 0. The cases
    themselves may call the reference freely (for the expected value).

    Returns ``points`` when every case passes. Otherwise publishes the partial score (if above 0)
    and raises :class:`CheckFailed`.
    """
    reference = _as_tuple(reference)
    if reference and answer is None:
        raise TypeError("run_check needs the answer whose calls of the reference it forbids")
    watch = _ReferenceWatch(reference, answer, title) if reference else None
    results = [_run_case(name, case, watch) for name, case in cases]
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


def exercise(title: str, *, reference: object):
    """Declare the check of one exercise: ``@exercise("Discriminator loss", reference=ref.discriminator_loss)``.

    The decorated function ``check_<exercise>(answer, points=…, seed=…)`` builds and *returns its cases*;
    calling it runs them with :func:`run_check` under ``title``, with ``answer`` (its first argument)
    forbidden to call ``reference`` (a function or class of ``gradelib.reference``, or a tuple of them whose
    first is the exercise's own). The check keeps its signature and returns the score in points.
    ``check.title`` and ``check.reference`` record the declaration, so tests can find every check's reference.
    """
    references = _as_tuple(reference)
    if not references:
        raise TypeError(f"{title}: an exercise check must name the reference its answers may not call")

    def decorate(build_cases: Callable) -> Callable:
        signature = inspect.signature(build_cases)

        @functools.wraps(build_cases)
        def check(*args, **kwargs) -> float:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            answer = next(iter(bound.arguments.values()))
            cases = build_cases(*bound.args, **bound.kwargs)
            return run_check(title, cases, bound.arguments["points"], reference=references, answer=answer)

        check.__signature__ = signature.replace(return_annotation="float")
        check.title, check.reference = title, references
        return check

    return decorate


def _run_case(name: str, case: Callable[[], "str | None"], watch: _ReferenceWatch | None) -> CaseResult:
    caught: list[str] = []
    try:
        with warnings.catch_warnings():
            # A warning printed on stderr would cost the student the whole cell.
            warnings.simplefilter("ignore")
            if watch is None:
                diagnosis = case()
            else:
                with watch.watching() as caught:
                    diagnosis = case()
    except NotImplementedError:
        diagnosis = "not implemented yet (the function still raises NotImplementedError)"
    except ReferenceUsed as error:
        return CaseResult(name, False, str(error), used_reference=True)
    except Exception as error:  # the student's code raised: report it as a diagnosis, not a crash
        diagnosis = f"raised {type(error).__name__}: {_shorten(str(error))}"
    if caught:
        return CaseResult(name, False, watch.message(caught[0]), used_reference=True)
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


def generator(seed: int) -> torch.Generator:
    """A CPU generator seeded with ``seed``: every check draws its cases from one, so a seed fixes them."""
    return _Generator().manual_seed(seed)


def within_sigmas(deviation: float, sigma: float, slack: float = 0.0) -> bool:
    """Whether a statistic that should be 0 on average, with standard error ``sigma``, is plausibly 0.

    The one rule for every statistical tolerance in the checks: ``|deviation| ≤ SIGMAS·sigma (+ slack)``
    with SIGMAS = 6. A correct answer strays that far with probability about 2e-9 (a two-sided Gaussian
    tail), so over every statistical comparison of every check and seed a correct answer practically
    never fails; the samples are large enough that each mistake the checks diagnose lies far outside it
    (the tests of each check confirm that). ``slack`` absorbs rounding when ``sigma`` can be 0.
    """
    return abs(deviation) <= SIGMAS * sigma + slack


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


def compare_case(got: torch.Tensor, want: torch.Tensor, atol: float,
                 variants: "Iterable[tuple[str, torch.Tensor]] | Callable[[], Iterable[tuple[str, torch.Tensor]]]",
                 otherwise: "str | Callable[[], str]", *, variant_atol: float | None = None) -> str | None:
    """None when ``got`` is within ``atol`` of ``want``; else the diagnosis of the first wrong variant it
    reproduces (``variants``: (diagnosis, value) pairs, or a function returning them, computed only when
    needed), else ``otherwise`` with the largest error. Vet ``got`` with :func:`tensor_problem` first.

    ``otherwise`` may instead be a function returning the whole message, called only when nothing matched
    (for a message that reports something other than the largest error). ``variant_atol`` is the tolerance
    for reproducing a variant, where a check uses another than ``atol``."""
    if close(got, want, atol):
        return None
    if callable(variants):
        variants = variants()
    diagnosis = first_match(got, variants, atol if variant_atol is None else variant_atol)
    if diagnosis:
        return diagnosis
    return otherwise() if callable(otherwise) else f"{otherwise} (max error {max_abs_diff(got, want):.3g})"


def unpack_pair(result: object, what: str) -> tuple[object, object]:
    """Split a function result that must be a pair, or raise a readable error."""
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        raise TypeError(f"{what} should return a pair (output, weights), got {type(result).__name__}")
    return result[0], result[1]


make_read_only(__name__)
