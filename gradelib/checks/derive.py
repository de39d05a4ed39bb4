"""Checks for derivations: a result the student writes as a SymPy expression over symbols the notebook provides.

An exercise declares its symbols and their domains once, as a dict from name to domain
(:func:`real`, :func:`positive`, :func:`interval`, :func:`integer`) or to a definition, a string in the
symbols declared before it (``"1 - beta_t"``) for a symbol that stands for an expression in the others::

    SYMBOLS = {"abar_prev": interval(0, 1), "beta_t": interval(0, 1),
               "alpha_t": "1 - beta_t", "abar_t": "abar_prev * alpha_t"}

The visible test checks only the form of each answer (:func:`check_derivation_form`: a SymPy expression in
the declared symbols); the hidden test passes the expected expressions and grades each named result as one
case of the table (:func:`check_derivation`), so a derivation with several results earns partial credit.

Equivalence is decided two ways. The answer is evaluated at seeded random points of the domain, at 30
significant digits; agreement at every point passes, so an equivalent form passes even where
``sympy.simplify`` cannot show it. Where the values disagree (or cannot be computed), ``simplify(answer -
expected)`` gets a second say: a proof that the difference is 0 passes, anything else fails. Both run in
a forked child process that is killed after ``EVALUATE_SECONDS`` and ``SIMPLIFY_SECONDS``, so no answer can
hang the check: one result takes at most about their sum (see ``tests/test_checks_derive.py``).

A failing answer gets a diagnosis of the *kind* of error, never the expected expression: not an expression in
the given symbols, undefined in the domain, depends on a symbol it should not / misses a dependence, wrong
sign, off by a constant factor or an additive constant, correct at a special point the exercise declares
(``special={"t = 1": {"abar_prev": 1}}``) but not in general, or, failing all of these, not equivalent.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import random
import select
import signal
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from numbers import Number
from types import MappingProxyType
from typing import Callable, Mapping

import sympy
from sympy.core.function import AppliedUndef as _AppliedUndef
from sympy.logic.boolalg import Boolean as _Boolean
from sympy.parsing.sympy_parser import parse_expr as _parse_expr

from gradelib.checks._core import bound_now, make_read_only, run_check

# Bound when gradelib is imported (gradelib.checks imports this module): see bound_now.
_Expr, _Symbol, _Float, _Integer, _Relational = bound_now(sympy, "Expr Symbol Float Integer core.relational.Relational")
_simplify, _sympify, _evalf, _xreplace = bound_now(sympy, "simplify sympify Expr.evalf Basic.xreplace")
_NOT_FINITE = bound_now(sympy.S, "NaN ComplexInfinity Infinity NegativeInfinity")
_SYMPY_NAMES: Mapping[str, object] = MappingProxyType({name: getattr(sympy, name) for name in sympy.__all__})
_Random, _monotonic, _fork = random.Random, time.monotonic, getattr(os, "fork", None)

EVALUATE_SECONDS = 3.0  # to evaluate one answer at every point
SIMPLIFY_SECONDS = 2.0  # for simplify(answer - expected), consulted only when the values disagree
DIGITS = 30  # working precision of the evaluation
POINTS = 8  # random points of the domain at which the answer must agree
PROBES = 4  # points used for each dependence and each special point
MAX_NODES = 5000  # an answer larger than this (as a tree) is refused before any work
MAX_DEPTH = 100  # and so is one nested deeper than this


# --- Domains ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Domain:
    """Where a symbol's values lie: what the random points are drawn from and what SymPy may assume."""

    kind: str  # "real", "positive", "interval" or "integer"
    lo: float
    hi: float

    def sample(self, rng: random.Random) -> int | float:
        if self.kind == "integer":
            return rng.randint(int(self.lo), int(self.hi))
        if self.kind == "positive":  # log-uniform: scales from lo to hi are equally likely
            return math.exp(rng.uniform(math.log(self.lo), math.log(self.hi)))
        margin = 0.01 * (self.hi - self.lo)  # an open interval: stay off its ends
        return rng.uniform(self.lo + margin, self.hi - margin)

    def assumptions(self) -> dict[str, bool]:
        if self.kind == "integer":
            return {"integer": True, **({"positive": True} if self.lo >= 1 else {"nonnegative": True} if self.lo >= 0 else {})}
        if self.kind == "positive" or (self.kind == "interval" and self.lo >= 0):
            return {"positive": True}
        if self.kind == "interval" and self.hi <= 0:
            return {"negative": True}
        return {"real": True}


def real(lo: float = -3.0, hi: float = 3.0) -> Domain:
    """Any real number (points are drawn uniformly from [lo, hi])."""
    return Domain("real", float(lo), float(hi))


def positive(lo: float = 0.1, hi: float = 10.0) -> Domain:
    """A positive number, e.g. a variance or a density (points are drawn log-uniformly from [lo, hi])."""
    if not 0 < lo < hi:
        raise ValueError(f"positive() needs 0 < lo < hi, got {lo}, {hi}")
    return Domain("positive", float(lo), float(hi))


def interval(lo: float, hi: float) -> Domain:
    """A number in the open interval (lo, hi), e.g. ``interval(0, 1)`` for ᾱ_t."""
    if not lo < hi:
        raise ValueError(f"interval() needs lo < hi, got {lo}, {hi}")
    return Domain("interval", float(lo), float(hi))


def integer(lo: int = 1, hi: int = 64) -> Domain:
    """An integer from lo to hi inclusive, e.g. a dimension d_k ≥ 1 or a batch size N."""
    if not int(lo) < int(hi):
        raise ValueError(f"integer() needs lo < hi, got {lo}, {hi}")
    return Domain("integer", int(lo), int(hi))


@dataclass(frozen=True)
class _Problem:
    """The declared symbols: ``names`` maps each name to its canonical Symbol (with its domain's
    assumptions), ``free`` are the independent ones with their domains, and ``definitions`` give each
    dependent one in terms of the free ones."""

    names: Mapping[str, sympy.Symbol]
    free: tuple[tuple[sympy.Symbol, Domain], ...]
    definitions: Mapping[sympy.Symbol, sympy.Expr]

    def parse(self, text: str, what: str) -> sympy.Expr:
        """An instructor's expression (a string) over the declared symbols, parsed with SymPy's own names
        as they were at import."""
        expression = _parse_expr(text, local_dict=dict(self.names), global_dict=dict(_SYMPY_NAMES))
        unknown = sorted(s.name for s in expression.free_symbols if self.names.get(s.name) != s)
        if unknown:
            raise ValueError(f"{what} uses undeclared symbols: {', '.join(unknown)}")
        return expression

    def in_free_symbols(self, expression: sympy.Expr) -> sympy.Expr:
        """``expression`` over the canonical free symbols: each symbol is matched by name (a student's
        Symbol may carry other assumptions) and each dependent symbol replaced by its definition."""
        by_name = {s: self.names[s.name] for s in expression.free_symbols}
        expression = _xreplace(expression, by_name)
        return _xreplace(expression, dict(self.definitions)) if self.definitions else expression


def _problem(symbols: Mapping[str, "Domain | str"]) -> _Problem:
    if not isinstance(symbols, Mapping) or not symbols:
        raise TypeError("symbols must be a dict from each symbol's name to its domain or definition")
    names: dict[str, sympy.Symbol] = {}
    free, definitions = [], {}
    for name, spec in symbols.items():
        if isinstance(spec, Domain):
            names[name] = _Symbol(name, **spec.assumptions())
            free.append((names[name], spec))
        elif isinstance(spec, str):
            names[name] = _Symbol(name, real=True)
            partial = _Problem(MappingProxyType(dict(names)), (), {})
            definitions[names[name]] = partial.parse(spec, f"the definition of {name}")
        else:
            raise TypeError(f"symbol {name}: give a domain (real(), positive(), interval(lo, hi), integer()) "
                            f"or a definition as a string, got {type(spec).__name__}")
    resolved: dict[sympy.Symbol, sympy.Expr] = {}
    for symbol, definition in definitions.items():  # each definition names only symbols declared before it
        resolved[symbol] = _xreplace(definition, resolved)
    if not free:
        raise ValueError("declare at least one symbol with a domain")
    return _Problem(MappingProxyType(names), tuple(free), MappingProxyType(resolved))


def make_symbols(symbols: Mapping[str, "Domain | str"]) -> tuple[sympy.Symbol, ...]:
    """The SymPy symbols of an exercise, in the order declared, for the notebook cell that provides them:
    ``abar_prev, beta_t, alpha_t, abar_t = make_symbols(SYMBOLS)``. (The checks match symbols by name,
    so symbols made with ``sympy.symbols`` work as well.)"""
    return tuple(_problem(symbols).names.values())


# --- Form ---------------------------------------------------------------------------------------

_NOT_AN_EXPRESSION = "not an expression in the given symbols"


def _walk_problem(answer: sympy.Basic) -> str | None:
    """Walk the answer's tree (iteratively, so no nesting can overflow the stack): too large, too deep,
    or holding a function that is not SymPy's own."""
    stack, nodes = [(answer, 1)], 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            return f"is too large to grade (more than {MAX_NODES} terms or {MAX_DEPTH} levels deep): simplify it first"
        if isinstance(node, _AppliedUndef):
            return f"uses a function {type(node).__name__}(…) that the exercise does not provide: {_NOT_AN_EXPRESSION}"
        if not type(node).__module__.startswith("sympy."):
            return f"contains a {type(node).__name__} that is not a SymPy object: {_NOT_AN_EXPRESSION}"
        stack.extend((arg, depth + 1) for arg in node.args)
    return None


def _form_problem(answer: object, problem: _Problem) -> str | None:
    """None when ``answer`` is a finite SymPy expression over the declared symbols, else what is wrong."""
    given = ", ".join(problem.names)
    if answer is None or answer is Ellipsis:
        return "no answer yet: replace the placeholder with your expression"
    if isinstance(answer, str):
        return f"a string, {_NOT_AN_EXPRESSION}: build it from the SymPy symbols {given}"
    if isinstance(answer, _Relational) or (isinstance(answer, _Boolean) and not isinstance(answer, _Expr)):
        return f"an equation or a condition, {_NOT_AN_EXPRESSION}: give only the expression (the right-hand side)"
    if not isinstance(answer, _Expr):
        kind = ("a function" if callable(answer) else f"a number ({type(answer).__name__})" if isinstance(answer, Number)
                else f"a {type(answer).__name__}")
        return f"{kind}, {_NOT_AN_EXPRESSION}: write the result itself, built from the SymPy symbols {given}"
    structural = _walk_problem(answer)
    if structural:
        return structural
    unknown = sorted({s.name for s in answer.free_symbols if not isinstance(s, _Symbol) or s.name not in problem.names})
    if unknown:
        return f"uses {', '.join(unknown)}, which the exercise does not provide: {_NOT_AN_EXPRESSION} ({given})"
    if any(answer.has(atom) for atom in _NOT_FINITE):
        return f"contains nan or an infinity (zoo, oo), {_NOT_AN_EXPRESSION}: a division by zero?"
    return None


def check_derivation_form(title: str, answers: Mapping[str, object], *, symbols: Mapping[str, "Domain | str"]) -> None:
    """Visible test: each answer is a SymPy expression in the declared symbols (says nothing about
    correctness). Raises ``AssertionError`` naming every part that is not, like ``check_answer_form``."""
    problem = _problem(symbols)
    problems = [f"{name}: {issue}" for name, answer in answers.items() if (issue := _form_problem(answer, problem))]
    if problems:
        raise AssertionError(f"{title}: " + "; ".join(problems))


# --- Evaluation, time-boxed -----------------------------------------------------------------------


def _quiet_child() -> None:
    """In the forked child: nothing it does may reach the kernel's output (ipykernel forwards fds 1 and 2)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    sys.stdout = sys.stderr = io.StringIO()
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _in_child(function: Callable[[], object], seconds: float) -> tuple[str, object]:
    """Run ``function()`` in a forked child and return ("ok", its result), ("error", the exception's
    name) or ("timeout", None) once ``seconds`` have passed, the child then killed."""
    read_end, write_end = os.pipe()
    try:
        pid = _fork()
    except OSError:  # no more processes allowed: fall back to a thread
        os.close(read_end)
        os.close(write_end)
        return _in_thread(function, seconds)
    if pid == 0:  # the child: compute, send, leave without running any of the parent's exit handlers
        try:
            os.close(read_end)
            _quiet_child()
            try:
                outcome = ("ok", function())
            except BaseException as error:  # noqa: BLE001 (a RecursionError or MemoryError included)
                outcome = ("error", type(error).__name__)
            data = memoryview(pickle.dumps(outcome))
            while data:
                data = data[os.write(write_end, data):]
        finally:
            os._exit(0)
    os.close(write_end)
    chunks, finished, deadline = [], False, _monotonic() + seconds
    try:
        while (remaining := deadline - _monotonic()) > 0:
            if select.select([read_end], [], [], remaining)[0]:
                chunk = os.read(read_end, 1 << 16)
                if not chunk:
                    finished = True
                    break
                chunks.append(chunk)
    finally:
        os.close(read_end)
        if not finished:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    if not finished:
        return ("timeout", None)
    try:
        return pickle.loads(b"".join(chunks))
    except Exception as error:  # noqa: BLE001 (the child died mid-write)
        return ("error", type(error).__name__)


def _in_thread(function: Callable[[], object], seconds: float) -> tuple[str, object]:
    """Where there is no fork: a daemon thread, waited for at most ``seconds`` (it cannot be stopped,
    but the check goes on without it)."""
    box: list[tuple[str, object]] = []

    def run():
        try:
            box.append(("ok", function()))
        except BaseException as error:  # noqa: BLE001
            box.append(("error", type(error).__name__))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(seconds)
    return box[0] if box else ("timeout", None)


def _bounded(function: Callable[[], object], seconds: float) -> tuple[str, object]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Python 3.12 warns about fork() in a threaded process, on stderr
        return _in_child(function, seconds) if _fork is not None else _in_thread(function, seconds)


def _value(expression: sympy.Expr, point: dict) -> complex | None:
    """The expression's value at ``point`` as a complex number, or None where it is undefined."""
    try:
        value = complex(_evalf(expression, DIGITS, subs=point))
    except Exception:  # noqa: BLE001 (whatever SymPy raises, the value is undefined there)
        # evalf(subs=...) gives up on some well-defined values (PrecisionExhausted on a product of floors,
        # (T//t)*(H//p)): substituted first, the numbers evaluate exactly.
        try:
            value = complex(_evalf(_xreplace(expression, point), DIGITS))
        except Exception:  # noqa: BLE001
            return None
    return value if math.isfinite(value.real) and math.isfinite(value.imag) else None


def _values(expression: sympy.Expr, points: list[dict]) -> list[complex | None]:
    return [_value(expression, point) for point in points]


def _is_zero(difference: sympy.Expr) -> bool:
    return _simplify(difference).is_zero is True


_warm: list[bool] = []


def _warm_up() -> None:
    """SymPy imports parts of simplify and evalf on first use; do that once here (about 0.3 s), not in
    every child, where it would count against the time limits."""
    if not _warm:
        x = _Symbol("x", positive=True)
        _is_zero(x / (x + 1) - 1)
        _value(x**2 / 2, {x: _Float(0.5, DIGITS)})
        _warm.append(True)


# --- Points -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """The points one result is evaluated at: ``POINTS`` random ones, then, for each free symbol, the
    first ``PROBES`` of them with that symbol redrawn, then, for each special point, the first ``PROBES``
    with the special values put in."""

    points: list[dict]
    moved: dict  # free symbol -> indices of its redrawn points (they pair with indices 0..PROBES-1)
    special: dict  # label -> indices of its points

    @property
    def base(self) -> range:
        return range(POINTS)


def _as_number(value: object, domain: Domain | None) -> sympy.Expr:
    if domain is not None and domain.kind == "integer":
        return _Integer(int(value))
    return _Float(value, DIGITS)


def _layout(problem: _Problem, special: Mapping[str, Mapping[str, object]], rng: random.Random) -> _Layout:
    draws = [{symbol: domain.sample(rng) for symbol, domain in problem.free} for _ in range(POINTS)]
    rows: list[dict] = list(draws)
    moved = {}
    for symbol, domain in problem.free:
        moved[symbol] = []
        for draw in draws[:PROBES]:
            redrawn = domain.sample(rng)
            while redrawn == draw[symbol]:  # an integer may come out the same
                redrawn = domain.sample(rng)
            moved[symbol].append(len(rows))
            rows.append({**draw, symbol: redrawn})
    domains = dict(problem.free)
    special_rows = {}
    for label, values in special.items():
        special_rows[label] = []
        for draw in draws[:PROBES]:
            row = dict(draw)
            for name, value in values.items():
                symbol = problem.names.get(name)
                if symbol not in domains:
                    raise ValueError(f"special point {label!r}: {name} is not a declared symbol with a domain")
                fixed = problem.in_free_symbols(problem.parse(value, f"special point {label!r}") if isinstance(value, str)
                                                else _sympify(value))
                row[symbol] = float(fixed.subs({s: _as_number(v, domains[s]) for s, v in draw.items()}))
            special_rows[label].append(len(rows))
            rows.append(row)
    points = [{s: _as_number(v, domains[s]) for s, v in row.items()} for row in rows]
    return _Layout(points, moved, special_rows)


# --- Diagnosis --------------------------------------------------------------------------------------

_NICE_FACTORS = [(-1.0, "−1"), (2.0, "2"), (0.5, "½"), (-2.0, "−2"), (-0.5, "−½"), (3.0, "3"), (1 / 3, "⅓"),
                 (4.0, "4"), (0.25, "¼")]
_LOG_FACTORS = [(math.log(10), "ln 10"), (1 / math.log(10), "1/ln 10"), (math.log(2), "ln 2"),
                (1 / math.log(2), "1/ln 2"), (math.log2(10), "log₂ 10"), (math.log10(2), "log₁₀ 2")]


def _factor_message(factor: complex) -> str:
    if abs(factor.imag) > 1e-9:
        return "off by a constant factor"
    for value, text in _NICE_FACTORS:
        if math.isclose(factor.real, value, rel_tol=1e-9):
            return "has the wrong sign (off by a factor ×−1)" if value == -1 else f"off by a constant factor (×{text})"
    for value, text in _LOG_FACTORS:
        if math.isclose(factor.real, value, rel_tol=1e-9):
            return f"off by a constant factor (×{text}): a logarithm in another base?"
    return "off by a constant factor"


class _Comparison:
    """The answer's values (``got``) against the expected ones (``want``) at a layout's points."""

    def __init__(self, got: list, want: list, layout: _Layout, rel_tol: float):
        self.got, self.want, self.layout, self.rel_tol = got, want, layout, rel_tol
        self.usable = [i for i in layout.base if want[i] is not None]
        if len(self.usable) < POINTS // 2:
            raise ValueError("the expected expression is undefined at most points of the declared domain")
        # What "about 0" means for this result: a small fraction of its typical size.
        self.scale = 1e-4 * max(abs(want[i]) for i in self.usable) or 1e-12

    def close(self, a: complex | None, b: complex | None, rel_tol: float | None = None) -> bool:
        return (a is not None and b is not None
                and abs(a - b) <= (rel_tol or self.rel_tol) * max(abs(a), abs(b), self.scale))

    def agree(self, i: int) -> bool:
        """Whether the answer equals the result at point ``i``."""
        return self.close(self.got[i], self.want[i])

    def equivalent(self) -> bool:
        interior = list(self.usable) + [i for indices in self.layout.moved.values() for i in indices]
        return all(self.agree(i) for i in interior if self.want[i] is not None)

    def depends_on(self, values: list, symbol) -> bool:
        return any(values[i] is not None and values[j] is not None and not self.close(values[i], values[j])
                   for i, j in zip(range(PROBES), self.layout.moved[symbol]))

    def constant(self, value: Callable[[int], complex], floor: float) -> complex | None:
        """The common value of ``value(i)`` at the usable points, if they all agree to 1e-6 of their size, or
        of ``floor`` where they are near 0: the result's scale for a difference, but not for a ratio, which is
        a pure number (a ratio of 1.001 is no constant factor however large the result)."""
        first = value(self.usable[0])
        return first if all(abs(value(i) - first) <= 1e-6 * max(abs(value(i)), abs(first), floor)
                            for i in self.usable) else None


def _diagnose(comparison: _Comparison, problem: _Problem) -> str:
    got, want, usable = comparison.got, comparison.want, comparison.usable
    if any(got[i] is None for i in usable):
        return ("is undefined or infinite at some points of the domain where the result is finite "
                "(a division by zero, or the log of a non-positive number?)")
    if any(abs(got[i].imag) > comparison.rel_tol * max(abs(got[i]), comparison.scale) and abs(want[i].imag) == 0 for i in usable):
        return "takes complex values where the result is real (the log or square root of a negative number?)"
    extra = [s.name for s, _ in problem.free if comparison.depends_on(got, s) and not comparison.depends_on(want, s)]
    missing = [s.name for s, _ in problem.free if comparison.depends_on(want, s) and not comparison.depends_on(got, s)]
    if extra or missing:
        return "; ".join(([f"depends on {', '.join(extra)}, which it should not"] if extra else [])
                         + ([f"misses a dependence on {', '.join(missing)}"] if missing else []))
    varies = any(comparison.depends_on(want, s) for s, _ in problem.free)
    if varies:  # for a constant result, a factor or an offset would give the answer away
        # An offset first: on a large result (10⁷) an offset of 1 leaves a ratio that is 1 to within 1e-6.
        if comparison.constant(lambda i: got[i] - want[i], comparison.scale) is not None:
            return "off by an additive constant"
        nonzero = all(abs(want[i]) > comparison.scale for i in usable)
        factor = comparison.constant(lambda i: got[i] / want[i], 1e-12) if nonzero else None
        if factor is not None:
            return _factor_message(factor)
    for label, indices in comparison.layout.special.items():
        if all(want[i] is not None for i in indices) and all(comparison.agree(i) for i in indices):
            return f"correct at {label} but not in general"
    differ = sum(not comparison.agree(i) for i in usable)
    return f"not equivalent to the expected result (it differs at {differ} of {len(usable)} random points of the domain)"


def _judge(answer: object, expected: sympy.Expr, problem: _Problem, special: Mapping, rng: random.Random,
           rel_tol: float) -> str | None:
    """None when ``answer`` is equivalent to ``expected`` (over the free symbols) in the domain, else a diagnosis."""
    issue = _form_problem(answer, problem)
    if issue:
        return issue
    answer = problem.in_free_symbols(answer)
    layout = _layout(problem, special, rng)
    want = _values(expected, layout.points)
    status, got = _bounded(lambda: _values(answer, layout.points), EVALUATE_SECONDS)
    comparison = _Comparison(got, want, layout, rel_tol) if status == "ok" else None
    if comparison is not None and comparison.equivalent():
        return None
    status_zero, zero = _bounded(lambda: _is_zero(answer - expected), SIMPLIFY_SECONDS)
    if status_zero == "ok" and zero:
        return None
    if comparison is None:
        return (f"could not be evaluated within {EVALUATE_SECONDS:g} s: simplify it first" if status == "timeout"
                else "could not be evaluated: is it a plain expression in the given symbols?")
    rounding = (sympy.floor, sympy.ceiling)
    if answer.has(*rounding) and not expected.has(*rounding):
        return "rounds (floor, ceiling or //) where the exercise assumes exact division: write it without rounding"
    return _diagnose(comparison, problem)


def check_derivation(title: str, answers: Mapping[str, object], *, expected: Mapping[str, "str | sympy.Expr"],
                     symbols: Mapping[str, "Domain | str"], points: float,
                     special: Mapping[str, Mapping[str, object]] | None = None, seed: int = 0,
                     rel_tol: float = 1e-8) -> float:
    """Hidden test: each named result in ``answers`` is equivalent to ``expected``'s, in the domain ``symbols``
    declares. One case per expected result, so several results earn partial credit; returns the score.

    ``expected`` maps each result's name to its expression: preferably a string over the declared names,
    parsed with SymPy's functions as they were when gradelib was imported (so nothing the notebook rebinds
    changes it), or a SymPy expression. ``special`` maps a label ("t = 1") to values of some free symbols
    (numbers, or strings in the other symbols) where a plausible wrong answer happens to be right; an answer
    right there and wrong elsewhere is told so. ``seed`` fixes the random points; ``rel_tol`` is the
    relative tolerance of the numerical comparison.
    """
    problem = _problem(symbols)
    special = dict(special or {})
    _warm_up()
    wanted = {name: problem.in_free_symbols(problem.parse(value, f"expected {name!r}") if isinstance(value, str)
                                            else value)
              for name, value in expected.items()}
    missing = object()

    def case(name: str) -> Callable[[], str | None]:
        def judge() -> str | None:
            answer = answers.get(name, missing) if isinstance(answers, Mapping) else missing
            if answer is missing:
                return f"no answer given for {name}"
            return _judge(answer, wanted[name], problem, special, _Random(f"{seed}:{name}"), rel_tol)
        return judge

    return run_check(title, [(name, case(name)) for name in wanted], points, reference=())  # a value: no code to forbid


def derivation(title: str, *, symbols: Mapping[str, "Domain | str"], expected: Mapping[str, str],
               special: Mapping[str, Mapping[str, object]] | None = None, rel_tol: float = 1e-8) -> Callable[..., float]:
    """Declare one derivation exercise of a topic's checks module, whose key lives in the package (like the
    reference code), so the notebook's visible call gives immediate, diagnostic feedback and the hidden call
    checks again at other random points::

        derive_posterior_variance = derivation("DDPM posterior variance", symbols=SYMBOLS,
                                               expected={"beta_tilde": "(1 - abar_prev) / (1 - abar_t) * beta_t"},
                                               special={"t = 1": {"abar_prev": 1}})
        derive_posterior_variance({"beta_tilde": beta_tilde}, points=2)          # in the grade cell
        derive_posterior_variance({"beta_tilde": beta_tilde}, points=2, seed=31)  # its hidden part

    The declaration is checked now (symbols, and every expected expression parses in them), so a typo in a key
    fails at import, not in a student's notebook. The check is ``check(answers, *, points, seed=0) -> float``;
    ``check.title``, ``check.symbols`` and ``check.results`` (the names of the results, in order) record it.
    """
    problem = _problem(symbols)
    for name, text in expected.items():
        problem.parse(text, f"expected {name!r}")
    symbols, expected = MappingProxyType(dict(symbols)), MappingProxyType(dict(expected))
    special = MappingProxyType({label: MappingProxyType(dict(values)) for label, values in (special or {}).items()})
    # Passed as one mapping: the line a failing check's traceback shows must not read like a hidden test's
    # "expected=" (feedback must never look as if it quoted an answer key).
    declared = MappingProxyType({"expected": expected, "symbols": symbols, "special": special, "rel_tol": rel_tol})

    def check(answers: Mapping[str, object], *, points: float, seed: int = 0) -> float:
        return check_derivation(title, answers, points=points, seed=seed, **declared)

    check.__name__ = check.__qualname__ = "derivation_check"
    check.__doc__ = f"{title}: grade the results {', '.join(expected)} (a dict of SymPy expressions)."
    check.title, check.symbols, check.results = title, symbols, tuple(expected)
    check.symbols_for_notebook = lambda: make_symbols(symbols)
    return check


make_read_only(__name__)
