"""Latent diffusion (Stable Diffusion), built small: the networks, the losses and the guidance rule.

Stable Diffusion (Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models",
CVPR 2022) has three trained parts and one piece of pure maths:

* a **KL-regularized autoencoder** E, D ("perceptual compression"): x (3, H, W) -> z (c, H/f, W/f) -> x;
  trained first, then frozen;
* a **text encoder** tau: caption tokens -> one vector per token (SD v1: CLIP ViT-L/14's text tower,
  77 tokens x 768, frozen; the LDM paper trained a BERT-like transformer jointly, as we do here);
* a **U-Net** eps_theta(z_t, t, tau(y)) that predicts the noise in a noisy latent, with residual blocks
  conditioned on t and transformer blocks whose **cross-attention** reads the text tokens;
* the **noise schedule and samplers** (DDPM/DDIM), which know nothing about networks: they live in
  ``gradelib.reference.ddpm`` (as diffusers keeps schedulers apart from models). The pipeline that wires
  everything together is ``gradelib.reference.latent_diffusion_pipeline``.

Shapes: images (B, 3, H, W) in [0, 1]; latents (B, c, h, w); text tokens (B, L) int64 with a (B, L)
bool mask (True = real token); text features (B, L, d_text).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from gradelib.data import ALL_COMBINATIONS, COLOURS, POSITIONS, SHAPES, caption_for
from gradelib.reference.attention import (
    FeedForward,
    TransformerBlock,
    merge_heads,
    scaled_dot_product_attention,
    sinusoidal_positional_encoding,
    split_heads,
)
from gradelib.reference.ddpm import q_sample, timestep_embedding
from gradelib.reference.vae import gaussian_kl_standard_normal

NULL_CAPTION = ""  # the "empty prompt" that stands for "no condition" (SD: the empty string through CLIP)

# The vocabulary of the captions: every word of caption_for(shape, colour, position) (13 words). The
# tokenizer is the course's word-level one, tokenization.WordTokenizer(CAPTION_WORDS): <bos> words <eos>
# <pad>..., shaped like CLIP's, so the null caption "" is [<bos>, <eos>], never an all-padding row.
CAPTION_WORDS = tuple(sorted({word for combination in ALL_COMBINATIONS for word in caption_for(*combination).split()}))


# --------------------------------------------------------------------------------------------------
# The exercises' reference answers: pure functions
# --------------------------------------------------------------------------------------------------


def cross_attention(image_tokens: Tensor, text_tokens: Tensor, text_mask: Tensor | None,
                    w_q: Tensor, w_k: Tensor, w_v: Tensor) -> tuple[Tensor, Tensor]:
    """Single-head cross-attention: every image position reads the caption.

    Args:
        image_tokens: (B, N, d) the U-Net's feature map flattened to N = h * w positions.
        text_tokens: (B, L, d_text) the text encoder's output.
        text_mask: (B, L) bool, True = real token (padding must receive no weight), or None.
        w_q: (d, d_k); w_k: (d_text, d_k); w_v: (d_text, d_v).

    Returns:
        out: (B, N, d_v) = softmax(Q K^T / sqrt(d_k)) V with Q = image W_q, K = text W_k, V = text W_v.
        weights: (B, N, L), each row a distribution over the caption's real tokens.
    """
    q = image_tokens @ w_q
    k = text_tokens @ w_k
    v = text_tokens @ w_v
    mask = None if text_mask is None else text_mask[:, None, :]  # (B, 1, L): same keys for every query
    return scaled_dot_product_attention(q, k, v, mask)


def drop_captions(captions: list[str], p: float, generator: torch.Generator | None = None) -> list[str]:
    """Condition dropout: replace each caption by the null caption "" with probability p, independently.

    Trains one network as both eps(z_t, t, c) and eps(z_t, t, null) (Ho & Salimans 2022: p = 0.1-0.2),
    which classifier-free guidance needs at sampling time.
    """
    drop = torch.rand(len(captions), generator=generator) < p
    return [NULL_CAPTION if d else c for c, d in zip(captions, drop.tolist())]


def classifier_free_guidance(eps_uncond: Tensor, eps_cond: Tensor, guidance_scale: float) -> Tensor:
    """eps_hat = eps_u + w (eps_c - eps_u).

    w = 0: unconditional; w = 1: plain conditional; w > 1 extrapolates away from the unconditional
    prediction, toward images the condition makes *more* likely than average (SD's default 7.5).
    Ho & Salimans write the same thing as (1 + w') eps_c - w' eps_u, with w' = w - 1.
    """
    difference = eps_cond - eps_uncond  # the implicit classifier's direction
    return eps_uncond + guidance_scale * difference


def sdedit_timestep(strength: float, T: int) -> int:
    """The 0-based step at which image-to-image starts: strength s in (0, 1] -> round(s * T) - 1.

    Paper time s * T (1..T) is code index s * T - 1 (code t is paper t + 1): s = 1 starts from the last
    step, pure noise, and ignores the input image; small s keeps it.
    """
    if not 0.0 < strength <= 1.0:
        raise ValueError(f"strength must lie in (0, 1], got {strength}")
    return max(int(round(strength * T)) - 1, 0)


def sdedit_noise(z0: Tensor, strength: float, alpha_bars: Tensor, noise: Tensor) -> tuple[Tensor, int]:
    """SDEdit (Meng et al. 2022): noise a clean latent to the level of step sdedit_timestep(strength, T).

    Args:
        z0: (B, ...) clean latents of the input image. alpha_bars: (T,) cumulative products.
        noise: like z0, standard normal.

    Returns:
        z_t = sqrt(alpha_bar_t) z0 + sqrt(1 - alpha_bar_t) noise, and t (int); the sampler then runs
        t, ..., 0 from there.
    """
    t = sdedit_timestep(strength, len(alpha_bars))
    return q_sample(z0, t, noise, alpha_bars), t


def inpaint_blend(z_generated: Tensor, z0_known: Tensor, mask: Tensor, alpha_bar_prev: Tensor | float,
                  noise: Tensor) -> Tensor:
    """One inpainting step's blend (RePaint-style replacement, as in SD's legacy inpainting pipeline).

    After the sampler produced z_{t-1} (z_generated), put back the known region, noised to the *same*
    level t-1, so both halves of the latent are consistent samples of q(z_{t-1}):

        z_{t-1} <- mask * z_generated + (1 - mask) * (sqrt(ab_{t-1}) z0_known + sqrt(1 - ab_{t-1}) noise)

    Args:
        mask: broadcastable to z, 1 = the hole to generate, 0 = keep the known image.
        alpha_bar_prev: alpha_bar of the step just reached (1.0 after the final step to z_0).
    """
    alpha_bar = torch.as_tensor(alpha_bar_prev, dtype=z0_known.dtype, device=z0_known.device)
    renoised = q_sample(z0_known, 0, noise, alpha_bar.reshape(1))  # q(z_{t-1} | z_0): step 0 of a one-step table
    return z_generated * mask + renoised * (1 - mask)


def kl_autoencoder_loss(recon: Tensor, target: Tensor, mu: Tensor, logvar: Tensor, kl_weight: float = 1e-3,
                        foreground_weight: float = 3.0, edge_weight: float = 10.0) -> tuple[Tensor, Tensor, Tensor]:
    """The KL-regularized autoencoder's loss: weighted reconstruction + kl_weight * KL per dimension.

    Args:
        recon, target: (B, 3, H, W) in [-1, 1]. mu, logvar: (B, c, h, w) the encoder's q(z|x).
        foreground_weight: extra weight on pixels covered by a shape; edge_weight: extra weight on pixels
            where the target differs from its 3x3 average (the outline, which tells a square from a circle).
            Together a cheap stand-in for SD's perceptual + patch-GAN losses, which keep edges sharp; 0 and 0
            give a plain loss.

    Returns:
        (loss, reconstruction term, KL in nats per latent dimension). SD uses kl_weight = 1e-6: the KL
        only keeps the latent's scale bounded, it does not make E(x) close to N(0, I).
    """
    foreground = (target.amax(dim=1, keepdim=True) > -0.9).float()
    image = (target + 1) / 2
    edges = (image - F.avg_pool2d(image, 3, 1, 1, count_include_pad=False)).abs().sum(dim=1, keepdim=True)
    weight = 1.0 + foreground_weight * foreground + edge_weight * edges
    error = recon - target
    reconstruction = (weight * (error.pow(2) + 0.1 * error.abs())).mean()
    kl = gaussian_kl_standard_normal(mu.flatten(1), logvar.flatten(1)).mean() / mu[0].numel()
    return reconstruction + kl_weight * kl, reconstruction, kl


def latent_scale_factor(latents: Tensor) -> float:
    """1 / std of the encoder's latents, so scaled latents have unit variance like the diffusion noise.

    SD v1's 0.18215 was fixed this way, once, from its autoencoder's latents on a batch of training images
    (the LDM paper rescales KL-regularized latents by their standard deviation before diffusion).
    """
    return 1.0 / latents.float().std().item()


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------


class KLAutoencoder(nn.Module):
    """A small convolutional KL-regularized autoencoder: (B, 3, 16, 16) -> (B, c, 8, 8) -> (B, 3, 16, 16).

    Downsampling factor f = 2, c = latent_channels. Works in [-1, 1] pixel space like SD's AutoencoderKL.
    """

    def __init__(self, latent_channels: int = 4, width: int = 32):
        super().__init__()
        w2 = 2 * width
        self.latent_channels = latent_channels
        self.encoder = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, w2, 4, stride=2, padding=1), nn.SiLU(),  # 16 -> 8
            nn.Conv2d(w2, w2, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w2, 2 * latent_channels, 3, padding=1),  # mean and log-variance
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_channels, w2, 3, padding=1), nn.SiLU(),
            nn.Conv2d(w2, w2, 3, padding=1), nn.SiLU(),
            nn.ConvTranspose2d(w2, width, 4, stride=2, padding=1), nn.SiLU(),  # 8 -> 16
            nn.Conv2d(width, 3, 3, padding=1),
        )

    def encode(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """images (B, 3, H, W) in [0, 1] -> mu, logvar, each (B, c, H/2, W/2)."""
        mu, logvar = self.encoder(2 * images - 1).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: Tensor) -> Tensor:
        """z (B, c, h, w) -> images (B, 3, 2h, 2w) in [0, 1]."""
        return ((self.decoder(z) + 1) / 2).clamp(0.0, 1.0)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """-> (reconstruction in [-1, 1] (unclamped, for the loss), mu, logvar)."""
        mu, logvar = self.encode(images)
        eps = torch.randn(mu.shape, generator=generator, device=mu.device)
        return self.decoder(mu + eps * (0.5 * logvar).exp()), mu, logvar


class ConditioningTextEncoder(nn.Module):
    """The U-Net's condition tau(y): a small pre-LN transformer encoder over caption tokens, (B, L) -> (B, L, d).

    Notebook 01's blocks. Every token sees every other (no causal mask; CLIP's text tower is causal, BERT
    and T5's encoder are not). Padding keys are masked out. The output keeps one vector per token:
    cross-attention needs the sequence, not a single pooled vector (compare CLIP's text tower,
    ``gradelib.reference.clip.TextTransformer``, which pools one vector per caption). ``max_len`` is the
    length captions are padded to (CLIP's 77; here "a red circle at the top left" with <bos>, <eos> is 9).
    """

    def __init__(self, vocab_size: int, d_model: int = 64, num_heads: int = 4, num_layers: int = 2, max_len: int = 9):
        super().__init__()
        self.max_len = max_len
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.register_buffer("positional_encoding", sinusoidal_positional_encoding(max_len, d_model), persistent=False)
        self.blocks = nn.ModuleList(TransformerBlock(d_model, num_heads, 4 * d_model) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model)

    def forward(self, ids: Tensor, mask: Tensor) -> Tensor:
        """ids (B, L) int64, mask (B, L) bool (True = real token) -> one vector per token (B, L, d_model)."""
        x = self.token_embedding(ids) + self.positional_encoding[: ids.shape[1]]
        for block in self.blocks:
            x = block(x, mask=mask[:, None, None, :])
        return self.final_norm(x)


class Attention(nn.Module):
    """Multi-head attention whose keys/values may come from another sequence of another width.

    context=None: self-attention over x. context (B, L, d_context): cross-attention, queries from x,
    keys and values from the context (diffusers' ``Attention`` with ``cross_attention_dim``).
    """

    def __init__(self, d_model: int, num_heads: int, d_context: int | None = None):
        super().__init__()
        d_context = d_model if d_context is None else d_context
        self.num_heads = num_heads
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_k = nn.Linear(d_context, d_model, bias=False)
        self.to_v = nn.Linear(d_context, d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model)
        self.last_weights: Tensor | None = None

    def forward(self, x: Tensor, context: Tensor | None = None, context_mask: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        q = split_heads(self.to_q(x), self.num_heads)
        k = split_heads(self.to_k(context), self.num_heads)
        v = split_heads(self.to_v(context), self.num_heads)
        mask = None if context_mask is None else context_mask[:, None, None, :]
        out, weights = scaled_dot_product_attention(q, k, v, mask)
        self.last_weights = weights.detach()
        return self.to_out(merge_heads(out))


class SpatialTransformer(nn.Module):
    """SD's transformer block on a feature map: self-attention, cross-attention to the text, feed-forward.

    (B, C, h, w) -> tokens (B, h*w, C) + a learned position embedding -> three pre-LN residual sublayers
    -> back to (B, C, h, w), added to the input.
    """

    def __init__(self, channels: int, d_context: int, num_heads: int, resolution: int):
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.proj_in = nn.Linear(channels, channels)
        self.position = nn.Parameter(0.02 * torch.randn(resolution * resolution, channels))
        self.norm1, self.self_attn = nn.LayerNorm(channels), Attention(channels, num_heads)
        self.norm2, self.cross_attn = nn.LayerNorm(channels), Attention(channels, num_heads, d_context)
        self.norm3, self.ff = nn.LayerNorm(channels), FeedForward(channels, 4 * channels, activation="gelu")
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None) -> Tensor:
        B, C, H, W = x.shape
        h = self.proj_in(self.norm(x).flatten(2).transpose(1, 2)) + self.position
        h = h + self.self_attn(self.norm1(h))
        h = h + self.cross_attn(self.norm2(h), context, context_mask)
        h = h + self.ff(self.norm3(h))
        return x + self.proj_out(h).transpose(1, 2).reshape(B, C, H, W)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the timestep embedding added in between; a residual connection."""

    def __init__(self, c_in: int, c_out: int, d_time: int):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(8, c_in), nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(d_time, c_out)
        self.norm2, self.conv2 = nn.GroupNorm(8, c_out), nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, t_emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.time(t_emb)[:, :, None, None]
        return self.skip(x) + self.conv2(F.silu(self.norm2(h)))


class UNet(nn.Module):
    """A two-level conditional U-Net: eps_theta(z_t, t, text) with the latent's shape.

        conv_in -> [Res + Transformer] @ r ----------------------------- skip --------+
                 -> down (stride 2) -> [Res + Transformer] @ r/2 -> Res (middle)       |
                 -> up (nearest + conv) -> concat skip -> [Res + Transformer] @ r -> conv_out

    Same layout as SD's UNet2DConditionModel (which has 4 levels, 320-1280 channels, transformer
    blocks at the top three): residual blocks take the timestep embedding (DDPM's sinusoidal one,
    ``ddpm.timestep_embedding``, through an MLP), transformer blocks take the text. ``in_channels`` = latent channels (or 3 for the same net on pixels).
    """

    def __init__(self, in_channels: int = 4, resolution: int = 8, channels: int = 64, d_context: int = 64,
                 num_heads: int = 4):
        super().__init__()
        c, c2, d_time = channels, 2 * channels, 4 * channels
        self.resolution = resolution  # the side of the grid it denoises (latents; or pixels, for the pixel U-Net)
        self.timestep_dim = c  # ddpm.timestep_embedding's width, the input of time_mlp
        self.time_mlp = nn.Sequential(nn.Linear(c, d_time), nn.SiLU(), nn.Linear(d_time, d_time))
        self.conv_in = nn.Conv2d(in_channels, c, 3, padding=1)
        self.down_res, self.down_attn = ResBlock(c, c, d_time), SpatialTransformer(c, d_context, num_heads, resolution)
        self.downsample = nn.Conv2d(c, c2, 3, stride=2, padding=1)
        self.mid_res1 = ResBlock(c2, c2, d_time)
        self.mid_attn = SpatialTransformer(c2, d_context, num_heads, resolution // 2)
        self.mid_res2 = ResBlock(c2, c2, d_time)
        self.upsample = nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c2, c, 3, padding=1))
        self.up_res, self.up_attn = ResBlock(2 * c, c, d_time), SpatialTransformer(c, d_context, num_heads, resolution)
        self.norm_out, self.conv_out = nn.GroupNorm(8, c), nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # start by predicting eps = 0
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, z: Tensor, t: Tensor, context: Tensor, context_mask: Tensor | None = None) -> Tensor:
        """z (B, c, r, r), t (B,) int64, context (B, L, d_context), context_mask (B, L) -> eps_hat (B, c, r, r)."""
        t_emb = self.time_mlp(timestep_embedding(t, self.timestep_dim))
        skip = self.down_attn(self.down_res(self.conv_in(z), t_emb), context, context_mask)
        h = self.mid_res1(self.downsample(skip), t_emb)
        h = self.mid_res2(self.mid_attn(h, context, context_mask), t_emb)
        h = self.up_res(torch.cat([self.upsample(h), skip], dim=1), t_emb)
        h = self.up_attn(h, context, context_mask)
        return self.conv_out(F.silu(self.norm_out(h)))

    def cross_attention_maps(self) -> Tensor:
        """The last forward()'s cross-attention weights of the top-level up block: (B, heads, r*r, L)."""
        return self.up_attn.cross_attn.last_weights


class ShapeClassifier(nn.Module):
    """The judge: a small CNN with three heads, (B, 3, 16, 16) -> logits for shape (3), colour (3), position (4).

    Trained separately, on real images of all 36 combinations, with random blur so that it judges the
    shape and not the crispness of its edges.
    """

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, len(SHAPES) + len(COLOURS) + len(POSITIONS)),
        )

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        logits = self.features(images)
        return logits.split([len(SHAPES), len(COLOURS), len(POSITIONS)], dim=1)

