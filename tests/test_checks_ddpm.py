"""Every DDPM check accepts a correct answer and rejects plausible wrong ones, naming the fault."""

import pytest
import torch
import torch.nn.functional as F

from checking import assert_rejected, own_copy
from gradelib.checks import ddpm as checks
from gradelib.reference import ddpm as ref


def assert_accepted(check, candidate, capsys, points, **kwargs):
    assert check(candidate, points=points, **kwargs) == points
    assert "✗" not in capsys.readouterr().out


def col(values, t, x):
    return values[t].reshape(-1, *([1] * (x.dim() - 1)))


# --- q_sample --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1234])
def test_q_sample_accepts_a_correct_answer(seed, capsys):
    assert_accepted(checks.check_q_sample, own_copy(ref.q_sample), capsys, 2, seed=seed)

    def by_hand(x0, t, noise, alpha_bars):
        a = alpha_bars[t].view(-1, *([1] * (x0.dim() - 1)))
        return torch.sqrt(a) * x0 + torch.sqrt(1 - a) * noise

    assert_accepted(checks.check_q_sample, by_hand, capsys, 2, seed=seed)


def q_no_sqrt_noise(x0, t, noise, alpha_bars):
    a = col(alpha_bars, t, x0)
    return a.sqrt() * x0 + (1 - a) * noise


def q_t_minus_1(x0, t, noise, alpha_bars):
    a = col(alpha_bars, t - 1, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def q_t_plus_1(x0, t, noise, alpha_bars):
    a = col(alpha_bars, (t + 1).clamp(max=len(alpha_bars) - 1), x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def q_swapped(x0, t, noise, alpha_bars):
    a = col(alpha_bars, t, x0)
    return (1 - a).sqrt() * x0 + a.sqrt() * noise


def q_cumprod_again(x0, t, noise, alpha_bars):
    a = col(torch.cumprod(alpha_bars, 0), t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def q_no_broadcast(x0, t, noise, alpha_bars):
    a = alpha_bars[t].unsqueeze(1)  # right for (B, D), wrong for images
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def q_own_noise(x0, t, noise, alpha_bars):
    a = col(alpha_bars, t, x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * torch.randn_like(x0)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (q_no_sqrt_noise, "the noise coefficient lacks its square root"),
    (q_t_minus_1, "off by one: you used alpha_bars[t − 1]"),
    (q_t_plus_1, "off by one: you used alpha_bars[t + 1]"),
    (q_swapped, "the two coefficients are swapped"),
    (q_cumprod_again, "you took a product of it again"),
    (q_no_broadcast, "raised RuntimeError"),
    (q_own_noise, "use the noise you are given"),
    (ref.q_sample, "calls gradelib.reference"),
], ids=["no-sqrt-noise", "t-1", "t+1", "swapped", "cumprod", "broadcast", "own-noise", "reference"])
def test_q_sample_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_q_sample, wrong, capsys, diagnosis, points=2)


def test_q_sample_chain_case_catches_a_wrong_variance(capsys):
    """A q_sample that is exact on nothing but has the wrong spread fails the iterated-chain comparison."""
    def wrong_spread(x0, t, noise, alpha_bars):
        a = col(alpha_bars, t, x0)
        return a.sqrt() * x0 + 0.5 * (1 - a).sqrt() * noise + 1e-3
    assert_rejected(checks.check_q_sample, wrong_spread, capsys, "running the chain", points=2)


# --- posterior -------------------------------------------------------------------------------


def posterior(x0, x_t, t, betas, *, prev="right", variance="right"):
    alphas = 1 - betas
    ab = torch.cumprod(alphas, 0)
    abp = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    b, a, g = col(betas, t, x_t), col(alphas, t, x_t), col(ab, t, x_t)
    gp = {"right": col(abp, t, x_t), "ab_t": g, "wrap": col(ab, t - 1, x_t)}[prev]
    mean = gp.sqrt() * b / (1 - g) * x0 + a.sqrt() * (1 - gp) / (1 - g) * x_t
    var = (1 - gp) / (1 - g) * b
    var = {"right": var, "beta": b, "std": var.sqrt(), "notes": (1 - gp) / (1 - a) * b}[variance]
    return mean, var


def test_posterior_accepts_a_correct_answer(capsys):
    assert_accepted(checks.check_posterior_mean_variance, posterior, capsys, 3)
    assert_accepted(checks.check_posterior_mean_variance, posterior, capsys, 3, seed=77)

    def full_shape_variance(x0, x_t, t, betas):
        mean, var = posterior(x0, x_t, t, betas)
        return mean, var.expand_as(x_t).clone()

    assert_accepted(checks.check_posterior_mean_variance, full_shape_variance, capsys, 3)


def posterior_off_by_one(x0, x_t, t, betas):
    """Treats code t as the paper's t: every quantity one step early."""
    return posterior(x0, x_t, (t - 1).clamp(min=0), betas)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda x0, x_t, t, b: posterior(x0, x_t, t, b, prev="ab_t"), "ᾱ_t is used where ᾱ_(t−1) belongs"),
    (lambda x0, x_t, t, b: posterior(x0, x_t, t, b, prev="wrap"), "wraps round to alpha_bars[−1] at t = 0"),
    (lambda x0, x_t, t, b: posterior(x0, x_t, t, b, variance="beta"), "the variance is β_t"),
    (lambda x0, x_t, t, b: posterior(x0, x_t, t, b, variance="std"), "you returned the standard deviation"),
    (lambda x0, x_t, t, b: posterior(x0, x_t, t, b, variance="notes"), "as in the lecture notes"),
    (posterior_off_by_one, "off by one: the whole step uses the quantities at t − 1"),
    (lambda x0, x_t, t, b: posterior(x0, x_t, t, b)[0], "should return a pair"),
    (lambda x0, x_t, t, b: (posterior(x0, x_t, t, b)[0], posterior(x0, x_t, t, b)[1].squeeze()), "does not broadcast"),
    (own_copy(ref.posterior_mean_variance), "calls gradelib.reference"),
], ids=["ab-for-abprev", "wrap", "beta", "std", "notes", "off-by-one", "not-a-pair", "bad-shape", "reference"])
def test_posterior_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_posterior_mean_variance, wrong, capsys, diagnosis, points=3)


# --- predict_x0 ------------------------------------------------------------------------------


def test_predict_x0_accepts(capsys):
    assert_accepted(checks.check_predict_x0, own_copy(ref.predict_x0), capsys, 1)
    assert_accepted(checks.check_predict_x0, own_copy(ref.predict_x0), capsys, 1, seed=5)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda x, t, e, ab: (x - (1 - col(ab, t, x)) * e) / col(ab, t, x).sqrt(), "lacks its square root"),
    (lambda x, t, e, ab: (x - (1 - col(ab, t, x)).sqrt() * e) / col(ab, t, x), "you divided by ᾱ_t"),
    (lambda x, t, e, ab: (x - (1 - col(ab, t - 1, x)).sqrt() * e) / col(ab, t - 1, x).sqrt(), "off by one: alpha_bars[t − 1]"),
    (lambda x, t, e, ab: x - e, "the lecture notes' reverse step"),
], ids=["no-sqrt", "divide-ab", "t-1", "notes"])
def test_predict_x0_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_predict_x0, wrong, capsys, diagnosis, points=1)


# --- ddim_step -------------------------------------------------------------------------------


def test_ddim_step_accepts(capsys):
    assert_accepted(checks.check_ddim_step, own_copy(ref.ddim_step), capsys, 2)
    assert_accepted(checks.check_ddim_step, own_copy(ref.ddim_step), capsys, 2, seed=3)


def ddim_wrapping(x_t, eps, t, t_prev, alpha_bars):
    ab, abp = alpha_bars[t], alpha_bars[t_prev]  # t_prev = -1 wraps to the last entry
    x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    return abp.sqrt() * x0 + (1 - abp).sqrt() * eps


def ddim_variance_coefficient(x_t, eps, t, t_prev, alpha_bars):
    ab = alpha_bars[t]
    abp = alpha_bars[t_prev] if t_prev >= 0 else torch.ones((), dtype=alpha_bars.dtype)
    x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    return abp.sqrt() * x0 + (1 - abp) * eps


def ddim_no_direction(x_t, eps, t, t_prev, alpha_bars):
    ab = alpha_bars[t]
    abp = alpha_bars[t_prev] if t_prev >= 0 else torch.ones((), dtype=alpha_bars.dtype)
    return abp.sqrt() * (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (ddim_wrapping, "t_prev = −1"),
    (ddim_variance_coefficient, "you used the variance 1 − ᾱ_prev"),
    (ddim_no_direction, "the noise direction is missing"),
    (ref.ddim_step, "calls gradelib.reference"),
], ids=["wrap", "variance", "no-direction", "reference"])
def test_ddim_step_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_ddim_step, wrong, capsys, diagnosis, points=2)


# --- simple_loss -----------------------------------------------------------------------------


def test_simple_loss_accepts(capsys):
    assert_accepted(checks.check_simple_loss, own_copy(ref.simple_loss), capsys, 2)
    assert_accepted(checks.check_simple_loss, own_copy(ref.simple_loss), capsys, 2, seed=11)

    def noise_first(eps_model, x0, alpha_bars, generator=None):
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        t = torch.randint(0, len(alpha_bars), (len(x0),), generator=generator)
        a = col(alpha_bars, t, x0)
        return F.mse_loss(eps_model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t), noise)

    assert_accepted(checks.check_simple_loss, noise_first, capsys, 2)


def make_loss(*, low=0, high=None, sqrt=True, target="noise", reduce="mean", use_generator=True, detach=False):
    def loss_fn(eps_model, x0, alpha_bars, generator=None):
        g = generator if use_generator else None
        T = len(alpha_bars)
        t = torch.randint(low, T if high is None else high, (len(x0),), generator=g)
        noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
        a = col(alpha_bars, t, x0)
        x_t = a.sqrt() * x0 + ((1 - a).sqrt() if sqrt else (1 - a)) * noise
        pred = eps_model(x_t, t)
        goal = {"noise": noise, "x0": x0}[target]
        err = (pred - goal) ** 2
        loss = err.mean() if reduce == "mean" else err.sum()
        return loss.detach() if detach else loss
    return loss_fn


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (make_loss(low=1, high=None), "t never takes the value 0"),
    (lambda m, x0, ab, generator=None: make_loss(high=len(ab) - 1)(m, x0, ab, generator), "t never reaches T − 1"),
    (make_loss(sqrt=False), "noise coefficient lacks its square root"),
    (make_loss(target="x0"), "compares the prediction with x_0"),
    (make_loss(reduce="sum"), "the loss is a sum"),
    (make_loss(use_generator=False), "draw t and ε with generator=generator"),
    (make_loss(detach=True), "the loss carries no gradient"),
    (ref.simple_loss, "calls gradelib.reference"),
], ids=["t-from-1", "t-to-T-2", "no-sqrt", "x0-target", "sum", "no-generator", "detached", "reference"])
def test_simple_loss_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_simple_loss, wrong, capsys, diagnosis, points=2)
