"""Reference code for notebook 06: denoising diffusion probabilistic models (Ho et al., 2020).

Index convention (the same as diffusers). Code timesteps are 0-based, ``t = 0 .. T-1``; code ``t``
is the paper's ``t + 1``. So ``x_t`` in code is the paper's ``x_{t+1}``, and the last denoising step
(code ``t = 0``) produces ``x_0``, the data. With ``alphas = 1 - betas``:

    alpha_bars[t]      = prod_{s <= t} alphas[s]                       (paper: alpha_bar_{t+1})
    alpha_bars_prev[t] = alpha_bars[t - 1],  alpha_bars_prev[0] = 1    (paper: alpha_bar_t)

The forward process and its closed form (paper indices):

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)
    q(x_t | x_0)     = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I)

The posterior, Gaussian because everything is linear-Gaussian:

    q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t I)
    mu_tilde_t   = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
                 + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
                 = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t)      (eps-form)
    beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t

Timestep arguments are LongTensors of shape ``(B,)`` (batched operations) or Python ints (single
sampling steps). Per-timestep coefficients are reshaped to ``(B, 1, ..., 1)`` so they broadcast over
``x`` of shape ``(B, ...)`` (2-D points, images, latents).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from gradelib.training import progress_bar

EpsModel = Callable[[Tensor, Tensor], Tensor]
"""``eps_model(x_t, t_batch)`` -> eps_hat, the same shape as ``x_t``; ``t_batch`` is a LongTensor (B,)."""

# -----------------------------------------------------------------------------------------------
# Noise schedules


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> Tensor:
    """The linear schedule of Ho et al. (2020): ``T`` betas evenly spaced from beta_start to beta_end.

    Returns (T,) float32. With T = 1000 these are the paper's values.
    """
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64).float()


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """The cosine schedule of Nichol & Dhariwal (2021), (T,) float32.

    alpha_bar(u) = f(u) / f(0) with f(u) = cos^2((u / T + s) / (1 + s) * pi / 2), u = 0..T, and
    beta_t = 1 - alpha_bar(t) / alpha_bar(t - 1), clipped at max_beta (the last betas would reach 1).
    This is diffusers' ``betas_for_alpha_bar(..., alpha_transform_type="cosine")``.
    """
    u = torch.arange(T + 1, dtype=torch.float64)
    f = torch.cos((u / T + s) / (1 + s) * math.pi / 2) ** 2
    betas = 1 - f[1:] / f[:-1]
    return betas.clamp(max=max_beta).float()


def _expand(values: Tensor, t: Tensor | int, x: Tensor) -> Tensor:
    """values[t] reshaped to broadcast against x of shape (B, ...): (B, 1, ..., 1), or a 0-d tensor for int t."""
    if isinstance(t, int):
        return values[t].to(x.dtype)
    t = t.to(values.device).long()
    return values[t].to(x.dtype).reshape(-1, *([1] * (x.dim() - 1)))


# -----------------------------------------------------------------------------------------------
# The exercises' functional forms: plain tensors in, no schedule object (the class methods call these)


def q_sample(x0: Tensor, t: Tensor, noise: Tensor, alpha_bars: Tensor) -> Tensor:
    """x_t = sqrt(alpha_bars[t]) x0 + sqrt(1 - alpha_bars[t]) noise, a sample of q(x_t | x_0).

    x0, noise: (B, ...); t: LongTensor (B,) of code timesteps; alpha_bars: (T,). Returns (B, ...).
    """
    ab = _expand(alpha_bars, t, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def posterior_mean_variance(x0: Tensor, x_t: Tensor, t: Tensor, betas: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (B, ...) and variance (B, 1, ..., 1) of q(x_{t-1} | x_t, x_0), from the betas (T,) alone."""
    return DDPMSchedule(betas.to(x_t.device)).posterior_mean_variance(x0, x_t, t)


def predict_x0(x_t: Tensor, t: Tensor, eps: Tensor, alpha_bars: Tensor) -> Tensor:
    """Invert q_sample for x0: (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t). x_t, eps: (B, ...); t: (B,)."""
    ab = _expand(alpha_bars, t, x_t)
    return (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()


def ddim_step(x_t: Tensor, eps_hat: Tensor, t: int, t_prev: int, alpha_bars: Tensor, *,
              eta: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """One DDIM step x_t -> x_{t_prev} (Song et al., 2021, eq. 12); eta = 0 (the default) is deterministic.

        x0_hat = predict_x0(x_t, t, eps_hat),
        sigma  = eta * sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)),
        x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z,   z ~ N(0, I).

    t, t_prev: ints with t_prev < t; t_prev = -1 means the final step to x_0 (ab_prev = 1, an empty product,
    and no noise). eta = 1 with consecutive steps is DDPM's ancestral step; z is drawn with ``generator``.
    x_t, eps_hat: (B, ...); alpha_bars: (T,). Returns (B, ...).
    """
    ab_prev = alpha_bars[t_prev].to(x_t.dtype) if t_prev >= 0 else torch.ones((), dtype=x_t.dtype, device=x_t.device)
    x0_hat = predict_x0(x_t, t, eps_hat, alpha_bars)
    if eta == 0:
        return ab_prev.sqrt() * x0_hat + (1 - ab_prev).sqrt() * eps_hat
    ab = alpha_bars[t].to(x_t.dtype)
    sigma = eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp(min=0).sqrt()
    x_prev = ab_prev.sqrt() * x0_hat + (1 - ab_prev - sigma**2).clamp(min=0).sqrt() * eps_hat
    if eta > 0 and t_prev >= 0:
        x_prev = x_prev + sigma * _noise_like(x_t, generator)
    return x_prev


def ddpm_step(x_t: Tensor, eps_hat: Tensor, t: int, betas: Tensor, noise: Tensor, variance: str = "beta_tilde") -> Tensor:
    """One ancestral DDPM step x_t -> x_{t-1} = mu_theta(x_t, t) + sigma_t * noise at code step ``t`` (an int).

    mu_theta = (x_t - beta_t / sqrt(1 - ab_t) eps_hat) / sqrt(alpha_t), the eps-form of the posterior mean;
    sigma_t^2 = beta_t (``variance="beta"``) or beta_tilde_t = (1 - ab_{t-1}) / (1 - ab_t) beta_t (``"beta_tilde"``,
    the posterior's variance). At t == 0 (the step to x_0) no noise is added. x_t, eps_hat, noise: (B, ...);
    betas: (T,). The products are taken in float64 and the result has x_t's dtype.
    """
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f'variance must be "beta" or "beta_tilde", got {variance!r}')
    betas64 = betas.detach().double().cpu()
    alpha_bars = torch.cumprod(1 - betas64, 0)
    beta, ab = float(betas64[t]), float(alpha_bars[t])
    ab_prev = float(alpha_bars[t - 1]) if t >= 1 else 1.0
    mean = (x_t - beta / math.sqrt(1 - ab) * eps_hat) / math.sqrt(1 - beta)
    if t == 0:
        return mean
    sigma2 = beta if variance == "beta" else (1 - ab_prev) / (1 - ab) * beta
    return mean + math.sqrt(sigma2) * noise


def simple_loss(eps_model: EpsModel, x0: Tensor, alpha_bars: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Ho et al.'s L_simple on a batch: E_{t, eps} ||eps - eps_model(x_t, t)||^2, as a mean over all elements.

    t ~ Uniform{0, ..., T-1} (one per example, drawn first), then eps ~ N(0, I) of x0's shape (both with
    ``generator``, on the CPU, then moved to x0's device); x_t = q_sample(x0, t, eps). Returns a scalar.
    """
    T = alpha_bars.shape[0]
    t = torch.randint(0, T, (x0.shape[0],), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device, x0.dtype)
    x_t = q_sample(x0, t, noise, alpha_bars.to(x0.device))
    return ((eps_model(x_t, t) - noise) ** 2).mean()


def _noise_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like x, drawn on the generator's own device (a CPU generator stays usable
    for a GPU tensor, where torch.randn(..., device="cuda", generator=cpu_generator) raises)."""
    device = generator.device if generator is not None else x.device
    return torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)


class DDPMSchedule:
    """The DDPM noise schedule and the closed forms built on it. Pure math: no parameters, no nn.Module.

    Attributes, each (T,) float32 on the schedule's device: ``betas``, ``alphas = 1 - betas``,
    ``alpha_bars`` (cumulative product), ``alpha_bars_prev`` (shifted right, first entry 1) and
    ``posterior_variance`` = beta_tilde = (1 - alpha_bars_prev) / (1 - alpha_bars) * betas
    (0 at t = 0: the last step is deterministic given x_0). Products are taken in float64.
    """

    def __init__(self, betas: Tensor):
        betas64 = torch.as_tensor(betas).detach().double().reshape(-1)
        if betas64.numel() == 0 or bool((betas64 <= 0).any()) or bool((betas64 >= 1).any()):
            raise ValueError("betas must be a non-empty 1-D tensor with every entry in (0, 1)")
        alphas64 = 1 - betas64
        alpha_bars64 = torch.cumprod(alphas64, dim=0)
        prev64 = torch.cat([torch.ones(1, dtype=torch.float64, device=betas64.device), alpha_bars64[:-1]])
        self.T: int = int(betas64.numel())
        self.betas = betas64.float()
        self.alphas = alphas64.float()
        self.alpha_bars = alpha_bars64.float()
        self.alpha_bars_prev = prev64.float()
        self.posterior_variance = ((1 - prev64) / (1 - alpha_bars64) * betas64).float()

    def to(self, device) -> "DDPMSchedule":
        """A copy of the schedule with every tensor on ``device``."""
        other = object.__new__(DDPMSchedule)
        other.T = self.T
        for name in ("betas", "alphas", "alpha_bars", "alpha_bars_prev", "posterior_variance"):
            setattr(other, name, getattr(self, name).to(device))
        return other

    def __repr__(self) -> str:
        return (f"DDPMSchedule(T={self.T}, beta_1={float(self.betas[0]):.3g}, beta_T={float(self.betas[-1]):.3g}, "
                f"alpha_bar_T={float(self.alpha_bars[-1]):.3g})")

    # --- forward process ------------------------------------------------------------------------

    def snr(self, t: Tensor | int) -> Tensor:
        """Signal-to-noise ratio alpha_bar_t / (1 - alpha_bar_t) of q(x_t | x_0), same shape as t."""
        ab = self.alpha_bars[t] if isinstance(t, int) else self.alpha_bars[torch.as_tensor(t, device=self.alpha_bars.device).long()]
        return ab / (1 - ab)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        """Sample x_t ~ q(x_t | x_0) by reparameterisation: sqrt(ab_t) x0 + sqrt(1 - ab_t) noise.

        x0, noise: (B, ...); t: LongTensor (B,) of code timesteps (or an int). Returns (B, ...).
        """
        return q_sample(x0, t, noise, self.alpha_bars)

    # --- posterior and the three parameterisations --------------------------------------------

    def posterior_mean_variance(self, x0: Tensor, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of q(x_{t-1} | x_t, x_0) (code indices: the step from t to t - 1).

        x0, x_t: (B, ...); t: LongTensor (B,). Returns (mean (B, ...), variance (B, 1, ..., 1)).
        mean = sqrt(ab_prev) beta / (1 - ab) x0 + sqrt(alpha) (1 - ab_prev) / (1 - ab) x_t,
        variance = beta_tilde = (1 - ab_prev) / (1 - ab) beta. At t = 0 the mean is x0, the variance 0.
        """
        ab = _expand(self.alpha_bars, t, x_t)
        ab_prev = _expand(self.alpha_bars_prev, t, x_t)
        beta = _expand(self.betas, t, x_t)
        alpha = _expand(self.alphas, t, x_t)
        coef_x0 = ab_prev.sqrt() * beta / (1 - ab)
        coef_xt = alpha.sqrt() * (1 - ab_prev) / (1 - ab)
        mean = coef_x0 * x0 + coef_xt * x_t
        variance = _expand(self.posterior_variance, t, x_t)
        return mean, variance

    def predict_x0(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """Invert q_sample for x0: (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t). Shapes (B, ...)."""
        return predict_x0(x_t, t, eps, self.alpha_bars)

    def predict_eps(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """Invert q_sample for the noise: (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t). Shapes (B, ...)."""
        ab = _expand(self.alpha_bars, t, x_t)
        return (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()

    def score_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """The score of q(x_t | x_0) (and, with eps_hat, of the model's marginal): -eps / sqrt(1 - ab_t)."""
        ab = _expand(self.alpha_bars, t, x_t)
        return -eps / (1 - ab).sqrt()

    def eps_posterior_mean(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """The eps-form of mu_tilde: (x_t - beta_t / sqrt(1 - ab_t) eps) / sqrt(alpha_t). Shapes (B, ...)."""
        ab = _expand(self.alpha_bars, t, x_t)
        beta = _expand(self.betas, t, x_t)
        alpha = _expand(self.alphas, t, x_t)
        return (x_t - beta / (1 - ab).sqrt() * eps) / alpha.sqrt()

    # --- samplers -------------------------------------------------------------------------------

    def _clipped_eps(self, eps_hat: Tensor, t: int, x_t: Tensor, clip_x0: float | None) -> Tensor:
        """eps_hat made consistent with x0_hat clipped to [-clip_x0, clip_x0] (diffusers' ``clip_sample``)."""
        if clip_x0 is None:
            return eps_hat
        x0_hat = self.predict_x0(x_t, t, eps_hat).clamp(-clip_x0, clip_x0)
        return self.predict_eps(x_t, t, x0_hat)

    def ddpm_step(self, eps_hat: Tensor, t: int, x_t: Tensor, generator: torch.Generator | None = None,
                  clip_x0: float | None = None, variance: str = "beta_tilde") -> Tensor:
        """One ancestral step x_t -> x_{t-1} ~ N(mu_theta, sigma_t^2 I), mu_theta the eps-form of mu_tilde.

        t: int code timestep; eps_hat, x_t: (B, ...). At t == 0 no noise is added (returns the mean).
        sigma_t^2 is the posterior variance beta_tilde (``variance="beta_tilde"``) or beta_t (``"beta"``);
        Ho et al. found both equally good.
        clip_x0: if set, the implied x0_hat is clipped to [-clip_x0, clip_x0] first (data known to lie there).
        """
        if variance not in ("beta", "beta_tilde"):
            raise ValueError(f'variance must be "beta" or "beta_tilde", got {variance!r}')
        eps_hat = self._clipped_eps(eps_hat, t, x_t, clip_x0)
        mean = self.eps_posterior_mean(x_t, t, eps_hat)
        if t == 0:
            return mean
        noise = _noise_like(x_t, generator)
        sigma2 = self.betas[t] if variance == "beta" else self.posterior_variance[t]
        return mean + sigma2.to(x_t.dtype).sqrt() * noise

    def ddim_step(self, eps_hat: Tensor, t: int, t_prev: int, x_t: Tensor, eta: float = 0.0,
                  generator: torch.Generator | None = None, clip_x0: float | None = None) -> Tensor:
        """One DDIM step x_t -> x_{t_prev}: the function :func:`ddim_step` on this schedule. t_prev == -1: to x_0.

        clip_x0: if set, x0_hat is clipped to [-clip_x0, clip_x0] and eps_hat recomputed from it (diffusers' clip_sample
        with use_clipped_model_output=True).
        """
        eps_hat = self._clipped_eps(eps_hat, t, x_t, clip_x0)
        return ddim_step(x_t, eps_hat, t, t_prev, self.alpha_bars, eta=eta, generator=generator)

    def ddim_timesteps(self, num_steps: int, t_start: int | None = None) -> list[int]:
        """``num_steps`` code timesteps, descending, evenly spaced, starting at t_start (default T - 1).

        The spacing is diffusers' ``timestep_spacing="trailing"``: for T = 1000 and 20 steps, 999, 949, ..., 49.
        The sampler's last step goes from the smallest of them to x_0 (t_prev = -1, alpha_bar = 1).
        """
        start = self.T - 1 if t_start is None else int(t_start)
        if not 0 <= start < self.T:
            raise ValueError(f"t_start must be in 0..{self.T - 1}, got {start}")
        num_steps = max(1, min(int(num_steps), start + 1))
        # diffusers' "trailing" spacing: round(arange(start + 1, 0, -(start + 1) / n)) - 1.
        ratio = (start + 1) / num_steps
        steps = [int(round(start + 1 - i * ratio)) - 1 for i in range(num_steps)]
        out: list[int] = []
        for s in steps:
            if not out or s < out[-1]:
                out.append(s)
        return out


# -----------------------------------------------------------------------------------------------
# Samplers


def _batch_t(t: int, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


@torch.no_grad()
def ddpm_sample(eps_model: EpsModel, schedule: DDPMSchedule, x_T: Tensor, *,
                generator: torch.Generator | None = None, progress: bool = False, clip_x0: float | None = None,
                variance: str = "beta_tilde") -> Tensor:
    """Ancestral sampling: T steps, t = T-1 .. 0, from x_T (B, ...) ~ N(0, I). Returns x_0 (B, ...).

    clip_x0: clip each step's implied x0_hat to [-clip_x0, clip_x0] (e.g. 1.0 for images scaled to [-1, 1]).
    variance: sigma_t^2 of each step, "beta_tilde" (the posterior's) or "beta" (see DDPMSchedule.ddpm_step).
    The noise of the steps t = T-1 .. 1 is drawn from ``generator`` in that order.
    """
    schedule = schedule.to(x_T.device)
    x = x_T
    for t in progress_bar(range(schedule.T - 1, -1, -1), progress, "DDPM", leave=False):
        eps_hat = eps_model(x, _batch_t(t, x))
        x = schedule.ddpm_step(eps_hat, t, x, generator=generator, clip_x0=clip_x0, variance=variance)
    return x


@torch.no_grad()
def ddim_sample(eps_model: EpsModel, schedule: DDPMSchedule, x_T: Tensor, num_steps: int = 20, *,
                eta: float = 0.0, t_start: int | None = None, generator: torch.Generator | None = None,
                progress: bool = False, callback: Callable[[Tensor, int], Tensor] | None = None,
                clip_x0: float | None = None) -> Tensor:
    """DDIM sampling with ``num_steps`` evaluations of eps_model, from x_T at code step t_start (default T-1).

    t_start lets SDEdit start from a partly noised image; callback(x, t_prev) -> x runs after every
    step (inpainting re-imposes the known region there); clip_x0 as in ddpm_sample. Returns x_0 (B, ...).
    """
    schedule = schedule.to(x_T.device)
    steps = schedule.ddim_timesteps(num_steps, t_start)
    x = x_T
    for i in progress_bar(range(len(steps)), progress, "DDIM", leave=False):
        t = steps[i]
        t_prev = steps[i + 1] if i + 1 < len(steps) else -1
        eps_hat = eps_model(x, _batch_t(t, x))
        x = schedule.ddim_step(eps_hat, t, t_prev, x, eta=eta, generator=generator, clip_x0=clip_x0)
        if callback is not None:
            x = callback(x, t_prev)
    return x


# -----------------------------------------------------------------------------------------------
# The ELBO in closed form for 1-D Gaussian data
#
# Data x0 ~ N(m, s^2). The "model" is the exact noise predictor of Gaussian data N(m_hat, s_hat^2),
#     eps_theta(x_t, t) = E[eps | x_t] = k_t (x_t - a_t m_hat),  a_t = sqrt(ab_t), b_t = sqrt(1 - ab_t),
#     k_t = b_t / (a_t^2 s_hat^2 + b_t^2),
# and the reverse variances are sigma_t^2 = beta_t (Ho et al.'s "fixed large" choice, which keeps the
# decoder p_theta(x0 | x1) non-degenerate: beta_tilde is 0 at the first step). Then every term is closed-form.


def gaussian_eps_predictor(x_t: Tensor, t: Tensor, alpha_bars: Tensor, mean: float, std: float) -> Tensor:
    """E[eps | x_t] when x0 ~ N(mean, std^2): k_t (x_t - sqrt(ab_t) mean). x_t: (B, ...), t: (B,)."""
    ab = _expand(alpha_bars, t, x_t)
    k = (1 - ab).sqrt() / (ab * std**2 + 1 - ab)
    return k * (x_t - ab.sqrt() * mean)


def gaussian_elbo_terms(x0: Tensor, betas: Tensor, model_mean: float, model_std: float) -> dict[str, Tensor]:
    """Every term of the negative ELBO -log p(x0) <= L_T + sum_{t>=2} L_{t-1} + L_0, in nats, for each x0.

    x0: (N,) data points; betas: (T,). The model is gaussian_eps_predictor(model_mean, model_std) with
    sigma_t^2 = beta_t. Returns float64 tensors (code index t = paper t + 1):
        "L_T":     (N,)   KL(q(x_T | x0) || N(0, 1)), no trainable parameters
        "L":       (N, T) column 0 is L_0 = -E log p_theta(x0 | x1); column t >= 1 is
                          L_{t} (paper L_{t-1} at paper step t+1) = E KL(q(x_{t-1} | x_t, x0) || p_theta(x_{t-1} | x_t))
        "mse":     (N, T) E_eps (eps - eps_theta(x_t, t))^2, the per-step L_simple term
        "weights": (T,)   w_t = beta_t / (2 alpha_t (1 - ab_t)): L[:, t] = const[t] + weights[t] * mse[:, t]
        "const":   (T,)   const[0] = log(2 pi beta_0) / 2; const[t] = KL of the variance mismatch beta_tilde vs beta
        "nelbo":   (N,)   L_T + L.sum(1)
    """
    x0 = x0.double().reshape(-1, 1)
    betas = betas.double()
    alphas = 1 - betas
    ab = torch.cumprod(alphas, 0)
    abp = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
    a, b = ab.sqrt(), (1 - ab).sqrt()
    k = b / (ab * model_std**2 + 1 - ab)
    mse = (1 - k * b) ** 2 + (k * a) ** 2 * (x0 - model_mean) ** 2          # (N, T)
    weights = betas / (2 * alphas * (1 - ab))
    ratio = ((1 - abp) / (1 - ab) * betas) / betas                           # beta_tilde / beta
    const = 0.5 * (ratio - 1 - torch.log(ratio.clamp(min=1e-300)))
    const[0] = 0.5 * math.log(2 * math.pi) + 0.5 * torch.log(betas[0])
    L = const + weights * mse
    L_T = 0.5 * ((1 - ab[-1]) + ab[-1] * x0[:, 0] ** 2 - 1 - torch.log(1 - ab[-1]))
    return {"L_T": L_T, "L": L, "mse": mse, "weights": weights, "const": const, "nelbo": L_T + L.sum(1)}


def gaussian_model_marginal(betas: Tensor, model_mean: float, model_std: float) -> tuple[float, float]:
    """Mean and variance of p_theta(x0) for the model of gaussian_elbo_terms (a linear-Gaussian chain).

    x_T ~ N(0, 1); x_{t-1} = mu_theta(x_t) + sqrt(beta_t) z with mu_theta affine in x_t, so each step maps
    (M, V) -> (A M + B, A^2 V + beta_t).
    """
    betas = betas.double()
    alphas = 1 - betas
    ab = torch.cumprod(alphas, 0)
    M, V = 0.0, 1.0
    for t in range(len(betas) - 1, -1, -1):
        a, b, beta, alpha = float(ab[t].sqrt()), float((1 - ab[t]).sqrt()), float(betas[t]), float(alphas[t])
        k = b / (a * a * model_std**2 + b * b)
        A = (1 - beta * k / b) / math.sqrt(alpha)
        B = beta * k * a * model_mean / b / math.sqrt(alpha)
        M, V = A * M + B, A * A * V + beta
    return M, V


def chain_nelbo_monte_carlo(x0: Tensor, betas: Tensor, model_mean: float, model_std: float,
                            generator: torch.Generator | None = None) -> Tensor:
    """One-sample Monte Carlo estimate, per x0 (N,), of the *undecomposed* negative ELBO
    -[log p(x_T) + sum_t log p_theta(x_{t-1} | x_t) - sum_t log q(x_t | x_{t-1})] along a forward chain."""
    x0 = x0.double().reshape(-1)
    betas = betas.double()
    alphas = 1 - betas
    ab = torch.cumprod(alphas, 0)
    normal_logpdf = lambda x, m, v: -0.5 * (math.log(2 * math.pi) + torch.log(v) + (x - m) ** 2 / v)  # noqa: E731
    xs = [x0]
    log_q = torch.zeros_like(x0)
    for t in range(len(betas)):
        x_next = alphas[t].sqrt() * xs[-1] + betas[t].sqrt() * torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        log_q = log_q + normal_logpdf(x_next, alphas[t].sqrt() * xs[-1], betas[t])
        xs.append(x_next)
    log_p = normal_logpdf(xs[-1], torch.zeros(()), torch.ones((), dtype=torch.float64))
    for t in range(len(betas)):                              # p_theta(x_{t} | x_{t+1}) in list indices
        x_t = xs[t + 1]
        tt = torch.full((len(x0),), t, dtype=torch.long)
        eps = gaussian_eps_predictor(x_t, tt, ab, model_mean, model_std)
        mu = (x_t - betas[t] / (1 - ab[t]).sqrt() * eps) / alphas[t].sqrt()
        log_p = log_p + normal_logpdf(xs[t], mu, betas[t])
    return -(log_p - log_q)


# -----------------------------------------------------------------------------------------------
# Networks and a sample-quality metric for the notebooks


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of integer timesteps t (B,) -> (B, dim), as in the Transformer and DDPM."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class EpsMLP(torch.nn.Module):
    """An MLP noise predictor eps_theta(x_t, t[, y]) for flat data or small images.

    x: (B, ...) is flattened to (B, data_dim) and the output reshaped back. The timestep's sinusoidal
    embedding (plus a learnt class embedding when num_classes > 0; index num_classes is "no label") is
    concatenated to the input of every hidden layer. SiLU activations.
    """

    def __init__(self, data_dim: int, hidden: int = 256, depth: int = 3, emb_dim: int = 64, num_classes: int = 0):
        super().__init__()
        self.emb_dim, self.num_classes = emb_dim, num_classes
        self.time_mlp = torch.nn.Sequential(torch.nn.Linear(emb_dim, emb_dim), torch.nn.SiLU())
        self.label_emb = torch.nn.Embedding(num_classes + 1, emb_dim) if num_classes else None
        self.inp = torch.nn.Linear(data_dim + emb_dim, hidden)
        self.hidden = torch.nn.ModuleList([torch.nn.Linear(hidden + emb_dim, hidden) for _ in range(depth - 1)])
        self.out = torch.nn.Linear(hidden, data_dim)

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        flat = x.reshape(x.shape[0], -1)
        e = self.time_mlp(timestep_embedding(t, self.emb_dim))
        if self.label_emb is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.num_classes, dtype=torch.long, device=x.device)
            e = e + self.label_emb(y)
        h = torch.nn.functional.silu(self.inp(torch.cat([flat, e], 1)))
        for layer in self.hidden:
            h = torch.nn.functional.silu(layer(torch.cat([h, e], 1)))
        return self.out(h).reshape(x.shape)


def sliced_wasserstein(x: Tensor, y: Tensor, num_projections: int = 256, generator: torch.Generator | None = None) -> float:
    """Sliced Wasserstein-1 distance between two equal-size point clouds x, y: (N, D).

    The mean over random unit directions of the 1-D Wasserstein-1 distance between the projections,
    which for equal sample sizes is the mean absolute difference of the sorted projections.
    """
    if x.shape != y.shape:
        raise ValueError(f"compare equal-size samples, got {tuple(x.shape)} and {tuple(y.shape)}")
    directions = torch.randn(x.shape[1], num_projections, generator=generator, dtype=torch.float64)
    directions = directions / directions.norm(dim=0, keepdim=True)
    px = (x.detach().double().cpu() @ directions).sort(0).values
    py = (y.detach().double().cpu() @ directions).sort(0).values
    return float((px - py).abs().mean())
