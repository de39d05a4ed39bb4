"""Variational autoencoders and the evidence lower bound (ELBO), from first principles.

The reference that notebook 04's exercises are checked against; notebook 05 imports the VAE from here
to compare it with an adversarial autoencoder.

Shape letters used throughout:
    B   batch size
    D   data dimension (64 for the flattened 8x8 digits)
    d   latent dimension
    K   number of importance samples (IWAE)

Conventions:
    * Every log-density and loss is in **nats** and **per example**: functions return (B,) tensors,
      summed over the data and latent dimensions, never averaged over them. Average over the batch
      yourself when you need a scalar training loss.
    * A diagonal Gaussian is given by its mean ``mu`` and its log-variance ``logvar = log sigma^2``
      (not sigma, not log sigma): the encoder can output any real number and exp() keeps it positive.
    * The decoder is **Bernoulli**: ``decode(z)`` returns logits, and log p(x|z) is minus the binary
      cross-entropy summed over the D pixels. This is a proper likelihood for binary data, so the
      negative ELBO and the IWAE estimate are upper bounds on -log p(x) in nats, comparable across models.

The identity behind everything (for any q(z|x) with the same support as the posterior):

    log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)),   ELBO(q) = E_q[log p(x|z)] - KL(q(z|x) || p(z)).

References:
    Kingma & Welling (2014), Auto-Encoding Variational Bayes.
    Rezende, Mohamed & Wierstra (2014), Stochastic Backpropagation and Approximate Inference in Deep Generative Models.
    Burda, Grosse & Salakhutdinov (2016), Importance Weighted Autoencoders.
    Higgins et al. (2017), beta-VAE: Learning Basic Visual Concepts with a Constrained Variational Framework.
    Alemi et al. (2018), Fixing a Broken ELBO (rate and distortion).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from gradelib.training import fit

__all__ = [
    "LOG_2PI",
    "gaussian_kl_standard_normal",
    "gaussian_kl_diagonal",
    "gaussian_kl_full",
    "log_normal_diag",
    "log_normal_standard",
    "reparameterize",
    "bernoulli_log_likelihood",
    "bernoulli_nll",
    "log_mean_exp",
    "VAE",
    "negative_elbo",
    "beta_vae_loss",
    "iwae_bound",
    "train_vae",
    "evaluate",
    "linear_gaussian_log_marginal",
    "linear_gaussian_posterior",
    "elbo_linear_gaussian",
    "reparam_gradient_samples",
    "score_function_gradient_samples",
    "bayes_posterior",
]

LOG_2PI = math.log(2 * math.pi)


# --------------------------------------------------------------------------------------------------
# Gaussians: densities and KL divergences
# --------------------------------------------------------------------------------------------------


def gaussian_kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL( N(mu, diag(exp(logvar))) || N(0, I) ), summed over the last (latent) dimension.

        KL = 1/2 * sum_j ( mu_j^2 + sigma_j^2 - log sigma_j^2 - 1 ),   sigma_j^2 = exp(logvar_j).

    Args:
        mu: (..., d) means.
        logvar: (..., d) log-variances log sigma^2.

    Returns:
        (...,) KL in nats, e.g. (B,) for (B, d) inputs. Zero exactly when mu = 0 and logvar = 0.
    """
    return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1.0).sum(dim=-1)


def gaussian_kl_diagonal(mu_q: Tensor, logvar_q: Tensor, mu_p: Tensor, logvar_p: Tensor) -> Tensor:
    """KL( N(mu_q, diag e^logvar_q) || N(mu_p, diag e^logvar_p) ), summed over the last dimension.

        KL = 1/2 * sum_j ( log(s_p^2 / s_q^2) + (s_q^2 + (mu_q - mu_p)^2) / s_p^2 - 1 ).

    All inputs broadcast to (..., d); returns (...,).
    """
    var_q, var_p = logvar_q.exp(), logvar_p.exp()
    return 0.5 * (logvar_p - logvar_q + (var_q + (mu_q - mu_p).pow(2)) / var_p - 1.0).sum(dim=-1)


def gaussian_kl_full(mean_q: Tensor, cov_q: Tensor, mean_p: Tensor, cov_p: Tensor) -> Tensor:
    """KL( N(mean_q, cov_q) || N(mean_p, cov_p) ) for full covariance matrices.

        KL = 1/2 * ( tr(S_p^-1 S_q) + (m_p - m_q)^T S_p^-1 (m_p - m_q) - d + log det S_p - log det S_q ).

    Args:
        mean_q, mean_p: (..., d).
        cov_q, cov_p: (..., d, d) symmetric positive definite.

    Returns:
        (...,) KL in nats.
    """
    d = mean_q.shape[-1]
    chol_p = torch.linalg.cholesky(cov_p)
    diff = (mean_p - mean_q).unsqueeze(-1)                                   # (..., d, 1)
    solved_cov = torch.cholesky_solve(cov_q, chol_p)                         # S_p^-1 S_q
    solved_diff = torch.cholesky_solve(diff, chol_p)                         # S_p^-1 (m_p - m_q)
    trace = solved_cov.diagonal(dim1=-2, dim2=-1).sum(-1)
    mahalanobis = (diff * solved_diff).sum(dim=(-2, -1))
    logdet_p = 2.0 * chol_p.diagonal(dim1=-2, dim2=-1).log().sum(-1)
    logdet_q = torch.linalg.slogdet(cov_q).logabsdet
    return 0.5 * (trace + mahalanobis - d + logdet_p - logdet_q)


def log_normal_diag(x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """log N(x; mu, diag(exp(logvar))), summed over the last dimension. Inputs broadcast to (..., d)."""
    return -0.5 * (LOG_2PI + logvar + (x - mu).pow(2) / logvar.exp()).sum(dim=-1)


def log_normal_standard(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the last dimension: (..., d) -> (...,)."""
    return -0.5 * (LOG_2PI + z.pow(2)).sum(dim=-1)


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Sample z ~ N(mu, diag(exp(logvar))) as a differentiable function of (mu, logvar).

        z = mu + exp(logvar / 2) * eps,   eps ~ N(0, I)   (sigma = exp(logvar / 2), not exp(logvar)).

    The randomness lives in eps, which does not depend on the parameters, so dz/dmu = 1 and
    dz/dlogvar = sigma * eps / 2: gradients flow through the sample.

    Args:
        mu, logvar: (..., d) (the same shape).
        generator: optional torch.Generator for reproducible noise (on any device: the noise is moved).

    Returns:
        z: (..., d), same dtype and device as mu.
    """
    if generator is None:
        eps = torch.randn_like(mu)
    else:
        eps = torch.randn(mu.shape, generator=generator, device=generator.device, dtype=mu.dtype).to(mu.device)
    return mu + torch.exp(0.5 * logvar) * eps


# --------------------------------------------------------------------------------------------------
# The Bernoulli decoder's likelihood and a numerically stable log-mean-exp
# --------------------------------------------------------------------------------------------------


def bernoulli_log_likelihood(logits: Tensor, x: Tensor) -> Tensor:
    """log p(x | z) for a Bernoulli decoder with the given logits, summed over the last dimension.

        log p(x|z) = sum_i [ x_i log sigmoid(l_i) + (1 - x_i) log(1 - sigmoid(l_i)) ].

    Computed from logits (never from probabilities) so it stays finite when sigmoid saturates.
    logits, x: (..., D) with x in [0, 1] (broadcasting allowed). Returns (...,).
    """
    logits, x = torch.broadcast_tensors(logits, x)
    return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(dim=-1)


def bernoulli_nll(logits: Tensor, x: Tensor) -> Tensor:
    """-log p(x|z) for a Bernoulli decoder, summed over the last dimension: (..., D) -> (...,)."""
    return -bernoulli_log_likelihood(logits, x)


def log_mean_exp(values: Tensor, dim: int = -1) -> Tensor:
    """log( mean_k exp(values_k) ) along ``dim``, without overflow or underflow.

        log_mean_exp(a) = m + log( (1/K) sum_k exp(a_k - m) ),   m = max_k a_k.

    values: any shape; ``dim`` is removed from the result.
    """
    return torch.logsumexp(values, dim=dim) - math.log(values.shape[dim])


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


class VAE(nn.Module):
    """A fully connected VAE with a diagonal-Gaussian encoder and a Bernoulli decoder.

        encoder q(z|x) = N(mu(x), diag(exp(logvar(x)))),  prior p(z) = N(0, I),
        decoder p(x|z) = prod_i Bernoulli(x_i; sigmoid(logits_i(z))).

    Args:
        data_dim: D, the number of pixels (64 for 8x8 digits).
        latent_dim: d (2 gives a latent space you can plot).
        hidden_dim: width of the two hidden layers of the encoder and of the decoder.
    """

    def __init__(self, data_dim: int = 64, latent_dim: int = 2, hidden_dim: int = 256):
        super().__init__()
        self.data_dim, self.latent_dim, self.hidden_dim = data_dim, latent_dim, hidden_dim
        self.encoder = nn.Sequential(
            nn.Linear(data_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, 2 * latent_dim),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
            nn.Linear(hidden_dim, data_dim),
        )

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (B, D) in [0, 1] -> (mu (B, d), logvar (B, d))."""
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: Tensor) -> Tensor:
        """z: (..., d) -> Bernoulli logits (..., D). Pixel probabilities are sigmoid(logits)."""
        return self.decoder(z)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """x: (B, D) -> (logits (B, D) decoded from one reparameterized sample, mu (B, d), logvar (B, d))."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, generator)
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n images from the model, as pixel probabilities sigmoid(decode(z)), z ~ N(0, I): (n, D)."""
        device = next(self.parameters()).device
        if generator is None:
            z = torch.randn(n, self.latent_dim, device=device)
        else:
            z = torch.randn(n, self.latent_dim, generator=generator, device=generator.device).to(device)
        return torch.sigmoid(self.decode(z))


# --------------------------------------------------------------------------------------------------
# Objectives: the negative ELBO, beta-VAE, and the importance-weighted bound
# --------------------------------------------------------------------------------------------------


def negative_elbo(model: VAE, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The negative ELBO per example, with a one-sample Monte-Carlo reconstruction term.

        -ELBO(x) = E_q(z|x)[-log p(x|z)] + KL(q(z|x) || N(0, I))
                 ~ -log p(x | z_1) + KL,        z_1 = mu + sigma * eps  (reparameterized).

    Args:
        model: anything with ``encode(x) -> (mu, logvar)`` and ``decode(z) -> logits``.
        x: (B, D) in [0, 1].
        generator: optional torch.Generator for the noise eps.

    Returns:
        (neg_elbo, reconstruction_nll, kl), each (B,) in nats; neg_elbo = reconstruction_nll + kl.
        The KL is exact (closed form); only the reconstruction term is a one-sample estimate.
    """
    mu, logvar = model.encode(x)
    z = reparameterize(mu, logvar, generator)
    reconstruction_nll = bernoulli_nll(model.decode(z), x)
    kl = gaussian_kl_standard_normal(mu, logvar)
    return reconstruction_nll + kl, reconstruction_nll, kl


def beta_vae_loss(model: VAE, x: Tensor, beta: float = 1.0, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The beta-VAE objective (Higgins et al. 2017): distortion + beta * rate, per example (B,).

    Returns (loss, reconstruction_nll, kl). beta = 1 is the negative ELBO; beta > 1 pushes q(z|x)
    towards the prior (lower rate, more distortion); beta < 1 the other way.
    """
    _, reconstruction_nll, kl = negative_elbo(model, x, generator)
    return reconstruction_nll + beta * kl, reconstruction_nll, kl


@torch.no_grad()
def iwae_bound(model: VAE, x: Tensor, k: int, generator: torch.Generator | None = None, chunk_size: int = 100) -> Tensor:
    """The importance-weighted estimate of log p(x) with k samples (Burda et al. 2016).

        log p(x) >= L_k(x) = E[ log (1/k) sum_{i=1..k} w_i ],  w_i = p(x|z_i) p(z_i) / q(z_i|x),  z_i ~ q(z|x).

    L_1 is the ELBO, L_k increases with k and tends to log p(x). One draw of the k samples is used,
    combined with a numerically stable log-mean-exp. Samples are processed ``chunk_size`` at a time
    to bound the decoder's memory (the result does not depend on it).

    Args:
        model: anything with ``encode`` and ``decode`` as in :class:`VAE`.
        x: (B, D) in [0, 1].
        k: number of importance samples (k = 1 gives a one-sample ELBO estimate).

    Returns:
        (B,) estimate of log p(x) in nats (negate it for an upper-bound-in-expectation NLL estimate).
    """
    mu, logvar = model.encode(x)                                              # (B, d)
    # All k samples at once (k * B * d numbers is small), so the result does not depend on chunk_size.
    z_all = reparameterize(mu.expand(k, *mu.shape), logvar.expand(k, *logvar.shape), generator)   # (k, B, d)
    log_weights = []
    for z in z_all.split(chunk_size, dim=0):                                  # (n, B, d) each
        log_px_given_z = bernoulli_log_likelihood(model.decode(z), x)         # (n, B)
        log_weights.append(log_px_given_z + log_normal_standard(z) - log_normal_diag(z, mu, logvar))
    return log_mean_exp(torch.cat(log_weights, dim=0), dim=0)                 # (B,)


def train_vae(model: VAE, data: Tensor, steps: int, batch_size: int = 128, lr: float = 1e-3, beta: float = 1.0, *,
              seed: int = 0, progress: bool = False, label: str = "VAE") -> list[float]:
    """Train ``model`` on ``data`` (N, D) with Adam on the beta-VAE loss (beta = 1: the negative ELBO).

    One :func:`gradelib.training.fit` loop: the minibatch indices come from its generator (seeded with
    ``seed``, on the CPU, then moved to the data's device); the reparameterization noise comes from the
    global RNG, as in the notebooks' own loops (seed it with ``gradelib.seed_everything``).
    ``progress`` shows a tqdm bar labelled ``label``. Returns the per-step mean loss in nats per example.
    """

    def step(index: int, generator: torch.Generator) -> Tensor:
        batch = torch.randint(0, data.shape[0], (batch_size,), generator=generator).to(data.device)
        return beta_vae_loss(model, data[batch], beta)[0].mean()

    return fit(step, steps, optimizer=torch.optim.Adam(model.parameters(), lr=lr), seed=seed, modules=[model],
               label=label, progress=progress)["loss"]


@torch.no_grad()
def evaluate(model: VAE, data: Tensor, k: int = 0, num_elbo_samples: int = 1, generator: torch.Generator | None = None) -> dict[str, float]:
    """Average per-example figures on ``data`` (N, D), in nats.

    Returns {"neg_elbo", "reconstruction_nll", "kl"} (the reconstruction term averaged over
    ``num_elbo_samples`` draws) and, when k > 0, "iwae_nll" = -mean(L_k) and "gap" = neg_elbo - iwae_nll.
    """
    model.eval()
    totals = torch.zeros(3, device=data.device)
    for _ in range(num_elbo_samples):
        neg_elbo, rec, kl = negative_elbo(model, data, generator)
        totals += torch.stack([neg_elbo.mean(), rec.mean(), kl.mean()])
    totals /= num_elbo_samples
    result = {"neg_elbo": totals[0].item(), "reconstruction_nll": totals[1].item(), "kl": totals[2].item()}
    if k > 0:
        result["iwae_nll"] = -iwae_bound(model, data, k, generator).mean().item()
        result["gap"] = result["neg_elbo"] - result["iwae_nll"]
    return result


# --------------------------------------------------------------------------------------------------
# A latent-variable model where everything is exact: the linear-Gaussian model (probabilistic PCA)
# --------------------------------------------------------------------------------------------------
#
#     z ~ N(0, I_d),   x | z ~ N(W z + b, noise_var * I_D),   W: (D, d), b: (D,).
#
# Then p(x) = N(b, W W^T + noise_var I) and the posterior is Gaussian:
#     p(z | x) = N(m, S),   S = (I + W^T W / noise_var)^-1,   m = S W^T (x - b) / noise_var.


def linear_gaussian_log_marginal(x: Tensor, W: Tensor, b: Tensor, noise_var: float) -> Tensor:
    """Exact log p(x) = log N(x; b, W W^T + noise_var I) for x (B, D). Returns (B,)."""
    D = W.shape[0]
    cov = W @ W.T + noise_var * torch.eye(D, dtype=W.dtype, device=W.device)
    return torch.distributions.MultivariateNormal(b, covariance_matrix=cov).log_prob(x)


def linear_gaussian_posterior(x: Tensor, W: Tensor, b: Tensor, noise_var: float) -> tuple[Tensor, Tensor]:
    """Exact posterior p(z|x) = N(mean (B, d), cov (d, d)) of the linear-Gaussian model (cov does not depend on x)."""
    d = W.shape[1]
    precision = torch.eye(d, dtype=W.dtype, device=W.device) + W.T @ W / noise_var
    cov = torch.linalg.inv(precision)
    cov = 0.5 * (cov + cov.T)
    mean = (x - b) @ W @ cov / noise_var                                      # (B, d); cov is symmetric
    return mean, cov


def elbo_linear_gaussian(x: Tensor, q_mean: Tensor, q_cov: Tensor, W: Tensor, b: Tensor, noise_var: float) -> Tensor:
    """The exact ELBO of a Gaussian q(z|x) = N(q_mean, q_cov) in the linear-Gaussian model.

        ELBO = E_q[log p(x|z)] - KL(q || N(0, I)),
        E_q[log p(x|z)] = -D/2 log(2 pi noise_var) - ( ||x - W m - b||^2 + tr(W S W^T) ) / (2 noise_var),
        KL(q || N(0, I)) = 1/2 ( tr S + ||m||^2 - d - log det S ).

    Args:
        x: (B, D); q_mean: (B, d); q_cov: (B, d, d) or (d, d); W: (D, d); b: (D,); noise_var: float > 0.

    Returns:
        (B,) ELBO in nats. It equals log p(x) when q is the exact posterior, and is smaller otherwise,
        by exactly KL(q || p(z|x)).
    """
    D, d = W.shape
    q_cov = q_cov.expand(x.shape[0], d, d)
    residual = x - q_mean @ W.T - b                                           # (B, D)
    trace_wsw = (W @ q_cov @ W.T).diagonal(dim1=-2, dim2=-1).sum(-1)          # (B,)
    expected_log_lik = -0.5 * D * math.log(2 * math.pi * noise_var) - (residual.pow(2).sum(-1) + trace_wsw) / (2 * noise_var)
    kl_prior = 0.5 * (q_cov.diagonal(dim1=-2, dim2=-1).sum(-1) + q_mean.pow(2).sum(-1) - d - torch.linalg.slogdet(q_cov).logabsdet)
    return expected_log_lik - kl_prior


# --------------------------------------------------------------------------------------------------
# Gradient estimators: reparameterization vs the score function (REINFORCE)
# --------------------------------------------------------------------------------------------------
#
# Goal: the gradient of  J(mu, logvar) = E_{z ~ N(mu, diag e^logvar)} [ f(z) ]  with respect to mu.
#     reparameterized:  grad = df/dz (mu + sigma eps)                       (needs f differentiable)
#     score function:   grad = f(z) * d/dmu log q(z) = f(z) (z - mu) / sigma^2   (any f, even a black box)
# Both are unbiased; their variances differ by orders of magnitude.


def reparam_gradient_samples(f: Callable[[Tensor], Tensor], mu: Tensor, logvar: Tensor, n: int,
                             generator: torch.Generator | None = None) -> Tensor:
    """n independent one-sample reparameterized estimates of d/dmu E_q[f(z)].

    f maps (n, d) -> (n,) (one value per sample, differentiable). mu, logvar: (d,). Returns (n, d).
    """
    mu_rep = mu.detach().expand(n, -1).clone().requires_grad_(True)
    z = reparameterize(mu_rep, logvar.detach().expand(n, -1), generator)
    (grad,) = torch.autograd.grad(f(z).sum(), mu_rep)
    return grad


def score_function_gradient_samples(f: Callable[[Tensor], Tensor], mu: Tensor, logvar: Tensor, n: int,
                                    generator: torch.Generator | None = None, baseline: float | Tensor = 0.0) -> Tensor:
    """n independent one-sample score-function (REINFORCE) estimates of d/dmu E_q[f(z)].

        grad = (f(z) - baseline) * (z - mu) / sigma^2,   z ~ q.

    A constant ``baseline`` keeps the estimator unbiased (E[d/dmu log q] = 0) and can reduce its variance.
    f maps (n, d) -> (n,). mu, logvar: (d,). Returns (n, d).
    """
    with torch.no_grad():
        mu_n, logvar_n = mu.expand(n, -1), logvar.expand(n, -1)
        z = reparameterize(mu_n, logvar_n, generator)
        score = (z - mu_n) / logvar_n.exp()
        return (f(z) - baseline).unsqueeze(-1) * score


# --------------------------------------------------------------------------------------------------
# Bayes' rule, the discrete case (the notes' fruit example)
# --------------------------------------------------------------------------------------------------


def bayes_posterior(prior: Tensor, likelihood: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior over discrete causes: p(c | e) = p(e | c) p(c) / sum_c' p(e | c') p(c').

    Args:
        prior: (C,) p(c), sums to 1.
        likelihood: (C,) p(e | c) for the observed evidence e (need not sum to 1).

    Returns:
        (posterior (C,), evidence p(e) as a 0-d tensor).
    """
    joint = prior * likelihood
    evidence = joint.sum()
    return joint / evidence, evidence
