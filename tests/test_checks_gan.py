"""Every GAN check accepts the reference and rejects plausible wrong answers, naming the fault."""

import math

import pytest
import torch
import torch.nn.functional as F

from gradelib.checks import CheckFailed, gan as checks
from gradelib.reference import gan as ref
from checking import assert_accepted, assert_rejected, own_copy

# The reference's code as a student's own function: the reference objects themselves score 0
# ("calls gradelib.reference", see test_checks_core.py).
discriminator_loss = own_copy(ref.discriminator_loss)
generator_loss = own_copy(ref.generator_loss)
optimal_discriminator = own_copy(ref.optimal_discriminator)
train_discriminator = own_copy(ref.train_discriminator)
jensen_shannon_divergence = own_copy(ref.jensen_shannon_divergence)
mode_coverage = own_copy(ref.mode_coverage)
minibatch_similarity = own_copy(ref.minibatch_similarity)


# --- discriminator loss ----------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 5])
def test_discriminator_loss_accepts_reference_and_torch_bce(seed, capsys):
    assert_accepted(checks.check_discriminator_loss, discriminator_loss, capsys, 2, seed=seed)
    bce = lambda r, f: (F.binary_cross_entropy_with_logits(r, torch.ones_like(r))  # noqa: E731
                        + F.binary_cross_entropy_with_logits(f, torch.zeros_like(f)))
    assert_accepted(checks.check_discriminator_loss, bce, capsys, 2, seed=seed)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda r, f: -F.logsigmoid(-r).mean() - F.logsigmoid(f).mean(), "real and fake are swapped"),
    (lambda r, f: F.logsigmoid(r).mean() + F.logsigmoid(-f).mean(), "the sign is flipped"),
    (lambda r, f: -F.logsigmoid(r).mean() - F.logsigmoid(f).mean(), "the fake term uses log D(G(z))"),
    (lambda r, f: -torch.cat([F.logsigmoid(r), F.logsigmoid(-f)]).mean(), "averaged together"),
    (lambda r, f: -torch.log(torch.sigmoid(r)).mean() - torch.log(1 - torch.sigmoid(f)).mean(), "NaN or inf"),
    (lambda r, f: -F.logsigmoid(r) - F.logsigmoid(-f).mean(), "should be a scalar"),
], ids=["swapped", "sign", "log-d-fake", "one-mean", "naive-log", "not-reduced"])
def test_discriminator_loss_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_discriminator_loss, wrong, capsys, diagnosis)


# --- generator loss --------------------------------------------------------------------------


def test_generator_loss_accepts_reference(capsys):
    assert_accepted(checks.check_generator_loss, generator_loss, capsys, 2, seeds=(0, 9))


def always_saturating(fake, saturating=False):
    return F.logsigmoid(-fake).mean()


def always_non_saturating(fake, saturating=False):
    return -F.logsigmoid(fake).mean()


def flipped(fake, saturating=False):
    return F.logsigmoid(fake).mean() if not saturating else generator_loss(fake, True)


def naive(fake, saturating=False):
    d = torch.sigmoid(fake)
    return (1 - d).log().mean() if saturating else -d.log().mean()


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (always_saturating, "this is the saturating (minimax) loss"),
    (always_non_saturating, "with saturating=True you returned the non-saturating loss"),
    (flipped, "G wants D(G(z)) large"),
    (naive, "NaN or inf"),
])
def test_generator_loss_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_generator_loss, wrong, capsys, diagnosis)


# --- optimal discriminator -------------------------------------------------------------------


def test_optimal_discriminator_accepts_reference(capsys):
    assert_accepted(checks.check_optimal_discriminator, optimal_discriminator, capsys, 1, seeds=(0, 4))


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda p, q: optimal_discriminator(q, p), "the terms are swapped"),
    (lambda p, q: p / q, "NaN or inf"),
    (lambda p, q: p / (p + q), "NaN or inf"),                     # 0/0 where both densities vanish
    (lambda p, q: p / (p - q), "the denominator is the sum"),
    (lambda p, q: p / (p + q + 1e-9) if False else p.sqrt() / (p.sqrt() + q.sqrt()), "differs from D*"),
], ids=["swapped", "ratio", "zero-over-zero", "difference", "other"])
def test_optimal_discriminator_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_optimal_discriminator, wrong, capsys, diagnosis, points=1)


def test_swapped_d_star_is_named_on_the_first_case(capsys):
    with pytest.raises(CheckFailed):
        checks.check_optimal_discriminator(lambda p, q: q / (p + q), points=1)
    out = capsys.readouterr().out
    assert "elementwise on a (3, 5) grid of densities  <- the terms are swapped" in out


# --- fitting D to two densities --------------------------------------------------------------


def test_fit_discriminator_accepts_reference(capsys):
    assert_accepted(checks.check_fit_discriminator, train_discriminator, capsys, 2)


def swapped_training(discriminator, sample_data, sample_g, steps=400, batch_size=256, lr=1e-2):
    return train_discriminator(discriminator, sample_g, sample_data, steps, batch_size, lr)


def no_step(discriminator, sample_data, sample_g, steps=400, batch_size=256, lr=1e-2):
    losses = []
    for _ in range(steps):
        loss = discriminator_loss(discriminator(sample_data(batch_size)).reshape(-1), discriminator(sample_g(batch_size)).reshape(-1))
        loss.backward()
        losses.append(loss.item())
    return losses


def too_few_steps(discriminator, sample_data, sample_g, steps=400, batch_size=256, lr=1e-2):
    train_discriminator(discriminator, sample_data, sample_g, 5, batch_size, lr)
    return [0.0] * steps


def trainer(make_optimizer=None, *, ascend=False, zero_grad=True, copy=False, inplace=False, report="loss"):
    """A training loop written as a student would, with one knob per plausible mistake."""
    def fit(discriminator, sample_data, sample_g, steps=400, batch_size=256, lr=1e-2):
        model = __import__("copy").deepcopy(discriminator) if copy else discriminator
        optimizer = (make_optimizer or (lambda params, lr: torch.optim.SGD(params, lr=lr)))(model.parameters(), lr)
        losses = []
        for _ in range(steps):
            real, fake = sample_data(batch_size), sample_g(batch_size)
            if inplace:
                real.sub_(real.mean())                      # "centring" the batch in place
            loss = (F.binary_cross_entropy_with_logits(model(real).reshape(-1), torch.ones(batch_size))
                    + F.binary_cross_entropy_with_logits(model(fake).reshape(-1), torch.zeros(batch_size)))
            if zero_grad:
                optimizer.zero_grad()
            (-loss if ascend else loss).backward()
            optimizer.step()
            losses.append(-loss.item() if report == "V" else loss.item())
        return losses
    return fit


@pytest.mark.parametrize("fit", [
    trainer(),                                                                     # plain SGD at the given lr
    trainer(lambda params, lr: torch.optim.Adam(params, lr=1e-3)),                # Adam at its own lr
    trainer(lambda params, lr: torch.optim.SGD(params, lr=3 * lr, momentum=0.5)),
], ids=["sgd", "adam-1e-3", "sgd-momentum"])
def test_fit_discriminator_accepts_any_optimiser_that_descends(fit, capsys):
    assert_accepted(checks.check_fit_discriminator, fit, capsys, 2, seeds=(0, 31))


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (swapped_training, "real and fake labels are swapped"),
    (no_step, "parameters did not change"),
    (too_few_steps, "drew 5 real and 5 fake batches for steps=400"),
    (trainer(ascend=True), "went up"),
    (trainer(zero_grad=False), "accumulate across steps"),
    (trainer(copy=True), "was not trained (its parameters got no gradient)"),
    (trainer(inplace=True), "a real batch was modified in place"),
    (trainer(report="V"), "the returned loss is V, not −V"),
], ids=["swapped", "no-step", "too-few-steps", "ascent", "no-zero-grad", "trains-a-copy", "in-place", "reports-V"])
def test_fit_discriminator_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_fit_discriminator, wrong, capsys, diagnosis)


# --- Jensen-Shannon --------------------------------------------------------------------------


def test_jensen_shannon_accepts_reference(capsys):
    assert_accepted(checks.check_jensen_shannon, jensen_shannon_divergence, capsys, 2, seeds=(0, 3))


def js_naive(p, q):
    m = (p + q) / 2
    return 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda p, q: 2 * jensen_shannon_divergence(p, q), "the ½ in front of each KL term is missing"),
    (lambda p, q: jensen_shannon_divergence(p, q) / math.log(2), "in bits"),
    (lambda p, q: ref.kl_divergence(p, q), "this is KL(p ‖ q)"),
    (lambda p, q: 0.5 * ref.kl_divergence(p, q) + 0.5 * ref.kl_divergence(q, p), "symmetrised KL"),
    (js_naive, "0·log 0 counts as 0"),
], ids=["missing-half", "bits", "kl", "symmetric-kl", "zeros"])
def test_jensen_shannon_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_jensen_shannon, wrong, capsys, diagnosis)


# --- mode coverage ---------------------------------------------------------------------------


def coverage_reference(samples, centers, std):
    result = mode_coverage(samples, centers, std)
    return result.modes_covered, result.high_quality_share


def coverage_template(samples, centers, std, radius=3.0, min_count=None, all_samples=False, percent=False):
    distance, nearest = torch.cdist(samples, centers).min(dim=1)
    good = distance <= radius * std
    counts = torch.bincount(nearest if all_samples else nearest[good], minlength=len(centers))
    threshold = 0.025 * len(samples) if min_count is None else min_count
    share = good.double().mean().item()
    return int((counts >= threshold).sum()), share * (100 if percent else 1)


def test_mode_coverage_accepts_reference(capsys):
    assert_accepted(checks.check_mode_coverage, coverage_reference, capsys, 2)
    assert_accepted(checks.check_mode_coverage, coverage_template, capsys, 2, seed=2)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda s, c, std: coverage_template(s, c, std, min_count=1), "not just one"),
    (lambda s, c, std: coverage_template(s, c, std, all_samples=True), "every sample is counted towards its nearest mode"),
    (lambda s, c, std: coverage_template(s, c, std, radius=1.0), "not within 1·std"),
    (lambda s, c, std: coverage_template(s, c, std, percent=True), "between 0 and 1"),
    (lambda s, c, std: coverage_template(s, c, std, radius=2.0), "expected a different"),
    (lambda s, c, std: coverage_template(s, c, std)[0], "return a pair"),
], ids=["one-sample", "no-radius", "one-std", "percent", "two-std", "not-a-pair"])
def test_mode_coverage_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_mode_coverage, wrong, capsys, diagnosis)


# --- minibatch discrimination ----------------------------------------------------------------


def test_minibatch_similarity_accepts_reference(capsys):
    assert_accepted(checks.check_minibatch_similarity, minibatch_similarity, capsys, 2)
    loop = lambda m: torch.exp(-(m.unsqueeze(0) - m.unsqueeze(1)).abs().sum(-1)).sum(1) - 1  # noqa: E731
    assert_accepted(checks.check_minibatch_similarity, loop, capsys, 2, seed=1)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda m: minibatch_similarity(m) + 1, "the j = i term"),
    (lambda m: torch.exp(-(m.unsqueeze(0) - m.unsqueeze(1)).pow(2).sum(-1).sqrt()).sum(1) - 1, "not the Euclidean norm"),
    (lambda m: torch.exp(-(m.unsqueeze(0) - m.unsqueeze(1)).abs().sum((-1, -2))).sum(1) - 1, "should be a torch.Tensor" if False else "has shape"),
    (lambda m: minibatch_similarity(m).detach(), "must stay differentiable"),
], ids=["self-term", "l2", "wrong-axis", "detached"])
def test_minibatch_similarity_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_minibatch_similarity, wrong, capsys, diagnosis)


def test_stub_is_reported_as_not_implemented(capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError()

    for check in (checks.check_discriminator_loss, checks.check_generator_loss, checks.check_jensen_shannon,
                  checks.check_minibatch_similarity, checks.check_mode_coverage, checks.check_fit_discriminator):
        assert_rejected(check, stub, capsys, "not implemented yet")


# --- §6: trivial cases earn nothing on their own -------------------------------------------------


@pytest.mark.parametrize("constant", [0.0, math.log(2)], ids=["zero", "log2"])
def test_a_constant_jsd_earns_nothing(constant, capsys):
    """0 (identical distributions) and log 2 (disjoint supports) used to earn a case of four each."""
    answer = lambda p, q: torch.full(p.shape[:-1], constant, dtype=p.dtype)  # noqa: E731
    with pytest.raises(CheckFailed) as failed:
        checks.check_jensen_shannon(answer, points=2)
    assert failed.value.score == 0
    assert "0 / 2 points" in capsys.readouterr().out


def test_zero_minibatch_features_earn_nothing(capsys):
    """Zeros are right for well-spread examples only, which used to be a case of its own."""
    answer = lambda m: torch.zeros(m.shape[:2], dtype=m.dtype, requires_grad=m.requires_grad)  # noqa: E731
    with pytest.raises(CheckFailed) as failed:
        checks.check_minibatch_similarity(answer, points=2)
    assert failed.value.score == 0


# --- Derivations ---------------------------------------------------------------------------------

import sympy  # noqa: E402

A, B = sympy.symbols("a b", positive=True)
JSD = sympy.Symbol("jsd", nonnegative=True)
Y = sympy.Symbol("y", positive=True)


def test_optimal_discriminator_key_maximises_the_integrand():
    f = A * sympy.log(Y) + B * sympy.log(1 - Y)
    (stationary,) = sympy.solve(sympy.diff(f, Y), Y)
    assert sympy.simplify(stationary - A / (A + B)) == 0
    assert sympy.simplify(sympy.diff(f, Y, 2).subs(Y, stationary)).is_negative  # a maximum


def test_value_at_optimum_key_gives_minus_log_4_plus_2_jsd():
    """Pointwise: the integrand at D* equals p·log(p/m) + q·log(q/m) − (a + b) log 2; integrated over x
    (each density integrates to 1) that is KL(p ‖ m) + KL(q ‖ m) − log 4 = 2 JSD − log 4. Checked on two
    discrete distributions, where the integral is a sum."""
    integrand = A * sympy.log(A / (A + B)) + B * sympy.log(B / (A + B))
    m = (A + B) / 2
    pointwise = A * sympy.log(A / m) + B * sympy.log(B / m) - (A + B) * sympy.log(2)
    assert sympy.simplify(sympy.expand_log(integrand - pointwise, force=True)) == 0
    p = [sympy.Rational(1, 5), sympy.Rational(3, 10), sympy.Rational(1, 2)]
    q = [sympy.Rational(1, 2), sympy.Rational(1, 4), sympy.Rational(1, 4)]
    value = sum(integrand.subs({A: pi, B: qi}) for pi, qi in zip(p, q))
    jsd = sum(pi * sympy.log(2 * pi / (pi + qi)) + qi * sympy.log(2 * qi / (pi + qi)) for pi, qi in zip(p, q)) / 2
    assert abs(float(value - (-sympy.log(4) + 2 * jsd))) < 1e-12


@pytest.mark.parametrize("form", [A / (A + B), 1 / (1 + B / A), 1 - B / (A + B)], ids=["ratio", "one-over", "complement"])
def test_derive_optimal_discriminator_accepts_equivalent_forms(form, capsys):
    assert checks.derive_optimal_discriminator({"d_star": form}, points=2) == 2.0
    assert checks.derive_optimal_discriminator({"d_star": form}, points=2, seed=47) == 2.0


@pytest.mark.parametrize(("form", "diagnosis"), [
    (B / (A + B), "correct at p_data = p_g (a = b) but not in general"),  # real and fake swapped
    (sympy.Rational(1, 2), "misses a dependence on a, b"),  # the equilibrium value, not the optimum for this G
    (A / B, "not equivalent"),  # the density ratio, not normalised
    ("a / (a + b)", "a string, not an expression in the given symbols"),
    (None, "no answer yet"),
], ids=["swapped", "half", "ratio", "string", "none"])
def test_derive_optimal_discriminator_rejects_plausible_mistakes(form, diagnosis, capsys):
    with pytest.raises(CheckFailed):
        checks.derive_optimal_discriminator({"d_star": form}, points=2)
    printed = capsys.readouterr().out
    assert f"✗ d_star  <- {diagnosis}" in printed, printed


RIGHT = {"integrand": A * sympy.log(A / (A + B)) + B * sympy.log(B / (A + B)), "c_of_g": -sympy.log(4) + 2 * JSD}


def test_derive_value_at_optimum_accepts_equivalent_forms(capsys):
    other = {"integrand": A * sympy.log(A) + B * sympy.log(B) - (A + B) * sympy.log(A + B),
             "c_of_g": 2 * (JSD - sympy.log(2))}
    for answers in (RIGHT, other):
        assert checks.derive_value_at_optimum(answers, points=2) == 2.0
        assert checks.derive_value_at_optimum(answers, points=2, seed=53) == 2.0


@pytest.mark.parametrize(("part", "wrong", "diagnosis"), [
    ("integrand", -(A + B) * sympy.log(2), "correct at p_data = p_g (a = b) but not in general"),  # D = ½ put in
    ("integrand", RIGHT["integrand"] + sympy.log(4), "off by an additive constant"),
    ("c_of_g", -2 * sympy.log(4) + 2 * JSD, "off by an additive constant"),  # the notes' extra − log 4
    ("c_of_g", -sympy.log(4) + JSD, "correct at p_g = p_data (JSD = 0) but not in general"),  # KL(p‖m) + KL(q‖m) = JSD
    ("c_of_g", -sympy.log(4) + 0 * JSD, "misses a dependence on jsd"),
], ids=["half-put-in", "plus-log4", "notes-minus-log4-twice", "one-jsd", "constant"])
def test_derive_value_at_optimum_rejects_plausible_mistakes_with_partial_credit(part, wrong, diagnosis, capsys):
    answers = {**RIGHT, part: wrong}
    with pytest.raises(CheckFailed) as failed:
        checks.derive_value_at_optimum(answers, points=2)
    assert failed.value.score == 1.0
    assert f"✗ {part}  <- {diagnosis}" in capsys.readouterr().out
