"""The derivation check (gradelib.checks.derive) accepts equivalent forms of real results of the course and
rejects plausible wrong ones, naming the kind of error without printing the result; it is time-boxed,
seeded, quiet on stderr, and publishes partial credit like every other check."""

import re
import time

import numpy
import pytest
import sympy as sp
import torch

from gradelib.checks import CheckFailed, derive
from gradelib.checks.derive import check_derivation, check_derivation_form, integer, interval, make_symbols, positive, real


class Derivation:
    """One result of the course: its symbols, the expected expression (as a hidden test writes it), the
    special points a plausible wrong answer is right at, and what a student might write."""

    def __init__(self, title, symbols, name, expected, special=None):
        self.title, self.symbols, self.name, self.expected, self.special = title, symbols, name, expected, special or {}
        self.s = dict(zip(symbols, make_symbols(symbols)))  # the symbols the notebook cell provides

    def check(self, answer, points=1, **kwargs):
        return check_derivation(self.title, {self.name: answer}, expected={self.name: self.expected},
                                symbols=self.symbols, special=self.special, points=points, **kwargs)

    def expected_expr(self):
        return sp.sympify(self.expected, locals=self.s)


i = sp.Symbol("i", integer=True)
DDPM_SYMBOLS = {"abar_prev": interval(0, 1), "beta_t": interval(0, 1), "alpha_t": "1 - beta_t", "abar_t": "abar_prev * alpha_t"}
T_EQUALS_1 = {"t = 1": {"abar_prev": 1}}  # ᾱ_0 = 1

DERIVATIONS = {
    "attention": Derivation("Var(q·k)", {"d_k": integer(1, 512)}, "var_qk", "d_k", {"d_k = 1": {"d_k": 1}}),
    "kl": Derivation("KL(N(μ, σ²) ‖ N(0, 1))", {"mu": real(), "sigma": positive()}, "kl",
                     "(mu**2 + sigma**2 - log(sigma**2) - 1) / 2", {"sigma = 1": {"sigma": 1}}),
    "gan": Derivation("The optimal discriminator", {"p_data": positive(), "p_g": positive()}, "d_star",
                      "p_data / (p_data + p_g)", {"p_g = p_data": {"p_g": "p_data"}}),
    "posterior_variance": Derivation("DDPM posterior variance", DDPM_SYMBOLS, "beta_tilde",
                                     "(1 - abar_prev) / (1 - abar_t) * beta_t", T_EQUALS_1),
    # The same result with ᾱ_t, ᾱ_{t-1} and β_t declared independent, as a cell may give them.
    "posterior_variance_free": Derivation("DDPM posterior variance",
                                          {"abar_t": interval(0, 1), "abar_prev": interval(0, 1), "beta_t": interval(0, 1)},
                                          "beta_tilde", "(1 - abar_prev) / (1 - abar_t) * beta_t", T_EQUALS_1),
    "posterior_mean_x0": Derivation("DDPM posterior mean", DDPM_SYMBOLS, "coef_x0",
                                    "sqrt(abar_prev) * beta_t / (1 - abar_t)", T_EQUALS_1),
    "posterior_mean_xt": Derivation("DDPM posterior mean", DDPM_SYMBOLS, "coef_xt",
                                    "sqrt(alpha_t) * (1 - abar_prev) / (1 - abar_t)", T_EQUALS_1),
    "x0_from_eps": Derivation("x̂_0 from ε", {"x_t": real(), "eps": real(), "abar_t": interval(0, 1), "alpha_t": interval(0, 1)},
                              "x0_hat", "(x_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t)", {"eps = 0": {"eps": 0}}),
    "infonce": Derivation("InfoNCE at uniform logits", {"N": integer(2, 4096), "s": real()}, "loss", "log(N)",
                          {"N = 1": {"N": 1}}),
    "mel": Derivation("The mel scale", {"f": positive(1, 20000)}, "mel", "2595 * log(1 + f / 700, 10)", {"f = 0": {"f": 0}}),
    "mel_inverse": Derivation("The inverse mel scale", {"m": positive(1, 4000)}, "hz", "700 * (10**(m / 2595) - 1)",
                              {"m = 0": {"m": 0}}),
}

# What students might write, as functions of the cell's symbols: equivalent forms, then wrong forms with the
# diagnosis each must get.
ACCEPTED = {
    "attention": [lambda s: s["d_k"], lambda s: sp.Sum(1, (i, 1, s["d_k"])), lambda s: (s["d_k"]**2 + s["d_k"]) / (s["d_k"] + 1)],
    "kl": [lambda s: (s["mu"]**2 + s["sigma"]**2 - 1) / 2 - sp.log(s["sigma"]),
           lambda s: sp.Rational(1, 2) * (s["mu"]**2 + s["sigma"]**2) - sp.log(s["sigma"]) - 0.5],
    "gan": [lambda s: 1 / (1 + s["p_g"] / s["p_data"]), lambda s: 1 - s["p_g"] / (s["p_data"] + s["p_g"])],
    "posterior_variance": [lambda s: (1 - s["abar_prev"]) * (1 - s["alpha_t"]) / (1 - s["abar_t"]),
                           lambda s: 1 / (s["alpha_t"] / s["beta_t"] + 1 / (1 - s["abar_prev"]))],  # 1 / total precision
    "posterior_variance_free": [lambda s: s["beta_t"] * (1 - s["abar_prev"]) / (1 - s["abar_t"]),
                                lambda s: (s["beta_t"] - s["abar_prev"] * s["beta_t"]) / (1 - s["abar_t"])],
    "posterior_mean_x0": [lambda s: sp.sqrt(s["abar_prev"]) * (1 - s["alpha_t"]) / (1 - s["abar_t"]),
                          lambda s: sp.sqrt(s["abar_prev"]) * s["beta_t"] / (1 - s["abar_prev"] * (1 - s["beta_t"]))],
    "posterior_mean_xt": [lambda s: sp.sqrt(1 - s["beta_t"]) * (1 - s["abar_prev"]) / (1 - s["abar_t"]),
                          lambda s: sp.sqrt(s["abar_t"] / s["abar_prev"]) * (1 - s["abar_prev"]) / (1 - s["abar_t"])],
    "x0_from_eps": [lambda s: s["x_t"] / sp.sqrt(s["abar_t"]) - sp.sqrt(1 / s["abar_t"] - 1) * s["eps"],
                    lambda s: sp.sqrt(1 / s["abar_t"]) * s["x_t"] - sp.sqrt((1 - s["abar_t"]) / s["abar_t"]) * s["eps"]],
    "infonce": [lambda s: -sp.log(1 / s["N"]), lambda s: sp.log(s["N"] * sp.exp(s["s"])) - s["s"],
                lambda s: -sp.log(sp.exp(s["s"]) / (s["N"] * sp.exp(s["s"])))],
    "mel": [lambda s: 2595 * sp.log(1 + s["f"] / 700) / sp.log(10), lambda s: 2595 * sp.log((700 + s["f"]) / 700, 10),
            lambda s: 2595 * (sp.log(700 + s["f"], 10) - sp.log(700, 10))],
    "mel_inverse": [lambda s: 700 * 10**(s["m"] / 2595) - 700, lambda s: 700 * (sp.exp(s["m"] * sp.log(10) / 2595) - 1)],
}

REJECTED = {
    "attention": [(lambda s: sp.sqrt(s["d_k"]), "correct at d_k = 1 but not in general"),  # the std, not the variance
                  (lambda s: sp.Integer(1), "misses a dependence on d_k"),
                  (lambda s: 2 * s["d_k"], "off by a constant factor (×2)")],
    "kl": [(lambda s: s["mu"]**2 + s["sigma"]**2 - sp.log(s["sigma"]**2) - 1, "off by a constant factor (×2)"),
           (lambda s: (s["mu"]**2 + s["sigma"]**2 - sp.log(s["sigma"]**2)) / 2, "off by an additive constant"),
           (lambda s: (s["mu"]**2 + s["sigma"]**2 - sp.log(s["sigma"]) - 1) / 2, "correct at sigma = 1 but not in general"),
           (lambda s: (s["sigma"]**2 - sp.log(s["sigma"]**2) - 1) / 2, "misses a dependence on mu"),
           (lambda s: (1 + s["sigma"]**2 - s["mu"]**2 + sp.log(s["sigma"]**2)) / 2, "not equivalent")],
    "gan": [(lambda s: s["p_g"] / (s["p_data"] + s["p_g"]), "correct at p_g = p_data but not in general"),
            (lambda s: sp.Rational(1, 2), "misses a dependence on p_data, p_g"),
            (lambda s: s["p_data"] / s["p_g"], "not equivalent")],
    "posterior_variance": [(lambda s: s["beta_t"], "misses a dependence on abar_prev"),  # DDPM's other choice, σ² = β_t
                           (lambda s: sp.sqrt((1 - s["abar_prev"]) / (1 - s["abar_t"])) * s["beta_t"],
                            "correct at t = 1 but not in general"),
                           (lambda s: (1 - s["abar_t"]) / (1 - s["abar_prev"]) * s["beta_t"], "not equivalent"),
                           (lambda s: -(1 - s["abar_prev"]) / (1 - s["abar_t"]) * s["beta_t"], "has the wrong sign")],
    "posterior_variance_free": [(lambda s: (1 - s["abar_prev"]) / (1 - s["abar_t"]), "misses a dependence on beta_t"),
                                (lambda s: (1 - s["abar_prev"]) / (1 - s["abar_t"]) * s["beta_t"] / 2, "off by a constant factor (×½)")],
    "posterior_mean_x0": [(lambda s: s["beta_t"] / (1 - s["abar_t"]), "correct at t = 1 but not in general"),  # no √ᾱ_{t-1}
                          (lambda s: sp.sqrt(s["abar_t"]) * s["beta_t"] / (1 - s["abar_t"]), "not equivalent")],
    "posterior_mean_xt": [(lambda s: s["alpha_t"] * (1 - s["abar_prev"]) / (1 - s["abar_t"]), "correct at t = 1 but not in general"),
                          (lambda s: sp.sqrt(s["alpha_t"]) * (1 - s["abar_t"]) / (1 - s["abar_prev"]), "not equivalent")],
    "x0_from_eps": [(lambda s: (s["x_t"] - sp.sqrt(1 - s["alpha_t"]) * s["eps"]) / sp.sqrt(s["alpha_t"]),
                     "depends on alpha_t, which it should not; misses a dependence on abar_t"),
                    (lambda s: (s["x_t"] + sp.sqrt(1 - s["abar_t"]) * s["eps"]) / sp.sqrt(s["abar_t"]), "correct at eps = 0 but not in general"),
                    (lambda s: (s["x_t"] - sp.sqrt(1 - s["abar_t"]) * s["eps"]) / s["abar_t"], "not equivalent")],
    "infonce": [(lambda s: -sp.log(s["N"]), "has the wrong sign (off by a factor ×−1)"),
                (lambda s: sp.log(s["N"]) / sp.log(2), "off by a constant factor (×1/ln 2): a logarithm in another base?"),
                (lambda s: sp.log(s["N"]) - s["s"], "depends on s, which it should not"),
                (lambda s: s["N"] * sp.log(s["N"]), "correct at N = 1 but not in general")],
    "mel": [(lambda s: 2595 * sp.log(1 + s["f"] / 700), "off by a constant factor (×ln 10): a logarithm in another base?"),
            (lambda s: 2595 * sp.log(700 + s["f"], 10), "off by an additive constant"),
            (lambda s: 2595 * sp.log(s["f"] / 700, 10), "not equivalent")],
    "mel_inverse": [(lambda s: 700 * 10**(s["m"] / 2595), "off by an additive constant"),
                    (lambda s: 700 * (sp.exp(s["m"] / 2595) - 1), "correct at m = 0 but not in general"),
                    (lambda s: 10**(s["m"] / 2595) - 1, "off by a constant factor")],
}


# --- The formulas themselves, against independent computations ------------------------------------


def values_at(derivation, point):
    return float(derivation.expected_expr().subs({derivation.s[k]: v for k, v in point.items()}).evalf())


def test_formulas_var_qk_kl_infonce_mel_against_torch():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(200_000, 16, generator=g, dtype=torch.float64), torch.randn(200_000, 16, generator=g, dtype=torch.float64)
    var = (q * k).sum(-1).var().item()  # sd of the estimate ≈ 16·√(2/n) ≈ 0.05
    assert abs(var - values_at(DERIVATIONS["attention"], {"d_k": 16})) < 0.3
    for mu, sigma in [(0.3, 0.5), (-1.2, 2.0)]:
        normal = lambda m, sd: torch.distributions.Normal(torch.tensor(m, dtype=torch.float64), torch.tensor(sd, dtype=torch.float64))  # noqa: E731
        kl = torch.distributions.kl_divergence(normal(mu, sigma), normal(0.0, 1.0))
        assert values_at(DERIVATIONS["kl"], {"mu": mu, "sigma": sigma}) == pytest.approx(kl.item(), rel=1e-12)
    for n in (2, 7, 100):
        loss = torch.nn.functional.cross_entropy(torch.full((1, n), 0.7, dtype=torch.float64), torch.tensor([0]))
        assert values_at(DERIVATIONS["infonce"], {"N": n, "s": 0.7}) == pytest.approx(loss.item(), rel=1e-12)
    assert values_at(DERIVATIONS["mel"], {"f": 1000}) == pytest.approx(999.99, abs=0.01)  # the HTK scale's fixed point


def test_formulas_solved_symbolically():
    # D*: the maximizer of p_data log D + p_g log(1 - D) over D.
    gan = DERIVATIONS["gan"]
    D = sp.Symbol("D", positive=True)
    p, q = gan.s["p_data"], gan.s["p_g"]
    (d_star,) = sp.solve(sp.diff(p * sp.log(D) + q * sp.log(1 - D), D), D)
    assert sp.simplify(d_star - gan.expected_expr()) == 0
    # x̂_0: solve x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε for x_0.
    x0 = DERIVATIONS["x0_from_eps"]
    s, x_0 = x0.s, sp.Symbol("x_0", real=True)
    (solved,) = sp.solve(sp.Eq(s["x_t"], sp.sqrt(s["abar_t"]) * x_0 + sp.sqrt(1 - s["abar_t"]) * s["eps"]), x_0)
    assert sp.simplify(solved - x0.expected_expr()) == 0
    # The inverse mel scale: solve m = mel(f) for f.
    mel, inverse = DERIVATIONS["mel"], DERIVATIONS["mel_inverse"]
    (f,) = sp.solve(sp.Eq(inverse.s["m"], mel.expected_expr()), mel.s["f"])
    assert sp.simplify(f.subs(inverse.s["m"], sp.Symbol("m", positive=True)) - inverse.expected_expr()) == 0


def test_formulas_ddpm_posterior_by_completing_the_square():
    """q(x_{t-1} | x_t, x_0) ∝ N(x_t; √α_t x_{t-1}, β_t) · N(x_{t-1}; √ᾱ_{t-1} x_0, 1 - ᾱ_{t-1}): its precision
    is the sum of the two, its mean the precision-weighted sum of √α_t x_t / β_t and √ᾱ_{t-1} x_0 / (1 - ᾱ_{t-1})."""
    s = DERIVATIONS["posterior_variance"].s
    a, b, alpha = s["abar_prev"], s["beta_t"], 1 - s["beta_t"]
    variance = 1 / (alpha / b + 1 / (1 - a))
    relation = {s["alpha_t"]: alpha, s["abar_t"]: a * alpha}
    for key, want in [("posterior_variance", variance), ("posterior_mean_x0", variance * sp.sqrt(a) / (1 - a)),
                      ("posterior_mean_xt", variance * sp.sqrt(alpha) / b)]:
        expected = DERIVATIONS[key].expected_expr().subs(relation)
        assert sp.simplify(expected - want) == 0, key


# --- Accepting and rejecting ----------------------------------------------------------------------


ACCEPT_CASES = [pytest.param(key, form, id=f"{key}-{n}") for key, forms in ACCEPTED.items() for n, form in enumerate(forms)]
REJECT_CASES = [pytest.param(key, form, diagnosis, id=f"{key}-{n}")
                for key, wrongs in REJECTED.items() for n, (form, diagnosis) in enumerate(wrongs)]


def test_every_derivation_has_two_accepted_and_two_rejected_forms():
    for key in DERIVATIONS:
        assert len(ACCEPTED[key]) >= 2 and (len(REJECTED[key]) >= 2 or key.endswith("_free")), key
    assert len({d.title for d in DERIVATIONS.values()}) >= 7


@pytest.mark.parametrize(("key", "form"), ACCEPT_CASES)
def test_accepts_equivalent_forms(key, form, capsys):
    derivation = DERIVATIONS[key]
    assert derivation.check(form(derivation.s), points=2) == 2
    assert "✗" not in capsys.readouterr().out


@pytest.mark.parametrize(("key", "form", "diagnosis"), REJECT_CASES)
def test_rejects_wrong_forms_naming_the_kind_of_error(key, form, diagnosis, capsys):
    derivation = DERIVATIONS[key]
    with pytest.raises(CheckFailed) as failure:
        derivation.check(form(derivation.s), points=2)
    assert failure.value.score == 0
    printed = capsys.readouterr().out
    assert f"✗ {derivation.name}  <- {diagnosis}" in printed, printed
    assert_no_answer_in(printed, derivation)


def assert_no_answer_in(printed: str, derivation: Derivation):
    """The table never shows the expected expression, in any of the ways SymPy writes it (unless it is a
    bare symbol, such as d_k, whose name a diagnosis may well mention)."""
    expected = derivation.expected_expr()
    if expected.is_Symbol:
        return
    for text in {derivation.expected, str(expected), sp.sstr(expected), str(sp.simplify(expected))}:
        assert text not in printed, (text, printed)


def test_symbols_are_matched_by_name_whatever_their_assumptions(capsys):
    """A student who makes the symbols with plain sympy.symbols (no assumptions) is graded the same."""
    derivation = DERIVATIONS["posterior_variance"]
    abar_prev, abar_t, beta_t = sp.symbols("abar_prev abar_t beta_t")
    assert derivation.check((1 - abar_prev) / (1 - abar_t) * beta_t) == 1
    with pytest.raises(CheckFailed):
        derivation.check(beta_t * (1 - abar_t))


def test_expected_may_be_a_sympy_expression(capsys):
    derivation = DERIVATIONS["kl"]
    s = derivation.s
    expected = (s["mu"]**2 + s["sigma"]**2 - sp.log(s["sigma"]**2) - 1) / 2
    answer = ACCEPTED["kl"][0](s)
    assert check_derivation("KL", {"kl": answer}, expected={"kl": expected}, symbols=derivation.symbols, points=1) == 1


def test_instructor_errors_are_raised_not_graded():
    with pytest.raises(ValueError, match="undeclared symbols: sigma2"):
        check_derivation("KL", {"kl": sp.Integer(0)}, expected={"kl": "sigma2 / 2"}, symbols={"sigma": positive()}, points=1)
    with pytest.raises(TypeError, match="give a domain"):
        check_derivation("KL", {"kl": sp.Integer(0)}, expected={"kl": "sigma"}, symbols={"sigma": 1.0}, points=1)


# --- Not an expression in the given symbols -----------------------------------------------------------


def not_expressions(s):
    f = sp.Function("f")
    return [
        (0.5, "a number (float), not an expression in the given symbols"),
        (numpy.float64(0.5), "a number (float64), not an expression in the given symbols"),
        (3, "a number (int), not an expression in the given symbols"),
        ("(mu**2 + sigma**2 - log(sigma**2) - 1) / 2", "a string, not an expression in the given symbols"),
        (lambda mu, sigma: mu, "a function, not an expression in the given symbols"),
        (s["mu"] ** 2 / 2 + sp.Symbol("x"), "uses x, which the exercise does not provide: not an expression in the given symbols"),
        (f(s["mu"]), "uses a function f(…) that the exercise does not provide: not an expression in the given symbols"),
        (sp.nan, "contains nan or an infinity (zoo, oo), not an expression in the given symbols"),
        (s["mu"] / sp.Integer(0), "contains nan or an infinity (zoo, oo), not an expression in the given symbols"),
        (sp.Eq(sp.Symbol("kl"), s["mu"]), "an equation or a condition, not an expression in the given symbols"),
        (torch.tensor(0.5), "a Tensor, not an expression in the given symbols"),
        (None, "no answer yet"),
        (..., "no answer yet"),
    ]


def test_not_an_expression_in_the_given_symbols(capsys):
    derivation = DERIVATIONS["kl"]
    for answer, diagnosis in not_expressions(derivation.s):
        with pytest.raises(CheckFailed):
            derivation.check(answer)
        printed = capsys.readouterr().out
        assert f"✗ kl  <- {diagnosis}" in printed, (answer, printed)
        with pytest.raises(AssertionError, match="KL.*kl: " + re.escape(diagnosis)):
            check_derivation_form("KL(N(μ, σ²) ‖ N(0, 1))", {"kl": answer}, symbols=derivation.symbols)


def test_an_answer_undefined_in_the_domain_is_told_so(capsys):
    derivation = DERIVATIONS["gan"]
    with pytest.raises(CheckFailed):
        derivation.check(sp.log(derivation.s["p_data"] - derivation.s["p_g"]))
    assert "takes complex values where the result is real" in capsys.readouterr().out


def test_the_visible_form_check_says_nothing_about_correctness(capsys):
    derivation = DERIVATIONS["posterior_variance"]
    s = derivation.s
    wrong, right = s["beta_t"], (1 - s["abar_prev"]) / (1 - s["abar_t"]) * s["beta_t"]
    assert check_derivation_form("DDPM posterior", {"beta_tilde": wrong, "coef_x0": right}, symbols=DDPM_SYMBOLS) is None
    with pytest.raises(AssertionError) as failure:
        check_derivation_form("DDPM posterior", {"beta_tilde": right, "coef_x0": None, "coef_xt": 0.3}, symbols=DDPM_SYMBOLS)
    message = str(failure.value)
    assert "coef_x0: no answer yet" in message and "coef_xt: a number (float)" in message and "beta_tilde" not in message
    assert capsys.readouterr().out == ""


# --- Partial credit, scores and stderr --------------------------------------------------------------------


def q_xt_given_x0(mean, variance, points=2):
    """The mean and variance of q(x_t | x_0), graded in one call."""
    return check_derivation("q(x_t | x_0)", {"mean": mean, "variance": variance},
                            expected={"mean": "sqrt(abar_t) * x_0", "variance": "1 - abar_t"},
                            symbols={"x_0": real(), "abar_t": interval(0, 1)}, points=points)


def test_several_results_earn_partial_credit_published_as_the_cells_score(monkeypatch, capsys):
    import gradelib.checks._core as core

    published = []

    class Hook:
        def __call__(self, value):
            published.append(value)

    monkeypatch.setitem(vars(core), "_DISPLAYHOOK", (Hook(), Hook.__call__))
    x_0, abar_t = sp.symbols("x_0 abar_t")
    assert q_xt_given_x0(sp.sqrt(abar_t) * x_0, 1 - abar_t) == 2
    assert published == []
    with pytest.raises(CheckFailed) as failure:
        q_xt_given_x0(sp.sqrt(abar_t) * x_0, sp.sqrt(1 - abar_t))  # the standard deviation for the variance
    assert failure.value.score == 1 and published == [1.0]
    printed = capsys.readouterr().out
    assert "q(x_t | x_0): 1 / 2 points" in printed and "✓ mean" in printed and "✗ variance  <- " in printed
    with pytest.raises(CheckFailed) as failure:
        q_xt_given_x0(abar_t * x_0, 0.5)
    assert failure.value.score == 0 and published == [1.0]  # a score of 0 is not published
    with pytest.raises(CheckFailed) as failure:
        check_derivation("q(x_t | x_0)", {"mean": sp.sqrt(abar_t) * x_0}, expected={"mean": "sqrt(abar_t) * x_0", "variance": "1 - abar_t"},
                         symbols={"x_0": real(), "abar_t": interval(0, 1)}, points=2)
    assert "✗ variance  <- no answer given for variance" in capsys.readouterr().out


def test_nothing_reaches_stderr_even_from_the_child_processes(capfd):
    """nbgrader scores a cell with anything on stderr 0: not a warning, not a word from a forked child."""
    kl = DERIVATIONS["kl"]
    s = kl.s
    kl.check(ACCEPTED["kl"][0](s))
    for wrong, _ in REJECTED["kl"][:2]:
        with pytest.raises(CheckFailed):
            kl.check(wrong(s))
    with pytest.raises(CheckFailed):
        kl.check(numpy.float64(1.0))
    with pytest.raises(CheckFailed):
        kl.check(sp.log(-s["sigma"]) + sp.sqrt(s["mu"] - 10))
    out, err = capfd.readouterr()
    assert err == ""
    assert out.count("KL(N(μ, σ²) ‖ N(0, 1)):") == 5


def test_seeded_and_deterministic(capsys):
    derivation = DERIVATIONS["gan"]
    wrong = derivation.s["p_data"] / derivation.s["p_g"]
    tables = []
    for seed in (0, 0, 7):
        with pytest.raises(CheckFailed):
            derivation.check(wrong, seed=seed)
        tables.append(capsys.readouterr().out)
    assert tables[0] == tables[1]
    for seed in (1, 2, 3):
        assert derivation.check(ACCEPTED["gan"][0](derivation.s), seed=seed) == 1


# --- Time bound and tampering -----------------------------------------------------------------------------


BOUND = derive.EVALUATE_SECONDS + derive.SIMPLIFY_SECONDS + 1.5  # the limits, plus forking and reading back on a busy machine


def trig_zero(s, terms=60):
    """sin² + cos² - 1 sixty times over: 0, but slow for simplify and a few hundred terms to evaluate."""
    return sum(sp.sin(s["mu"] + k * s["sigma"])**2 + sp.cos(s["mu"] + k * s["sigma"])**2 - 1 for k in range(1, terms))


def test_a_pathological_answer_is_decided_within_the_time_bound(capsys):
    kl = DERIVATIONS["kl"]
    s, right = kl.s, kl.expected_expr()
    start = time.monotonic()
    assert kl.check(right + trig_zero(s)) == 1  # equivalent: the values agree, simplify is not needed
    assert time.monotonic() - start < BOUND
    start = time.monotonic()
    with pytest.raises(CheckFailed):
        kl.check(right + trig_zero(s) + s["mu"] / 1000)  # wrong, and too hard for simplify in time
    elapsed = time.monotonic() - start
    assert elapsed < BOUND, elapsed
    assert "✗ kl  <- " in capsys.readouterr().out
    nested = s["mu"]
    for k in range(12):  # a tree of 2^12 copies: refused before any work
        nested = sp.sin(nested + k * s["sigma"])**2 + sp.log(nested**2 + 1)
    start = time.monotonic()
    with pytest.raises(CheckFailed):
        kl.check(right + nested)
    assert time.monotonic() - start < 1.0
    assert "is too large to grade" in capsys.readouterr().out


def test_evaluation_that_outruns_its_limit_is_stopped(monkeypatch, capsys):
    kl = DERIVATIONS["kl"]
    monkeypatch.setitem(vars(derive), "EVALUATE_SECONDS", 0.01)
    monkeypatch.setitem(vars(derive), "SIMPLIFY_SECONDS", 0.01)
    start = time.monotonic()
    with pytest.raises(CheckFailed):
        kl.check(kl.expected_expr() + trig_zero(kl.s))
    assert time.monotonic() - start < 1.5
    assert "could not be evaluated within 0.01 s: simplify it first" in capsys.readouterr().out


@pytest.mark.parametrize("fork", [True, False], ids=["fork", "thread"])
def test_the_time_box_returns_results_and_stops_on_time(fork, monkeypatch):
    if not fork:
        monkeypatch.setitem(vars(derive), "_fork", None)
    assert derive._bounded(lambda: sp.Integer(6) * 7, 5.0) == ("ok", 42)
    assert derive._bounded(lambda: 1 / 0, 5.0) == ("error", "ZeroDivisionError")
    start = time.monotonic()
    assert derive._bounded(lambda: time.sleep(30), 0.2) == ("timeout", None)
    assert time.monotonic() - start < 1.0


def test_rebinding_sympy_in_the_notebook_does_not_fool_the_check(monkeypatch, capsys):
    """A notebook that makes sympy.simplify, sympy.Eq, sympy.nsimplify, … always say "equal" (or 0) still gets
    its wrong answer rejected: the check took SymPy's functions when gradelib was imported."""
    always = lambda *args, **kwargs: True  # noqa: E731
    zero = lambda *args, **kwargs: sp.Integer(0)  # noqa: E731
    for name, fake in [("simplify", zero), ("Eq", always), ("nsimplify", zero), ("expand", zero), ("sympify", zero),
                       ("N", zero), ("parse_expr", zero)]:
        monkeypatch.setattr(sp, name, fake)
    derivation = DERIVATIONS["posterior_variance"]
    with pytest.raises(CheckFailed):
        derivation.check(derivation.s["beta_t"])
    assert "misses a dependence on abar_prev" in capsys.readouterr().out


def test_the_module_is_read_only():
    with pytest.raises(AttributeError, match="read-only"):
        derive.check_derivation = lambda *args, **kwargs: 1.0
    with pytest.raises(AttributeError, match="read-only"):
        derive.SIMPLIFY_SECONDS = 1e9
