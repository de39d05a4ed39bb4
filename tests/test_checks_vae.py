"""Every VAE check accepts the reference and rejects plausible wrong answers with a diagnosis naming the fault."""

import math

import pytest
import torch
import torch.nn.functional as F

from gradelib.checks import CheckFailed, vae as checks
from gradelib.reference import vae as ref
from checking import assert_rejected, own_copy


def stub(*args):
    raise NotImplementedError()


# --- KL to the standard normal ---------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1234])
def test_kl_accepts_reference(seed, capsys):
    assert checks.check_gaussian_kl(own_copy(ref.gaussian_kl_standard_normal), points=2, seed=seed) == 2.0
    assert "✗" not in capsys.readouterr().out


def kl_template(mu, logvar, *, half=0.5, as_sigma=False, as_log_sigma=False, notes_formula=False, reduce="sum", sign=1.0):
    if as_sigma:  # the input read as σ, not log σ²
        terms = mu**2 + logvar**2 - torch.log(logvar**2) - 1
    elif as_log_sigma:
        terms = mu**2 + torch.exp(2 * logvar) - 2 * logvar - 1
    elif notes_formula:  # -1/2 (1 + log σ² - μ² - 1): the σ² term replaced by 1
        terms = -(1 + logvar - mu**2 - 1)
    else:
        terms = mu**2 + logvar.exp() - logvar - 1
    total = terms.sum(-1) if reduce == "sum" else terms.mean(-1) if reduce == "mean" else terms
    return sign * half * total


@pytest.mark.parametrize(
    ("wrong", "diagnosis"),
    [
        (lambda m, l: kl_template(m, l, half=1.0), "factor ½ is missing"),
        (lambda m, l: kl_template(m, l, as_sigma=True), "you used logvar as if it were σ"),
        (lambda m, l: kl_template(m, l, as_log_sigma=True), "treated it as log σ"),
        (lambda m, l: kl_template(m, l, notes_formula=True), "writes 1 where σ² belongs"),
        (lambda m, l: kl_template(m, l, reduce="mean"), "averaged over the latent dimension"),
        (lambda m, l: kl_template(m, l, reduce=None), "sum over the latent dimension"),
        (lambda m, l: kl_template(m, l, sign=-1.0), "never negative"),
        (lambda m, l: kl_template(m, l).mean(), "not the batch mean"),
        (lambda m, l: torch.tensor(kl_template(m, l).detach().tolist(), dtype=m.dtype), "no gradient flows"),
        (stub, "not implemented yet"),
    ],
    ids=["missing-half", "sigma-not-logvar", "log-sigma", "notes-formula", "mean-over-latent", "no-sum", "sign", "batch-mean",
         "detached", "stub"],
)
def test_kl_rejects_wrong_answers(wrong, diagnosis, capsys):
    assert_rejected(checks.check_gaussian_kl, wrong, capsys, diagnosis, points=2)


# --- reparameterization ----------------------------------------------------------------------


def test_reparameterize_accepts_reference(capsys):
    assert checks.check_reparameterize(lambda mu, logvar, eps: mu + torch.exp(0.5 * logvar) * eps, points=1) == 1.0
    assert checks.check_reparameterize(lambda mu, logvar, eps: mu + logvar.mul(0.5).exp() * eps, points=1, seed=9) == 1.0


@pytest.mark.parametrize(
    ("wrong", "diagnosis"),
    [
        (lambda mu, logvar, eps: mu + eps, "σ is missing"),
        (lambda mu, logvar, eps: mu + logvar.exp() * eps, "exp(logvar) is the variance"),
        (lambda mu, logvar, eps: mu + logvar * eps, "logvar is log σ², not σ"),
        (lambda mu, logvar, eps: (mu + torch.exp(0.5 * logvar) * eps).detach(), "no gradient flows"),
        (lambda mu, logvar, eps: mu + torch.exp(0.5 * logvar).detach() * eps, "does not flow through the log-variance"),
    ],
    ids=["no-sigma", "variance-as-std", "logvar-as-sigma", "detached", "detached-sigma"],
)
def test_reparameterize_rejects_wrong_answers(wrong, diagnosis, capsys):
    assert_rejected(checks.check_reparameterize, wrong, capsys, diagnosis, points=1)


# --- ELBO of the linear-Gaussian model -------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 77])
def test_elbo_linear_gaussian_accepts_reference(seed):
    assert checks.check_elbo_linear_gaussian(own_copy(ref.elbo_linear_gaussian), points=3, seed=seed) == 3.0


def elbo_template(x, q_mean, q_cov, W, b, noise_var, *, trace=True, kl_half=0.5, kl_sign=-1.0, logdet=True, const=True):
    D, d = W.shape
    residual = x - q_mean @ W.T - b
    trace_wsw = (W @ q_cov @ W.T).diagonal(dim1=-2, dim2=-1).sum(-1) if trace else 0.0
    lik = -(residual.pow(2).sum(-1) + trace_wsw) / (2 * noise_var)
    if const:
        lik = lik - 0.5 * D * math.log(2 * math.pi * noise_var)
    log_det = torch.linalg.slogdet(q_cov).logabsdet if logdet else 0.0
    kl = kl_half * (q_cov.diagonal(dim1=-2, dim2=-1).sum(-1) + q_mean.pow(2).sum(-1) - d - log_det)
    return lik + kl_sign * kl


def test_elbo_template_is_correct_by_default():
    assert checks.check_elbo_linear_gaussian(elbo_template, points=3) == 3.0


@pytest.mark.parametrize(
    ("kwargs", "diagnosis"),
    [
        (dict(trace=False), "ignores q's spread"),
        (dict(kl_sign=1.0), "added instead of subtracted"),
        (dict(kl_half=1.0), "missing its factor ½"),
        (dict(logdet=False), "−log det S"),
        (dict(const=False), "normalising constant"),
    ],
    ids=["no-trace", "kl-sign", "kl-half", "no-logdet", "no-constant"],
)
def test_elbo_linear_gaussian_rejects_wrong_answers(kwargs, diagnosis, capsys):
    wrong = lambda *args: elbo_template(*args, **kwargs)  # noqa: E731
    assert_rejected(checks.check_elbo_linear_gaussian, wrong, capsys, diagnosis, points=3)


def test_elbo_that_exceeds_log_px_is_called_out(capsys):
    """An answer with no recognisable mistake that exceeds log p(x) is told that a lower bound cannot."""
    wrong = lambda *args: elbo_template(*args) + 0.37  # noqa: E731
    assert_rejected(checks.check_elbo_linear_gaussian, wrong, capsys, "can never do that", points=3)


def test_elbo_noise_std_for_variance_is_named(capsys):
    def wrong(x, q_mean, q_cov, W, b, noise_var):
        return elbo_template(x, q_mean, q_cov, W, b, math.sqrt(noise_var))

    assert_rejected(checks.check_elbo_linear_gaussian, wrong, capsys, "noise_var is the variance", points=3)


# --- negative ELBO, Bernoulli decoder ----------------------------------------------------------


def neg_elbo_template(logits, x, mu, logvar, *, kl_half=0.5, kl_sigma=False, rec="bce", rec_reduce="sum", kl=True, naive=False):
    if rec == "bce":
        if naive:
            p = torch.sigmoid(logits)
            per_pixel = -(x * torch.log(p) + (1 - x) * torch.log(1 - p))
        else:
            per_pixel = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    else:  # MSE on the pixel probabilities
        per_pixel = (torch.sigmoid(logits) - x) ** 2
    reconstruction = per_pixel.sum(-1) if rec_reduce == "sum" else per_pixel.mean(-1)
    if kl_sigma:
        kl_terms = mu**2 + logvar**2 - torch.log(logvar**2) - 1
    else:
        kl_terms = mu**2 + logvar.exp() - logvar - 1
    return reconstruction + (kl_half * kl_terms.sum(-1) if kl else 0.0)


def test_neg_elbo_accepts_reference(capsys):
    def reference_answer(logits, x, mu, logvar):
        return ref.bernoulli_nll(logits, x) + ref.gaussian_kl_standard_normal(mu, logvar)

    assert checks.check_negative_elbo_bernoulli(reference_answer, points=2) == 2.0
    assert checks.check_negative_elbo_bernoulli(neg_elbo_template, points=2, seed=3) == 2.0
    assert "✗" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("kwargs", "diagnosis"),
    [
        (dict(kl_half=1.0), "missing its factor ½"),
        (dict(kl_sigma=True), "treats logvar as σ"),
        (dict(rec_reduce="mean"), "averaged over pixels but the KL is summed"),
        (dict(rec="mse"), "squared error is not the Bernoulli likelihood"),
        (dict(kl=False), "the KL term is missing"),
        (dict(naive=True), "not log(sigmoid(·))"),
    ],
    ids=["kl-half", "kl-sigma", "mean-over-pixels", "mse", "no-kl", "unstable"],
)
def test_neg_elbo_rejects_wrong_answers(kwargs, diagnosis, capsys):
    wrong = lambda *args: neg_elbo_template(*args, **kwargs)  # noqa: E731
    assert_rejected(checks.check_negative_elbo_bernoulli, wrong, capsys, diagnosis, points=2)


def test_neg_elbo_rejects_a_batch_mean(capsys):
    wrong = lambda *args: neg_elbo_template(*args).mean()  # noqa: E731
    assert_rejected(checks.check_negative_elbo_bernoulli, wrong, capsys, "one value per example", points=2)


def test_missing_half_in_neg_elbo_costs_partial_credit_not_everything(capsys):
    """Only the cases where the KL matters fail; the score is proportional."""
    wrong = lambda *args: neg_elbo_template(*args, kl_half=1.0)  # noqa: E731
    with pytest.raises(CheckFailed):
        checks.check_negative_elbo_bernoulli(wrong, points=2)
    assert "0 / 2 points" in capsys.readouterr().out  # every case has a non-zero KL


# --- IWAE estimate -----------------------------------------------------------------------------


def iwae_template(log_px_given_z, z, mu, logvar, *, combine="lme", prior=True, posterior=True):
    log_pz = -0.5 * (math.log(2 * math.pi) + z**2).sum(-1)
    log_qz = -0.5 * (math.log(2 * math.pi) + logvar + (z - mu) ** 2 / logvar.exp()).sum(-1)
    log_w = log_px_given_z + (log_pz if prior else 0) - (log_qz if posterior else 0)
    K = z.shape[0]
    if combine == "lme":
        return torch.logsumexp(log_w, 0) - math.log(K)
    if combine == "naive":
        return torch.log(torch.exp(log_w).mean(0))
    if combine == "mean":
        return log_w.mean(0)
    if combine == "lse":
        return torch.logsumexp(log_w, 0)
    if combine == "wrong-dim":
        return torch.logsumexp(log_w, -1) - math.log(log_w.shape[-1])
    raise ValueError(combine)


@pytest.mark.parametrize("seed", [0, 5])
def test_iwae_accepts_reference(seed):
    assert checks.check_iwae_estimate(iwae_template, points=3, seed=seed) == 3.0


@pytest.mark.parametrize(
    ("kwargs", "diagnosis"),
    [
        (dict(combine="naive"), "use logsumexp"),
        (dict(combine="mean"), "average of the log-weights"),
        (dict(combine="lse"), "missing −log K"),
        (dict(combine="wrong-dim"), "average over the K samples"),
        (dict(prior=False), "missing log p(z)"),
        (dict(posterior=False), "missing −log q(z|x)"),
    ],
    ids=["unstable", "mean-of-logs", "no-log-k", "wrong-dim", "no-prior", "no-posterior"],
)
def test_iwae_rejects_wrong_answers(kwargs, diagnosis, capsys):
    wrong = lambda *args: iwae_template(*args, **kwargs)  # noqa: E731
    assert_rejected(checks.check_iwae_estimate, wrong, capsys, diagnosis, points=3)


# --- score-function gradient -------------------------------------------------------------------


def test_score_function_accepts_reference(capsys):
    def reference_answer(f_values, z, mu, logvar):
        return f_values[:, None] * (z - mu) / logvar.exp()

    assert checks.check_score_function_gradient(reference_answer, points=2) == 2.0
    assert checks.check_score_function_gradient(reference_answer, points=2, seed=8) == 2.0


@pytest.mark.parametrize(
    ("wrong", "diagnosis"),
    [
        (lambda f, z, mu, logvar: f[:, None] * (z - mu) / (0.5 * logvar).exp(), "divides by σ instead of σ²"),
        (lambda f, z, mu, logvar: f[:, None] * (mu - z) / logvar.exp(), "the sign is flipped"),
        (lambda f, z, mu, logvar: (z - mu) / logvar.exp(), "missing f(z)"),
        (lambda f, z, mu, logvar: f[:, None] * (z - mu) / logvar.exp() + 0.1, "biased"),
    ],
    ids=["sigma", "sign", "no-f", "biased"],
)
def test_score_function_rejects_wrong_answers(wrong, diagnosis, capsys):
    assert_rejected(checks.check_score_function_gradient, wrong, capsys, diagnosis, points=2)


# --- §6: a correct Bernoulli-based negative ELBO on grey-level targets --------------------------


def bernoulli_distribution_answer(logits, x, mu, logvar):
    """Correct: torch.distributions' Bernoulli log-likelihood, which torch validates against {0, 1} targets."""
    return -torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1) + ref.gaussian_kl_standard_normal(mu, logvar)


def test_neg_elbo_accepts_the_bernoulli_distribution_on_grey_levels(capsys):
    previous = torch.distributions.Distribution._validate_args
    torch.distributions.Distribution.set_default_validate_args(True)  # as in a notebook (python without -O)
    try:
        with pytest.raises(ValueError):  # what the answer did to the grey-level case before
            bernoulli_distribution_answer(torch.zeros(2, 3), torch.full((2, 3), 0.5), torch.zeros(2, 1), torch.zeros(2, 1))
        for seed in (0, 808):
            assert checks.check_negative_elbo_bernoulli(bernoulli_distribution_answer, points=2, seed=seed) == 2.0
        assert "✗" not in capsys.readouterr().out
        assert torch.distributions.Distribution._validate_args is True  # the check restores the setting
    finally:
        torch.distributions.Distribution.set_default_validate_args(previous)


def test_neg_elbo_still_tests_grey_levels_for_the_bce_formula(capsys):
    """A BCE that is only right for binary targets (x log σ(ℓ) with x rounded) still fails the grey-level case."""
    def binary_only(logits, x, mu, logvar):
        return neg_elbo_template(logits, x.round(), mu, logvar)

    with pytest.raises(CheckFailed):
        checks.check_negative_elbo_bernoulli(binary_only, points=2)
    printed = capsys.readouterr().out
    assert "✗ grey-level targets" in printed and "✓ binary pixels" in printed


# --- §6: trivial cases earn nothing on their own -------------------------------------------------


def test_kl_that_is_only_right_at_the_prior_earns_nothing(capsys):
    """Returning zeros (right only when q is the prior) used to pass one case of five."""
    zeros = lambda mu, logvar: torch.zeros(mu.shape[:-1], dtype=mu.dtype)  # noqa: E731
    with pytest.raises(CheckFailed) as failed:
        checks.check_gaussian_kl(zeros, points=2)
    assert failed.value.score == 0
    assert "0 / 2 points" in capsys.readouterr().out


# --- Derivations ---------------------------------------------------------------------------------

import sympy  # noqa: E402

MU, SIGMA = sympy.Symbol("mu", real=True), sympy.Symbol("sigma", positive=True)
X, M = sympy.symbols("x m", real=True)
V, S2 = sympy.symbols("v s2", positive=True)
Z = sympy.Symbol("z", real=True)


def normal_pdf(z, mean, var):
    return sympy.exp(-(z - mean) ** 2 / (2 * var)) / sympy.sqrt(2 * sympy.pi * var)


def test_gaussian_kl_key_is_the_integral_of_the_definition():
    q, p = normal_pdf(Z, MU, SIGMA**2), normal_pdf(Z, 0, 1)
    integral = sympy.integrate(q * sympy.expand_log(sympy.log(q / p), force=True), (Z, -sympy.oo, sympy.oo))
    key = sympy.sympify("(mu**2 + sigma**2 - log(sigma**2) - 1) / 2", locals={"mu": MU, "sigma": SIGMA})
    assert sympy.simplify(integral - key) == 0


@pytest.mark.parametrize("form", [
    (MU**2 + SIGMA**2 - sympy.log(SIGMA**2) - 1) / 2,
    MU**2 / 2 + SIGMA**2 / 2 - sympy.log(SIGMA) - sympy.Rational(1, 2),
    sympy.log(1 / SIGMA) + (SIGMA**2 + MU**2) / 2 - sympy.Rational(1, 2),
], ids=["textbook", "expanded-log-sigma", "log-one-over-sigma"])
def test_derive_gaussian_kl_accepts_equivalent_forms(form, capsys):
    assert checks.derive_gaussian_kl({"kl": form}, points=2) == 2.0
    assert checks.derive_gaussian_kl({"kl": form}, points=2, seed=41) == 2.0


@pytest.mark.parametrize(("form", "diagnosis"), [
    (MU**2 + SIGMA**2 - sympy.log(SIGMA**2) - 1, "off by a constant factor (×2)"),
    ((MU**2 + 1 - sympy.log(SIGMA**2) - 1) / 2, "correct at σ = 1 but not in general"),  # the notes' formula
    ((MU**2 + SIGMA - sympy.log(SIGMA) - 1) / 2, "correct at σ = 1 but not in general"),  # σ where σ² belongs
    ((MU**2 + SIGMA**2 - sympy.log(SIGMA**2)) / 2, "off by an additive constant"),  # the −1 forgotten
    ((SIGMA**2 - sympy.log(SIGMA**2) - 1) / 2, "misses a dependence on mu"),
    ("(mu**2 + sigma**2 - log(sigma**2) - 1) / 2", "a string, not an expression in the given symbols"),
    (None, "no answer yet"),
], ids=["missing-half", "notes", "sigma-for-variance", "missing-minus-one", "no-mu", "string", "none"])
def test_derive_gaussian_kl_rejects_wrong_forms(form, diagnosis, capsys):
    with pytest.raises(CheckFailed):
        checks.derive_gaussian_kl({"kl": form}, points=2)
    printed = capsys.readouterr().out
    assert "0 / 2 points" in printed and diagnosis in printed, printed


def elbo_gap_key():
    elbo = -sympy.log(2 * sympy.pi * S2) / 2 - ((X - M) ** 2 + V) / (2 * S2) - (M**2 + V - sympy.log(V) - 1) / 2
    log_px = -sympy.log(2 * sympy.pi * (1 + S2)) / 2 - X**2 / (2 * (1 + S2))
    return elbo, log_px


def kl_1d(m1, v1, m2, v2):
    return (v1 / v2 + (m1 - m2) ** 2 / v2 - 1 - sympy.log(v1 / v2)) / 2


def test_elbo_gap_key_follows_from_the_model():
    """Independently: the ELBO by integrating E_q[log p(x, z) − log q], log p(x) by integrating out z, the
    posterior by Bayes' rule, and the gap equal to KL(q ‖ p(z|x))."""
    q = normal_pdf(Z, M, V)
    log_joint = sympy.log(normal_pdf(X, Z, S2)) + sympy.log(normal_pdf(Z, 0, 1))
    elbo = sympy.integrate(sympy.expand(q * sympy.expand_log(log_joint - sympy.log(q), force=True)), (Z, -sympy.oo, sympy.oo))
    px = sympy.integrate(normal_pdf(X, Z, S2) * normal_pdf(Z, 0, 1), (Z, -sympy.oo, sympy.oo))
    key_elbo, key_log_px = elbo_gap_key()
    assert sympy.simplify(elbo - key_elbo) == 0
    assert sympy.simplify(sympy.log(px) - key_log_px) == 0
    posterior_mean, posterior_var = X / (1 + S2), S2 / (1 + S2)
    posterior = normal_pdf(Z, posterior_mean, posterior_var)
    assert sympy.simplify(sympy.expand_log(sympy.log(posterior) - (log_joint - key_log_px), force=True)) == 0
    assert sympy.simplify(key_log_px - key_elbo - kl_1d(M, V, posterior_mean, posterior_var)) == 0


def test_derive_elbo_gap_accepts_equivalent_forms(capsys):
    elbo, log_px = elbo_gap_key()
    as_difference = {"elbo": elbo, "gap": log_px - elbo}
    as_posterior_kl = {"elbo": sympy.expand(elbo), "gap": kl_1d(M, V, X / (1 + S2), S2 / (1 + S2))}
    for answers in (as_difference, as_posterior_kl):
        assert checks.derive_elbo_gap(answers, points=2) == 2.0
        assert checks.derive_elbo_gap(answers, points=2, seed=43) == 2.0


@pytest.mark.parametrize(("part", "wrong", "diagnosis"), [
    ("gap", kl_1d(M, V, 0, 1), "misses a dependence on x, s2"),  # the KL to the prior, not to the posterior
    ("gap", kl_1d(M, V, X * S2 / (1 + S2), 1 / (1 + S2)), "correct at σ² = 1 but not in general"),  # posterior's weights swapped
    ("gap", 2 * kl_1d(M, V, X / (1 + S2), S2 / (1 + S2)), "off by a constant factor (×2)"),
    ("elbo", elbo_gap_key()[0] + sympy.log(2 * sympy.pi) / 2, "off by an additive constant"),  # log 2π dropped
    ("elbo", elbo_gap_key()[0] + V / (2 * S2), "not equivalent"),  # E_q(x − z)² without q's variance
], ids=["kl-to-prior", "swapped-posterior", "missing-half", "no-2pi", "no-variance"])
def test_derive_elbo_gap_rejects_plausible_mistakes_with_partial_credit(part, wrong, diagnosis, capsys):
    elbo, log_px = elbo_gap_key()
    answers = {"elbo": elbo, "gap": log_px - elbo, part: wrong}
    with pytest.raises(CheckFailed) as failed:
        checks.derive_elbo_gap(answers, points=2)
    assert failed.value.score == 1.0  # the other result still earns its point
    printed = capsys.readouterr().out
    assert f"✗ {part}  <- {diagnosis}" in printed, printed
