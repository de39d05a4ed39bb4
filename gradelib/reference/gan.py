"""Reference code for notebook 05: generative adversarial networks, the minimax game.

Conventions. A discriminator returns **logits** ``a`` (one per example, shape ``(B,)``), and
``D(x) = sigmoid(a)`` is its probability that ``x`` is real. Every loss is computed from logits with
``logsigmoid``, never as ``log(sigmoid(a))``, which rounds to ``log 0 = -inf`` once ``|a|`` exceeds
about 17 in float32. Losses are means over the batch, in nats.

The value function of the game (Goodfellow et al., 2014) is

    V(D, G) = E_{x ~ p_data}[log D(x)] + E_{z ~ p_z}[log(1 - D(G(z)))],

maximised by D and minimised by G. With ``log D = logsigmoid(a)`` and ``log(1 - D) = logsigmoid(-a)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradelib.data import RING8_CENTERS, RING8_STD
from gradelib.training import fit, update

LOG4 = math.log(4.0)

# -----------------------------------------------------------------------------------------------
# The game and its losses


def value_function(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Monte-Carlo estimate of V(D, G) = E_data[log D(x)] + E_z[log(1 - D(G(z)))].

    real_logits: (B_real,) discriminator logits on real data; fake_logits: (B_fake,) on G(z).
    Returns a scalar (nats). It is at most 0, and equals -log 4 when D(x) = 1/2 everywhere.
    """
    return F.logsigmoid(real_logits).mean() + F.logsigmoid(-fake_logits).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss, -V(D, G): binary cross-entropy with real = 1 and fake = 0.

    real_logits: (B_real,), fake_logits: (B_fake,). Returns a scalar, the sum of the two batch means:
    -mean log D(x) - mean log(1 - D(G(z))).
    """
    return -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor, saturating: bool = False) -> torch.Tensor:
    """The generator's loss on fake_logits (B,) = logits of D(G(z)); a scalar.

    saturating=True:  mean log(1 - D(G(z))), the minimax loss (G minimises V). Its gradient vanishes
                      when D confidently rejects the fakes (D(G(z)) -> 0), i.e. early in training.
    saturating=False: -mean log D(G(z)), the non-saturating loss Goodfellow et al. use in practice:
                      same fixed point, strong gradients exactly where the minimax loss has none.
    """
    if saturating:
        return F.logsigmoid(-fake_logits).mean()
    return -F.logsigmoid(fake_logits).mean()


def generator_loss_gradient(fake_logits: torch.Tensor, saturating: bool = False) -> torch.Tensor:
    """d(per-example generator loss)/d(logit), elementwise, in closed form; shape of fake_logits.

    With D = sigmoid(a): d/da log(1 - D) = -D (saturating), d/da [-log D] = -(1 - D) (non-saturating).
    Near D -> 0 (fakes confidently rejected) the first vanishes and the second tends to -1.
    """
    d = torch.sigmoid(fake_logits)
    return -d if saturating else -(1 - d)


# -----------------------------------------------------------------------------------------------
# The optimal discriminator and the Jensen-Shannon divergence


def optimal_discriminator(p_data: torch.Tensor, p_g: torch.Tensor) -> torch.Tensor:
    """D*(x) = p_data(x) / (p_data(x) + p_g(x)), elementwise; any shape.

    The pointwise maximiser of p_data log D + p_g log(1 - D). Where both densities are 0 the value is
    arbitrary (x is never seen); we return 1/2 there.
    """
    total = p_data + p_g
    return torch.where(total > 0, p_data / torch.where(total > 0, total, torch.ones_like(total)),
                       torch.full_like(total, 0.5))


def _xlogy_ratio(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """p * log(p / q) with the convention 0 log 0 = 0 (q > 0 wherever p > 0)."""
    safe_q = torch.where(p > 0, q, torch.ones_like(q))
    return torch.xlogy(p, p) - torch.xlogy(p, safe_q)


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) = sum_i p_i log(p_i / q_i) in nats, over the last axis; p, q (..., K) -> (...)."""
    return _xlogy_ratio(p, q).sum(-1)


def jensen_shannon_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """JSD(p || q) = ½ KL(p || m) + ½ KL(q || m), m = ½(p + q), in nats, over the last axis.

    p, q: (..., K) probability vectors (non-negative, summing to 1; zeros allowed). Returns (...),
    between 0 (p = q) and log 2 (disjoint supports).
    """
    m = 0.5 * (p + q)
    return 0.5 * kl_divergence(p, m) + 0.5 * kl_divergence(q, m)


def virtual_training_criterion(p_data: torch.Tensor, p_g: torch.Tensor) -> torch.Tensor:
    """C(G) = max_D V(D, G) = E_data[log D*(x)] + E_g[log(1 - D*(x))] for discrete p_data, p_g (..., K).

    Equals -log 4 + 2·JSD(p_data || p_g) (Goodfellow et al., 2014, Theorem 1).
    """
    d_star = optimal_discriminator(p_data, p_g)
    one_minus_d_star = optimal_discriminator(p_g, p_data)   # not 1 - d_star, which rounds to 0 where p_g << p_data
    return (torch.xlogy(p_data, d_star) + torch.xlogy(p_g, one_minus_d_star)).sum(-1)


def normal_pdf(x: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """Density of N(mean, std²) at x, elementwise."""
    return torch.exp(-0.5 * ((x - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))


@dataclass(frozen=True)
class GaussianMixture1D:
    """A 1-D mixture of Gaussians: weights (sum 1), means and stds, all tuples of equal length."""

    weights: tuple[float, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]

    def pdf(self, x: torch.Tensor) -> torch.Tensor:
        """Density at x (any shape)."""
        return sum(w * normal_pdf(x, m, s) for w, m, s in zip(self.weights, self.means, self.stds))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n samples, shape (n, 1) float32."""
        component = torch.multinomial(torch.tensor(self.weights), n, replacement=True, generator=generator)
        means, stds = torch.tensor(self.means)[component], torch.tensor(self.stds)[component]
        return (means + stds * torch.randn(n, generator=generator)).unsqueeze(1)


def train_discriminator(discriminator: nn.Module, sample_data, sample_g, steps: int = 500,
                        batch_size: int = 256, lr: float = 1e-2, *, progress: bool = False,
                        label: str = "discriminator") -> list[float]:
    """Fit a discriminator to two fixed samplers with the discriminator loss (G is frozen).

    discriminator: maps (B, d) to logits (B, 1) or (B,). sample_data(n), sample_g(n) return (n, d) and
    carry their own randomness (the exercise's signature, so this is the exercise's answer too).
    Adam(lr, betas=(0.5, 0.999)). Returns the loss after each step. With enough capacity and steps
    sigmoid(discriminator(x)) approaches D*(x) = p_data / (p_data + p_g).
    """

    def step(index: int, generator: torch.Generator) -> torch.Tensor:
        real, fake = sample_data(batch_size), sample_g(batch_size)
        return discriminator_loss(discriminator(real).reshape(-1), discriminator(fake).reshape(-1))

    optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    return fit(step, steps, optimizer=optimizer, label=label, progress=progress)["loss"]


# -----------------------------------------------------------------------------------------------
# Measuring mode collapse on the ring of 8 Gaussians


@dataclass(frozen=True)
class ModeCoverage:
    """How a set of 2-D samples covers the modes of a mixture.

    counts:             (K,) int64, high-quality samples assigned to each mode
    covered:            (K,) bool, counts >= min_share * n
    modes_covered:      number of covered modes
    high_quality_share: fraction of all samples that are high quality
    """

    counts: torch.Tensor
    covered: torch.Tensor
    modes_covered: int
    high_quality_share: float


def mode_coverage(samples: torch.Tensor, centers: torch.Tensor = RING8_CENTERS, std: float = RING8_STD,
                  num_stds: float = 3.0, min_share: float = 0.025) -> ModeCoverage:
    """Modes covered and the share of high-quality samples.

    samples: (n, 2); centers: (K, 2); std: the modes' standard deviation.
    * A sample is **high quality** when its distance to the nearest centre is at most num_stds·std
      (3·0.05 = 0.15 for the ring: 98.9% of true samples qualify, since for a 2-D Gaussian the squared
      distance / std² is chi-squared with 2 degrees of freedom and P(r <= 3 std) = 1 - exp(-4.5)).
    * Mode k is **covered** when at least min_share·n of the samples are high quality and nearest to
      centre k. The default 2.5% is a fifth of a mode's fair share of 1/8 = 12.5%.
    """
    n = samples.shape[0]
    distances = torch.cdist(samples.to(centers.dtype), centers.to(samples.device))   # (n, K)
    nearest_distance, nearest = distances.min(dim=1)
    high_quality = nearest_distance <= num_stds * std
    counts = torch.bincount(nearest[high_quality], minlength=centers.shape[0]).cpu()
    covered = counts >= min_share * n
    return ModeCoverage(counts=counts, covered=covered, modes_covered=int(covered.sum()),
                        high_quality_share=float(high_quality.float().mean()))


# -----------------------------------------------------------------------------------------------
# Networks


def fit_error(discriminator: nn.Module, p_data, p_g, grid: torch.Tensor) -> float:
    """How far sigmoid(D(x)) is from D*(x): the mean of |sigmoid(D(x)) - D*(x)| under the mixture ½(p_data + p_g).

    discriminator: (G, 1) -> logits; p_data, p_g: density functions; grid: (G, 1) evenly spaced points
    covering both densities (the mean is a Riemann sum over it). Regions that neither density visits
    carry no weight: D is never trained there, and D* is arbitrary there.
    """
    with torch.no_grad():
        trained = torch.sigmoid(discriminator(grid).reshape(-1)).double()
    x = grid.reshape(-1).double()
    weight = 0.5 * (p_data(x) + p_g(x))
    return float(((trained - optimal_discriminator(p_data(x), p_g(x))).abs() * weight).sum() / weight.sum())


def mlp(sizes: list[int], activation=nn.LeakyReLU, final_activation: nn.Module | None = None, **kwargs) -> nn.Sequential:
    """Linear layers of the given sizes with ``activation`` between them (not after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(activation(**kwargs) if kwargs else activation())
    if final_activation is not None:
        layers.append(final_activation)
    return nn.Sequential(*layers)


def minibatch_similarity(m: torch.Tensor) -> torch.Tensor:
    """Minibatch discrimination features (Salimans et al., 2016): o(x_i)_b = Σ_{j≠i} exp(-‖M_{i,b} - M_{j,b}‖₁).

    m: (N, B, C), one (B, C) matrix M_i per example in the batch. Returns (N, B): for each example and
    each of the B kernels, how many *other* examples of the batch look like it. A collapsed batch
    (all examples equal) scores N - 1 in every kernel; well-spread examples score near 0.
    """
    per_kernel = m.transpose(0, 1)                                  # (B, N, C)
    l1 = torch.cdist(per_kernel, per_kernel, p=1)                   # (B, N, N): ‖M_i,b − M_j,b‖₁
    return torch.exp(-l1).sum(-1).T - 1.0                           # (N, B); the j = i term is exp(0) = 1


class MinibatchDiscrimination(nn.Module):
    """Appends o(x) = minibatch_similarity(f(x) T) to features f(x) (N, A) -> (N, A + B).

    T is a learnt (A, B·C) tensor. The discriminator sees, next to each example's own features, how
    similar it is to the rest of its batch: a batch of fakes that all look alike is easy to reject.
    """

    def __init__(self, in_features: int, num_kernels: int = 16, kernel_dim: int = 4, similarity=minibatch_similarity):
        super().__init__()
        self.num_kernels, self.kernel_dim, self.similarity = num_kernels, kernel_dim, similarity
        self.T = nn.Parameter(0.1 * torch.randn(in_features, num_kernels * kernel_dim))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        m = (f @ self.T).view(-1, self.num_kernels, self.kernel_dim)   # (N, B, C)
        return torch.cat([f, self.similarity(m)], dim=1)


class Discriminator(nn.Module):
    """MLP discriminator on (N, in_dim) -> logits (N,), optionally with minibatch discrimination."""

    def __init__(self, in_dim: int = 2, hidden: int = 128, minibatch_kernels: int = 0, kernel_dim: int = 4,
                 similarity=minibatch_similarity):
        super().__init__()
        self.features = mlp([in_dim, hidden, hidden], activation=nn.LeakyReLU, negative_slope=0.2)
        self.features.append(nn.LeakyReLU(0.2))
        self.minibatch = (MinibatchDiscrimination(hidden, minibatch_kernels, kernel_dim, similarity)
                          if minibatch_kernels else None)
        self.head = nn.Linear(hidden + minibatch_kernels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        if self.minibatch is not None:
            f = self.minibatch(f)
        return self.head(f).squeeze(-1)


class Generator(nn.Module):
    """MLP generator z (N, noise_dim) -> x (N, out_dim)."""

    def __init__(self, noise_dim: int = 2, out_dim: int = 2, hidden: int = 128, final_activation: nn.Module | None = None):
        super().__init__()
        self.noise_dim = noise_dim
        self.net = mlp([noise_dim, hidden, hidden, out_dim], activation=nn.ReLU, final_activation=final_activation)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


def conditional_input(x: torch.Tensor, labels: torch.Tensor, num_classes: int = 10) -> torch.Tensor:
    """Concatenate one-hot labels to an input, as the notes' conditional GAN does: (N, d) -> (N, d + num_classes)."""
    return torch.cat([x, F.one_hot(labels, num_classes).to(x.dtype)], dim=1)


class ConditionalGenerator(nn.Module):
    """G(z | y): an MLP on [z, one_hot(y)] -> (N, out_dim) in [-1, 1] (tanh)."""

    def __init__(self, noise_dim: int = 32, num_classes: int = 10, out_dim: int = 64, hidden: int = 256):
        super().__init__()
        self.noise_dim, self.num_classes = noise_dim, num_classes
        self.net = mlp([noise_dim + num_classes, hidden, hidden, out_dim], activation=nn.ReLU, final_activation=nn.Tanh())

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(conditional_input(z, labels, self.num_classes))


class ConditionalDiscriminator(nn.Module):
    """D(x | y): an MLP on [x, one_hot(y)] -> logits (N,)."""

    def __init__(self, in_dim: int = 64, num_classes: int = 10, hidden: int = 256):
        super().__init__()
        self.num_classes = num_classes
        self.net = mlp([in_dim + num_classes, hidden, hidden, 1], activation=nn.LeakyReLU, negative_slope=0.2)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.net(conditional_input(x, labels, self.num_classes)).squeeze(-1)


# -----------------------------------------------------------------------------------------------
# Adversarial autoencoder (Makhzani et al., 2016)


class AdversarialAutoencoder(nn.Module):
    """A deterministic autoencoder whose codes are pushed towards a prior by a latent discriminator.

    encoder: x (N, data_dim) -> z (N, latent_dim); decoder: z -> Bernoulli logits (N, data_dim), the
    same architecture as the VAE's; latent_discriminator: z -> logits (N,), real = samples of the prior.
    Where a VAE adds KL(q(z|x) || p(z)) per example, the AAE matches the *aggregate* distribution of
    the codes, q(z) = E_x q(z|x), to p(z) by a GAN game played in the latent space.
    """

    def __init__(self, data_dim: int = 64, latent_dim: int = 2, hidden_dim: int = 256, disc_hidden: int = 128):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = mlp([data_dim, hidden_dim, hidden_dim, latent_dim], activation=nn.ReLU)
        self.decoder = mlp([latent_dim, hidden_dim, hidden_dim, data_dim], activation=nn.ReLU)
        self.latent_discriminator = mlp([latent_dim, disc_hidden, disc_hidden, 1], activation=nn.LeakyReLU, negative_slope=0.2)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def discriminate(self, z: torch.Tensor) -> torch.Tensor:
        return self.latent_discriminator(z).squeeze(-1)


def train_aae(model: AdversarialAutoencoder, data: torch.Tensor, steps: int, batch_size: int = 128, lr: float = 1e-3, *,
              seed: int = 0, progress: bool = False, label: str = "adversarial autoencoder",
              prior_sampler=None) -> dict[str, list[float]]:
    """Train an AAE on data (N, D) in [0, 1]; each step has the paper's two phases.

    1. Reconstruction: encoder and decoder minimise the Bernoulli NLL (summed over pixels, mean over the batch).
    2. Regularisation: the latent discriminator learns to tell prior samples z ~ N(0, I) (real) from
       codes E(x) (fake); then the encoder, playing the generator, minimises the non-saturating loss.
    prior_sampler(n, generator) -> (n, latent_dim) draws from the prior; default N(0, I). Any prior you
    can sample from works: no closed-form KL is needed. The minibatches and the prior samples come from
    the generator of :func:`gradelib.training.fit`, seeded with ``seed``.
    Returns the per-step reconstruction NLL, discriminator loss and encoder (generator) loss.
    """
    autoencoder_params = list(model.encoder.parameters()) + list(model.decoder.parameters())
    opt_ae = torch.optim.Adam(autoencoder_params, lr=lr)
    opt_d = torch.optim.Adam(model.latent_discriminator.parameters(), lr=lr, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(model.encoder.parameters(), lr=lr, betas=(0.5, 0.999))

    def step(index: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
        batch = torch.randint(0, data.shape[0], (batch_size,), generator=generator).to(data.device)
        x = data[batch]
        reconstruction = F.binary_cross_entropy_with_logits(model.decode(model.encode(x)), x, reduction="none").sum(1).mean()
        update(opt_ae, reconstruction)

        prior = (prior_sampler(batch_size, generator) if prior_sampler is not None
                 else torch.randn(batch_size, model.latent_dim, generator=generator)).to(data.device)
        d_loss = discriminator_loss(model.discriminate(prior), model.discriminate(model.encode(x).detach()))
        update(opt_d, d_loss)

        g_loss = generator_loss(model.discriminate(model.encode(x)))
        update(opt_g, g_loss)
        return {"reconstruction_nll": reconstruction, "discriminator_loss": d_loss, "encoder_adversarial_loss": g_loss}

    return fit(step, steps, seed=seed, modules=[model], label=label, progress=progress)


def gaussian_mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float = 1.0) -> torch.Tensor:
    """Unbiased squared maximum mean discrepancy between samples x (n, d) and y (m, d), RBF kernel.

    Near 0 when x and y come from the same distribution. Used to ask how close a model's codes are
    to the prior N(0, I).
    """
    def kernel(a, b):
        return torch.exp(-torch.cdist(a, b) ** 2 / (2 * bandwidth ** 2))

    n, m = x.shape[0], y.shape[0]
    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    return ((kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
            - 2 * kxy.mean())


# -----------------------------------------------------------------------------------------------
# Judging generated digits with a classifier


def frechet_distance(features_a: torch.Tensor, features_b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (n, d) and (m, d):

        ‖μ_a − μ_b‖² + tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2}),

    the formula behind FID (Heusel et al., 2017), here with a small digit classifier's features.
    tr((Σ_a Σ_b)^{1/2}) is computed as the sum of the square roots of the eigenvalues of
    Σ_a^{1/2} Σ_b Σ_a^{1/2} (symmetric PSD), in float64.
    """
    a, b = features_a.detach().double().cpu(), features_b.detach().double().cpu()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    eigenvalues, eigenvectors = torch.linalg.eigh(cov_a)
    sqrt_a = eigenvectors @ torch.diag(eigenvalues.clamp(min=0).sqrt()) @ eigenvectors.T
    middle = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp(min=0)
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * middle.sqrt().sum())


class DigitClassifier(nn.Module):
    """A small MLP classifier for 8x8 digits in [-1, 1], (N, 64) -> logits (N, 10); features() is its hidden layer."""

    def __init__(self, hidden: int = 128):
        super().__init__()
        self.hidden = nn.Sequential(nn.Linear(64, hidden), nn.ReLU())
        self.out = nn.Linear(hidden, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.hidden(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.hidden(x))


# -----------------------------------------------------------------------------------------------
# Training


def train_gan(generator: nn.Module, discriminator: nn.Module, sample_real, steps: int, *, batch_size: int = 128,
              lr_g: float = 1e-3, lr_d: float = 1e-3, d_loss_fn=discriminator_loss, g_loss_fn=generator_loss,
              num_classes: int = 0, seed: int = 0, progress: bool = False, label: str = "GAN",
              snapshot_every: int = 0, snapshot=None) -> dict[str, list]:
    """Alternating GAN training (Goodfellow et al., 2014, Algorithm 1 with k = 1), Adam(β = (0.5, 0.999)).

    Each step: one discriminator step on d_loss_fn(D(real), D(G(z).detach())), then one generator step
    on g_loss_fn(D(G(z))). sample_real(n, rng) returns (n, d) real data, or (x, labels) when num_classes > 0
    (a conditional GAN: G(z, y) and D(x, y), fakes get labels drawn uniformly). lr_g != lr_d is the
    two-time-scale update rule (TTUR). Every draw (the noise z, then the real batch, then the fake labels)
    comes from the CPU generator of :func:`gradelib.training.fit`, seeded with ``seed``, which is also
    the ``rng`` handed to ``sample_real``. When snapshot_every > 0, snapshot(step) is called every
    snapshot_every steps and its results are returned under "snapshots".
    """
    device = next(generator.parameters()).device
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr_g, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=(0.5, 0.999))
    snapshots: list = []

    def step(index: int, rng: torch.Generator) -> dict[str, torch.Tensor]:
        z = torch.randn(batch_size, generator.noise_dim, generator=rng).to(device)
        if num_classes:
            real, real_labels = sample_real(batch_size, rng)
            fake_labels = torch.randint(0, num_classes, (batch_size,), generator=rng).to(device)
            fake = generator(z, fake_labels)
            d_real, d_fake = discriminator(real, real_labels), discriminator(fake.detach(), fake_labels)
        else:
            real = sample_real(batch_size, rng)
            fake = generator(z)
            d_real, d_fake = discriminator(real), discriminator(fake.detach())
        d_loss = d_loss_fn(d_real, d_fake)
        update(opt_d, d_loss)

        g_loss = g_loss_fn(discriminator(fake, fake_labels) if num_classes else discriminator(fake))
        update(opt_g, g_loss)
        if snapshot_every and (index + 1) % snapshot_every == 0:
            with torch.no_grad():
                snapshots.append(snapshot(index + 1))
        return {"d_loss": d_loss, "g_loss": g_loss}

    history: dict[str, list] = fit(step, steps, seed=seed, label=label, progress=progress)
    history["snapshots"] = snapshots
    return history


def train_digit_classifier(classifier: nn.Module, images: torch.Tensor, labels: torch.Tensor, steps: int, *,
                           batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 1e-4, noise_std: float = 0.1,
                           seed: int = 0, progress: bool = False, label: str = "digit classifier") -> list[float]:
    """Train the classifier that judges generated digits (notebooks 05 and 06): cross-entropy with Adam.

    images: (N, ...) in [-1, 1], labels: (N,). Each step draws a minibatch and adds Gaussian noise of
    std ``noise_std`` (both from the :func:`gradelib.training.fit` generator, seeded with ``seed``), so
    the classifier also judges slightly imperfect samples sensibly. Returns the loss of each step.
    """

    def step(index: int, generator: torch.Generator) -> torch.Tensor:
        batch = torch.randint(0, len(images), (batch_size,), generator=generator).to(images.device)
        noisy = images[batch] + noise_std * torch.randn(batch_size, *images.shape[1:], generator=generator).to(images.device)
        return F.cross_entropy(classifier(noisy), labels[batch])

    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr, weight_decay=weight_decay)
    return fit(step, steps, optimizer=optimizer, seed=seed, modules=[classifier], label=label, progress=progress)["loss"]
