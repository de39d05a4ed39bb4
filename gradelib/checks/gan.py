"""Checks for notebook 05 (GANs, the minimax game), one per graded exercise.

Each check runs the student's function on seeded cases, compares it with ``gradelib.reference.gan``
and, when they disagree, looks for the mistake it resembles (real and fake swapped, the saturating
loss where the non-saturating one is asked, D* upside down, a missing ½, ...), so the feedback names
the fault without printing the solution. ``seed`` selects the cases: visible tests use the default,
hidden tests other seeds.

The derivations of the notebook (``derive_*``) are declared here too, with their keys, through
:func:`gradelib.checks.derive.derivation`.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradelib.checks import _core
from gradelib.checks._core import Case, close, compare_case, exercise, generator, make_read_only, tensor_problem
from gradelib.checks.derive import derivation, interval, positive
from gradelib.reference import gan as ref

# Bound at import, before any student code runs.
_randn = _core.randn
_rand = _core.rand
_logsigmoid = F.logsigmoid
_sigmoid = _core.sigmoid
_xlogy = _core.xlogy
_fork_rng = _core.fork_rng
_manual_seed = _core.manual_seed


def _scalar_problem(value: object, name: str) -> str | None:
    problem = tensor_problem(value, name)
    if problem:
        return problem
    if value.dim() != 0:
        return f"{name} should be a scalar (a 0-d tensor, the batch mean), got shape {tuple(value.shape)}"
    return None


def _logits(gen: torch.Generator, n: int, scale: float = 3.0) -> torch.Tensor:
    return scale * _randn(n, generator=gen, dtype=torch.float64)


# ----------------------------------------------------------------------------------------------
# Exercise: the discriminator loss


def _discriminator_variants(real: torch.Tensor, fake: torch.Tensor):
    log_d_real, log_1m_d_real = _logsigmoid(real), _logsigmoid(-real)
    log_d_fake, log_1m_d_fake = _logsigmoid(fake), _logsigmoid(-fake)
    both = torch.cat([log_d_real, log_1m_d_fake])
    return [
        ("real and fake are swapped: D(x) is the probability that x is real, so real data gets label 1 and G(z) label 0",
         -log_1m_d_real.mean() - log_d_fake.mean()),
        ("the sign is flipped: this is V(D, G) itself; D maximises V, so its loss to minimise is −V",
         log_d_real.mean() + log_1m_d_fake.mean()),
        ("the fake term uses log D(G(z)); the discriminator wants D(G(z)) small, i.e. −log(1 − D(G(z)))",
         -log_d_real.mean() - log_d_fake.mean()),
        ("real and fake terms are averaged together (one mean over 2B numbers): V is the *sum* of two expectations",
         -both.mean()),
        ("only the real-data term is there: add −E[log(1 − D(G(z)))] for the fakes", -log_d_real.mean()),
        ("only the fake term is there: add −E[log D(x)] for the real data", -log_1m_d_fake.mean()),
    ]


def _discriminator_case(fn, real: torch.Tensor, fake: torch.Tensor) -> str | None:
    loss = fn(real, fake)
    want = ref.discriminator_loss(real, fake)
    problem = _scalar_problem(loss, "the loss")
    if problem:
        return problem
    return compare_case(loss, want, 1e-6 * max(1.0, abs(float(want))), lambda: _discriminator_variants(real, fake),
                        "differs from −V(D, G)")


@exercise("Discriminator loss", reference=(ref.discriminator_loss, ref.value_function))
def check_discriminator_loss(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(real_logits (B_r,), fake_logits (B_f,)) -> scalar`` = −E[log D(x)] − E[log(1 − D(G(z)))]."""
    gen = generator(seed)
    real, fake = _logits(gen, 7 + seed % 5), _logits(gen, 11 + seed % 3)
    # float32, where log(sigmoid(a)) already underflows to log 0 at |a| ≈ 17 to 104.
    confident_real, confident_fake = 40 + 5 * _rand(6, generator=gen), -40 - 5 * _rand(6, generator=gen)
    wrong_real = -40 - 5 * _rand(6, generator=gen)
    cases = [
        ("batch means of both terms, B_real ≠ B_fake", lambda: _discriminator_case(fn, real, fake)),
        ("float32 logits", lambda: _discriminator_case(fn, real.float(), fake.float())),
        ("a confident, correct D (|logits| ≈ 40) gives a loss near 0, finite", lambda: _discriminator_case(fn, confident_real, confident_fake)),
        ("a confident, wrong D (|logits| ≈ 40) gives a large but finite loss", lambda: _discriminator_case(fn, wrong_real, -confident_fake)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the generator losses


def _generator_variants(fake: torch.Tensor):
    log_d, log_1m_d = _logsigmoid(fake), _logsigmoid(-fake)
    return {
        "non_saturating": -log_d.mean(),
        "saturating": log_1m_d.mean(),
        "non_saturating_sign": log_d.mean(),
        "saturating_sign": -log_1m_d.mean(),
    }


def _generator_case(fn, fake: torch.Tensor, saturating: bool) -> str | None:
    loss = fn(fake, saturating=saturating)
    want = ref.generator_loss(fake, saturating=saturating)
    problem = _scalar_problem(loss, "the loss")
    if problem:
        return problem

    def known():
        v = _generator_variants(fake)
        if saturating:
            return [
                ("with saturating=True you returned the non-saturating loss −log D(G(z)); the minimax loss is log(1 − D(G(z)))", v["non_saturating"]),
                ("the sign is flipped: G minimises V, so the saturating loss is +E[log(1 − D(G(z)))]", v["saturating_sign"]),
                ("this is +E[log D(G(z))]: the saturating loss is E[log(1 − D(G(z)))]", v["non_saturating_sign"]),
            ]
        return [
            ("this is the saturating (minimax) loss log(1 − D(G(z))); the non-saturating loss asked for is −log D(G(z))", v["saturating"]),
            ("the sign is flipped: G wants D(G(z)) large, so it minimises −log D(G(z))", v["non_saturating_sign"]),
            ("this is −log(1 − D(G(z))), which G would minimise by making D(G(z)) small: use −log D(G(z))", v["saturating_sign"]),
        ]

    return compare_case(loss, want, 1e-6 * max(1.0, abs(float(want))), known,
                        f"differs from the {'saturating' if saturating else 'non-saturating'} generator loss")


@exercise("Generator losses", reference=ref.generator_loss)
def check_generator_loss(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(fake_logits (B,), saturating=False) -> scalar``: −E[log D(G(z))], or E[log(1 − D(G(z)))] if saturating."""
    gen = generator(seed)
    fake = _logits(gen, 9 + seed % 4)
    rejected = -120 - 5 * _rand(5, generator=gen)                     # float32: sigmoid underflows to 0
    accepted = 40 + 5 * _rand(5, generator=gen)                       # float32: 1 - sigmoid rounds to 0
    cases = [
        ("non-saturating loss −E[log D(G(z))] (the default)", lambda: _generator_case(fn, fake, saturating=False)),
        ("saturating loss E[log(1 − D(G(z)))] when saturating=True", lambda: _generator_case(fn, fake, saturating=True)),
        ("float32 logits, both losses", lambda: _generator_case(fn, fake.float(), False) or _generator_case(fn, fake.float(), True)),
        ("confident D, float32: fakes rejected (logits ≈ −120) or accepted (≈ +40); both losses finite",
         lambda: _generator_case(fn, rejected, saturating=False) or _generator_case(fn, accepted, saturating=True)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the optimal discriminator


def _optimal_case(fn, p_data: torch.Tensor, p_g: torch.Tensor) -> str | None:
    d = fn(p_data, p_g)
    want = ref.optimal_discriminator(p_data, p_g)
    problem = tensor_problem(d, "D*", want.shape)
    if problem:
        return problem
    total = p_data + p_g
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return compare_case(d, want, 1e-6, [
        ("the terms are swapped: this is p_g/(p_data + p_g), the probability of *fake*; D*(x) is the probability that x is real",
         torch.where(total > 0, p_g / safe, torch.full_like(total, 0.5))),
        ("this is the density ratio p_data/p_g; normalise by the sum p_data + p_g so that D* is a probability",
         p_data / torch.where(p_g > 0, p_g, torch.ones_like(p_g))),
        ("this is p_data/(p_data − p_g); the denominator is the sum p_data + p_g",
         p_data / torch.where(p_data != p_g, p_data - p_g, torch.ones_like(p_g))),
    ], "differs from D*")


@exercise("Optimal discriminator D*", reference=ref.optimal_discriminator)
def check_optimal_discriminator(fn: Callable, points: float = 1, seed: int = 0) -> list[Case]:
    """Check ``fn(p_data, p_g) -> D*``, elementwise p_data / (p_data + p_g), and 1/2 where both are 0."""
    gen = generator(seed)
    p_data, p_g = _rand(3, 5, generator=gen, dtype=torch.float64) + 0.01, _rand(3, 5, generator=gen, dtype=torch.float64) + 0.01
    x = torch.linspace(-3, 3, 13, dtype=torch.float64)
    gauss_data, gauss_g = ref.normal_pdf(x, -0.5 + seed % 3 * 0.25, 0.7), ref.normal_pdf(x, 1.0, 1.2)
    sparse_data = torch.tensor([0.0, 0.3, 0.0, 0.5, 0.2], dtype=torch.float64)
    sparse_g = torch.tensor([0.4, 0.0, 0.0, 0.1, 0.5], dtype=torch.float64)
    cases = [
        ("elementwise on a (3, 5) grid of densities", lambda: _optimal_case(fn, p_data, p_g)),
        ("two Gaussian densities evaluated on a grid", lambda: _optimal_case(fn, gauss_data, gauss_g)),
        ("where only one density is 0, D* is 0 or 1; where both are 0, 1/2", lambda: _optimal_case(fn, sparse_data, sparse_g)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: fit a discriminator to two fixed densities and compare with D*


_FIT_PAIRS = [
    (ref.GaussianMixture1D((0.5, 0.5), (-1.0, 1.5), (0.5, 0.4)), ref.GaussianMixture1D((1.0,), (0.0,), (1.0,))),
    (ref.GaussianMixture1D((1.0,), (0.5,), (0.6,)), ref.GaussianMixture1D((0.7, 0.3), (-1.0, 1.5), (0.6, 0.5))),
]
_FIT_STEPS, _FIT_BATCH, _FIT_LR = 400, 256, 1e-2
# The held-out loss must fall by at least this much (nats). Any optimiser that descends the loss does far
# better in 400 steps: plain SGD at lr = 1e-2 gains 0.07-0.33 nats, Adam 0.25-0.6, gradient ascent loses 70+.
_FIT_MIN_GAIN = 0.01


def _small_discriminator(seed: int) -> nn.Module:
    with _fork_rng():
        _manual_seed(seed)
        return ref.mlp([1, 32, 32, 1], activation=nn.Tanh)


class _one_thread:
    """Tiny networks train fastest on one CPU thread (several threads spin on a busy machine)."""

    def __enter__(self):
        self.threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self.threads)
        return False


def _d_loss(discriminator, real, fake) -> torch.Tensor:
    return ref.discriminator_loss(discriminator(real).reshape(-1), discriminator(fake).reshape(-1))


class _FitRun:
    """Runs the student's trainer once on one pair of densities, recording what it did, for several cases.

    The samplers record every batch they hand out (and the discriminator's parameters when a step starts,
    at the real-data call); the fakes come through a fixed affine "generator" whose parameters must not
    change. Nothing here depends on which optimiser or learning rate the trainer uses.
    """

    def __init__(self, fn, pair_index: int, seed: int):
        self.fn, self.pair_index, self.seed = fn, pair_index, seed
        self._done = False

    def run(self) -> "_FitRun":
        """Train once; later cases reuse the outcome (or the trainer's error)."""
        if not self._done:
            self._done = True
            try:
                with _one_thread():
                    self._run()
            except Exception as error:
                self._error = error
        if getattr(self, "_error", None) is not None:
            raise self._error
        return self

    def _run(self):
        p_data, p_g = _FIT_PAIRS[self.pair_index]
        gen = generator(self.seed + 17 * self.pair_index)
        held_out = generator(10_000 + self.seed)
        self.eval_real, self.eval_fake = p_data.sample(8192, held_out), p_g.sample(8192, held_out)
        self.discriminator = _small_discriminator(self.seed)
        self.initial = [p.detach().clone() for p in self.discriminator.parameters()]
        self.g_scale = nn.Parameter(torch.ones(1))
        self.g_shift = nn.Parameter(torch.zeros(1))
        self.real, self.fake, self.states, self.sizes = [], [], [], []

        def sample_data(n):
            self.sizes.append(n)
            self.states.append([p.detach().clone() for p in self.discriminator.parameters()])
            batch = p_data.sample(n, gen)
            self.real.append((batch, batch.clone()))
            return batch

        def sample_g(n):
            self.sizes.append(n)
            batch = p_g.sample(n, gen) * self.g_scale + self.g_shift    # carries gradient to the "generator"
            self.fake.append((batch, batch.detach().clone()))
            return batch

        self.losses = self.fn(self.discriminator, sample_data, sample_g, steps=_FIT_STEPS, batch_size=_FIT_BATCH, lr=_FIT_LR)

    def loss_with(self, state, real, fake) -> torch.Tensor:
        """The discriminator loss of the discriminator with parameters ``state`` on these batches."""
        model = _small_discriminator(0)
        with torch.no_grad():
            for p, value in zip(model.parameters(), state):
                p.copy_(value)
        return _d_loss(model, real, fake)

    def held_out_loss(self, state) -> float:
        with torch.no_grad():
            return float(self.loss_with(state, self.eval_real, self.eval_fake))

    def final_state(self):
        return [p.detach().clone() for p in self.discriminator.parameters()]


def _fit_steps(run: _FitRun) -> str | None:
    run = run.run()
    calls_real, calls_fake = len(run.real), len(run.fake)
    if calls_real != _FIT_STEPS or calls_fake != _FIT_STEPS:
        return (f"drew {calls_real} real and {calls_fake} fake batches for steps={_FIT_STEPS}: "
                "each step trains on one fresh real batch and one fresh fake batch")
    if any(n != _FIT_BATCH for n in run.sizes):
        return f"drew batches of {sorted(set(run.sizes))} examples: each batch has batch_size = {_FIT_BATCH}"
    losses = run.losses
    if not isinstance(losses, (list, tuple)) or len(losses) != _FIT_STEPS:
        return f"return a list with the loss of each of the {_FIT_STEPS} steps"
    if not all(isinstance(v, Real) and not isinstance(v, bool) for v in losses):
        return "return the losses as Python floats (loss.item())"
    return None


def _fit_updates_only_d(run: _FitRun) -> str | None:
    run = run.run()
    if all(_core.equal(a, b) for a, b in zip(run.initial, run.final_state())):
        if all(p.grad is None for p in run.discriminator.parameters()):
            return ("the discriminator you were given was not trained (its parameters got no gradient): "
                    "train it in place, not a copy or another network")
        return "the discriminator's parameters did not change: zero the gradients, backpropagate the loss, step the optimizer"
    if float(run.g_scale.detach()) != 1.0 or float(run.g_shift.detach()) != 0.0:
        return "the generator's parameters changed: only the discriminator is trained here (G is fixed)"
    for kind, batches in (("real", run.real), ("fake", run.fake)):
        if any(not _core.equal(batch.detach(), copy) for batch, copy in batches):
            return f"a {kind} batch was modified in place: leave the samples as they are (use out-of-place operations)"
    return None


def _fit_losses_match(run: _FitRun) -> str | None:
    """Each returned loss is −V on that step's batches, with the parameters the step started from."""
    problem = _fit_steps(run)
    if problem:
        return problem
    for i in (0, 1, _FIT_STEPS // 2, _FIT_STEPS - 1):
        state, (real, _), (_, fake) = run.states[i], run.real[i], run.fake[i]
        with torch.no_grad():
            want = float(run.loss_with(state, real, fake))
            swapped = float(run.loss_with(state, fake, real))
        got = float(run.losses[i])
        if abs(got - want) <= 1e-4 * max(1.0, abs(want)):
            continue
        if abs(got - swapped) <= 1e-4 * max(1.0, abs(swapped)):
            return "the loss treats the fakes as real and the data as fake: real and fake labels are swapped"
        if abs(got + want) <= 1e-4 * max(1.0, abs(want)):
            return "the returned loss is V, not −V: the discriminator minimises −V = −E[log D(x)] − E[log(1 − D(G(z)))]"
        return (f"the loss returned for step {i} is {got:.4f}, but the discriminator loss of that step's batches, before "
                f"its update, is {want:.4f}: return loss.item() of each step's −V")
    return None


def _fit_gradients_fresh(run: _FitRun) -> str | None:
    """After the last step, D's gradients are either cleared or those of the last step's loss alone."""
    problem = _fit_steps(run)
    if problem:
        return problem
    grads = [p.grad for p in run.discriminator.parameters()]
    if all(g is None or not bool(g.any()) for g in grads):
        return None                                             # zeroed after the step: fine
    model = _small_discriminator(0)
    with torch.no_grad():
        for p, value in zip(model.parameters(), run.states[-1]):
            p.copy_(value)
    last = _core.grad(_d_loss(model, run.real[-1][1], run.fake[-1][1]), list(model.parameters()))
    scale = max(float(g.abs().max()) for g in last)
    if all(g is not None and close(g, want, 1e-3 * max(1.0, scale)) for g, want in zip(grads, last)):
        return None
    return ("after the last step D's gradients are not those of the last loss: they accumulate across steps; "
            "call optimizer.zero_grad() every step, before loss.backward()")


def _fit_loss_goes_down(run: _FitRun) -> str | None:
    run = run.run()
    before, after = run.held_out_loss(run.initial), run.held_out_loss(run.final_state())
    if after <= before - _FIT_MIN_GAIN:
        return None
    if after > before:
        return (f"the discriminator loss on held-out batches went up ({before:.3f} → {after:.3f} nats): "
                "step *down* the gradient of −V (minimise loss; do not maximise it or step along +gradient)")
    return (f"the discriminator loss on held-out batches barely moved ({before:.3f} → {after:.3f} nats): "
            "is each step minimising the discriminator loss on a fresh real and a fresh fake batch?")


@exercise("Fitting D to two fixed densities", reference=ref.train_discriminator)
def check_fit_discriminator(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(discriminator, sample_data, sample_g, steps, batch_size, lr) -> losses`` by what training must do.

    Whatever the optimiser and learning rate: it takes ``steps`` steps on fresh batches, returns each step's
    loss, changes the given discriminator (and nothing else), does not accumulate gradients across steps,
    and lowers the discriminator loss on held-out data.
    """
    first, second = _FitRun(fn, 0, seed), _FitRun(fn, 1, seed + 1)
    return [
        (f"{_FIT_STEPS} steps, each on a fresh real and a fresh fake batch; returns each step's loss as a float",
         lambda: _fit_steps(first)),
        ("each returned loss is −V on that step's batches, before the update", lambda: _fit_losses_match(first)),
        ("trains the given discriminator in place; the generator and the samples are left unchanged",
         lambda: _fit_updates_only_d(first)),
        ("gradients do not accumulate across steps (zero_grad every step)", lambda: _fit_gradients_fresh(first)),
        ("p_data = two Gaussians, p_g = N(0, 1): the held-out discriminator loss goes down", lambda: _fit_loss_goes_down(first)),
        ("p_data = N(0.5, 0.6²), p_g = two Gaussians: the held-out discriminator loss goes down",
         lambda: _fit_loss_goes_down(second)),
    ]


# ----------------------------------------------------------------------------------------------
# Exercise: the Jensen-Shannon divergence


def _random_distributions(gen: torch.Generator, *shape: int) -> torch.Tensor:
    w = _rand(*shape, generator=gen, dtype=torch.float64) ** 2 + 1e-3
    return w / w.sum(-1, keepdim=True)


def _js_variants(p: torch.Tensor, q: torch.Tensor):
    m = 0.5 * (p + q)
    kl_pm, kl_qm = ref.kl_divergence(p, m), ref.kl_divergence(q, m)
    return [
        ("twice the JSD: the ½ in front of each KL term is missing", kl_pm + kl_qm),
        ("in bits (log base 2); use natural logarithms (nats)", (0.5 * kl_pm + 0.5 * kl_qm) / math.log(2)),
        ("this is KL(p ‖ q); the JSD compares each distribution with the mixture m = ½(p + q)", ref.kl_divergence(p, q)),
        ("this is ½ KL(p ‖ q) + ½ KL(q ‖ p), the symmetrised KL; the JSD uses the mixture m = ½(p + q)",
         0.5 * ref.kl_divergence(p, q) + 0.5 * ref.kl_divergence(q, p)),
        ("only ½ KL(p ‖ m): add ½ KL(q ‖ m)", 0.5 * kl_pm),
        ("the mixture is m = p + q; it must be ½(p + q), a probability distribution",
         0.5 * ref.kl_divergence(p, p + q) + 0.5 * ref.kl_divergence(q, p + q)),
    ]


def _js_case(fn, p: torch.Tensor, q: torch.Tensor) -> str | None:
    value = fn(p, q)
    want = ref.jensen_shannon_divergence(p, q)
    if type(value) is torch.Tensor and value.is_floating_point() and not bool(_core._isfinite(value).all()):
        return "NaN or inf where a probability is 0: 0·log 0 counts as 0 (torch.xlogy does this)"
    problem = tensor_problem(value, "the JSD", want.shape)
    if problem:
        return problem

    def variants():
        with torch.no_grad():
            return [(d, _core.nan_to_num(v, nan=-1.0, posinf=-1.0)) for d, v in _js_variants(p, q)]

    return compare_case(value, want, 1e-6, variants, "differs from the JSD")


@exercise("Jensen–Shannon divergence", reference=(ref.jensen_shannon_divergence, ref.virtual_training_criterion))
def check_jensen_shannon(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(p, q) -> JSD`` over the last axis, in nats, for (..., K) probability vectors with zeros allowed."""
    gen = generator(seed)
    K = 6 + seed % 4
    p, q = _random_distributions(gen, 4, K), _random_distributions(gen, 4, K)
    with_zeros_p, with_zeros_q = p.clone(), q.clone()
    with_zeros_p[:, 0], with_zeros_q[:, 1] = 0.0, 0.0
    with_zeros_p, with_zeros_q = with_zeros_p / with_zeros_p.sum(-1, keepdim=True), with_zeros_q / with_zeros_q.sum(-1, keepdim=True)
    disjoint_p = torch.tensor([[0.5, 0.5, 0.0, 0.0]], dtype=torch.float64)
    disjoint_q = torch.tensor([[0.0, 0.0, 0.25, 0.75]], dtype=torch.float64)
    # The two special values (0 for identical distributions, log 2 for disjoint supports) are what a constant
    # answer gets right: each is checked together with a general case, so neither earns points on its own.
    cases = [
        (f"a batch of 4 pairs of distributions over {K} outcomes; identical distributions give 0",
         lambda: _js_case(fn, p, q) or _js_case(fn, p, p.clone())),
        ("zeros in p and in q (0·log 0 = 0); disjoint supports give log 2",
         lambda: _js_case(fn, with_zeros_p, with_zeros_q) or _js_case(fn, disjoint_p, disjoint_q)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: measuring mode coverage


def _coverage_variants(samples, centers, std):
    n = samples.shape[0]
    distance, nearest = torch.cdist(samples, centers).min(dim=1)
    good = distance <= 3 * std
    counts = torch.bincount(nearest[good], minlength=centers.shape[0])
    all_counts = torch.bincount(nearest, minlength=centers.shape[0])
    tight = distance <= std
    tight_counts = torch.bincount(nearest[tight], minlength=centers.shape[0])
    share = float(good.double().mean())
    return [
        ("a mode needs at least 2.5% of the samples (high-quality and nearest to it) to count as covered, not just one",
         (int((counts >= 1).sum()), share)),
        ("every sample is counted towards its nearest mode; only high-quality samples (within 3·std) count",
         (int((all_counts >= 0.025 * n).sum()), share)),
        ("high quality means within 3·std of a centre, not within 1·std",
         (int((tight_counts >= 0.025 * n).sum()), float(tight.double().mean()))),
        ("the share of high-quality samples is a fraction of all samples, between 0 and 1",
         (int((counts >= 0.025 * n).sum()), 100 * share)),
    ]


def _coverage_case(fn, samples: torch.Tensor, centers: torch.Tensor, std: float) -> str | None:
    result = fn(samples, centers, std)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return f"return a pair (modes_covered, high_quality_share), got {type(result).__name__}"
    modes, share = result
    if isinstance(modes, torch.Tensor) and modes.numel() == 1:
        modes = modes.item()
    if isinstance(share, torch.Tensor) and share.numel() == 1:
        share = share.item()
    if isinstance(modes, bool) or not isinstance(modes, (Integral, Real)) or float(modes) != int(float(modes)):
        return f"modes_covered should be a whole number, got {modes!r}"
    if isinstance(share, bool) or not isinstance(share, Real) or not math.isfinite(float(share)):
        return f"high_quality_share should be a number, got {share!r}"
    want = ref.mode_coverage(samples, centers, std)
    if int(modes) == want.modes_covered and abs(float(share) - want.high_quality_share) < 1e-6:
        return None
    for diagnosis, (v_modes, v_share) in _coverage_variants(samples, centers, std):
        if int(modes) == v_modes and abs(float(share) - v_share) < 1e-6 and (v_modes, v_share) != (want.modes_covered, want.high_quality_share):
            return diagnosis
    if int(modes) != want.modes_covered:
        return f"modes_covered is {int(modes)}, expected a different count"
    return f"high_quality_share is {float(share):.4f}, expected a different value"


@exercise("Mode coverage on the ring", reference=ref.mode_coverage)
def check_mode_coverage(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(samples (n, 2), centers (K, 2), std) -> (modes_covered, high_quality_share)``."""
    gen = generator(seed)
    centers = ref.RING8_CENTERS.double()
    std = ref.RING8_STD

    def around(modes, n_per, spread):
        modes = torch.as_tensor(modes)
        picked = modes[_core.randint(0, len(modes), (n_per,), generator=gen)]
        return centers[picked] + spread * _randn(n_per, 2, generator=gen, dtype=torch.float64)

    true_samples = around(range(8), 2000, std)
    collapsed = around([1 + seed % 7, 5], 1000, 0.5 * std)
    blurry = around(range(8), 2000, 4 * std)                          # every mode visited, few good samples
    # Five modes well covered; a sixth gets only 20 of 1200 samples (1.7% < 2.5%).
    rare = torch.cat([around([0, 1, 2, 3, 4], 1180, std), around([6], 20, std)])
    # Five modes well covered, and 300 samples halfway to the origin, nearest to centre 7 but far from it.
    far = torch.cat([around([0, 1, 2, 3, 4], 1200, std), 0.5 * around([7], 300, std)])
    tight_vs_loose = around(range(8), 1600, 1.8 * std)                # 1·std and 3·std disagree a lot
    cases = [
        ("samples from the ring itself: 8 modes, ≈99% high quality", lambda: _coverage_case(fn, true_samples, centers, std)),
        ("a generator collapsed onto 2 modes", lambda: _coverage_case(fn, collapsed, centers, std)),
        ("a blurry generator near every mode but rarely within 3·std", lambda: _coverage_case(fn, blurry, centers, std)),
        ("a mode with fewer than 2.5% of the samples is not covered", lambda: _coverage_case(fn, rare, centers, std)),
        ("samples far from every centre are not high quality and cover nothing", lambda: _coverage_case(fn, far, centers, std)),
        ("samples spread 1.8·std around each centre", lambda: _coverage_case(fn, tight_vs_loose, centers, std)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: minibatch discrimination features


def _minibatch_case(fn, m: torch.Tensor) -> str | None:
    out = fn(m)
    want = ref.minibatch_similarity(m)
    problem = tensor_problem(out, "o(x)", want.shape)
    if problem:
        if type(out) is torch.Tensor and tuple(out.shape) == (m.shape[0], m.shape[0]):
            return f"{problem}: sum over the other examples j, keeping one value per kernel b"
        return problem
    diff = m.unsqueeze(0) - m.unsqueeze(1)                            # (N, N, B, C)
    return compare_case(out, want, 1e-5, [
        ("the j = i term (exp(0) = 1) is included: sum over the *other* examples only", want + 1),
        ("use the L1 norm ‖M_i,b − M_j,b‖₁ (sum of absolute differences), not the Euclidean norm",
         torch.exp(-diff.pow(2).sum(-1).sqrt()).sum(1) - 1),
        ("use exp(−distance): nearby examples should score close to 1, distant ones close to 0",
         diff.abs().sum(-1).sum(1)),
        ("the distance is summed over the kernels b as well; compare M_i,b with M_j,b kernel by kernel (sum over C only)",
         torch.exp(-diff.abs().sum((-1, -2))).sum(1, keepdim=True).expand_as(want) - 1),
    ], "differs from o(x_i)_b = Σ_(j≠i) exp(−‖M_i,b − M_j,b‖₁)")


@exercise("Minibatch discrimination features", reference=ref.minibatch_similarity)
def check_minibatch_similarity(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(m (N, B, C)) -> (N, B)``: o(x_i)_b = Σ_{j≠i} exp(−‖M_{i,b} − M_{j,b}‖₁)."""
    gen = generator(seed)
    N, B, C = 6 + seed % 3, 5, 3
    m = 0.5 * _randn(N, B, C, generator=gen, dtype=torch.float64)
    collapsed = m[:1].expand(N, B, C).clone()
    spread = 50 * _randn(N, B, C, generator=gen, dtype=torch.float64)
    m32 = m.float().requires_grad_(True)

    def differentiable() -> str | None:
        out = fn(m32)
        problem = _minibatch_case(fn, m32.detach())
        if problem:
            return problem
        if type(out) is not torch.Tensor or not out.requires_grad:
            return "the result must stay differentiable with respect to m (D learns T through it): avoid .detach() and numpy"
        return None

    # Well-spread examples score ≈ 0, which an answer of zeros gets right: checked with a general batch.
    cases = [
        (f"a batch of {N} examples, {B} kernels of dimension {C}; well-spread examples score ≈ 0",
         lambda: _minibatch_case(fn, m) or _minibatch_case(fn, spread)),
        ("a collapsed batch (all examples equal) scores N − 1 in every kernel", lambda: _minibatch_case(fn, collapsed)),
        ("float32 input that requires grad: the output is differentiable", differentiable),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Derivations


# Maximise f(y) = a log y + b log(1 − y) over y in (0, 1), with a = p_data(x) > 0 and b = p_g(x) > 0.
derive_optimal_discriminator = derivation(
    "The optimal discriminator, pointwise",
    symbols={"a": positive(0.05, 5.0), "b": positive(0.05, 5.0)},
    expected={"d_star": "a / (a + b)"},
    # Real and fake swapped (b / (a + b)) and a constant ½ are right where the densities are equal.
    special={"p_data = p_g (a = b)": {"a": "b"}},
)

# The integrand at D*, and C(G) = V(D*, G) in terms of JSD(p_data ‖ p_g) ∈ [0, log 2].
derive_value_at_optimum = derivation(
    "The value of the game against D*",
    symbols={"a": positive(0.05, 5.0), "b": positive(0.05, 5.0), "jsd": interval(0, 0.6931)},
    expected={"integrand": "a*log(a/(a + b)) + b*log(b/(a + b))", "c_of_g": "-log(4) + 2*jsd"},
    # Putting D = ½ into the integrand is right only where p_data = p_g; so is dropping the JSD term.
    special={"p_data = p_g (a = b)": {"a": "b"}, "p_g = p_data (JSD = 0)": {"jsd": 0}},
)


make_read_only(__name__)
