"""Every DDPM check accepts a correct answer and rejects plausible wrong ones, naming the fault."""

import pytest
import sympy
import torch
import torch.nn.functional as F

from checking import assert_accepted, assert_rejected, own_copy, score_of
from gradelib.checks import CheckFailed
from gradelib.checks import ddpm as checks
from gradelib.reference import ddpm as ref


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
    assert_accepted(checks.check_posterior_mean_variance, posterior, capsys, 3, seeds=(0, 77))

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
    assert_accepted(checks.check_predict_x0, own_copy(ref.predict_x0), capsys, 1, seeds=(0, 5))


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
    assert_accepted(checks.check_ddim_step, own_copy(ref.ddim_step), capsys, 2, seeds=(0, 3))


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
    assert_accepted(checks.check_simple_loss, own_copy(ref.simple_loss), capsys, 2, seeds=(0, 11))

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


# --- §6: messages that name the fault, and trivial cases that earn little ------------------------


def posterior_notes_eps_form(x0, x_t, t, betas, *, prefactor="abar", root="abar"):
    """The ε-form of μ̃_t as the lecture notes write it: prefactor 1/√ᾱ_t (or, with root="alpha", √(1 − α_t) in the
    ε coefficient); the variance is right."""
    alphas = 1 - betas
    ab = torch.cumprod(alphas, 0)
    abp = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    b, a, g, gp = col(betas, t, x_t), col(alphas, t, x_t), col(ab, t, x_t), col(abp, t, x_t)
    eps = (x_t - g.sqrt() * x0) / (1 - g).sqrt()
    pre = {"abar": g, "alpha": a}[prefactor]
    under_root = {"abar": 1 - g, "alpha": 1 - a}[root]
    return (x_t - b / under_root.sqrt() * eps) / pre.sqrt(), (1 - gp) / (1 - g) * b


def test_posterior_with_the_notes_eps_prefactor_is_named(capsys):
    assert_rejected(checks.check_posterior_mean_variance, posterior_notes_eps_form, capsys,
                    "the ε-form's prefactor is 1/√α_t (one step), not 1/√ᾱ_t as in the lecture notes", points=3)
    assert_rejected(checks.check_posterior_mean_variance,
                    lambda x0, x_t, t, b: posterior_notes_eps_form(x0, x_t, t, b, prefactor="alpha", root="alpha"), capsys,
                    "the lecture notes' √(1 − α_t) is wrong", points=3)
    # every failing case names it, the float32 images at late cosine steps included
    with pytest.raises(CheckFailed):
        checks.check_posterior_mean_variance(posterior_notes_eps_form, points=3)
    table = capsys.readouterr().out
    assert "differs from the posterior" not in table and "Bayes' rule on a grid gives" not in table, table


def ddim_t_prev_shifted(shift):
    def ddim(x_t, eps, t, t_prev, alpha_bars):
        s = t_prev + shift
        ab = alpha_bars[t]
        abp = alpha_bars[s] if 0 <= s < len(alpha_bars) else torch.ones((), dtype=alpha_bars.dtype)
        x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        return abp.sqrt() * x0 + (1 - abp).sqrt() * eps
    return ddim


@pytest.mark.parametrize(("shift", "diagnosis"), [(-1, "t_prev is off by one: you used alpha_bars[t_prev − 1]"),
                                                  (1, "t_prev is off by one: you used alpha_bars[t_prev + 1]")])
def test_ddim_with_only_t_prev_off_by_one_is_named(shift, diagnosis, capsys):
    assert_rejected(checks.check_ddim_step, ddim_t_prev_shifted(shift), capsys, diagnosis, points=2)
    assert "differs from the DDIM step" not in capsys.readouterr().out


def test_ddim_that_always_returns_x0_hat_earns_nothing(capsys):
    """It is right at the final step, and its last jump lands on a one-point data set: neither may earn points."""
    def x0_hat(x_t, eps, t, t_prev, alpha_bars):
        ab = alpha_bars[t]
        return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
    assert score_of(checks.check_ddim_step, x0_hat, 2) == 0


def loss_one_t_for_the_batch(eps_model, x0, alpha_bars, generator=None):
    t = torch.randint(0, len(alpha_bars), (1,), generator=generator).expand(len(x0))
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    a = col(alpha_bars, t, x0)
    return F.mse_loss(eps_model(a.sqrt() * x0 + (1 - a).sqrt() * noise, t), noise)


def test_one_t_for_the_whole_batch_is_named(capsys):
    assert_rejected(checks.check_simple_loss, loss_one_t_for_the_batch, capsys, "every example got the same t", points=2)
    assert "upper bound is exclusive" not in capsys.readouterr().out


def test_trivial_cases_earn_little(capsys):
    """Answers that are right only where the task is trivial (the step to x_0, t = 0, a loss that is merely
    reproducible and differentiable) earn less than a third of the points."""
    def posterior_point_mass(x0, x_t, t, betas):
        return x0.clone(), torch.zeros(len(x0), *([1] * (x0.dim() - 1)), dtype=x0.dtype)

    def loss_from_x0(eps_model, x0, alpha_bars, generator=None):    # the model never sees x_t
        t = torch.randint(0, len(alpha_bars), (len(x0),), generator=generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
        return F.mse_loss(eps_model(x0, t), noise)

    def ancestral_mean_only(x_t, eps, t, betas, z, variance):
        alphas = 1 - betas
        ab = torch.cumprod(alphas, 0)
        return (x_t - betas[t] / (1 - ab[t]).sqrt() * eps) / alphas[t].sqrt()

    assert score_of(checks.check_posterior_mean_variance, posterior_point_mass, 3) < 1
    assert score_of(checks.check_simple_loss, loss_from_x0, 2) < 2 / 3
    assert score_of(checks.check_ddpm_step, ancestral_mean_only, 2) == 0


# --- ddpm_step (the ancestral step, both variances) -------------------------------------------


def ancestral(x_t, eps, t, betas, z, variance, *, prefactor="alpha", noise="std", at_zero=False, ignore_variance=False):
    alphas = 1 - betas
    ab = torch.cumprod(alphas, 0)
    abp = ab[t - 1] if t >= 1 else torch.ones((), dtype=ab.dtype)
    pre = {"alpha": alphas[t], "abar": ab[t]}[prefactor]
    mean = (x_t - betas[t] / (1 - ab[t]).sqrt() * eps) / pre.sqrt()
    if t == 0 and not at_zero:
        return mean
    var = betas[t] if (variance == "beta" or ignore_variance) else (1 - abp) / (1 - ab[t]) * betas[t]
    return mean + {"std": var.sqrt(), "var": var}[noise] * z


def test_ddpm_step_accepts(capsys):
    assert_accepted(checks.check_ddpm_step, own_copy(ref.ddpm_step), capsys, 2)
    assert_accepted(checks.check_ddpm_step, ancestral, capsys, 2, seed=7)

    def via_x0_posterior(x_t, eps, t, betas, z, variance):     # x̂_0 first, then the x_0-form of μ̃_t
        alphas = 1 - betas
        ab = torch.cumprod(alphas, 0)
        abp = ab[t - 1] if t >= 1 else torch.ones((), dtype=ab.dtype)
        x0 = (x_t - (1 - ab[t]).sqrt() * eps) / ab[t].sqrt()
        mean = abp.sqrt() * betas[t] / (1 - ab[t]) * x0 + alphas[t].sqrt() * (1 - abp) / (1 - ab[t]) * x_t
        sigma2 = betas[t] if variance == "beta" else (1 - abp) / (1 - ab[t]) * betas[t]
        return mean if t == 0 else mean + sigma2.sqrt() * z

    assert_accepted(checks.check_ddpm_step, via_x0_posterior, capsys, 2)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda *a: ancestral(*a, prefactor="abar"), "the mean's prefactor is 1/√α_t (one step), not 1/√ᾱ_t"),
    (lambda *a: ancestral(*a, noise="var"), "you scaled z by the variance itself"),
    (lambda *a: ancestral(*a, at_zero=True), "at t = 0 (the step to x_0) no noise is added"),
    (lambda *a: ancestral(*a, ignore_variance=True), 'with variance="beta_tilde" the noise should have variance β̃_t'),
    (lambda x_t, eps, t, betas, z, v: x_t - eps, "the lecture notes' rule x_t − ε"),
    (ref.ddpm_step, "calls gradelib.reference"),
], ids=["notes-prefactor", "variance-as-std", "noise-at-0", "ignores-variance", "notes-rule", "reference"])
def test_ddpm_step_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_ddpm_step, wrong, capsys, diagnosis, points=2)


# --- derivations ---------------------------------------------------------------------------------


def test_the_derivations_keys_are_right():
    """Each expected result, derived again here with SymPy from its definition."""
    a1, a2, b, ap = sympy.symbols("alpha_t alpha_prev beta_t abar_prev", positive=True)
    x, x0, xt = sympy.symbols("x x0 xt", real=True)
    e, eh = sympy.symbols("e eh", real=True)
    parse = lambda text, names: sympy.sympify(text, locals=names)  # noqa: E731
    # two steps: x_t = √α_t (√α_(t−1) x + √(1 − α_(t−1)) ε_1) + √(1 − α_t) ε_2
    two = checks.derive_two_steps
    assert sympy.simplify(parse(two_expected("mean_coef"), {"alpha_t": a1, "alpha_prev": a2}) - sympy.sqrt(a1) * sympy.sqrt(a2)) == 0
    assert sympy.simplify(parse(two_expected("variance"), {"alpha_t": a1, "alpha_prev": a2}) - (a1 * (1 - a2) + 1 - a1)) == 0
    assert two.results == ("mean_coef", "variance")
    # the posterior: complete the square in x = x_(t−1)
    alpha, abt = 1 - b, ap * (1 - b)
    exponent = (xt - sympy.sqrt(alpha) * x) ** 2 / b + (x - sympy.sqrt(ap) * x0) ** 2 / (1 - ap)
    precision = sympy.diff(exponent, x, 2) / 2
    mean = -sympy.diff(exponent, x).subs(x, 0) / 2 / precision
    names = {"abar_prev": ap, "beta_t": b, "alpha_t": alpha, "abar_t": abt}
    post = dict(checks.POSTERIOR_EXPECTED)
    assert sympy.simplify(parse(post["beta_tilde"], names) - 1 / precision) == 0
    assert sympy.simplify(parse(post["coef_x0"], names) - sympy.diff(mean, x0)) == 0
    assert sympy.simplify(parse(post["coef_xt"], names) - sympy.diff(mean, xt)) == 0
    # the ELBO term: KL(N(μ̃, β̃) ‖ N(μ_θ, β_t)), both means in ε-form, δ = ε − ε_θ
    beta_tilde = 1 / precision
    x_t = sympy.sqrt(abt) * x0 + sympy.sqrt(1 - abt) * e
    mu_q = (x_t - b / sympy.sqrt(1 - abt) * e) / sympy.sqrt(alpha)
    mu_p = (x_t - b / sympy.sqrt(1 - abt) * eh) / sympy.sqrt(alpha)
    kl = (sympy.log(b / beta_tilde) + beta_tilde / b + (mu_q - mu_p) ** 2 / b - 1) / 2
    elbo = dict(checks.ELBO_EXPECTED)
    names = {**names, "beta_tilde": beta_tilde, "delta": e - eh}
    got = parse(elbo["L_term"], names)
    for point in ({ap: 0.3, b: 0.05, e: 0.7, eh: -0.2}, {ap: 0.9, b: 0.4, e: -1.1, eh: 0.5}):
        assert abs(float((got - kl).subs(point))) < 1e-12
    assert sympy.simplify(parse(elbo["weight"], names) - sympy.diff(kl, e, 2) / 2) == 0


def two_expected(name):
    return dict(checks.TWO_STEP_EXPECTED)[name]


def derivation_table(check, answers, points, capsys):
    score = score_of(check, answers, points)
    return score, capsys.readouterr().out


def test_two_steps_accepts_equivalent_forms_and_names_wrong_ones(capsys):
    alpha_t, alpha_prev = checks.derive_two_steps.symbols_for_notebook()
    for answers in ({"mean_coef": sympy.sqrt(alpha_t * alpha_prev), "variance": 1 - alpha_t * alpha_prev},
                    {"mean_coef": sympy.sqrt(alpha_t) * sympy.sqrt(alpha_prev), "variance": alpha_t * (1 - alpha_prev) + (1 - alpha_t)}):
        assert derivation_table(checks.derive_two_steps, answers, 2, capsys)[0] == 2
    # the variances added without scaling the first by α_t; the mean without its square root
    score, table = derivation_table(checks.derive_two_steps, {"mean_coef": alpha_t * alpha_prev,
                                                              "variance": (1 - alpha_t) + (1 - alpha_prev)}, 2, capsys)
    assert score == 0
    assert "variance  <- correct at α_(t−1) = 1 (an earlier step without noise) but not in general" in table
    assert "mean_coef  <- not equivalent" in table
    # standard deviations added instead of variances
    score, table = derivation_table(checks.derive_two_steps, {"mean_coef": sympy.sqrt(alpha_t * alpha_prev),
                                                              "variance": sympy.sqrt(alpha_t * (1 - alpha_prev)) + sympy.sqrt(1 - alpha_t)}, 2, capsys)
    assert score == 1 and "variance  <- not equivalent" in table


def test_posterior_derivation_accepts_equivalent_forms_and_names_wrong_ones(capsys):
    abar_prev, beta_t, alpha_t, abar_t = checks.derive_posterior.symbols_for_notebook()
    right = {"beta_tilde": (1 - abar_prev) / (1 - abar_t) * beta_t, "coef_x0": sympy.sqrt(abar_prev) * beta_t / (1 - abar_t),
             "coef_xt": sympy.sqrt(alpha_t) * (1 - abar_prev) / (1 - abar_t)}
    as_precision = {"beta_tilde": 1 / (alpha_t / beta_t + 1 / (1 - abar_prev)),          # the inverse precision, unsimplified
                    "coef_x0": sympy.sqrt(abar_prev) / (1 - abar_prev) / (alpha_t / beta_t + 1 / (1 - abar_prev)),
                    "coef_xt": sympy.sqrt(1 - beta_t) / beta_t / ((1 - beta_t) / beta_t + 1 / (1 - abar_prev))}
    for answers in (right, as_precision):
        assert derivation_table(checks.derive_posterior, answers, 3, capsys)[0] == 3
    # the notes' variance (denominator 1 − α_t), and ᾱ_(t−1) without its square root
    score, table = derivation_table(checks.derive_posterior, {**right, "beta_tilde": (1 - abar_prev) / (1 - alpha_t) * beta_t,
                                                              "coef_x0": abar_prev * beta_t / (1 - abar_t)}, 3, capsys)
    assert score == 1
    assert "beta_tilde  <- misses a dependence on beta_t" in table
    assert "coef_x0  <- correct at t = 1 (ᾱ_0 = 1) but not in general" in table
    # ᾱ_t where ᾱ_(t−1) belongs in the x_t coefficient
    score, table = derivation_table(checks.derive_posterior, {**right, "coef_xt": sympy.sqrt(alpha_t) * (1 - abar_t) / (1 - abar_t)}, 3, capsys)
    assert score == 2 and "coef_xt  <- misses a dependence on abar_prev" in table


def test_elbo_term_accepts_equivalent_forms_and_names_wrong_ones(capsys):
    abar_prev, beta_t, delta, alpha_t, abar_t, beta_tilde = checks.derive_elbo_term.symbols_for_notebook()
    w = beta_t / (2 * alpha_t * (1 - abar_t))
    textbook = {"weight": w, "L_term": (beta_tilde / beta_t - 1 - sympy.log(beta_tilde / beta_t)) / 2 + w * delta**2}
    from_kl = {"weight": beta_t**2 / (2 * beta_t * alpha_t * (1 - abar_t)),   # β_t² / (2 σ² α_t (1 − ᾱ_t)) with σ² = β_t
               "L_term": (sympy.log(beta_t / beta_tilde) + beta_tilde / beta_t - 1
                          + (beta_t / (sympy.sqrt(alpha_t) * sympy.sqrt(1 - abar_t)) * delta) ** 2 / beta_t) / 2}
    for answers in (textbook, from_kl):
        assert derivation_table(checks.derive_elbo_term, answers, 2, capsys)[0] == 2
    # the ½ of the KL forgotten in the weight; the KL's log term with the wrong sign
    score, table = derivation_table(checks.derive_elbo_term, {"weight": 2 * w, "L_term": (beta_tilde / beta_t - 1
                                    + sympy.log(beta_tilde / beta_t)) / 2 + w * delta**2}, 2, capsys)
    assert score == 0
    assert "weight  <- off by a constant factor (×2)" in table
    assert "L_term  <- not equivalent" in table
    # the weight with σ² = 1 (not divided by the reverse step's variance): it depends on β_t differently
    score, table = derivation_table(checks.derive_elbo_term, {**textbook, "weight": beta_t**2 / (2 * alpha_t * (1 - abar_t))}, 2, capsys)
    assert score == 1 and "weight  <- not equivalent" in table


# --- one mistake costs one exercise ---------------------------------------------------------------


def notebook_function(source, **names):
    """A function defined as in a notebook cell, whose globals hold the student's earlier answers ``names``."""
    space = {"torch": torch, "F": F, **names}
    exec(source, space)
    return space


DDIM_VIA_PREDICT_X0 = '''
def ddim_step(x_t, eps_hat, t, t_prev, alpha_bars):
    x0_hat = predict_x0(x_t, torch.full((x_t.shape[0],), t, dtype=torch.long), eps_hat, alpha_bars)
    ab_s = alpha_bars[t_prev] if t_prev >= 0 else torch.ones((), dtype=alpha_bars.dtype)
    return ab_s.sqrt() * x0_hat + (1 - ab_s).sqrt() * eps_hat
'''

LOSS_VIA_Q_SAMPLE = '''
def simple_loss(eps_model, x0, alpha_bars, generator=None):
    t = torch.randint(0, len(alpha_bars), (len(x0),), generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    return F.mse_loss(eps_model(q_sample(x0, t, noise, alpha_bars), t), noise)
'''


def test_a_wrong_earlier_exercise_costs_only_its_own_points(capsys):
    """ddim_step that calls a wrong predict_x0 (exercise 3), and simple_loss that calls a q_sample without its square
    root (exercise 1), earn their full points; a note names the exercise to fix."""
    def wrong_predict_x0(x_t, t, eps, alpha_bars):
        ab = col(alpha_bars, t, x_t)
        return (x_t - (1 - ab) * eps) / ab.sqrt()

    space = notebook_function(DDIM_VIA_PREDICT_X0, predict_x0=wrong_predict_x0)
    assert checks.check_ddim_step(space["ddim_step"], points=2) == 2
    printed = capsys.readouterr().out
    assert "fix exercise 3 (predict_x0)" in printed and printed.count("note:") == 1
    assert space["predict_x0"] is wrong_predict_x0          # the notebook's own name is put back

    space = notebook_function(LOSS_VIA_Q_SAMPLE, q_sample=q_no_sqrt_noise)
    assert checks.check_simple_loss(space["simple_loss"], points=2) == 2
    assert "fix exercise 1 (q_sample)" in capsys.readouterr().out

    # with correct earlier pieces there is nothing to note, and a mistake of the exercise itself is still named
    space = notebook_function(DDIM_VIA_PREDICT_X0.replace("(1 - ab_s).sqrt() * eps_hat", "(1 - ab_s) * eps_hat"),
                              predict_x0=own_copy(ref.predict_x0))
    assert_rejected(checks.check_ddim_step, space["ddim_step"], capsys, "you used the variance 1 − ᾱ_prev", points=2)
