"""The VAE reference against independent oracles: torch.distributions, closed forms, numerical integration."""

import math

import pytest
import torch
from torch.distributions import Bernoulli, MultivariateNormal, Normal, kl_divergence

from gradelib.reference import vae as ref


@pytest.fixture(autouse=True)
def one_thread():
    """These models are tiny: on a shared 2-core machine one thread is much faster than two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_kl_standard_normal_matches_torch_distributions():
    g = gen(0)
    mu, logvar = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    want = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(ref.gaussian_kl_standard_normal(mu, logvar), want, atol=1e-12)
    assert ref.gaussian_kl_standard_normal(torch.zeros(3, 4), torch.zeros(3, 4)).abs().max() == 0


def test_kl_worked_example_from_the_notes():
    """KL(N(1, 1) || N(0, 1)) = 0.5 (the notes get 0.5 despite a sign slip in their working)."""
    assert ref.gaussian_kl_standard_normal(torch.tensor([1.0]), torch.tensor([0.0])).item() == pytest.approx(0.5)


def test_kl_diagonal_and_full_match_torch_distributions():
    g = gen(1)
    mu_q, mu_p = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    lv_q, lv_p = torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    want = kl_divergence(Normal(mu_q, (0.5 * lv_q).exp()), Normal(mu_p, (0.5 * lv_p).exp())).sum(-1)
    assert torch.allclose(ref.gaussian_kl_diagonal(mu_q, lv_q, mu_p, lv_p), want, atol=1e-12)
    A, C = torch.randn(4, 3, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, 3, generator=g, dtype=torch.float64)
    cov_q, cov_p = A @ A.mT + 0.1 * torch.eye(3), C @ C.mT + 0.1 * torch.eye(3)
    want = kl_divergence(MultivariateNormal(mu_q, cov_q), MultivariateNormal(mu_p, cov_p))
    assert torch.allclose(ref.gaussian_kl_full(mu_q, cov_q, mu_p, cov_p), want, atol=1e-9)


def test_log_densities_match_torch_distributions():
    g = gen(2)
    x, mu, logvar = (torch.randn(6, 4, generator=g, dtype=torch.float64) for _ in range(3))
    assert torch.allclose(ref.log_normal_diag(x, mu, logvar), Normal(mu, (0.5 * logvar).exp()).log_prob(x).sum(-1), atol=1e-12)
    assert torch.allclose(ref.log_normal_standard(x), Normal(0.0, 1.0).log_prob(x).sum(-1), atol=1e-12)
    logits = 30 * torch.randn(6, 10, generator=g, dtype=torch.float64)
    bits = (torch.rand(6, 10, generator=g) < 0.5).double()
    assert torch.allclose(ref.bernoulli_log_likelihood(logits, bits), Bernoulli(logits=logits).log_prob(bits).sum(-1), atol=1e-9)
    assert torch.allclose(ref.bernoulli_nll(logits, bits), -ref.bernoulli_log_likelihood(logits, bits))


def test_reparameterize_has_the_right_moments_and_gradients():
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64).expand(200_000, 2)
    logvar = torch.tensor([0.0, math.log(0.25)], dtype=torch.float64).expand(200_000, 2)
    z = ref.reparameterize(mu, logvar, gen(3))
    assert torch.allclose(z.mean(0), torch.tensor([1.0, -2.0], dtype=torch.float64), atol=0.01)
    assert torch.allclose(z.std(0), torch.tensor([1.0, 0.5], dtype=torch.float64), atol=0.01)
    mu1, lv1 = torch.zeros(3, requires_grad=True), torch.zeros(3, requires_grad=True)
    z1 = ref.reparameterize(mu1, lv1, gen(4))
    z1.sum().backward()
    assert torch.equal(mu1.grad, torch.ones(3))
    eps = torch.randn(3, generator=gen(4))
    assert torch.allclose(lv1.grad, 0.5 * eps)
    # The same generator seed gives the same sample.
    assert torch.equal(ref.reparameterize(mu[:5], logvar[:5], gen(7)), ref.reparameterize(mu[:5], logvar[:5], gen(7)))


def test_log_mean_exp_is_stable_and_correct():
    values = torch.tensor([[-1000.0, -1001.0], [-1000.0, -999.0]], dtype=torch.float64)
    want = torch.tensor([-1000 + math.log((1 + math.exp(-1)) / 2), -999.5 + math.log(math.cosh(0.5))], dtype=torch.float64)
    assert torch.allclose(ref.log_mean_exp(values, dim=-1), want, atol=1e-12)
    small = torch.randn(5, 3, generator=gen(5), dtype=torch.float64)
    assert torch.allclose(ref.log_mean_exp(small, 0), small.exp().mean(0).log(), atol=1e-12)


def test_vae_shapes_and_api():
    model = ref.VAE(data_dim=64, latent_dim=3, hidden_dim=32)
    x = (torch.rand(5, 64, generator=gen(6)) < 0.3).float()
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, 3) and model.latent_dim == 3
    logits, mu2, logvar2 = model(x)
    assert logits.shape == (5, 64) and torch.equal(mu, mu2) and torch.equal(logvar, logvar2)
    assert model.decode(torch.zeros(2, 4, 3)).shape == (2, 4, 64)
    samples = model.sample(4, gen(0))
    assert samples.shape == (4, 64) and bool(((samples >= 0) & (samples <= 1)).all())


def test_negative_elbo_decomposes_and_uses_one_sample():
    model = ref.VAE(data_dim=64, latent_dim=2, hidden_dim=32)
    x = (torch.rand(4, 64, generator=gen(8)) < 0.3).float()
    neg_elbo, rec, kl = ref.negative_elbo(model, x, gen(9))
    assert neg_elbo.shape == rec.shape == kl.shape == (4,)
    assert torch.allclose(neg_elbo, rec + kl)
    mu, logvar = model.encode(x)
    z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=gen(9))
    assert torch.allclose(rec, -Bernoulli(logits=model.decode(z)).log_prob(x).sum(-1), atol=1e-5)
    loss, rec_b, kl_b = ref.beta_vae_loss(model, x, beta=4.0, generator=gen(9))
    assert torch.allclose(loss, rec_b + 4.0 * kl_b) and torch.allclose(kl_b, kl)


class _ExactModel(torch.nn.Module):
    """A 1-D latent, 1-pixel "VAE" whose marginal p(x) we can integrate numerically."""

    latent_dim = 1

    def encode(self, x):
        return 0.3 * torch.ones(x.shape[0], 1, dtype=x.dtype), math.log(0.8) * torch.ones(x.shape[0], 1, dtype=x.dtype)

    def decode(self, z):
        return 2.0 * z - 0.5


def test_iwae_bound_approaches_numerically_integrated_log_px_and_sits_above_the_elbo():
    model = _ExactModel()
    x = torch.tensor([[1.0], [0.0]], dtype=torch.float64)
    grid = torch.linspace(-10, 10, 200_001, dtype=torch.float64)[:, None]
    p_one = torch.sigmoid(model.decode(grid))[:, 0]
    prior = Normal(0.0, 1.0).log_prob(grid[:, 0]).exp()
    step = float(grid[1, 0] - grid[0, 0])
    p_x1 = float((p_one * prior).sum() * step)
    log_px = torch.tensor([math.log(p_x1), math.log(1 - p_x1)], dtype=torch.float64)
    iwae = ref.iwae_bound(model, x, k=400_000, generator=gen(10), chunk_size=100_000)
    assert torch.allclose(iwae, log_px, atol=3e-3)
    elbo = torch.stack([-ref.negative_elbo(model, x, gen(s))[0] for s in range(2000)]).mean(0)
    assert bool((elbo < iwae - 1e-3).all())
    # chunking does not change the answer
    assert torch.allclose(ref.iwae_bound(model, x, k=250, generator=gen(11), chunk_size=100),
                          ref.iwae_bound(model, x, k=250, generator=gen(11), chunk_size=250))


def test_linear_gaussian_identity_log_px_equals_elbo_plus_posterior_kl():
    g = gen(12)
    D, d, B, noise_var = 6, 2, 5, 0.7
    W, b = torch.randn(D, d, generator=g, dtype=torch.float64), torch.randn(D, generator=g, dtype=torch.float64)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    log_px = ref.linear_gaussian_log_marginal(x, W, b, noise_var)
    # independent: numerical marginal via Monte Carlo over the prior would be slow; use the joint Gaussian instead
    joint_cov = torch.block_diag(torch.eye(d, dtype=torch.float64), torch.zeros(D, D, dtype=torch.float64))
    joint_cov[d:, :d], joint_cov[:d, d:] = W, W.T
    joint_cov[d:, d:] = W @ W.T + noise_var * torch.eye(D, dtype=torch.float64)
    assert torch.allclose(log_px, MultivariateNormal(b, joint_cov[d:, d:]).log_prob(x), atol=1e-10)
    # Posterior from Gaussian conditioning of the joint: mean = Σ_zx Σ_xx^-1 (x - b), cov = I - Σ_zx Σ_xx^-1 Σ_xz.
    sxx_inv = torch.linalg.inv(joint_cov[d:, d:])
    post_mean_want = (x - b) @ (joint_cov[:d, d:] @ sxx_inv).T
    post_cov_want = torch.eye(d, dtype=torch.float64) - joint_cov[:d, d:] @ sxx_inv @ joint_cov[d:, :d]
    post_mean, post_cov = ref.linear_gaussian_posterior(x, W, b, noise_var)
    assert torch.allclose(post_mean, post_mean_want, atol=1e-10) and torch.allclose(post_cov, post_cov_want, atol=1e-10)
    # ELBO at the posterior is exact; elsewhere it falls short by exactly KL(q || posterior).
    assert torch.allclose(ref.elbo_linear_gaussian(x, post_mean, post_cov, W, b, noise_var), log_px, atol=1e-10)
    q_mean = post_mean + 0.5
    q_cov = torch.diag(torch.tensor([0.3, 1.5], dtype=torch.float64)).expand(B, d, d)
    elbo = ref.elbo_linear_gaussian(x, q_mean, q_cov, W, b, noise_var)
    gap = ref.gaussian_kl_full(q_mean, q_cov, post_mean, post_cov.expand(B, d, d))
    assert bool((gap > 0).all()) and torch.allclose(elbo + gap, log_px, atol=1e-10)


def test_linear_gaussian_elbo_matches_a_monte_carlo_estimate():
    g = gen(13)
    D, d, noise_var = 4, 2, 0.5
    W, b = torch.randn(D, d, generator=g, dtype=torch.float64), torch.randn(D, generator=g, dtype=torch.float64)
    x = torch.randn(1, D, generator=g, dtype=torch.float64)
    q_mean, q_cov = torch.tensor([[0.2, -0.4]], dtype=torch.float64), torch.tensor([[0.5, 0.1], [0.1, 0.3]], dtype=torch.float64)
    q = MultivariateNormal(q_mean[0], q_cov)
    z = q.sample((400_000,))
    log_joint = Normal(z @ W.T + b, math.sqrt(noise_var)).log_prob(x).sum(-1) + Normal(0.0, 1.0).log_prob(z).sum(-1)
    mc = (log_joint - q.log_prob(z)).mean()
    assert ref.elbo_linear_gaussian(x, q_mean, q_cov, W, b, noise_var).item() == pytest.approx(mc.item(), abs=0.02)


def test_gradient_estimators_are_unbiased_and_reparam_has_lower_variance():
    c = torch.tensor([1.0, -1.0], dtype=torch.float64)
    f = lambda z: (z - c).pow(2).sum(-1)  # noqa: E731
    mu, logvar = torch.tensor([0.5, 0.0], dtype=torch.float64), torch.tensor([-1.0, 0.0], dtype=torch.float64)
    exact = 2 * (mu - c)
    rep = ref.reparam_gradient_samples(f, mu, logvar, 100_000, gen(14))
    score = ref.score_function_gradient_samples(f, mu, logvar, 100_000, gen(15))
    assert torch.allclose(rep.mean(0), exact, atol=0.02)
    assert torch.allclose(score.mean(0), exact, atol=0.1)
    assert bool((score.var(0) > 5 * rep.var(0)).all())
    baseline = ref.score_function_gradient_samples(f, mu, logvar, 100_000, gen(15), baseline=f(mu[None]).item() + 1.5)
    assert torch.allclose(baseline.mean(0), exact, atol=0.1) and bool((baseline.var(0) < score.var(0)).all())


def test_bayes_posterior_fruit_example():
    """The notes' fruit example, recomputed: p(x) = 0.208 and banana wins, with apple second."""
    posterior, evidence = ref.bayes_posterior(torch.tensor([0.3, 0.4, 0.2], dtype=torch.float64),
                                              torch.tensor([0.24, 0.15, 0.38], dtype=torch.float64))
    assert evidence.item() == pytest.approx(0.208)
    assert posterior.tolist() == pytest.approx([0.072 / 0.208, 0.060 / 0.208, 0.076 / 0.208])
    assert posterior.argmax().item() == 2 and posterior.argmin().item() == 1


def test_train_vae_is_reproducible_from_its_seed():
    """The minibatches come from ``seed`` (the reparameterization noise from the global RNG, seeded here)."""
    x = (torch.rand(64, 64, generator=gen(20)) < 0.3).float()
    runs = []
    for seed in (3, 3, 4):
        torch.manual_seed(0)
        model = ref.VAE(64, 2, 16)
        runs.append(ref.train_vae(model, x, steps=5, batch_size=8, seed=seed))
        assert len(runs[-1]) == 5 and not model.training
    assert runs[0] == runs[1] != runs[2]


def test_train_vae_reduces_the_loss_and_evaluate_reports_a_positive_iwae_gap():
    torch.manual_seed(0)
    x = (torch.rand(256, 64, generator=gen(16)) < torch.rand(1, 64, generator=gen(17))).float()
    model = ref.VAE(64, 2, 32)
    losses = ref.train_vae(model, x, steps=150, batch_size=64, lr=3e-3, seed=18)
    assert sum(losses[-20:]) / 20 < sum(losses[:20]) / 20
    figures = ref.evaluate(model, x, k=200, num_elbo_samples=4, generator=gen(19))
    assert set(figures) == {"neg_elbo", "reconstruction_nll", "kl", "iwae_nll", "gap"}
    assert figures["gap"] > 0
