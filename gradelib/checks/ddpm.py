"""Checks for notebook 06 (DDPM, the derivation), one per graded exercise.

Every check runs the student's function on seeded cases and compares it with an oracle that does not
share its code path where that matters: the forward chain iterated step by step (``q_sample``),
Bayes' rule evaluated numerically on a grid (``posterior_mean_variance``), a round trip through
``q_sample`` (``predict_x0``), a data set whose exact noise predictor is known (``ddim_step``), and
the noise recovered from what the loss function fed the model (``simple_loss``). When an answer is
wrong, the check looks for the mistake it reproduces (a missing square root, ᾱ_t where ᾱ_{t−1}
belongs, an off-by-one timestep, a variance where a standard deviation belongs, ...) and names it
without printing the solution. ``seed`` selects the cases: visible tests use the default, hidden
tests other seeds.

Index convention: code timesteps are 0-based (code t is the paper's t + 1); ``alpha_bars[t]`` is
ᾱ at code t, and ᾱ before code t = 0 is 1 (an empty product).
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple

import torch

from gradelib.checks import _core
from gradelib.checks._core import Case, close, compare_case, exercise, first_match, generator, make_read_only, max_abs_diff, tensor_problem, unpack_pair, within_sigmas
from gradelib.checks.derive import derivation, interval, real
from gradelib.reference import ddpm as ref

# Bound at import, before any student code runs.
_randn = _core.randn
_rand = _core.rand
_randint = _core.randint
_Tensor = _core._Tensor
_cumprod = torch.cumprod
_logsumexp = _core.logsumexp
_exp = torch.exp
_linspace = torch.linspace
_cat = torch.cat
_bincount = torch.bincount

_FORBID_Q = (ref.q_sample, ref.DDPMSchedule.q_sample)
_FORBID_POSTERIOR = (ref.posterior_mean_variance, ref.DDPMSchedule.posterior_mean_variance)
_FORBID_X0 = (ref.predict_x0, ref.DDPMSchedule.predict_x0)
_FORBID_DDIM = (ref.ddim_step, ref.DDPMSchedule.ddim_step, ref.ddim_sample)
_FORBID_LOSS = (ref.simple_loss,)
_FORBID_ANCESTRAL = (ref.ddpm_step, ref.DDPMSchedule.ddpm_step, ref.ddpm_sample, ref.DDPMSchedule.eps_posterior_mean)


# ----------------------------------------------------------------------------------------------
# One mistake costs one exercise. A later exercise may call the student's earlier ones through the notebook's
# globals (ddim_step and ddpm_step may call predict_x0, simple_loss may call q_sample). A case first runs the answer
# as it is; where that fails, it runs it again with gradelib's reference swapped in for those earlier pieces. When
# that makes the answer right, the case passes and a note names the earlier exercise to fix.

EARLIER = _core.EarlierExercises({
    "q_sample": ("exercise 1 (q_sample)", ref.q_sample),
    "posterior_mean_variance": ("exercise 2 (posterior_mean_variance)", ref.posterior_mean_variance),
    "predict_x0": ("exercise 3 (predict_x0)", ref.predict_x0),
})


def _schedule(kind: str, T: int) -> dict[str, torch.Tensor]:
    """float64 schedule arrays (code indices) computed here, independently of the reference class."""
    if kind == "linear":
        # Ho et al.'s 1e-4 .. 0.02 for T = 1000, scaled by 1000 / T so that short chains still reach noise
        betas = _linspace(1e-4 * 1000 / T, min(0.02 * 1000 / T, 0.5), T, dtype=torch.float64)
    else:
        betas = ref.cosine_betas(T).double()
    alphas = 1 - betas
    alpha_bars = _cumprod(alphas, 0)
    alpha_bars_prev = _cat([torch.ones(1, dtype=torch.float64), alpha_bars[:-1]])
    return {"betas": betas, "alphas": alphas, "alpha_bars": alpha_bars, "alpha_bars_prev": alpha_bars_prev}


def _col(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] as (B, 1, ..., 1), broadcasting against ``like`` (B, ...)."""
    return values[t].reshape(-1, *([1] * (like.dim() - 1)))


def _times(gen: torch.Generator, B: int, low: int, high: int) -> torch.Tensor:
    return _randint(low, high, (B,), generator=gen)


# ----------------------------------------------------------------------------------------------
# Exercise: q_sample


def _q_sample_variants(x0, t, noise, alpha_bars):
    T = alpha_bars.shape[0]
    ab = _col(alpha_bars, t, x0)
    ab_m1 = _col(alpha_bars, t - 1, x0)                 # negative index wraps, as a student's code would
    ab_p1 = _col(alpha_bars, (t + 1).clamp(max=T - 1), x0)
    ab_twice = _col(_cumprod(alpha_bars, 0), t, x0)
    ab_first = alpha_bars[t[0]]
    return [
        ("the noise coefficient lacks its square root: its standard deviation is √(1 − ᾱ_t), "
         "you used the variance 1 − ᾱ_t", ab.sqrt() * x0 + (1 - ab) * noise),
        ("the signal coefficient lacks its square root: the mean of q(x_t | x_0) is √ᾱ_t x_0", ab * x0 + (1 - ab).sqrt() * noise),
        ("neither coefficient has its square root: x_t mixes standard deviations √ᾱ_t and √(1 − ᾱ_t)", ab * x0 + (1 - ab) * noise),
        ("the two coefficients are swapped: x_0 gets √ᾱ_t, the noise √(1 − ᾱ_t)", (1 - ab).sqrt() * x0 + ab.sqrt() * noise),
        ("off by one: you used alpha_bars[t − 1]; code timestep t indexes alpha_bars[t] directly (0-based)",
         ab_m1.sqrt() * x0 + (1 - ab_m1).sqrt() * noise),
        ("off by one: you used alpha_bars[t + 1]; code timestep t indexes alpha_bars[t] directly (0-based)",
         ab_p1.sqrt() * x0 + (1 - ab_p1).sqrt() * noise),
        ("alpha_bars is already the cumulative product ᾱ_t; you took a product of it again",
         ab_twice.sqrt() * x0 + (1 - ab_twice).sqrt() * noise),
        ("every example used the first example's t: index alpha_bars with the whole vector t and reshape to (B, 1, ...)",
         ab_first.sqrt() * x0 + (1 - ab_first).sqrt() * noise),
    ]


def _q_sample_case(fn, x0, t, noise, alpha_bars) -> str | None:
    out = fn(x0, t, noise, alpha_bars)
    problem = tensor_problem(out, "x_t", shape=x0.shape)
    if problem:
        return problem
    want = ref.q_sample(x0, t, noise, alpha_bars)
    return compare_case(out, want, 1e-5, lambda: _q_sample_variants(x0, t, noise, alpha_bars),
                        lambda: f"differs from a sample of q(x_t | x_0) built from this noise (max error {max_abs_diff(out, want):.3g}); "
                                "use the noise you are given")


def _chain_case(fn, gen, alpha_bars, betas) -> str | None:
    """Iterate x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) z from x_0 and compare moments with fn's samples."""
    n, steps = 40_000, alpha_bars.shape[0]
    x0_value = 1.5
    x0 = torch.full((n, 1), x0_value, dtype=torch.float64)
    x = x0.clone()
    worst = None
    for t in range(steps):
        x = (1 - betas[t]).sqrt() * x + betas[t].sqrt() * _randn(n, 1, generator=gen, dtype=torch.float64)
        if t in (0, steps // 3, steps - 1):
            out = fn(x0, torch.full((n,), t, dtype=torch.long), _randn(n, 1, generator=gen, dtype=torch.float64), alpha_bars)
            problem = tensor_problem(out, "x_t", shape=x0.shape)
            if problem:
                return problem
            chain_mean, chain_var = float(x.mean()), float(x.var())
            mean, var = float(out.mean()), float(out.var())
            # standard errors of the difference of two independent sample means / variances
            if (not within_sigmas(mean - chain_mean, math.sqrt(2 * chain_var / n), slack=1e-6)
                    or not within_sigmas(var - chain_var, chain_var * math.sqrt(2 * 2 / n), slack=1e-9)):
                worst = (t, mean, chain_mean, var, chain_var)
                break
    if worst is None:
        return None
    t, mean, chain_mean, var, chain_var = worst
    return (f"at t = {t} your samples have mean {mean:.3f} and variance {var:.3f}, but running the chain "
            f"q(x_t | x_(t−1)) from x_0 gives mean {chain_mean:.3f} and variance {chain_var:.3f}")


@exercise("q_sample", reference=_FORBID_Q)
def check_q_sample(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(x0 (B, ...), t (B,), noise (B, ...), alpha_bars (T,)) -> x_t (B, ...)``."""
    gen = generator(seed)
    lin, cos = _schedule("linear", 50 + seed % 7), _schedule("cosine", 100)
    T = lin["alpha_bars"].shape[0]
    x0_2d, noise_2d = _randn(64, 2, generator=gen, dtype=torch.float64), _randn(64, 2, generator=gen, dtype=torch.float64)
    t_mid = _times(gen, 64, 1, T - 1)
    x0_img, noise_img = _randn(16, 1, 8, 8, generator=gen), _randn(16, 1, 8, 8, generator=gen)
    t_img = _times(gen, 16, 1, 99)
    t_edges = torch.tensor([0, T - 1] * 8)
    x0_e, noise_e = _randn(16, 3, generator=gen, dtype=torch.float64), _randn(16, 3, generator=gen, dtype=torch.float64)
    chain_gen = generator(seed + 1)
    cases = [
        ("2-D points, one t per example", lambda: _q_sample_case(fn, x0_2d, t_mid, noise_2d, lin["alpha_bars"])),
        ("images (B, 1, 8, 8), float32, cosine schedule: coefficients broadcast over trailing dims",
         lambda: _q_sample_case(fn, x0_img, t_img, noise_img, cos["alpha_bars"].float())),
        ("the edges t = 0 and t = T − 1", lambda: _q_sample_case(fn, x0_e, t_edges, noise_e, lin["alpha_bars"])),
        ("same mean and variance as iterating q(x_t | x_(t−1)) step by step (40,000 chains)",
         lambda: _chain_case(fn, chain_gen, lin["alpha_bars"], lin["betas"])),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the posterior q(x_{t-1} | x_t, x_0)


def _bayes_on_grid(x0: float, x_t: float, t: int, s: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Mean and variance of q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0), by quadrature on a grid."""
    alpha, beta, abp = s["alphas"][t], s["betas"][t], s["alpha_bars_prev"][t]
    centre, spread = float(abp.sqrt() * x0), float((1 - abp).sqrt())
    grid = _linspace(centre - 12 * spread, centre + 12 * spread, 40_001, dtype=torch.float64)
    log_likelihood = -((x_t - alpha.sqrt() * grid) ** 2) / (2 * beta)          # q(x_t | x_{t-1} = grid)
    log_prior = -((grid - abp.sqrt() * x0) ** 2) / (2 * (1 - abp))             # q(x_{t-1} = grid | x_0)
    log_post = log_likelihood + log_prior
    weights = _exp(log_post - _logsumexp(log_post, 0))
    mean = float((weights * grid).sum())
    var = float((weights * (grid - mean) ** 2).sum())
    return mean, var


def _posterior_variants(x0, x_t, t, s):
    """Known-wrong (mean, variance) pairs, each with its diagnosis."""
    T = s["betas"].shape[0]
    beta, alpha, ab, abp = (_col(s[k], t, x_t) for k in ("betas", "alphas", "alpha_bars", "alpha_bars_prev"))
    ab_m1 = _col(s["alpha_bars"], t - 1, x_t)            # wraps at t = 0, as a student's alpha_bars[t - 1] would
    ab_p1 = _col(s["alpha_bars"], (t + 1).clamp(max=T - 1), x_t)
    tm1, tp1 = t - 1, (t + 1).clamp(max=T - 1)

    def mean_of(b, a, a_bar, a_bar_prev):
        return a_bar_prev.sqrt() * b / (1 - a_bar) * x0 + a.sqrt() * (1 - a_bar_prev) / (1 - a_bar) * x_t

    def var_of(b, a_bar, a_bar_prev):
        return (1 - a_bar_prev) / (1 - a_bar) * b

    good_mean, good_var = mean_of(beta, alpha, ab, abp), var_of(beta, ab, abp)
    shifted = {}
    for name, tt in (("t − 1", tm1), ("t + 1", tp1)):
        b, a, abar = (_col(s[k], tt, x_t) for k in ("betas", "alphas", "alpha_bars"))
        abar_prev = _col(s["alpha_bars_prev"], tt, x_t)
        shifted[name] = (mean_of(b, a, abar, abar_prev), var_of(b, abar, abar_prev))
    eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()     # the noise in x_t, for the ε-form of the mean
    return [
        ("the ε-form's prefactor is 1/√α_t (one step), not 1/√ᾱ_t as in the lecture notes", (x_t - beta / (1 - ab).sqrt() * eps) / ab.sqrt(), good_var),
        ("the ε-form's noise coefficient is β_t / √(1 − ᾱ_t), with ᾱ_t under the root; "
         "the lecture notes' √(1 − α_t) is wrong", (x_t - beta / (1 - alpha).sqrt() * eps) / alpha.sqrt(), good_var),
        ("the ε-form subtracts the noise ε, not x_0 (the lecture notes' slip)",
         (x_t - beta / (1 - ab).sqrt() * x0) / alpha.sqrt(), good_var),
        ("ᾱ_t is used where ᾱ_(t−1) belongs (alpha_bars[t] in place of the previous step's ᾱ)",
         mean_of(beta, alpha, ab, ab), var_of(beta, ab, ab)),
        ("ᾱ_t is used where ᾱ_(t−1) belongs in the x_0 coefficient √ᾱ_(t−1) β_t / (1 − ᾱ_t)",
         ab.sqrt() * beta / (1 - ab) * x0 + alpha.sqrt() * (1 - abp) / (1 - ab) * x_t, good_var),
        ("ᾱ_(t−1) taken as alpha_bars[t − 1] everywhere, which wraps round to alpha_bars[−1] at t = 0: "
         "before the first step ᾱ is 1 (an empty product)", mean_of(beta, alpha, ab, ab_m1), var_of(beta, ab, ab_m1)),
        ("ᾱ_(t−1) taken as alpha_bars[t + 1]: the previous step is t − 1", mean_of(beta, alpha, ab, ab_p1), var_of(beta, ab, ab_p1)),
        ("off by one: the whole step uses the quantities at t − 1 (code timestep t indexes betas[t] and alpha_bars[t])", *shifted["t − 1"]),
        ("off by one: the whole step uses the quantities at t + 1 (code timestep t indexes betas[t] and alpha_bars[t])", *shifted["t + 1"]),
        ("the x_0 and x_t coefficients are swapped",
         alpha.sqrt() * (1 - abp) / (1 - ab) * x0 + abp.sqrt() * beta / (1 - ab) * x_t, good_var),
        ("the x_t coefficient lacks √α_t", abp.sqrt() * beta / (1 - ab) * x0 + (1 - abp) / (1 - ab) * x_t, good_var),
        ("the x_0 coefficient lacks the square root on ᾱ_(t−1)", abp * beta / (1 - ab) * x0 + alpha.sqrt() * (1 - abp) / (1 - ab) * x_t, good_var),
        ("the variance is β_t, the forward step's variance; the posterior's is β̃_t = (1 − ᾱ_(t−1)) / (1 − ᾱ_t) · β_t",
         good_mean, beta),
        ("you returned the standard deviation √β̃_t; the second output is the variance β̃_t", good_mean, good_var.sqrt()),
        ("the variance's denominator is 1 − α_t (as in the lecture notes); it is 1 − ᾱ_t", good_mean, (1 - abp) / (1 - alpha) * beta),
    ]


def _posterior_output(fn, x0, x_t, t, betas):
    result = fn(x0, x_t, t, betas)
    mean, var = unpack_pair(result, "posterior_mean_variance")
    problem = tensor_problem(mean, "the mean", shape=x_t.shape) or tensor_problem(var, "the variance")
    if problem:
        return None, None, problem
    try:
        var_full = var.expand_as(x_t) if var.dim() <= x_t.dim() else None
    except RuntimeError:
        var_full = None
    if var_full is None:
        return None, None, (f"the variance has shape {tuple(var.shape)}, which does not broadcast to x's {tuple(x_t.shape)}: "
                            "return one value per example shaped (B, 1, ..., 1)")
    return mean, var_full, None


def _posterior_truth(x0, x_t, t, s):
    """The posterior's mean and variance in float64, from this module's own schedule arrays."""
    beta, alpha, ab, abp = (_col(s[k], t, x_t) for k in ("betas", "alphas", "alpha_bars", "alpha_bars_prev"))
    x0, x_t = x0.double(), x_t.double()
    mean = abp.sqrt() * beta / (1 - ab) * x0 + alpha.sqrt() * (1 - abp) / (1 - ab) * x_t
    return mean, ((1 - abp) / (1 - ab) * beta).expand_as(x_t)


def _diagnose_posterior(mean, var, x0, x_t, t, s, atol):
    """The first known mistake that reproduces both outputs; failing that, one that reproduces the output
    that is wrong (a variant whose mean is the correct mean says nothing about a wrong mean, and so on)."""
    x0, x_t = x0.double(), x_t.double()
    good_mean, good_var = _posterior_truth(x0, x_t, t, s)
    variants = [(d, m.expand_as(x_t), v.expand_as(x_t)) for d, m, v in _posterior_variants(x0, x_t, t, s)]
    for diagnosis, wrong_mean, wrong_var in variants:
        if close(mean, wrong_mean, atol) and close(var, wrong_var, atol):
            return diagnosis
    mean_ok, var_ok = close(mean, good_mean, atol), close(var, good_var, atol)
    for diagnosis, wrong_mean, wrong_var in variants:
        if not mean_ok and not close(wrong_mean, good_mean, atol) and close(mean, wrong_mean, atol):
            return diagnosis
        if not var_ok and not close(wrong_var, good_var, atol) and close(var, wrong_var, atol):
            return diagnosis
    return None


def _posterior_bayes_case(fn, s, t_values, x0_values, xt_values, what: str) -> str | None:
    """1-D: compare with Bayes' rule evaluated numerically on a grid."""
    x0 = x0_values.reshape(-1, 1)
    x_t = xt_values.reshape(-1, 1)
    t = t_values
    mean, var, problem = _posterior_output(fn, x0, x_t, t, s["betas"])
    if problem:
        return problem
    for i in range(len(t)):
        want_mean, want_var = _bayes_on_grid(float(x0[i]), float(x_t[i]), int(t[i]), s)
        got = float(mean[i, 0]) if what == "mean" else float(var[i, 0])
        want = want_mean if what == "mean" else want_var
        if abs(got - want) > 1e-4 * max(1.0, abs(want)) + (1e-7 if what == "variance" else 0):
            diagnosis = _diagnose_posterior(mean, var, x0, x_t, t, s, 1e-6)
            return diagnosis or (f"the {what} at t = {int(t[i])} is {got:.5g}; Bayes' rule on a grid gives {want:.5g}")
    return None


def _posterior_reference_case(fn, s, x0, x_t, t) -> str | None:
    betas = s["betas"].to(x_t.dtype)
    mean, var, problem = _posterior_output(fn, x0, x_t, t, betas)
    if problem:
        return problem
    want_mean, want_var = _posterior_truth(x0, x_t, t, s)
    atol = 2e-4 if x_t.dtype == torch.float32 else 1e-8
    if close(mean, want_mean, atol) and close(var, want_var, atol):
        return None
    # a wrong variant can be large (1/√ᾱ_t at late steps), where float32 rounding exceeds atol: match it relatively
    variant_atol = atol if x_t.dtype != torch.float32 else max(atol, 1e-4 * float(mean.detach().abs().max()))
    diagnosis = _diagnose_posterior(mean, var, x0, x_t, t, s, variant_atol)
    return diagnosis or (f"differs from the posterior (mean off by {max_abs_diff(mean, want_mean):.3g}, "
                         f"variance off by {max_abs_diff(var, want_var):.3g})")


def _posterior_first_step_case(fn, s, gen) -> str | None:
    x0 = _randn(6, 2, generator=gen, dtype=torch.float64)
    x_t = _randn(6, 2, generator=gen, dtype=torch.float64)
    t = torch.zeros(6, dtype=torch.long)
    mean, var, problem = _posterior_output(fn, x0, x_t, t, s["betas"])
    if problem:
        return problem
    if close(mean, x0, 1e-6) and close(var, torch.zeros_like(x_t), 1e-9):
        return None
    diagnosis = _diagnose_posterior(mean, var, x0, x_t, t, s, 1e-6)
    return diagnosis or "at t = 0 the posterior is a point mass at x_0 (mean x_0, variance 0): ᾱ before the first step is 1"


@exercise("posterior_mean_variance", reference=_FORBID_POSTERIOR)
def check_posterior_mean_variance(fn: Callable, points: float = 3, seed: int = 0) -> list[Case]:
    """Check ``fn(x0, x_t, t, betas) -> (mean (B, ...), variance broadcastable to (B, ...))``."""
    gen = generator(seed)
    lin, cos = _schedule("linear", 40 + seed % 5), _schedule("cosine", 60)
    T = lin["betas"].shape[0]
    t_1d = torch.tensor([1, 2, T // 2, T - 1, 5 + seed % 7])
    x0_1d = _randn(5, generator=gen, dtype=torch.float64)
    xt_1d = _randn(5, generator=gen, dtype=torch.float64)
    x0_2d, xt_2d = _randn(32, 2, generator=gen, dtype=torch.float64), _randn(32, 2, generator=gen, dtype=torch.float64)
    t_2d = _times(gen, 32, 1, T)
    x0_img, xt_img = _randn(8, 1, 8, 8, generator=gen), _randn(8, 1, 8, 8, generator=gen)
    t_img = _times(gen, 8, 30, 60)
    first_gen = generator(seed + 7)
    cases = [
        ("mean = Bayes' rule q(x_t | x_(t−1)) q(x_(t−1) | x_0) / q(x_t | x_0), evaluated on a grid (1-D)",
         lambda: _posterior_bayes_case(fn, lin, t_1d, x0_1d, xt_1d, "mean")),
        ("variance = Bayes' rule, evaluated on a grid (1-D)", lambda: _posterior_bayes_case(fn, lin, t_1d, x0_1d, xt_1d, "variance")),
        ("2-D points, one t per example", lambda: _posterior_reference_case(fn, lin, x0_2d, xt_2d, t_2d)),
        ("images (B, 1, 8, 8), float32, late steps of a cosine schedule", lambda: _posterior_reference_case(fn, cos, x0_img, xt_img, t_img)),
        ("t = 0, the last denoising step: a point mass at x_0", lambda: _posterior_first_step_case(fn, lin, first_gen)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: predict x_0 from the noise


def _predict_x0_variants(x_t, t, eps, alpha_bars):
    T = alpha_bars.shape[0]
    ab = _col(alpha_bars, t, x_t)
    ab_m1, ab_p1 = _col(alpha_bars, t - 1, x_t), _col(alpha_bars, (t + 1).clamp(max=T - 1), x_t)
    return [
        ("the noise coefficient lacks its square root: subtract √(1 − ᾱ_t) ε", (x_t - (1 - ab) * eps) / ab.sqrt()),
        ("you divided by ᾱ_t; invert the √ᾱ_t that multiplies x_0", (x_t - (1 - ab).sqrt() * eps) / ab),
        ("you did not divide by √ᾱ_t: x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε, so x_0 = (x_t − √(1 − ᾱ_t) ε) / √ᾱ_t", x_t - (1 - ab).sqrt() * eps),
        ("the noise is added instead of subtracted", (x_t + (1 - ab).sqrt() * eps) / ab.sqrt()),
        ("off by one: alpha_bars[t − 1] used; code timestep t indexes alpha_bars[t]", (x_t - (1 - ab_m1).sqrt() * eps) / ab_m1.sqrt()),
        ("off by one: alpha_bars[t + 1] used; code timestep t indexes alpha_bars[t]", (x_t - (1 - ab_p1).sqrt() * eps) / ab_p1.sqrt()),
        ("this is the lecture notes' reverse step x_t − ε, which ignores the schedule", x_t - eps),
    ]


def _predict_x0_case(fn, x0, t, eps, alpha_bars, atol) -> str | None:
    x_t = ref.q_sample(x0, t, eps, alpha_bars)
    out = fn(x_t, t, eps, alpha_bars)
    problem = tensor_problem(out, "x0_hat", shape=x0.shape)
    if problem:
        return problem
    want = ref.predict_x0(x_t, t, eps, alpha_bars)
    return compare_case(out, want, atol, lambda: _predict_x0_variants(x_t, t, eps, alpha_bars),
                        lambda: f"does not undo q_sample: x0_hat differs from the x_0 that made x_t by up to {max_abs_diff(out, x0):.3g}")


@exercise("predict_x0 (ε → x_0)", reference=_FORBID_X0)
def check_predict_x0(fn: Callable, points: float = 1, seed: int = 0) -> list[Case]:
    """Check ``fn(x_t (B, ...), t (B,), eps (B, ...), alpha_bars (T,)) -> x0_hat (B, ...)``."""
    gen = generator(seed)
    lin = _schedule("linear", 80 + seed % 9)
    T = lin["alpha_bars"].shape[0]
    x0, eps, t = _randn(40, 2, generator=gen, dtype=torch.float64), _randn(40, 2, generator=gen, dtype=torch.float64), _times(gen, 40, 1, T - 1)
    x0_img, eps_img, t_img = _randn(8, 1, 8, 8, generator=gen), _randn(8, 1, 8, 8, generator=gen), _times(gen, 8, 0, 40)
    t_edges = torch.tensor([0, T - 1] * 4)
    x0_e, eps_e = _randn(8, 3, generator=gen, dtype=torch.float64), _randn(8, 3, generator=gen, dtype=torch.float64)
    cases = [
        ("undoes q_sample: 2-D points, one t per example", lambda: _predict_x0_case(fn, x0, t, eps, lin["alpha_bars"], 1e-8)),
        ("images (B, 1, 8, 8), float32", lambda: _predict_x0_case(fn, x0_img, t_img, eps_img, lin["alpha_bars"].float(), 2e-4)),
        ("the edges t = 0 and t = T − 1", lambda: _predict_x0_case(fn, x0_e, t_edges, eps_e, lin["alpha_bars"], 1e-6)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: one deterministic DDIM step


def _ddim_variants(x_t, eps, t, t_prev, alpha_bars):
    T = alpha_bars.shape[0]
    ab = alpha_bars[t]
    ab_prev_true = alpha_bars[t_prev] if t_prev >= 0 else torch.ones((), dtype=alpha_bars.dtype)
    ab_prev_wrap = alpha_bars[t_prev]                    # alpha_bars[-1] at the final step
    x0_hat = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    ab_prev_m1 = alpha_bars[t_prev - 1] if t_prev >= 1 else torch.ones((), dtype=alpha_bars.dtype)
    ab_m1 = alpha_bars[t - 1] if t >= 1 else alpha_bars[-1]
    x0_hat_m1 = (x_t - (1 - ab_m1).sqrt() * eps) / ab_m1.sqrt()
    one = torch.ones((), dtype=alpha_bars.dtype)
    ab_s_m1 = alpha_bars[t_prev - 1] if t_prev >= 1 else one     # t_prev − 1 = −1 read as "before the first step"
    ab_s_p1 = alpha_bars[t_prev + 1] if t_prev + 1 < T else one
    return [
        ("t_prev is off by one: you used alpha_bars[t_prev − 1]; the step lands at code step t_prev, so use alpha_bars[t_prev] "
         "(and ᾱ = 1 only when t_prev = −1)", ab_s_m1.sqrt() * x0_hat + (1 - ab_s_m1).sqrt() * eps),
        ("t_prev is off by one: you used alpha_bars[t_prev + 1]; the step lands at code step t_prev, so use alpha_bars[t_prev]",
         ab_s_p1.sqrt() * x0_hat + (1 - ab_s_p1).sqrt() * eps),
        ("at the final step (t_prev = −1) ᾱ_prev is 1, an empty product: alpha_bars[−1] wraps round to the noisiest ᾱ",
         ab_prev_wrap.sqrt() * x0_hat + (1 - ab_prev_wrap).sqrt() * eps),
        ("the noise direction has coefficient √(1 − ᾱ_prev), a standard deviation; you used the variance 1 − ᾱ_prev",
         ab_prev_true.sqrt() * x0_hat + (1 - ab_prev_true) * eps),
        ("the x_0 prediction needs √ᾱ_prev, not ᾱ_prev", ab_prev_true * x0_hat + (1 - ab_prev_true).sqrt() * eps),
        ("you used x_t where the predicted x̂_0 belongs", ab_prev_true.sqrt() * x_t + (1 - ab_prev_true).sqrt() * eps),
        ("the noise direction is missing: DDIM re-noises x̂_0 with the *predicted* ε to the level of t_prev",
         ab_prev_true.sqrt() * x0_hat),
        ("x̂_0 lacks its square roots: x̂_0 = (x_t − √(1 − ᾱ_t) ε̂) / √ᾱ_t",
         ab_prev_true.sqrt() * (x_t - (1 - ab) * eps) / ab + (1 - ab_prev_true).sqrt() * eps),
        ("off by one: alpha_bars[t − 1] and alpha_bars[t_prev − 1] used; code timesteps index alpha_bars directly",
         ab_prev_m1.sqrt() * x0_hat_m1 + (1 - ab_prev_m1).sqrt() * eps),
        ("this is one DDPM step with the noise left out (√α_t and β_t of a single step): DDIM jumps from t to t_prev through x̂_0",
         (x_t - (1 - alpha_bars[t] / (alpha_bars[t - 1] if t >= 1 else 1.0)) / (1 - ab).sqrt() * eps)
         / (alpha_bars[t] / (alpha_bars[t - 1] if t >= 1 else 1.0)).sqrt()),
    ]


def _ddim_case(fn, x_t, eps, t, t_prev, alpha_bars, atol) -> str | None:
    out = fn(x_t, eps, t, t_prev, alpha_bars)
    problem = tensor_problem(out, "x_prev", shape=x_t.shape)
    if problem:
        return problem
    want = ref.ddim_step(x_t, eps, t, t_prev, alpha_bars)
    return compare_case(out, want, atol, lambda: _ddim_variants(x_t, eps, t, t_prev, alpha_bars),
                        f"differs from the DDIM step (eta = 0) from t = {t} to t_prev = {t_prev}")


def _ddim_point_mass_case(fn, gen, alpha_bars) -> str | None:
    """Data = one point c: the exact ε̂ is (x_t − √ᾱ c)/√(1 − ᾱ), and it stays the same along the DDIM path, so after
    every jump x must be √ᾱ_s c + √(1 − ᾱ_s) ε of its own level s, and the last jump must land on c. (Checking the
    intermediate points matters: an answer that always returns x̂_0 would land on c too.)"""
    c = _randn(1, 3, generator=gen, dtype=torch.float64)
    x = _randn(5, 3, generator=gen, dtype=torch.float64)
    steps = [alpha_bars.shape[0] - 1, 60, 31, 7, -1]
    eps0 = (x - alpha_bars[steps[0]].sqrt() * c) / (1 - alpha_bars[steps[0]]).sqrt()
    for t, t_prev in zip(steps[:-1], steps[1:]):
        ab = alpha_bars[t]
        eps = (x - ab.sqrt() * c) / (1 - ab).sqrt()
        x = fn(x, eps, t, t_prev, alpha_bars)
        problem = tensor_problem(x, "x_prev", shape=(5, 3))
        if problem:
            return problem
        ab_s = alpha_bars[t_prev] if t_prev >= 0 else torch.ones((), dtype=alpha_bars.dtype)
        want = ab_s.sqrt() * c + (1 - ab_s).sqrt() * eps0
        if not close(x, want, 1e-6):
            where = "x_0" if t_prev < 0 else f"code step {t_prev}"
            return (f"with the exact noise of a one-point data set, the jump from t = {t} should reach √ᾱ c + √(1 − ᾱ) ε at "
                    f"{where} (the noise stays the same along a DDIM path); it is {max_abs_diff(x, want):.3g} away")
    return None


@exercise("ddim_step", reference=_FORBID_DDIM)
def check_ddim_step(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(x_t, eps_hat, t: int, t_prev: int, alpha_bars) -> x_prev`` (DDIM, eta = 0; t_prev = −1 means x_0)."""
    gen = generator(seed)
    lin = _schedule("linear", 100)
    ab = lin["alpha_bars"]
    x, eps = _randn(16, 2, generator=gen, dtype=torch.float64), _randn(16, 2, generator=gen, dtype=torch.float64)
    t_jump = 70 + seed % 20
    x_img, eps_img = _randn(4, 1, 8, 8, generator=gen), _randn(4, 1, 8, 8, generator=gen)
    x_f, eps_f = _randn(16, 2, generator=gen, dtype=torch.float64), _randn(16, 2, generator=gen, dtype=torch.float64)
    mass_gen = generator(seed + 3)
    cases = [
        ("a jump of many steps, t → t_prev", lambda: _ddim_case(fn, x, eps, t_jump, t_jump - 25, ab, 1e-8)),
        ("one step, t → t − 1", lambda: _ddim_case(fn, x, eps, 40, 39, ab, 1e-8)),
        ("the last two steps, t = 4 → 1 and 1 → −1 (to x_0)", lambda: _ddim_case(fn, x_f, eps_f, 4, 1, ab, 1e-8)
         or _ddim_case(fn, x_f, eps_f, 1, -1, ab, 1e-8)),
        ("images (B, 1, 8, 8), float32", lambda: _ddim_case(fn, x_img, eps_img, 90, 45, ab.float(), 1e-4)),
        ("with the exact ε of a one-point data set, DDIM lands on the point", lambda: _ddim_point_mass_case(fn, mass_gen, ab)),
    ]
    return EARLIER.cases(fn, ("predict_x0",), "ddim_step", cases)


# ----------------------------------------------------------------------------------------------
# Exercise: one ancestral DDPM step, with sigma_t^2 = beta_t or beta_tilde_t


def _ancestral_parts(s: dict[str, torch.Tensor], t: int) -> dict[str, float]:
    """This module's own float64 schedule at code step t (and at t − 1, for the off-by-one variant)."""
    def at(k):
        return {"beta": float(s["betas"][k]), "alpha": float(s["alphas"][k]), "ab": float(s["alpha_bars"][k]),
                "abp": float(s["alpha_bars_prev"][k])}
    return {"now": at(t), "before": at(t - 1) if t >= 1 else None}


def _ancestral_variants(x_t, eps, t, z, variance, s):
    p = _ancestral_parts(s, t)
    n = p["now"]
    beta, alpha, ab, abp = n["beta"], n["alpha"], n["ab"], n["abp"]
    x_t, eps, z = x_t.double(), eps.double(), z.double()
    mean = (x_t - beta / math.sqrt(1 - ab) * eps) / math.sqrt(alpha)
    beta_tilde = (1 - abp) / (1 - ab) * beta
    want_var, other_var = (beta_tilde, beta) if variance == "beta_tilde" else (beta, beta_tilde)
    std = math.sqrt(want_var) if t > 0 else 0.0
    variants = []
    if t > 0:
        asked, used = ("β̃_t", "β_t") if variance == "beta_tilde" else ("β_t", "β̃_t")
        variants += [
            (f'with variance="{variance}" the noise should have variance {asked}; yours has {used} '
             "(read the variance argument, and take ᾱ_(t−1) as the previous step's ᾱ)", mean + math.sqrt(other_var) * z),
            ("σ_t multiplies z: the noise term is √(variance) · z, you scaled z by the variance itself", mean + want_var * z),
            ("the fresh noise is missing: an ancestral step draws x_(t−1) ~ N(μ_θ, σ_t² I), i.e. adds σ_t z", mean),
            ("the noise enters with a minus sign: add σ_t z with the z you are given", mean - std * z),
        ]
    else:
        variants += [
            ("at t = 0 (the step to x_0) no noise is added: return the mean μ_θ", mean + math.sqrt(beta) * z),
        ]
    variants += [
        ("the mean's prefactor is 1/√α_t (one step), not 1/√ᾱ_t as in the lecture notes",
         (x_t - beta / math.sqrt(1 - ab) * eps) / math.sqrt(ab) + std * z),
        ("the ε coefficient in the mean is β_t / √(1 − ᾱ_t), with ᾱ_t under the root; the lecture notes' √(1 − α_t) is wrong",
         (x_t - beta / math.sqrt(1 - alpha) * eps) / math.sqrt(alpha) + std * z),
        ("the mean lacks the factor 1/√α_t that undoes the forward step's shrinking",
         x_t - beta / math.sqrt(1 - ab) * eps + std * z),
        ("this is the lecture notes' rule x_t − ε: the mean is the ε-form of the posterior mean μ̃_t", x_t - eps + std * z),
        ("this is the lecture notes' rule x_t − ε: the mean is the ε-form of the posterior mean μ̃_t, plus σ_t z", x_t - eps),
        ("the mean uses the x̂_0 formula; the step goes to x_(t−1), one step back, through the ε-form of μ̃_t",
         (x_t - math.sqrt(1 - ab) * eps) / math.sqrt(ab) + std * z),
    ]
    if p["before"] is not None:
        b = p["before"]
        b_var = b["beta"] if variance == "beta" else (1 - b["abp"]) / (1 - b["ab"]) * b["beta"]
        b_std = math.sqrt(b_var) if t - 1 > 0 else 0.0
        variants.append(("off by one: every quantity is taken at t − 1; code step t indexes betas[t] and alpha_bars[t]",
                         (x_t - b["beta"] / math.sqrt(1 - b["ab"]) * eps) / math.sqrt(b["alpha"]) + b_std * z))
    return variants


def _ancestral_case(fn, s, x_t, eps, t, z, variance, atol) -> str | None:
    betas = s["betas"].to(x_t.dtype)
    out = fn(x_t, eps, t, betas, z, variance)
    problem = tensor_problem(out, "x_prev", shape=x_t.shape)
    if problem:
        return problem
    n = _ancestral_parts(s, t)["now"]
    mean = (x_t.double() - n["beta"] / math.sqrt(1 - n["ab"]) * eps.double()) / math.sqrt(n["alpha"])
    var = 0.0 if t == 0 else (n["beta"] if variance == "beta" else (1 - n["abp"]) / (1 - n["ab"]) * n["beta"])
    want = mean + math.sqrt(var) * z.double()
    return compare_case(out, want, atol, lambda: _ancestral_variants(x_t, eps, t, z, variance, s),
                        f'differs from the ancestral step at t = {t} with variance="{variance}"',
                        variant_atol=max(atol, 1e-5 * float(want.abs().max())))


def _ancestral_bayes_case(fn, s, gen) -> str | None:
    """With the true noise of x_t as ε̂ and σ² = β̃_t, the step samples q(x_(t−1) | x_t, x_0) exactly: compare each
    output with μ + √v z, μ and v from Bayes' rule evaluated on a grid (an oracle that shares no formula)."""
    T = s["betas"].shape[0]
    for t in (T // 3, T - 2):
        x0 = float(_randn(1, generator=gen, dtype=torch.float64))
        eps_true = float(_randn(1, generator=gen, dtype=torch.float64))
        ab = float(s["alpha_bars"][t])
        x_t_value = math.sqrt(ab) * x0 + math.sqrt(1 - ab) * eps_true
        z = _randn(64, 1, generator=gen, dtype=torch.float64)
        x_t = torch.full((64, 1), x_t_value, dtype=torch.float64)
        out = fn(x_t, torch.full((64, 1), eps_true, dtype=torch.float64), t, s["betas"], z, "beta_tilde")
        problem = tensor_problem(out, "x_prev", shape=x_t.shape)
        if problem:
            return problem
        mean, var = _bayes_on_grid(x0, x_t_value, t, s)
        want = mean + math.sqrt(var) * z
        if not close(out.double(), want, 1e-4 * max(1.0, abs(mean))):
            diagnosis = first_match(out, _ancestral_variants(x_t, x_t * 0 + eps_true, t, z, "beta_tilde", s), 1e-6)
            return diagnosis or (f"with the true noise as ε̂ and σ² = β̃_t, the step at t = {t} should sample the posterior "
                                 f"q(x_(t−1) | x_t, x_0), which Bayes' rule gives as N({mean:.4f}, {var:.3g}); your outputs have "
                                 f"mean {float(out.mean()):.4f}")
    return None


@exercise("ddpm_step (ancestral sampling)", reference=_FORBID_ANCESTRAL)
def check_ddpm_step(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(x_t (B, ...), eps_hat (B, ...), t: int, betas (T,), z (B, ...), variance: "beta" | "beta_tilde") -> x_(t−1)``."""
    gen = generator(seed)
    lin, cos = _schedule("linear", 60 + seed % 11), _schedule("cosine", 80)
    T = lin["betas"].shape[0]
    x, eps, z = (_randn(24, 2, generator=gen, dtype=torch.float64) for _ in range(3))
    t_mid = 10 + seed % (T // 2)
    x_img, eps_img, z_img = (_randn(6, 1, 8, 8, generator=gen) for _ in range(3))
    t_img = 50 + seed % 20
    x_e, eps_e, z_e = (_randn(8, 3, generator=gen, dtype=torch.float64) for _ in range(3))
    bayes_gen = generator(seed + 9)
    cases = [
        ("σ_t² = β̃_t (the posterior's variance), 2-D points", lambda: _ancestral_case(fn, lin, x, eps, t_mid, z, "beta_tilde", 1e-8)),
        ("σ_t² = β_t, 2-D points", lambda: _ancestral_case(fn, lin, x, eps, t_mid, z, "beta", 1e-8)),
        ("images (B, 1, 8, 8), float32, cosine schedule, both variances",
         lambda: _ancestral_case(fn, cos, x_img, eps_img, t_img, z_img, "beta_tilde", 2e-4)
         or _ancestral_case(fn, cos, x_img, eps_img, t_img, z_img, "beta", 2e-4)),
        ("with the true ε, σ² = β̃_t samples q(x_(t−1) | x_t, x_0) as Bayes' rule gives it (on a grid)",
         lambda: _ancestral_bayes_case(fn, lin, bayes_gen)),
        ("the last two steps, t = 1 and t = 0 (no noise at t = 0), both variances",
         lambda: _ancestral_case(fn, lin, x_e, eps_e, 1, z_e, "beta", 1e-8) or _ancestral_case(fn, lin, x_e, eps_e, 1, z_e, "beta_tilde", 1e-8)
         or _ancestral_case(fn, lin, x_e, eps_e, 0, z_e, "beta", 1e-8) or _ancestral_case(fn, lin, x_e, eps_e, 0, z_e, "beta_tilde", 1e-8)),
    ]
    return EARLIER.cases(fn, ("predict_x0", "posterior_mean_variance"), "ddpm_step", cases)


# ----------------------------------------------------------------------------------------------
# Exercise: the L_simple training loss


class _Recorder(torch.nn.Module):
    """A tiny ε-model that remembers what it was called with; its output depends on x_t, t and a parameter."""

    def __init__(self, dim: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.full((dim,), 0.3, dtype=torch.float64))
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x_t, t):
        self.calls.append((x_t.detach(), t.detach() if isinstance(t, _Tensor) else t))
        flat = x_t.reshape(x_t.shape[0], -1)
        out = torch.tanh(flat * self.weight[: flat.shape[1]]) + 0.01 * t.double().unsqueeze(1)
        return out.reshape(x_t.shape).to(x_t.dtype)


def _run_loss(fn, x0, alpha_bars, seed):
    model = _Recorder(x0[0].numel())
    loss = fn(model, x0, alpha_bars, generator(seed))
    return model, loss


def _loss_call_problem(model, loss, x0, T) -> str | None:
    problem = tensor_problem(loss, "the loss")
    if problem:
        return problem
    if loss.dim() != 0:
        return f"the loss should be a scalar (a mean), got shape {tuple(loss.shape)}"
    if len(model.calls) != 1:
        return f"call eps_model once per batch, with every example's x_t and t (it was called {len(model.calls)} times)"
    x_t, t = model.calls[0]
    if type(t) is not _Tensor or t.dtype != torch.long or tuple(t.shape) != (x0.shape[0],):
        return "eps_model's second argument should be a LongTensor t of shape (B,), one timestep per example"
    if tuple(x_t.shape) != tuple(x0.shape):
        return f"eps_model received x_t of shape {tuple(x_t.shape)}, expected x0's shape {tuple(x0.shape)}"
    if int(t.min()) < 0 or int(t.max()) > T - 1:
        return f"t ranges over {int(t.min())}..{int(t.max())}; code timesteps are 0 .. T − 1 = {T - 1}"
    return None


class _LossCall(NamedTuple):
    """One run of the student's loss on the recording model: what it returned and what eps_model saw."""

    loss: torch.Tensor
    model: _Recorder
    x_t: torch.Tensor
    t: torch.Tensor
    noise: torch.Tensor   # the ε that x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε implies


def _checked_loss_call(fn, x0, alpha_bars, seed) -> tuple[str | None, _LossCall | None]:
    """Run the student's loss once: (the problem with the call, None) or (None, what it returned and saw)."""
    model, loss = _run_loss(fn, x0, alpha_bars, seed)
    problem = _loss_call_problem(model, loss, x0, alpha_bars.shape[0])
    if problem:
        return problem, None
    x_t, t = model.calls[0]
    return None, _LossCall(loss, model, x_t, t, _implied_noise(x_t, t, x0, alpha_bars))


def _implied_noise(x_t, t, x0, alpha_bars):
    ab = _col(alpha_bars, t, x0)
    return (x_t.double() - ab.sqrt() * x0.double()) / (1 - ab).sqrt()


def _loss_value_case(fn, x0, alpha_bars, seed, *, also_properties: bool = False) -> str | None:
    """The loss's value; with ``also_properties``, once the value is right, also that it is reproducible with the
    generator and differentiable (properties almost any wrong loss has too, so they earn no case of their own)."""
    problem = _loss_value(fn, x0, alpha_bars, seed)
    if problem or not also_properties:
        return problem
    return _loss_reproducible_case(fn, x0, alpha_bars, seed) or _loss_gradient_case(fn, x0, alpha_bars, seed)


def _loss_value(fn, x0, alpha_bars, seed) -> str | None:
    problem, call = _checked_loss_call(fn, x0, alpha_bars, seed)
    if problem:
        return problem
    loss, x_t, noise = call.loss, call.x_t, call.noise
    with torch.no_grad():
        out = call.model(x_t, call.t).double()
    want = ((out - noise) ** 2).mean()
    if abs(float(loss) - float(want)) <= 1e-5 * max(1.0, float(want)):
        return None
    per_dim = x0[0].numel()
    if abs(float(loss) - float(want) * x0.numel()) <= 1e-4 * float(want) * x0.numel():
        return "the loss is a sum; L_simple here is the mean over all elements (F.mse_loss)"
    if per_dim > 1 and abs(float(loss) - float(want) * per_dim) <= 1e-4 * float(want) * per_dim:
        return "the squared error is summed over each example's dimensions; take the mean over all elements (F.mse_loss)"
    if abs(float(loss) - float(((out - x0.double()) ** 2).mean())) <= 1e-5 * max(1.0, float(want)):
        return "the loss compares the prediction with x_0; eps_model predicts the noise ε"
    if abs(float(loss) - float(((out - x_t.double()) ** 2).mean())) <= 1e-5 * max(1.0, float(want)):
        return "the loss compares the prediction with x_t; eps_model predicts the noise ε that made x_t"
    return (f"the loss {float(loss):.5g} is not the mean squared error between eps_model(x_t, t) and the noise ε in "
            f"x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε ({float(want):.5g}); check how x_t was built and what the target is")


def _loss_noise_case(fn, x0, alpha_bars, seed) -> str | None:
    problem, call = _checked_loss_call(fn, x0, alpha_bars, seed)
    if problem:
        return problem
    x_t, t, noise = call.x_t, call.t, call.noise
    n = noise.numel()
    mean, var = float(noise.mean()), float(noise.var())
    if not within_sigmas(mean, 1 / math.sqrt(n)) or not within_sigmas(var - 1, math.sqrt(2 / n)):
        ab = _col(alpha_bars, t, x0)
        implied_if_variance = (x_t.double() - ab.sqrt() * x0.double()) / (1 - ab)
        if within_sigmas(float(implied_if_variance.var()) - 1, math.sqrt(2 / n)):
            return "x_t's noise coefficient lacks its square root (1 − ᾱ_t where √(1 − ᾱ_t) belongs)"
        return (f"the noise implied by x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε has mean {mean:.3f} and variance {var:.3f}, not 0 and 1: "
                "build x_t with standard normal noise and the right coefficients")
    return None


def _loss_t_case(fn, x0, alpha_bars, seed) -> str | None:
    problem, call = _checked_loss_call(fn, x0, alpha_bars, seed)
    if problem:
        return problem
    T, t = alpha_bars.shape[0], call.t
    counts = _bincount(t, minlength=T).double()
    expected = len(t) / T
    if len(t) > 1 and bool((t == t[0]).all()):
        return ("every example got the same t: draw one timestep per example, t of shape (B,) "
                "(a single t shared by the batch trains one noise level per step and makes the loss jump from batch to batch)")
    if counts[0] == 0:
        return "t never takes the value 0: code timesteps are 0 .. T − 1 (torch.randint(0, T, ...))"
    if counts[T - 1] == 0:
        return "t never reaches T − 1: torch.randint's upper bound is exclusive, so use torch.randint(0, T, ...)"
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    if not within_sigmas(max(chi2 - (T - 1), 0.0), math.sqrt(2 * (T - 1))):  # χ² has mean T − 1, variance 2(T − 1)
        return f"t is not uniform on 0 .. T − 1 (χ² = {chi2:.0f} with {T - 1} degrees of freedom): one independent uniform t per example"
    return None


def _loss_reproducible_case(fn, x0, alpha_bars, seed) -> str | None:
    _, first = _run_loss(fn, x0, alpha_bars, seed)
    _, second = _run_loss(fn, x0, alpha_bars, seed)
    problem = tensor_problem(first, "the loss") or tensor_problem(second, "the loss")
    if problem:
        return problem
    if float(first) != float(second):
        return "two calls with identically seeded generators gave different losses: draw t and ε with generator=generator"
    return None


def _loss_gradient_case(fn, x0, alpha_bars, seed) -> str | None:
    model, loss = _run_loss(fn, x0, alpha_bars, seed)
    problem = tensor_problem(loss, "the loss")
    if problem:
        return problem
    if not loss.requires_grad:
        return "the loss carries no gradient (detached, .item() or torch.no_grad()): training needs to backpropagate through it"
    (grad,) = _core.grad(loss, [model.weight], allow_unused=True)
    if grad is None or float(grad.abs().sum()) == 0:
        return "no gradient reaches eps_model's parameters"
    return None


@exercise("simple_loss (L_simple)", reference=_FORBID_LOSS)
def check_simple_loss(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(eps_model, x0 (B, ...), alpha_bars (T,), generator) -> scalar L_simple``."""
    gen = generator(seed)
    lin = _schedule("linear", 10 + seed % 3)
    ab = lin["alpha_bars"]
    x0_big = _randn(4096, 2, generator=gen, dtype=torch.float64) * 0.5 + 1.0
    x0_small = _randn(24, 3, generator=gen, dtype=torch.float64)
    x0_img = _rand(32, 1, 8, 8, generator=gen).double() * 2 - 1
    cases = [
        ("the loss is mean((eps_model(x_t, t) − ε)²) for the ε inside x_t, reproducible with the generator, differentiable",
         lambda: _loss_value_case(fn, x0_small, ab, seed + 1, also_properties=True)),
        ("images (B, 1, 8, 8): one t per image, broadcast over pixels", lambda: _loss_value_case(fn, x0_img, ab, seed + 2)),
        ("x_t = √ᾱ_t x_0 + √(1 − ᾱ_t) ε with ε ~ N(0, I) (4,096 examples)", lambda: _loss_noise_case(fn, x0_big, ab, seed + 3)),
        ("t ~ Uniform{0, ..., T − 1}, one per example", lambda: _loss_t_case(fn, x0_big, ab, seed + 4)),
    ]
    return EARLIER.cases(fn, ("q_sample",), "simple_loss", cases)


# ----------------------------------------------------------------------------------------------
# Derivations (paper indices). Each expected result was verified with SymPy from its definition:
# composing two forward steps, completing the square in q(x_t | x_(t−1)) q(x_(t−1) | x_0), and the KL between
# q(x_(t−1) | x_t, x_0) and p_θ(x_(t−1) | x_t) with both means in ε-form (tests/test_checks_ddpm.py repeats it).

TWO_STEP_SYMBOLS = {"alpha_t": interval(0, 1), "alpha_prev": interval(0, 1)}
TWO_STEP_EXPECTED = {"mean_coef": "sqrt(alpha_t * alpha_prev)", "variance": "1 - alpha_t * alpha_prev"}

derive_two_steps = derivation(
    "Two forward steps at once: q(x_t | x_(t−2))",
    symbols=TWO_STEP_SYMBOLS,
    expected=TWO_STEP_EXPECTED,
    # adding the two steps' variances unscaled, (1 − α_t) + (1 − α_(t−1)), is right only when the earlier step adds no noise
    special={"α_(t−1) = 1 (an earlier step without noise)": {"alpha_prev": 1}},
)

POSTERIOR_SYMBOLS = {"abar_prev": interval(0, 1), "beta_t": interval(0, 1), "alpha_t": "1 - beta_t",
                     "abar_t": "abar_prev * alpha_t"}
POSTERIOR_EXPECTED = {"beta_tilde": "(1 - abar_prev) / (1 - abar_t) * beta_t",
                      "coef_x0": "sqrt(abar_prev) * beta_t / (1 - abar_t)",
                      "coef_xt": "sqrt(alpha_t) * (1 - abar_prev) / (1 - abar_t)"}

derive_posterior = derivation(
    "The posterior q(x_(t−1) | x_t, x_0)",
    symbols=POSTERIOR_SYMBOLS,
    expected=POSTERIOR_EXPECTED,
    special={"t = 1 (ᾱ_0 = 1)": {"abar_prev": 1}},
)

ELBO_SYMBOLS = {"abar_prev": interval(0, 1), "beta_t": interval(0, 1), "delta": real(),
                "alpha_t": "1 - beta_t", "abar_t": "abar_prev * alpha_t",
                "beta_tilde": "(1 - abar_prev) / (1 - abar_t) * beta_t"}
ELBO_EXPECTED = {"weight": "beta_t / (2 * alpha_t * (1 - abar_t))",
                 "L_term": "(beta_tilde / beta_t - 1 - log(beta_tilde / beta_t)) / 2 + beta_t / (2 * alpha_t * (1 - abar_t)) * delta**2"}

derive_elbo_term = derivation(
    "One ELBO term L_(t−1) for 1-D data, σ_t² = β_t",
    symbols=ELBO_SYMBOLS,
    expected=ELBO_EXPECTED,
)


make_read_only(__name__)
