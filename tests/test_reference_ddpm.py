"""gradelib.reference.ddpm against independent oracles: diffusers' schedulers, Bayes' rule on
Gaussians, the forward chain iterated step by step, and the closed forms of the schedules."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from gradelib.reference import ddpm

diffusers = pytest.importorskip("diffusers")  # dev extra


def _ddpm_scheduler(betas, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return diffusers.DDPMScheduler(num_train_timesteps=len(betas), trained_betas=betas.double().numpy(),
                                       variance_type="fixed_small", clip_sample=False, prediction_type="epsilon", **kw)


def _ddim_scheduler(betas):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return diffusers.DDIMScheduler(num_train_timesteps=len(betas), trained_betas=betas.double().numpy(),
                                       clip_sample=False, prediction_type="epsilon", set_alpha_to_one=True,
                                       timestep_spacing="trailing")


SCHEDULES = {"linear": ddpm.linear_betas(200), "cosine": ddpm.cosine_betas(200)}


def test_linear_betas_match_paper_and_diffusers():
    betas = ddpm.linear_betas(1000)
    assert betas.dtype == torch.float32 and betas.shape == (1000,)
    assert float(betas[0]) == pytest.approx(1e-4) and float(betas[-1]) == pytest.approx(0.02)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").betas
    torch.testing.assert_close(betas, ref.float(), atol=1e-7, rtol=0)


def test_cosine_betas_match_diffusers_and_closed_form():
    betas = ddpm.cosine_betas(1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").betas
    torch.testing.assert_close(betas, ref.float(), atol=1e-6, rtol=1e-5)
    # alpha_bar_t = f(t) / f(0) wherever the clip at 0.999 is inactive
    T, s = 1000, 0.008
    f = lambda u: math.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2
    ab = ddpm.DDPMSchedule(betas).alpha_bars
    for t in (0, 10, 500, 900):
        assert float(ab[t]) == pytest.approx(f(t + 1) / f(0), rel=1e-4)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_schedule_arrays_match_diffusers(name):
    betas = SCHEDULES[name]
    s, ref = ddpm.DDPMSchedule(betas), _ddpm_scheduler(betas)
    torch.testing.assert_close(s.alphas, ref.alphas.float(), atol=1e-7, rtol=0)
    torch.testing.assert_close(s.alpha_bars, ref.alphas_cumprod.float(), atol=1e-6, rtol=1e-5)
    assert float(s.alpha_bars_prev[0]) == 1.0
    torch.testing.assert_close(s.alpha_bars_prev[1:], s.alpha_bars[:-1])
    for t in (1, 5, 50, 199):
        assert float(s.posterior_variance[t]) == pytest.approx(float(ref._get_variance(t)), rel=1e-4)
    assert float(s.posterior_variance[0]) == 0.0
    # snr is monotone decreasing
    snr = s.snr(torch.arange(s.T))
    assert bool((snr[1:] < snr[:-1]).all())


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_q_sample_matches_diffusers_add_noise(name):
    betas = SCHEDULES[name]
    s, ref = ddpm.DDPMSchedule(betas), _ddpm_scheduler(betas)
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(16, 3, 4, 4, generator=g), torch.randn(16, 3, 4, 4, generator=g)
    t = torch.randint(0, s.T, (16,), generator=g)
    torch.testing.assert_close(s.q_sample(x0, t, noise), ref.add_noise(x0, noise, t).float(), atol=1e-5, rtol=1e-5)


def test_q_sample_matches_the_iterated_chain():
    """Running q(x_t | x_{t-1}) step by step gives N(sqrt(ab) x0, (1 - ab)) at every t."""
    s = ddpm.DDPMSchedule(ddpm.linear_betas(100, 1e-3, 0.05))
    g = torch.Generator().manual_seed(1)
    x0 = torch.full((200_000,), 1.5, dtype=torch.float64)
    x = x0.clone()
    for t in range(s.T):
        x = torch.sqrt(1 - s.betas[t].double()) * x + torch.sqrt(s.betas[t].double()) * torch.randn(x.shape, generator=g, dtype=torch.float64)
        if t in (0, 10, 50, 99):
            ab = float(s.alpha_bars[t])
            assert float(x.mean()) == pytest.approx(math.sqrt(ab) * 1.5, abs=0.01)
            assert float(x.var()) == pytest.approx(1 - ab, abs=0.01)


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_posterior_matches_diffusers_step(name):
    """With the true noise as model output, diffusers' step is a sample from q(x_{t-1} | x_t, x_0)."""
    betas = SCHEDULES[name]
    s, ref = ddpm.DDPMSchedule(betas), _ddpm_scheduler(betas)
    g = torch.Generator().manual_seed(2)
    x0, eps = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g)
    for t in (0, 1, 17, 150, 199):
        tt = torch.full((4,), t)
        x_t = s.q_sample(x0, tt, eps)
        mean, var = s.posterior_mean_variance(x0, x_t, tt)
        assert var.shape == (4, 1)
        out = ref.step(eps, t, x_t, generator=torch.Generator().manual_seed(9))
        z = torch.randn(eps.shape, generator=torch.Generator().manual_seed(9))
        expected = mean + (var.sqrt() * z if t > 0 else 0)
        torch.testing.assert_close(out.prev_sample.float(), expected, atol=1e-3, rtol=1e-3)  # float32 cumprod in diffusers
        torch.testing.assert_close(out.pred_original_sample.float(), x0, atol=1e-3, rtol=1e-3)
        # our own ancestral step is the same sample with the same generator state
        step = s.ddpm_step(eps, t, x_t, generator=torch.Generator().manual_seed(9))
        torch.testing.assert_close(step, expected, atol=1e-3, rtol=1e-3)  # eps-form: float32 cancellation at small t


@pytest.mark.parametrize("name", list(SCHEDULES))
def test_functional_ddpm_step_matches_diffusers_for_both_variances(name):
    """ddpm.ddpm_step with the noise passed in: "beta_tilde" is diffusers' "fixed_small" step, "beta" its "fixed_large"."""
    betas = SCHEDULES[name]
    g = torch.Generator().manual_seed(3)
    x_t, eps = torch.randn(4, 2, generator=g, dtype=torch.float64), torch.randn(4, 2, generator=g, dtype=torch.float64)
    for variance, diffusers_name in (("beta_tilde", "fixed_small"), ("beta", "fixed_large")):
        scheduler = _ddpm_scheduler(betas)
        scheduler.config.variance_type = diffusers_name
        for t in (0, 1, 17, 150, 199):
            out = scheduler.step(eps.float(), t, x_t.float(), generator=torch.Generator().manual_seed(9)).prev_sample
            z = torch.randn(eps.shape, generator=torch.Generator().manual_seed(9)).double()
            mine = ddpm.ddpm_step(x_t, eps, t, betas, z, variance)
            torch.testing.assert_close(mine.float(), out.float(), atol=2e-3, rtol=2e-3)
    with pytest.raises(ValueError):
        ddpm.ddpm_step(x_t, eps, 3, betas, eps, "fixed_large")


def test_posterior_is_bayes_rule():
    """q(x_{t-1} | x_t, x_0) ∝ q(x_t | x_{t-1}) q(x_{t-1} | x_0): product of two Gaussians in x_{t-1}."""
    s = ddpm.DDPMSchedule(ddpm.cosine_betas(50))
    x0, x_t = torch.tensor([[0.7]]), torch.tensor([[-0.3]])
    for t in (1, 10, 49):
        a, b = float(s.alphas[t]), float(s.betas[t])
        abp = float(s.alpha_bars_prev[t])
        # likelihood in x_{t-1}: x_t = sqrt(a) x_{t-1} + sqrt(b) z  -> precision a / b, mean x_t / sqrt(a)
        prec = a / b + 1 / (1 - abp)
        mean = (math.sqrt(a) / b * x_t.item() + math.sqrt(abp) / (1 - abp) * x0.item()) / prec
        m, v = s.posterior_mean_variance(x0, x_t, torch.tensor([t]))
        assert m.item() == pytest.approx(mean, rel=1e-4, abs=1e-6)
        assert v.item() == pytest.approx(1 / prec, rel=1e-4)


def test_eps_form_and_parameterisations_agree():
    s = ddpm.DDPMSchedule(ddpm.linear_betas(100))
    g = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    t = torch.randint(1, 100, (8,), generator=g)
    x_t = s.q_sample(x0, t, eps)
    torch.testing.assert_close(s.predict_x0(x_t, t, eps), x0, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(s.predict_eps(x_t, t, x0), eps, atol=1e-3, rtol=1e-3)
    torch.testing.assert_close(s.eps_posterior_mean(x_t, t, eps), s.posterior_mean_variance(x0, x_t, t)[0], atol=1e-4, rtol=1e-4)
    # score of q(x_t | x0) = -(x_t - sqrt(ab) x0) / (1 - ab), computed by autograd
    xt = x_t.clone().requires_grad_(True)
    ab = s.alpha_bars[t].unsqueeze(1)
    logq = torch.distributions.Normal(ab.sqrt() * x0, (1 - ab).sqrt()).log_prob(xt).sum()
    (score,) = torch.autograd.grad(logq, xt)
    torch.testing.assert_close(s.score_from_eps(x_t, t, eps), score, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_matches_diffusers(eta):
    betas = ddpm.linear_betas(1000)
    s, ref = ddpm.DDPMSchedule(betas), _ddim_scheduler(betas)
    ref.set_timesteps(20)
    assert s.ddim_timesteps(20) == ref.timesteps.tolist()
    w = torch.randn(3, 3, generator=torch.Generator().manual_seed(4)) * 0.3
    model = lambda x, t: torch.tanh(x @ w) * (1 + t.float().unsqueeze(1) / 1000)
    x_T = torch.randn(5, 3, generator=torch.Generator().manual_seed(5))
    g1, g2 = torch.Generator().manual_seed(6), torch.Generator().manual_seed(6)
    ours = ddpm.ddim_sample(model, s, x_T, 20, eta=eta, generator=g1)
    x = x_T
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in ref.timesteps:
            x = ref.step(model(x, torch.full((5,), int(t))), int(t), x, eta=eta, generator=g2).prev_sample
    torch.testing.assert_close(ours, x.float(), atol=1e-4, rtol=1e-4)


def test_ddim_eta1_consecutive_is_ddpm_step():
    s = ddpm.DDPMSchedule(ddpm.linear_betas(50))
    x, eps = torch.randn(6, 2), torch.randn(6, 2)
    for t in (1, 20, 49):
        a = s.ddim_step(eps, t, t - 1, x, eta=1.0, generator=torch.Generator().manual_seed(0))
        b = s.ddpm_step(eps, t, x, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_the_schedule_steps_are_the_functional_steps():
    """One DDIM update: the method is the function ddim_step (eta and its noise included) after clip_x0; and the
    method's ancestral step with variance="beta" is the functional ddpm_step's sigma^2 = beta_t, same noise draw."""
    s = ddpm.DDPMSchedule(ddpm.cosine_betas(60))
    g = torch.Generator().manual_seed(2)
    x, eps = torch.randn(6, 1, 4, 4, generator=g), torch.randn(6, 1, 4, 4, generator=g)
    for t, t_prev, eta in ((40, 30, 0.0), (40, 30, 0.7), (5, -1, 1.0)):
        method = s.ddim_step(eps, t, t_prev, x, eta=eta, generator=torch.Generator().manual_seed(9))
        function = ddpm.ddim_step(x, eps, t, t_prev, s.alpha_bars, eta=eta, generator=torch.Generator().manual_seed(9))
        assert torch.equal(method, function)
    clipped = s.predict_eps(x, 40, s.predict_x0(x, 40, eps).clamp(-1, 1))
    assert torch.equal(s.ddim_step(eps, 40, 30, x, clip_x0=1.0), ddpm.ddim_step(x, clipped, 40, 30, s.alpha_bars))
    for t in (0, 1, 59):
        noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(t))
        want = ddpm.ddpm_step(x.double(), eps.double(), t, s.betas, noise.double(), variance="beta")
        got = s.ddpm_step(eps, t, x, generator=torch.Generator().manual_seed(t), variance="beta")
        torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="variance"):
        s.ddpm_step(eps, 3, x, variance="sigma")


def test_ddpm_sample_with_beta_variance_is_the_plain_ancestral_loop():
    """The sampler notebook 05 once wrote out: sigma_t^2 = beta_t, noise drawn for t = T-1 .. 1 from one generator."""
    betas = torch.linspace(1e-4, 0.1, 30)
    s = ddpm.DDPMSchedule(betas)
    model = lambda x, t: torch.tanh(x) * (1 + t.float().unsqueeze(1) / 30)
    rng = torch.Generator().manual_seed(1)
    x = torch.randn(9, 2, generator=rng)
    ours = ddpm.ddpm_sample(model, s, x, generator=rng, variance="beta")
    rng = torch.Generator().manual_seed(1)
    x = torch.randn(9, 2, generator=rng)
    for t in reversed(range(30)):
        eps_hat = model(x, torch.full((9,), t))
        x = (x - s.betas[t] / (1 - s.alpha_bars[t]).sqrt() * eps_hat) / s.alphas[t].sqrt()
        if t > 0:
            x = x + s.betas[t].sqrt() * torch.randn(9, 2, generator=rng)
    torch.testing.assert_close(ours, x, atol=1e-6, rtol=1e-6)


def test_ddpm_sample_with_exact_eps_recovers_a_point_mass():
    """For data = a single point c, the exact eps is (x_t - sqrt(ab) c) / sqrt(1 - ab): both samplers land on c."""
    s = ddpm.DDPMSchedule(ddpm.linear_betas(100))
    c = torch.tensor([1.0, -2.0])
    model = lambda x, t: s.predict_eps(x, t, c.expand_as(x))
    x_T = torch.randn(7, 2, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ddpm.ddpm_sample(model, s, x_T, generator=torch.Generator().manual_seed(1)), c.expand(7, 2), atol=1e-3, rtol=0)
    torch.testing.assert_close(ddpm.ddim_sample(model, s, x_T, 10), c.expand(7, 2), atol=1e-3, rtol=0)


def test_ddim_sample_t_start_and_callback():
    s = ddpm.DDPMSchedule(ddpm.linear_betas(100))
    seen = []
    model = lambda x, t: torch.zeros_like(x)

    def cb(x, t_prev):
        seen.append(t_prev)
        return x

    ddpm.ddim_sample(model, s, torch.randn(2, 3), 5, t_start=40, callback=cb)
    assert seen[-1] == -1 and len(seen) == 5
    assert s.ddim_timesteps(5, 40)[0] == 40


def test_schedule_to_and_validation():
    s = ddpm.DDPMSchedule(ddpm.linear_betas(10)).to("cpu")
    assert s.T == 10 and s.betas.device.type == "cpu"
    with pytest.raises(ValueError):
        ddpm.DDPMSchedule(torch.tensor([0.1, 1.0]))


def test_clipped_sampling_matches_diffusers_clip_sample():
    """clip_x0 = 1 is diffusers' clip_sample=True, for the DDPM step and for DDIM."""
    betas = ddpm.linear_betas(100, 1e-3, 0.2)
    s = ddpm.DDPMSchedule(betas)
    x, eps = 3 * torch.randn(6, 4, generator=torch.Generator().manual_seed(0)), torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = diffusers.DDPMScheduler(num_train_timesteps=100, trained_betas=betas.double().numpy(), variance_type="fixed_small",
                                      clip_sample=True, clip_sample_range=1.0, prediction_type="epsilon")
        for t in (0, 30, 99):
            want = ref.step(eps, t, x, generator=torch.Generator().manual_seed(3)).prev_sample
            got = s.ddpm_step(eps, t, x, generator=torch.Generator().manual_seed(3), clip_x0=1.0)
            torch.testing.assert_close(got, want.float(), atol=1e-4, rtol=1e-4)
        ddim = diffusers.DDIMScheduler(num_train_timesteps=100, trained_betas=betas.double().numpy(), clip_sample=True,
                                       clip_sample_range=1.0, set_alpha_to_one=True, timestep_spacing="trailing")
        ddim.set_timesteps(10)
        steps = ddim.timesteps.tolist()
        for i, t in enumerate(steps):
            t_prev = steps[i + 1] if i + 1 < len(steps) else -1
            want = ddim.step(eps, t, x, eta=0.0, use_clipped_model_output=True).prev_sample
            got = s.ddim_step(eps, t, t_prev, x, clip_x0=1.0)
            torch.testing.assert_close(got, want.float(), atol=1e-4, rtol=1e-4)


def test_simple_loss_is_the_mse_on_the_noise_it_drew():
    ab = ddpm.DDPMSchedule(ddpm.linear_betas(50)).alpha_bars
    x0 = torch.randn(8, 3)
    seen = {}

    def model(x_t, t):
        seen["x_t"], seen["t"] = x_t, t
        return torch.zeros_like(x_t)

    loss = ddpm.simple_loss(model, x0, ab, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    t = torch.randint(0, 50, (8,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    assert torch.equal(seen["t"], t)
    torch.testing.assert_close(seen["x_t"], ddpm.q_sample(x0, t, noise, ab))
    torch.testing.assert_close(loss, (noise**2).mean())


def test_gaussian_elbo_closed_form_against_monte_carlo_and_exact_likelihood():
    betas = ddpm.linear_betas(60, 1e-3, 0.25).double()
    x0 = torch.tensor([-0.5, 0.3, 1.8], dtype=torch.float64)
    for m_hat, s_hat in ((0.3, 0.7), (1.0, 0.4)):
        terms = ddpm.gaussian_elbo_terms(x0, betas, m_hat, s_hat)
        mc = ddpm.chain_nelbo_monte_carlo(x0.repeat_interleave(20_000), betas, m_hat, s_hat,
                                          generator=torch.Generator().manual_seed(0)).view(3, -1)
        se = mc.std(1) / math.sqrt(mc.shape[1])
        assert bool(((terms["nelbo"] - mc.mean(1)).abs() < 5 * se + 1e-4).all())
        # the bound holds against the exact model likelihood
        M, V = ddpm.gaussian_model_marginal(betas, m_hat, s_hat)
        nll = -torch.distributions.Normal(M, math.sqrt(V)).log_prob(x0)
        assert bool((terms["nelbo"] >= nll - 1e-9).all())
        # L = const + w * mse, and the per-step L_{t-1} terms are KLs: non-negative
        torch.testing.assert_close(terms["L"], terms["const"] + terms["weights"] * terms["mse"])
        assert bool((terms["L"][:, 1:] >= 0).all())


def test_gaussian_model_marginal_by_sampling():
    betas = ddpm.linear_betas(40, 1e-3, 0.3)
    s = ddpm.DDPMSchedule(betas)
    m_hat, s_hat = 0.7, 0.5
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200_000, 1, generator=g, dtype=torch.float64)
    ab = s.alpha_bars.double()
    for t in range(s.T - 1, -1, -1):
        tt = torch.full((len(x),), t)
        eps = ddpm.gaussian_eps_predictor(x, tt, ab, m_hat, s_hat)
        mean = (x - s.betas[t].double() / (1 - ab[t]).sqrt() * eps) / s.alphas[t].double().sqrt()
        x = mean + s.betas[t].double().sqrt() * torch.randn(x.shape, generator=g, dtype=torch.float64)
    M, V = ddpm.gaussian_model_marginal(betas, m_hat, s_hat)
    assert float(x.mean()) == pytest.approx(M, abs=0.01)
    assert float(x.var()) == pytest.approx(V, rel=0.01)


def test_eps_mlp_shapes_and_sliced_wasserstein():
    model = ddpm.EpsMLP(data_dim=64, hidden=32, depth=2, emb_dim=16, num_classes=10)
    x, t = torch.randn(5, 1, 8, 8), torch.randint(0, 100, (5,))
    assert model(x, t, torch.arange(5)).shape == x.shape
    assert model(x, t).shape == x.shape  # no label: the extra "null" class
    a = torch.randn(500, 2, generator=torch.Generator().manual_seed(0))
    assert ddpm.sliced_wasserstein(a, a.clone()) == 0.0
    shifted = ddpm.sliced_wasserstein(a, a + torch.tensor([3.0, 0.0]), num_projections=2000, generator=torch.Generator().manual_seed(1))
    assert shifted == pytest.approx(3 * 2 / math.pi, rel=0.05)  # E|u_1| for a random unit vector in 2-D is 2/pi
