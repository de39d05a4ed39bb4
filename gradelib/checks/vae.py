"""Checks for notebook 04 (VAEs and the ELBO), one per graded exercise.

Each check compares the student's function with an independent oracle (``torch.distributions``,
the exact marginal and posterior of a linear-Gaussian model) or with ``gradelib.reference.vae`` on
seeded random cases, and when they disagree looks for the mistake the answer resembles (a missing ½,
σ where log σ² was meant, a mean where a sum was meant, MSE in place of the Bernoulli likelihood, …),
so the feedback names the fault without printing the solution.
``seed`` selects the cases: the visible tests use the default, the hidden tests other seeds.

The derivations of the notebook (``derive_*``) are declared here too, with their keys, through
:func:`gradelib.checks.derive.derivation`.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from gradelib.checks import _core
from gradelib.checks._core import Case, close, compare_case, exercise, first_match, generator, make_read_only, max_abs_diff, tensor_problem, within_sigmas
from gradelib.checks.derive import derivation, positive, real
from gradelib.reference import vae as ref

# Bound at import, before any student code runs: rebinding these later cannot fool a check.
_Normal = _core.Normal
_Bernoulli = _core.Bernoulli
_MultivariateNormal = _core.MultivariateNormal
_kl_divergence = _core.kl_divergence
_randn = _core.randn
_rand = _core.rand
_logsumexp = _core.logsumexp
_grad = _core.grad
_bce_with_logits = F.binary_cross_entropy_with_logits
_Tensor = _core._Tensor
_Distribution = torch.distributions.Distribution
_set_default_validate_args = torch.distributions.Distribution.set_default_validate_args


class _distributions_unvalidated:
    """Run the student's code with torch.distributions' argument validation off, then restore it.

    A Bernoulli's log_prob is the (negative) binary cross-entropy for any target in [0, 1], but with
    validation on torch refuses grey-level targets (its support is {0, 1}): a correct
    ``-Bernoulli(logits=…).log_prob(x)`` must not fail the grey-level case for that."""

    def __enter__(self):
        self.previous = bool(_Distribution._validate_args)
        _set_default_validate_args(False)

    def __exit__(self, *exc):
        _set_default_validate_args(self.previous)
        return False


def _uniform(shape, low, high, gen, dtype=torch.float64):
    return low + (high - low) * _rand(shape, generator=gen, dtype=dtype)


def _value_problem(value, name: str, want_shape, summed_over: str | None = None, nan_hint: str | None = None) -> str | None:
    """What is wrong with the form of a returned tensor, before its values are compared, in the exercise's words.

    First the two commonest shape mistakes when ``summed_over`` names what each value sums over: a single
    number for the batch, or an extra last dimension (not summed). Then :func:`tensor_problem`, whose
    generic NaN/inf diagnosis ``nan_hint`` replaces with the exercise's likely cause.
    """
    if summed_over is not None and type(value) is _Tensor:
        if value.dim() == 0 and len(want_shape) > 0:
            return "returns a single number: return one value per example (shape (B,)), not the batch mean or sum"
        if tuple(value.shape[:-1]) == tuple(want_shape):
            return f"has an extra last dimension: sum over the {summed_over}"
    problem = tensor_problem(value, name, want_shape)
    if problem and nan_hint is not None and "NaN" in problem:
        return nan_hint
    return problem


def _gradient_problem(out, inputs, want_grads, atol: float, wrong: tuple[str, ...], no_gradient: str) -> str | None:
    """Whether the gradients of out.sum() with respect to ``inputs`` are ``want_grads``, input by input.

    Returns ``no_gradient`` when ``out`` does not depend differentiably on the inputs at all, ``wrong[i]``
    for the first input whose gradient is missing or differs (beyond ``atol``), and None when all agree.
    """
    if not out.requires_grad:
        return no_gradient
    grads = _grad(out.sum(), inputs, allow_unused=True)
    for got, want, message in zip(grads, want_grads, wrong):
        if got is None or not close(got, want, atol):
            return message
    return None


# ----------------------------------------------------------------------------------------------
# Exercise: KL( N(mu, diag exp(logvar)) || N(0, I) )


def _kl_oracle(mu, logvar):
    """The KL from torch.distributions (an oracle independent of the reference formula)."""
    q = _Normal(mu, (0.5 * logvar).exp())
    p = _Normal(torch.zeros_like(mu), torch.ones_like(mu))
    return _kl_divergence(q, p).sum(-1)


def _kl_variants(mu, logvar):
    d = mu.shape[-1]
    right = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(-1)
    variants = [
        ("twice the KL: the factor ½ is missing", 2 * right),
        ("logvar is log σ², so σ² = exp(logvar): you treated it as log σ (exp(2·logvar))",
         0.5 * (mu.pow(2) + (2 * logvar).exp() - 2 * logvar - 1).sum(-1)),
        ("the σ² term is missing (the notes' worked example writes 1 where σ² belongs)",
         0.5 * (mu.pow(2) - logvar).sum(-1)),
        ("the −1 inside the sum is missing", right + 0.5 * d),
        ("averaged over the latent dimension: the KL of independent dimensions is their sum", right / d),
        ("the sign is flipped: a KL divergence is never negative", -right),
        ("the μ² term is missing", right - 0.5 * mu.pow(2).sum(-1)),
    ]
    if bool((logvar > 0).all()):
        # Reading the input as σ rather than log σ² only gives finite numbers when it is positive.
        variants.insert(1, ("the input is the log-variance log σ², not σ: you used logvar as if it were σ",
                            0.5 * (mu.pow(2) + logvar.pow(2) - logvar.pow(2).log() - 1).sum(-1)))
    return variants


def _kl_case(fn, mu, logvar, with_gradient: bool = False) -> str | None:
    want = _kl_oracle(mu, logvar)
    mu_in = mu.clone().requires_grad_(with_gradient)
    logvar_in = logvar.clone().requires_grad_(with_gradient)
    got = fn(mu_in, logvar_in)
    problem = _value_problem(got, "KL", want.shape, "latent dimension (one KL per example)",
                             "KL contains NaN or inf: logvar may be negative; it is log σ², so use exp(logvar) and logvar as they are")
    if problem:
        return problem
    if got.dtype != mu.dtype:
        return f"KL has dtype {got.dtype}, expected the input's {mu.dtype}"
    diagnosis = compare_case(got, want, 1e-6, lambda: _kl_variants(mu, logvar),
                             "differs from KL(N(μ, σ²) ‖ N(0, I)) computed by torch.distributions")
    if diagnosis:
        return diagnosis
    if not with_gradient:
        return None
    wrong = "the value is right but its gradient is not: compute it from mu and logvar with torch operations"
    return _gradient_problem(got, (mu_in, logvar_in), (mu, 0.5 * (logvar.exp() - 1)), 1e-6, (wrong, wrong),
                             "no gradient flows to mu and logvar: use differentiable torch operations (no .detach(), .item() or numpy)")


@exercise("KL to the standard normal", reference=ref.gaussian_kl_standard_normal)
def check_gaussian_kl(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(mu, logvar) -> (...,)``: KL(N(mu, diag exp(logvar)) || N(0, I)) summed over the last dimension."""
    gen = generator(seed)
    B, d = 5 + seed % 3, 3 + seed % 4
    mu, logvar = _randn(B, d, generator=gen, dtype=torch.float64), _uniform((B, d), -3.0, 1.5, gen)
    mu_pos, logvar_pos = _randn(B, d, generator=gen, dtype=torch.float64), _uniform((B, d), 0.2, 2.0, gen)
    mu_3d, logvar_3d = _randn(2, B, d, generator=gen, dtype=torch.float64), _uniform((2, B, d), -2.0, 1.0, gen)
    zeros = torch.zeros(B, d, dtype=torch.float64)

    def batch_and_prior():
        # q = the prior (KL exactly 0) is a trivial case that many wrong formulas pass: it earns nothing
        # on its own, it is checked together with a general batch.
        return _kl_case(fn, mu, logvar) or _kl_case(fn, zeros, zeros)

    cases = [
        ("(B, d) batch with σ² < 1 and σ² > 1, one KL per example; exactly 0 when q is the prior", batch_and_prior),
        ("log-variances above 0 (σ > 1)", lambda: _kl_case(fn, mu_pos, logvar_pos)),
        ("extra leading dimensions (S, B, d) -> (S, B)", lambda: _kl_case(fn, mu_3d, logvar_3d)),
        ("float32 inputs, gradients reach μ and log σ²", lambda: _kl_case(fn, mu.float(), logvar.float(), with_gradient=True)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the reparameterization trick


def _reparam_case(fn, mu, logvar, eps, with_gradient: bool = False) -> str | None:
    mu_in = mu.clone().requires_grad_(with_gradient)
    logvar_in = logvar.clone().requires_grad_(with_gradient)
    z = fn(mu_in, logvar_in, eps)
    want = mu + (0.5 * logvar).exp() * eps
    problem = tensor_problem(z, "z", want.shape)
    if problem:
        return problem
    diagnosis = compare_case(z, want, 1e-5, [
        ("σ is missing: z = μ + σ·ε (the notes' practice answer 'z = μ + ε' drops it)", mu + eps),
        ("exp(logvar) is the variance σ²; the standard deviation is σ = exp(logvar / 2)", mu + logvar.exp() * eps),
        ("logvar is log σ², not σ: σ = exp(logvar / 2)", mu + logvar * eps),
        ("σ = exp(logvar / 2), not exp(logvar) / 2", mu + 0.5 * logvar.exp() * eps),
        ("ε must be scaled by σ and shifted by μ, not multiplied by μ", mu * eps + (0.5 * logvar).exp()),
    ], "z differs from μ + σ·ε")
    if diagnosis:
        return diagnosis
    if not with_gradient:
        return None
    return _gradient_problem(z, (mu_in, logvar_in), (torch.ones_like(mu), 0.5 * (0.5 * logvar).exp() * eps), 1e-5,
                             ("dz/dμ should be 1: the gradient does not flow through μ",
                              "dz/d(log σ²) should be σ·ε/2: the gradient does not flow through the log-variance"),
                             "no gradient flows to μ and log σ²: build z from them with torch operations (no torch.normal, no .detach())")


@exercise("Reparameterization trick", reference=ref.reparameterize)
def check_reparameterize(fn: Callable, points: float = 1, seed: int = 0) -> list[Case]:
    """Check ``fn(mu, logvar, eps) -> z = mu + exp(logvar / 2) * eps``, differentiable in mu and logvar."""
    gen = generator(seed)
    B, d = 4 + seed % 3, 2 + seed % 3
    mu, logvar, eps = _randn(B, d, generator=gen), _uniform((B, d), -2.0, 1.5, gen, torch.float32), _randn(B, d, generator=gen)
    mu_k, logvar_k, eps_k = _randn(B, d, generator=gen), _uniform((B, d), -2.0, 1.5, gen, torch.float32), _randn(3, B, d, generator=gen)
    cases = [
        ("values z = μ + σ·ε on a (B, d) batch", lambda: _reparam_case(fn, mu, logvar, eps)),
        ("gradients reach μ and log σ²", lambda: _reparam_case(fn, mu, logvar, eps, with_gradient=True)),
        ("K samples per example: ε (K, B, d) broadcasts against μ (B, d)", lambda: _reparam_case(fn, mu_k, logvar_k, eps_k)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the ELBO of a linear-Gaussian latent model, against the exact log p(x)


def _linear_gaussian_problem(gen, B, D, d, noise_var):
    W = _randn(D, d, generator=gen, dtype=torch.float64)
    b = _randn(D, generator=gen, dtype=torch.float64)
    z = _randn(B, d, generator=gen, dtype=torch.float64)
    x = z @ W.T + b + math.sqrt(noise_var) * _randn(B, D, generator=gen, dtype=torch.float64)
    return x, W, b


def _random_cov(gen, B, d):
    A = _randn(B, d, d, generator=gen, dtype=torch.float64) * 0.5
    return A @ A.transpose(-2, -1) + 0.2 * torch.eye(d, dtype=torch.float64)


def _exact_log_marginal(x, W, b, noise_var):
    """log N(x; b, W Wᵀ + σ² I), from torch.distributions (not validating: its checks call torch.isclose,
    which a notebook may have rebound)."""
    cov = W @ W.T + noise_var * torch.eye(W.shape[0], dtype=W.dtype)
    return _MultivariateNormal(b, covariance_matrix=cov, validate_args=False).log_prob(x)


def _exact_posterior_kl(x, W, b, noise_var, q_mean, q_cov):
    """KL(q ‖ p(z|x)) from torch.distributions, with the posterior in closed form."""
    d = W.shape[1]
    post_cov = torch.linalg.inv(torch.eye(d, dtype=W.dtype) + W.T @ W / noise_var)
    post_cov = 0.5 * (post_cov + post_cov.T)
    post_mean = (x - b) @ W @ post_cov / noise_var
    q = _MultivariateNormal(q_mean, covariance_matrix=q_cov, validate_args=False)
    p = _MultivariateNormal(post_mean, covariance_matrix=post_cov.expand_as(q_cov), validate_args=False)
    return _kl_divergence(q, p), post_mean, post_cov


def _elbo_variants(x, q_mean, q_cov, W, b, noise_var):
    D, d = W.shape
    residual = x - q_mean @ W.T - b
    trace_wsw = (W @ q_cov @ W.T).diagonal(dim1=-2, dim2=-1).sum(-1)
    trace_s = q_cov.diagonal(dim1=-2, dim2=-1).sum(-1)
    logdet = torch.linalg.slogdet(q_cov).logabsdet
    const = -0.5 * D * math.log(2 * math.pi * noise_var)

    def elbo(var=noise_var, const=const, trace=True, kl_half=0.5, kl_sign=-1.0, logdet_term=True, trace_s_term=True):
        lik = const - (residual.pow(2).sum(-1) + (trace_wsw if trace else 0)) / (2 * var)
        kl = kl_half * ((trace_s if trace_s_term else 0) + q_mean.pow(2).sum(-1) - d - (logdet if logdet_term else 0))
        return lik + kl_sign * kl

    std = math.sqrt(noise_var)
    return [
        ("the reconstruction term ignores q's spread: E_q‖x − Wz − b‖² = ‖x − Wm − b‖² + tr(W S Wᵀ)", elbo(trace=False)),
        ("the KL is added instead of subtracted: ELBO = E_q[log p(x|z)] − KL(q ‖ p(z))", elbo(kl_sign=1.0)),
        ("the KL term is missing its factor ½", elbo(kl_half=1.0)),
        ("the KL term is missing −log det S (q's entropy)", elbo(logdet_term=False)),
        ("the KL term is missing tr(S)", elbo(trace_s_term=False)),
        ("log p(x|z) is missing its normalising constant −(D/2)·log(2π σ²)", elbo(const=0.0)),
        ("noise_var is the variance σ², not the standard deviation",
         elbo(var=std, const=-0.5 * D * math.log(2 * math.pi * std))),
        ("the normalising constant uses log(2π) but not log σ²", elbo(const=-0.5 * D * math.log(2 * math.pi))),
    ]


def _elbo_case(fn, x, W, b, noise_var, q_mean, q_cov, expect: str) -> str | None:
    log_px = _exact_log_marginal(x, W, b, noise_var)
    kl_post, _, _ = _exact_posterior_kl(x, W, b, noise_var, q_mean, q_cov)
    got = fn(x, q_mean, q_cov, W, b, noise_var)
    problem = _value_problem(got, "ELBO", log_px.shape, "dimensions of each example")
    if problem:
        return problem
    want = log_px - kl_post
    if close(got, want, 1e-6):
        return None
    diagnosis = first_match(got, _elbo_variants(x, q_mean, q_cov, W, b, noise_var), 1e-6)
    if diagnosis:
        return diagnosis
    if bool((got.detach() > log_px + 1e-6).any()):
        return "the ELBO exceeds the exact log p(x): a lower bound can never do that"
    if expect == "exact":
        return f"with q equal to the true posterior the ELBO must equal log p(x) (max error {max_abs_diff(got, log_px):.3g})"
    return f"log p(x) − ELBO should equal KL(q ‖ p(z|x)) (max error {max_abs_diff(got, want):.3g})"


@exercise("ELBO of the linear-Gaussian model", reference=(ref.elbo_linear_gaussian, ref.linear_gaussian_log_marginal))
def check_elbo_linear_gaussian(fn: Callable, points: float = 3, seed: int = 0) -> list[Case]:
    """Check ``fn(x, q_mean, q_cov, W, b, noise_var) -> (B,)`` ELBO of the linear-Gaussian model.

    The oracle is independent of the reference ELBO formula: log p(x) from the exact marginal
    N(b, W Wᵀ + σ² I) and KL(q ‖ p(z|x)) from torch.distributions, using log p(x) = ELBO + KL.
    """
    gen = generator(seed)
    B = 4 + seed % 3
    problems = [(_linear_gaussian_problem(gen, B, 5, 2, 0.5), 0.5), (_linear_gaussian_problem(gen, B, 6, 3, 2.0), 2.0),
                (_linear_gaussian_problem(gen, B, 4, 1, 0.3), 0.3)]

    def posterior_case(i):
        (x, W, b), noise_var = problems[i]
        _, post_mean, post_cov = _exact_posterior_kl(x, W, b, noise_var, torch.zeros(B, W.shape[1], dtype=torch.float64),
                                                    torch.eye(W.shape[1], dtype=torch.float64).expand(B, -1, -1))
        return lambda: _elbo_case(fn, x, W, b, noise_var, post_mean, post_cov.expand(B, -1, -1).clone(), "exact")

    def other_q_case(i):
        (x, W, b), noise_var = problems[i]
        d = W.shape[1]
        q_mean = _randn(B, d, generator=gen, dtype=torch.float64)
        q_cov = _random_cov(gen, B, d)
        return lambda: _elbo_case(fn, x, W, b, noise_var, q_mean, q_cov, "gap")

    cases = [
        ("q = the exact posterior: ELBO = log p(x) (D = 5, d = 2, σ² = 0.5)", posterior_case(0)),
        ("another Gaussian q: log p(x) − ELBO = KL(q ‖ p(z|x)) (d = 2)", other_q_case(0)),
        ("another Gaussian q, σ² = 2 (D = 6, d = 3)", other_q_case(1)),
        ("q = the exact posterior with a 1-D latent (σ² = 0.3)", posterior_case(2)),
        ("another Gaussian q with a 1-D latent", other_q_case(2)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the negative ELBO of a VAE with a Bernoulli decoder


def _neg_elbo_variants(logits, x, mu, logvar):
    D, d = x.shape[-1], mu.shape[-1]
    nll = _bce_with_logits(logits, x, reduction="none").sum(-1)
    kl = 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(-1)
    probs = _core.sigmoid(logits)
    variants = [
        ("the KL term is missing its factor ½", nll + 2 * kl),
        ("logvar is log σ², so σ² = exp(logvar): the KL treats it as log σ (exp(2·logvar))",
         nll + 0.5 * (mu.pow(2) + (2 * logvar).exp() - 2 * logvar - 1).sum(-1)),
        ("the reconstruction term is averaged over pixels but the KL is summed: that changes their relative scale (sum both, in nats)",
         nll / D + kl),
        ("both terms are averaged over their dimensions: sum them to get nats per example", nll / D + kl / d),
        ("the KL is averaged over the latent dimension: sum it", nll + kl / d),
        ("squared error is not the Bernoulli likelihood: use binary cross-entropy on the logits", ((probs - x) ** 2).sum(-1) + kl),
        ("squared error on the logits is not the Bernoulli likelihood: use binary cross-entropy on the logits",
         ((logits - x) ** 2).sum(-1) + kl),
        ("the KL term is missing", nll),
        ("the KL is subtracted: −ELBO = reconstruction NLL + KL", nll - kl),
        ("the reconstruction term has the wrong sign: it is −log p(x|z) ≥ 0", -nll + kl),
    ]
    if bool((logvar > 0).all()):
        variants.insert(1, ("the KL treats logvar as σ: it is log σ²",
                            nll + 0.5 * (mu.pow(2) + logvar.pow(2) - logvar.pow(2).log() - 1).sum(-1)))
    return variants


def _neg_elbo_case(fn, logits, x, mu, logvar) -> str | None:
    want = -_Bernoulli(logits=logits, validate_args=False).log_prob(x).sum(-1) + _kl_oracle(mu, logvar)
    with _distributions_unvalidated():  # as the oracle: grey-level targets are valid for the Bernoulli likelihood
        got = fn(logits, x, mu, logvar)
    problem = _value_problem(got, "−ELBO", want.shape, "pixels and latent dimensions",
                             "−ELBO contains NaN or inf: compute log p(x|z) from the logits "
                             "(e.g. binary_cross_entropy_with_logits), not log(sigmoid(·)), which saturates")
    if problem:
        return problem
    return compare_case(got, want, 1e-4, lambda: _neg_elbo_variants(logits, x, mu, logvar),
                        "differs from −ELBO = Σ_pixels BCE(logits, x) + KL")


@exercise("Negative ELBO, Bernoulli decoder", reference=ref.negative_elbo)
def check_negative_elbo_bernoulli(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(logits, x, mu, logvar) -> (B,)``: −ELBO per example for a Bernoulli decoder, in nats."""
    gen = generator(seed)
    B, D, d = 6 + seed % 3, 64, 2 + seed % 3

    def inputs(logit_scale=3.0, logvar_range=(-2.0, 1.0), binary=True):
        logits = _randn(B, D, generator=gen, dtype=torch.float64) * logit_scale
        x = (_rand(B, D, generator=gen, dtype=torch.float64) < 0.3).double() if binary else _rand(B, D, generator=gen, dtype=torch.float64)
        mu = _randn(B, d, generator=gen, dtype=torch.float64)
        logvar = _uniform((B, d), *logvar_range, gen)
        return logits, x, mu, logvar

    binary, positive, grey, extreme = inputs(), inputs(logvar_range=(0.2, 1.5)), inputs(binary=False), inputs(logit_scale=60.0)
    cases = [
        ("binary pixels, one value per example, in nats", lambda: _neg_elbo_case(fn, *binary)),
        ("log-variances above 0", lambda: _neg_elbo_case(fn, *positive)),
        ("grey-level targets x in [0, 1]", lambda: _neg_elbo_case(fn, *grey)),
        ("saturated logits (|logit| up to ~200) stay finite", lambda: _neg_elbo_case(fn, *extreme)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the importance-weighted (IWAE) estimate of log p(x)


def _iwae_variants(log_px_given_z, z, mu, logvar):
    K = z.shape[0]
    log_pz = ref.log_normal_standard(z)
    log_qz = ref.log_normal_diag(z, mu, logvar)
    log_w = log_px_given_z + log_pz - log_qz
    half = 0.5 * z.shape[-1] * math.log(2 * math.pi)
    return [
        ("that is the average of the log-weights (the ELBO estimate): IWAE takes the log of the average weight",
         log_w.mean(0)),
        ("log Σ_k w_k is missing −log K: IWAE averages the weights", _logsumexp(log_w, 0)),
        ("the weights need −log q(z|x): w = p(x|z) p(z) / q(z|x)", _logsumexp(log_px_given_z + log_pz + log_qz, 0) - math.log(K)),
        ("the weights are missing log p(z), the prior", _logsumexp(log_px_given_z - log_qz, 0) - math.log(K)),
        ("the weights are missing −log q(z|x)", _logsumexp(log_px_given_z + log_pz, 0) - math.log(K)),
        ("log q(z|x) uses σ = exp(logvar) where σ² = exp(logvar)",
         _logsumexp(log_px_given_z + log_pz - ref.log_normal_diag(z, mu, 2 * logvar), 0) - math.log(K)),
        ("the −(d/2)·log 2π constant is in log p(z) but not in log q(z|x) (or the other way round)",
         _logsumexp(log_w + half, 0) - math.log(K)),
        ("the −(d/2)·log 2π constant is in log p(z) but not in log q(z|x) (or the other way round)",
         _logsumexp(log_w - half, 0) - math.log(K)),
    ]


def _iwae_case(fn, log_px_given_z, z, mu, logvar) -> str | None:
    log_pz = _Normal(torch.zeros_like(z), torch.ones_like(z)).log_prob(z).sum(-1)
    log_qz = _Normal(mu, (0.5 * logvar).exp()).log_prob(z).sum(-1)
    want = _logsumexp(log_px_given_z + log_pz - log_qz, 0) - math.log(z.shape[0])
    got = fn(log_px_given_z, z, mu, logvar)
    if type(got) is _Tensor and tuple(got.shape) == (z.shape[0],):
        return f"returns shape {tuple(got.shape)}: average over the K samples (dim 0), keeping one value per example"
    problem = _value_problem(got, "estimate", want.shape, nan_hint="the estimate contains NaN or inf: exp of large negative "
                             "log-weights underflows; use logsumexp (subtract the max)")
    if problem:
        return problem
    return compare_case(got, want, 1e-5, lambda: _iwae_variants(log_px_given_z, z, mu, logvar),
                        "differs from log (1/K) Σ_k p(x|z_k) p(z_k) / q(z_k|x)")


@exercise("IWAE estimate of log p(x)", reference=ref.iwae_bound)
def check_iwae_estimate(fn: Callable, points: float = 3, seed: int = 0) -> list[Case]:
    """Check ``fn(log_px_given_z (K, B), z (K, B, d), mu (B, d), logvar (B, d)) -> (B,)``, the IWAE estimate."""
    gen = generator(seed)

    def inputs(K, B, d, scale):
        mu = _randn(B, d, generator=gen, dtype=torch.float64)
        logvar = _uniform((B, d), -2.0, 0.5, gen)
        z = mu + (0.5 * logvar).exp() * _randn(K, B, d, generator=gen, dtype=torch.float64)
        log_px_given_z = -scale * (1 + _rand(K, B, generator=gen, dtype=torch.float64))
        return log_px_given_z, z, mu, logvar

    small = inputs(7 + seed % 3, 4, 2, 5.0)
    large = inputs(50, 3, 3, 20.0)
    single = inputs(1, 5, 2, 5.0)
    tiny = inputs(20, 4, 2, 1500.0)  # log-weights around −2000: exp underflows to 0
    cases = [
        ("K = 7 samples for each of 4 examples", lambda: _iwae_case(fn, *small)),
        ("K = 50, d = 3", lambda: _iwae_case(fn, *large)),
        ("K = 1 gives the one-sample ELBO estimate", lambda: _iwae_case(fn, *single)),
        ("log-weights around −2000 stay finite (numerically stable)", lambda: _iwae_case(fn, *tiny)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the score-function (REINFORCE) gradient estimator


def _score_case(fn, f_values, z, mu, logvar) -> str | None:
    sigma2 = logvar.exp()
    want = f_values.unsqueeze(-1) * (z - mu) / sigma2
    got = fn(f_values, z, mu, logvar)
    problem = tensor_problem(got, "gradient estimates", want.shape)
    if problem:
        return problem
    return compare_case(got, want, 1e-6, [
        ("divides by σ instead of σ²: d/dμ log N(z; μ, σ²) = (z − μ)/σ²", f_values.unsqueeze(-1) * (z - mu) / sigma2.sqrt()),
        ("the sign is flipped: d/dμ log q(z) = (z − μ)/σ², not (μ − z)/σ²", -want),
        ("missing f(z): the estimator is f(z) · ∇_μ log q(z)", (z - mu) / sigma2),
        ("σ² = exp(logvar), not exp(2·logvar)", f_values.unsqueeze(-1) * (z - mu) / (2 * logvar).exp()),
        ("σ² = exp(logvar), not logvar", f_values.unsqueeze(-1) * (z - mu) / logvar),
        ("that is ∇_μ log q(z) times z, not times f(z)", z * (z - mu) / sigma2),
    ], "differs from f(z) · (z − μ) / σ²")


@exercise("Score-function gradient estimator", reference=ref.score_function_gradient_samples)
def check_score_function_gradient(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(f_values (n,), z (n, d), mu (d,), logvar (d,)) -> (n, d)`` one-sample REINFORCE estimates."""
    gen = generator(seed)

    def inputs(n, d):
        mu = _randn(d, generator=gen, dtype=torch.float64)
        logvar = _uniform((d,), -1.5, 1.0, gen)
        z = mu + (0.5 * logvar).exp() * _randn(n, d, generator=gen, dtype=torch.float64)
        return (z - 1.0).pow(2).sum(-1) + 0.5, z, mu, logvar

    small, larger = inputs(6, 2), inputs(40 + seed % 5, 3)

    def unbiased():
        # On f(z) = ‖z − c‖², the true gradient is 2(μ − c); averaged over many samples the estimates must agree.
        n, d = 200_000, 2
        c = torch.tensor([1.0, -0.5], dtype=torch.float64)
        mu = torch.tensor([0.3, 0.2], dtype=torch.float64)
        logvar = torch.tensor([-1.0, -0.5], dtype=torch.float64)
        z = mu + (0.5 * logvar).exp() * _randn(n, d, generator=gen, dtype=torch.float64)
        got = fn((z - c).pow(2).sum(-1), z, mu, logvar)
        problem = tensor_problem(got, "gradient estimates", (n, d))
        if problem:
            return problem
        mean, stderr = got.detach().double().mean(0), got.detach().double().std(0) / math.sqrt(n)
        if not all(within_sigmas(float(e), float(s), slack=1e-6) for e, s in zip(mean - 2 * (mu - c), stderr)):
            return "the average estimate is biased: it does not match the true gradient 2(μ − c) of E‖z − c‖²"
        return None

    cases = [
        ("n = 6 samples, d = 2", lambda: _score_case(fn, *small)),
        ("n ≈ 40 samples, d = 3", lambda: _score_case(fn, *larger)),
        ("unbiased: the mean of 200,000 estimates matches the exact gradient", unbiased),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Derivations


derive_gaussian_kl = derivation(
    "KL(N(μ, σ²) ‖ N(0, 1)) from the definition",
    symbols={"mu": real(), "sigma": positive(0.1, 5.0)},
    expected={"kl": "(mu**2 + sigma**2 - log(sigma**2) - 1) / 2"},
    # The notes' formula writes 1 where σ² belongs, and σ in place of σ² gives the same at σ = 1.
    special={"σ = 1": {"sigma": 1}},
)

# z ~ N(0, 1), x | z ~ N(z, s2), q(z|x) = N(m, v): the posterior is N(x / (1 + s2), s2 / (1 + s2)).
derive_elbo_gap = derivation(
    "The ELBO and its gap in a 1-D Gaussian model",
    symbols={"x": real(), "m": real(), "v": positive(0.1, 5.0), "s2": positive(0.1, 5.0)},
    expected={
        "elbo": "-log(2*pi*s2)/2 - ((x - m)**2 + v)/(2*s2) - (m**2 + v - log(v) - 1)/2",
        "gap": "(v*(1 + s2)/s2 + (m - x/(1 + s2))**2*(1 + s2)/s2 - 1 - log(v*(1 + s2)/s2))/2",
    },
    # Swapping the posterior's weights (mean x·s2/(1 + s2), variance 1/(1 + s2)) is right only at s2 = 1.
    special={"σ² = 1": {"s2": 1}},
)


make_read_only(__name__)
