"""The text-to-image pipeline that wires notebook 07's parts together, and their training loops.

Three layers, kept apart as in diffusers:

* scheduler maths (noise schedule, DDIM step, samplers): ``gradelib.reference.ddpm``;
* networks and losses (autoencoder, text encoder, U-Net, guidance rule): ``gradelib.reference.latent_diffusion``;
* this module: training loops, ``LatentDiffusionPipeline`` (text -> image, image -> image, inpainting)
  and the classifier that judges prompt adherence.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from gradelib.data import COLOURS, POSITIONS, SHAPES, ShapesBatch, caption_for
from gradelib.reference import latent_diffusion as ld
from gradelib.reference.ddpm import DDPMSchedule, ddim_sample, q_sample
from gradelib.reference.tokenization import WordTokenizer
from gradelib.training import fit, warmup_cosine


# --------------------------------------------------------------------------------------------------
# Stage 1: the autoencoder
# --------------------------------------------------------------------------------------------------


def train_autoencoder(autoencoder: ld.KLAutoencoder, images: Tensor, steps: int, batch_size: int = 64, lr: float = 2e-3,
                      kl_weight: float = 1e-3, seed: int = 0, progress: bool = False) -> list[float]:
    """Train the KL-regularized autoencoder on images (N, 3, H, W) in [0, 1]; returns the reconstruction losses.

    Adam, with a short warm-up and a cosine decay. The batches come from ``seed``; the encoder's
    sampling noise z = mu + sigma * eps from the global RNG (seed it with torch.manual_seed).
    """
    device = next(autoencoder.parameters()).device

    def step(_, generator: torch.Generator) -> dict[str, Tensor]:
        x = images[torch.randint(0, len(images), (batch_size,), generator=generator)].to(device)
        recon, mu, logvar = autoencoder(x)
        loss, reconstruction, _ = ld.kl_autoencoder_loss(recon, 2 * x - 1, mu, logvar, kl_weight)
        return {"loss": loss, "reconstruction": reconstruction}

    history = fit(step, steps, optimizer=torch.optim.Adam(autoencoder.parameters(), lr), seed=seed,
                  schedule=warmup_cosine(warmup=0.05), modules=[autoencoder], label="autoencoder", progress=progress)
    return history["reconstruction"]


@torch.no_grad()
def encode_dataset(autoencoder: ld.KLAutoencoder, images: Tensor, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """mu, logvar of q(z|x) for every image, in chunks (the diffusion model then samples z from them)."""
    device = next(autoencoder.parameters()).device
    parts = [autoencoder.encode(images[i:i + chunk].to(device)) for i in range(0, len(images), chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------


@dataclass
class LatentDiffusionPipeline:
    """Stable Diffusion's pipeline in miniature: tokenizer, text encoder, U-Net, scheduler, autoencoder.

    scale_factor multiplies encoder latents before diffusion and divides sampled latents before decoding
    (SD v1: 0.18215).
    """

    tokenizer: WordTokenizer
    text_encoder: ld.ConditioningTextEncoder
    unet: ld.UNet
    autoencoder: ld.KLAutoencoder
    schedule: DDPMSchedule
    scale_factor: float

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def encode_text(self, captions: list[str]) -> tuple[Tensor, Tensor]:
        """captions -> per-token context (B, L, d_text) and its mask (B, L), True = real token; L = max_len."""
        ids, mask = self.tokenizer(captions, length=self.text_encoder.max_len)
        ids, mask = ids.to(self.device), mask.to(self.device)
        return self.text_encoder(ids, mask), mask

    def guided_eps_model(self, captions: list[str], guidance_scale: float):
        """eps_model(z_t, t) for ddim_sample: one U-Net call on [conditional; unconditional] per step."""
        n = len(captions)
        context, mask = self.encode_text(list(captions) + [ld.NULL_CAPTION] * n)

        def eps_model(z: Tensor, t: Tensor) -> Tensor:
            eps = self.unet(torch.cat([z, z]), torch.cat([t, t]), context, mask)
            eps_cond, eps_uncond = eps.chunk(2)
            return ld.classifier_free_guidance(eps_uncond, eps_cond, guidance_scale)

        return eps_model

    def latent_shape(self, n: int) -> tuple[int, ...]:
        return (n, self.autoencoder.latent_channels, self.unet.resolution, self.unet.resolution)

    @torch.no_grad()
    def encode_images(self, images: Tensor) -> Tensor:
        """Scaled latents z0 = scale_factor * mu(x) of images (B, 3, H, W) in [0, 1]."""
        return self.autoencoder.encode(images.to(self.device))[0] * self.scale_factor

    @torch.no_grad()
    def decode_latents(self, z: Tensor) -> Tensor:
        return self.autoencoder.decode(z / self.scale_factor)

    @torch.no_grad()
    def __call__(self, captions: list[str], guidance_scale: float = 3.0, num_steps: int = 25,
                 generator: torch.Generator | None = None, return_latents: bool = False, eta: float = 1.0) -> Tensor:
        """Text to image: captions -> images (B, 3, H, W) in [0, 1].

        1. encode the captions (and the null caption); 2. z_T ~ N(0, I) in latent space;
        3. num_steps DDIM steps, each one U-Net call on the doubled batch + the guidance rule;
        4. decode z_0 / scale_factor with the autoencoder's decoder.

        eta = 1 (default) adds fresh noise at every step as DDPM does (DDIM's sigma = DDPM's posterior std),
        eta = 0 is deterministic DDIM. With this small, briefly trained U-Net, eta = 1 draws far crisper
        shapes: the injected noise lets later steps correct earlier mistakes.
        """
        self.unet.eval(), self.text_encoder.eval()
        z_T = torch.randn(self.latent_shape(len(captions)), generator=generator).to(self.device)
        z0 = ddim_sample(self.guided_eps_model(captions, guidance_scale), self.schedule, z_T, num_steps, eta=eta,
                         generator=generator)
        return z0 if return_latents else self.decode_latents(z0)

    @torch.no_grad()
    def image_to_image(self, images: Tensor, captions: list[str], strength: float, guidance_scale: float = 3.0,
                       num_steps: int = 25, generator: torch.Generator | None = None, eta: float = 1.0) -> Tensor:
        """SDEdit: noise the images' latents to step round(strength * T) - 1, then denoise toward the captions.

        Uses about strength * num_steps DDIM steps (as diffusers' img2img does).
        """
        z0 = self.encode_images(images)
        noise = torch.randn(z0.shape, generator=generator).to(self.device)
        z_t, t_start = ld.sdedit_noise(z0, strength, self.schedule.alpha_bars.to(self.device), noise)
        steps = max(1, int(round(strength * num_steps)))
        z = ddim_sample(self.guided_eps_model(captions, guidance_scale), self.schedule, z_t, steps, t_start=t_start,
                        eta=eta, generator=generator)
        return self.decode_latents(z)

    @torch.no_grad()
    def inpaint(self, images: Tensor, pixel_mask: Tensor, captions: list[str], guidance_scale: float = 3.0,
                num_steps: int = 25, generator: torch.Generator | None = None, eta: float = 1.0) -> Tensor:
        """Regenerate the region where pixel_mask (B, 1, H, W) is 1, keep the rest (RePaint-style replacement).

        The mask is max-pooled to the latent grid (a latent cell is regenerated if any of its pixels is),
        and after every DDIM step the known region is put back, noised to the step's level.
        """
        z0 = self.encode_images(images)
        factor = images.shape[-1] // z0.shape[-1]
        mask = F.max_pool2d(pixel_mask.float().to(self.device), factor)
        noise = torch.randn(z0.shape, generator=generator).to(self.device)
        alpha_bars = self.schedule.alpha_bars.to(self.device)

        def put_back_known(z: Tensor, t_prev: int) -> Tensor:
            alpha_bar_prev = alpha_bars[t_prev] if t_prev >= 0 else 1.0
            return ld.inpaint_blend(z, z0, mask, alpha_bar_prev, noise)

        z_T = torch.randn(z0.shape, generator=generator).to(self.device)
        z = ddim_sample(self.guided_eps_model(captions, guidance_scale), self.schedule, z_T, num_steps, callback=put_back_known,
                        eta=eta, generator=generator)
        out = self.decode_latents(z)
        pixel_mask = pixel_mask.to(out.device)
        return pixel_mask * out + (1 - pixel_mask) * images.to(out.device)  # SD also pastes the known pixels back


# --------------------------------------------------------------------------------------------------
# Stage 2: the text encoder and the U-Net, trained together on latents
# --------------------------------------------------------------------------------------------------


def train_latent_diffusion(pipe: LatentDiffusionPipeline, mu: Tensor, logvar: Tensor, captions: list[str], steps: int,
                           batch_size: int = 64, lr: float = 2e-3, p_uncond: float = 0.1, seed: int = 0,
                           progress: bool = False, drop_fn=None) -> list[float]:
    """L = E ||eps - eps_theta(z_t, t, tau(y))||^2 on z_0 ~ q(z|x) * scale_factor, y dropped to "" w.p. p_uncond.

    mu, logvar: (N, c, h, w) from encode_dataset; captions: the N captions. drop_fn(captions, p, generator)
    is the condition dropout (default: the reference). AdamW with a short warm-up and a cosine decay,
    gradients clipped at norm 1. Returns the losses.
    """
    drop_fn = ld.drop_captions if drop_fn is None else drop_fn
    device = pipe.device
    alpha_bars = pipe.schedule.alpha_bars.to(device)

    def step(_, generator: torch.Generator) -> Tensor:
        idx = torch.randint(0, len(mu), (batch_size,), generator=generator)
        m, lv = mu[idx].to(device), logvar[idx].to(device)
        z0 = (m + torch.randn(m.shape, generator=generator).to(device) * (0.5 * lv).exp()) * pipe.scale_factor
        context, mask = pipe.encode_text(drop_fn([captions[i] for i in idx.tolist()], p_uncond, generator))
        t = torch.randint(0, pipe.schedule.T, (batch_size,), generator=generator).to(device)
        eps = torch.randn(z0.shape, generator=generator).to(device)
        return F.mse_loss(pipe.unet(q_sample(z0, t, eps, alpha_bars), t, context, mask), eps)

    params = list(pipe.unet.parameters()) + list(pipe.text_encoder.parameters())
    return fit(step, steps, optimizer=torch.optim.AdamW(params, lr, weight_decay=0.0), seed=seed, clip_grad_norm=1.0,
               schedule=warmup_cosine(warmup=0.05), modules=[pipe.unet, pipe.text_encoder], label="latent diffusion",
               progress=progress)["loss"]


# --------------------------------------------------------------------------------------------------
# The judge
# --------------------------------------------------------------------------------------------------


def train_classifier(classifier: ld.ShapeClassifier, data: ShapesBatch, steps: int, batch_size: int = 128, lr: float = 2e-3,
                     seed: int = 0, progress: bool = False) -> list[float]:
    """Cross-entropy on the three heads; images get random 3x3 blur and a little noise (augmentation)."""
    device = next(classifier.parameters()).device

    def step(_, generator: torch.Generator) -> Tensor:
        i = torch.randint(0, len(data), (batch_size,), generator=generator)
        x = data.images[i]
        k = 0.5 * torch.rand(batch_size, 1, 1, 1, generator=generator)
        x = (1 - k) * x + k * F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        x = (x + 0.03 * torch.randn(x.shape, generator=generator)).to(device)
        s, c, p = classifier(x)
        return (F.cross_entropy(s, data.shape[i].to(device)) + F.cross_entropy(c, data.colour[i].to(device))
                + F.cross_entropy(p, data.position[i].to(device)))

    return fit(step, steps, optimizer=torch.optim.Adam(classifier.parameters(), lr), seed=seed, modules=[classifier],
               label="classifier", progress=progress)["loss"]


@torch.no_grad()
def judge(classifier: ld.ShapeClassifier, images: Tensor, shape: Tensor, colour: Tensor, position: Tensor) -> dict[str, float]:
    """Share of images whose shape, colour, position (and all three) the classifier reads as requested."""
    device = next(classifier.parameters()).device
    s, c, p = classifier(images.to(device))
    ok_s = s.argmax(1).cpu() == shape.cpu()
    ok_c = c.argmax(1).cpu() == colour.cpu()
    ok_p = p.argmax(1).cpu() == position.cpu()
    return {"shape": ok_s.float().mean().item(), "colour": ok_c.float().mean().item(),
            "position": ok_p.float().mean().item(), "all": (ok_s & ok_c & ok_p).float().mean().item()}


def prompts_for(combinations, per_combination: int) -> tuple[list[str], Tensor, Tensor, Tensor]:
    """Captions and labels: each (shape, colour, position) triple repeated per_combination times."""
    triples = [c for c in combinations for _ in range(per_combination)]
    captions = [caption_for(*c) for c in triples]
    shape = torch.tensor([SHAPES.index(c[0]) for c in triples])
    colour = torch.tensor([COLOURS.index(c[1]) for c in triples])
    position = torch.tensor([POSITIONS.index(c[2]) for c in triples])
    return captions, shape, colour, position


def adherence(pipe: LatentDiffusionPipeline, classifier: ld.ShapeClassifier, combinations, per_combination: int,
              guidance_scale: float, num_steps: int = 25, seed: int = 0, chunk: int = 256, eta: float = 1.0) -> tuple[dict[str, float], Tensor]:
    """Generate per_combination images for each triple and judge them; returns (scores, images)."""
    captions, shape, colour, position = prompts_for(combinations, per_combination)
    generator = torch.Generator().manual_seed(seed)
    images = torch.cat([pipe(captions[i:i + chunk], guidance_scale, num_steps, generator=generator, eta=eta).cpu()
                        for i in range(0, len(captions), chunk)])
    return judge(classifier, images, shape, colour, position), images


def diversity(images: Tensor) -> float:
    """Mean per-pixel standard deviation across images generated from the same prompt (0 = identical)."""
    return images.std(dim=0).mean().item()

