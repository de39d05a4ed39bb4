"""The latent-diffusion reference against independent oracles: torch's attention, torch.distributions,
diffusers' scheduler, and the algebra of guidance, SDEdit and inpainting."""

import math

import pytest
import torch
import torch.nn.functional as F

from gradelib.data import ALL_COMBINATIONS, caption_for, captioned_shapes
from gradelib.reference import latent_diffusion as ld
from gradelib.reference import latent_diffusion_pipeline as pl
from gradelib.reference.ddpm import DDPMSchedule, linear_betas, q_sample
from gradelib.reference.tokenization import BOS_ID, EOS_ID, WordTokenizer


def test_pipeline_pads_captions_to_the_text_encoders_length_like_clip():
    pipe = tiny_pipeline()
    assert pipe.tokenizer.vocab_size == 3 + 13
    ids, mask = pipe.tokenizer(["a red circle at the top left", ""], length=pipe.text_encoder.max_len)
    assert ids.shape == (2, 9) and mask.dtype == torch.bool
    assert ids[0, 0] == BOS_ID and ids[0, 8] == EOS_ID and mask[0].all()
    assert ids[1, :2].tolist() == [BOS_ID, EOS_ID] and mask[1].sum() == 2  # the null caption is never all padding
    context, context_mask = pipe.encode_text(["a blue square", ""])
    assert context.shape == (2, 9, 64) and context_mask.sum(1).tolist() == [5, 2]


def test_cross_attention_matches_torch_sdpa_with_a_padding_mask():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(3, 6, 8, generator=g), torch.randn(3, 5, 12, generator=g)
    w_q, w_k, w_v = torch.randn(8, 4, generator=g), torch.randn(12, 4, generator=g), torch.randn(12, 3, generator=g)
    mask = torch.arange(5)[None] < torch.tensor([5, 3, 2])[:, None]
    out, weights = ld.cross_attention(img, txt, mask, w_q, w_k, w_v)
    want = F.scaled_dot_product_attention(img @ w_q, txt @ w_k, txt @ w_v, attn_mask=mask[:, None, :])
    assert torch.allclose(out, want, atol=1e-5)
    assert weights.shape == (3, 6, 5)
    assert torch.all(weights.masked_select(~mask[:, None, :].expand(3, 6, 5)) == 0)
    assert torch.allclose(weights.sum(-1), torch.ones(3, 6))


def test_guidance_equals_ho_salimans_form():
    g = torch.Generator().manual_seed(1)
    eu, ec = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    for w in (0.0, 1.0, 3.0, 7.5):
        w_prime = w - 1  # Ho & Salimans: (1 + w') eps_c - w' eps_u
        assert torch.allclose(ld.classifier_free_guidance(eu, ec, w), (1 + w_prime) * ec - w_prime * eu, atol=1e-5)
    assert torch.equal(ld.classifier_free_guidance(eu, ec, 0.0), eu)


def test_drop_captions_rate_and_null_caption():
    captions = ["a red circle at the top left"] * 20000
    out = ld.drop_captions(captions, 0.1, torch.Generator().manual_seed(0))
    share = sum(c == ld.NULL_CAPTION for c in out) / len(out)
    assert abs(share - 0.1) < 4 * math.sqrt(0.1 * 0.9 / 20000)
    assert all(c in ("", captions[0]) for c in out)


def test_sdedit_timestep_and_noise_agree_with_diffusers_add_noise():
    from diffusers import DDPMScheduler

    schedule = DDPMSchedule(linear_betas(1000))
    assert ld.sdedit_timestep(1.0, 1000) == 999 and ld.sdedit_timestep(0.5, 1000) == 499
    assert ld.sdedit_timestep(0.3, 10) == 2 and ld.sdedit_timestep(0.001, 1000) == 0
    with pytest.raises(ValueError):
        ld.sdedit_timestep(0.0, 1000)
    g = torch.Generator().manual_seed(2)
    z0, noise = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    z_t, t = ld.sdedit_noise(z0, 0.6, schedule.alpha_bars, noise)
    oracle = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").add_noise(z0, noise, torch.tensor([t, t]))
    assert t == 599 and torch.allclose(z_t, oracle, atol=1e-5)
    assert torch.equal(z_t, q_sample(z0, torch.tensor([t, t]), noise, schedule.alpha_bars))  # the one forward-noising


def test_inpaint_blend_renoises_the_known_region_with_q_sample():
    schedule = DDPMSchedule(linear_betas(1000))
    g = torch.Generator().manual_seed(6)
    z_gen, z0, noise = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    mask = (torch.rand(2, 1, 8, 8, generator=g) > 0.5).float()
    t_prev = torch.tensor([300, 300])
    out = ld.inpaint_blend(z_gen, z0, mask, schedule.alpha_bars[300], noise)
    assert torch.allclose(out, mask * z_gen + (1 - mask) * q_sample(z0, t_prev, noise, schedule.alpha_bars), atol=1e-6)


def test_inpaint_blend_keeps_the_hole_and_renoises_the_rest():
    g = torch.Generator().manual_seed(3)
    z_gen, z0, noise = (torch.randn(1, 4, 8, 8, generator=g) for _ in range(3))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :4, :] = 1
    out = ld.inpaint_blend(z_gen, z0, mask, 0.36, noise)
    assert torch.equal(out[..., :4, :], z_gen[..., :4, :])
    assert torch.allclose(out[..., 4:, :], 0.6 * z0[..., 4:, :] + 0.8 * noise[..., 4:, :], atol=1e-6)
    assert torch.allclose(ld.inpaint_blend(z_gen, z0, mask, 1.0, noise)[..., 4:, :], z0[..., 4:, :])


def test_kl_term_matches_torch_distributions():
    g = torch.Generator().manual_seed(4)
    mu, logvar = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g) * 0.3
    x = torch.zeros(3, 3, 16, 16)
    _, _, kl = ld.kl_autoencoder_loss(x, x, mu, logvar)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    want = torch.distributions.kl_divergence(q, torch.distributions.Normal(0.0, 1.0)).flatten(1).sum(1).mean() / (4 * 8 * 8)
    assert torch.allclose(kl, want, atol=1e-5)


def test_latent_scale_factor_gives_unit_variance():
    z = 5.0 * torch.randn(1000, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    assert abs((z * ld.latent_scale_factor(z)).std().item() - 1.0) < 1e-4


def test_networks_shapes_zero_init_and_masked_text():
    torch.manual_seed(0)
    tok = WordTokenizer(ld.CAPTION_WORDS)
    ae, te, unet = ld.KLAutoencoder(4), ld.ConditioningTextEncoder(tok.vocab_size), ld.UNet(4, 8, 32, 64)
    x = captioned_shapes(2, seed=0).images
    recon, mu, logvar = ae(x)
    assert recon.shape == x.shape and mu.shape == (2, 4, 8, 8) and ae.decode(mu).shape == x.shape
    ids, mask = tok(["a red circle at the top left", "a blue square"], length=te.max_len)
    ctx = te(ids, mask)
    assert ctx.shape == (2, 9, 64)
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([10, 900])
    assert torch.equal(unet(z, t, ctx, mask), torch.zeros(2, 4, 8, 8))  # zero-initialised output layer
    torch.nn.init.normal_(unet.conv_out.weight, std=0.1)
    out = unet(z, t, ctx, mask)
    ctx2 = ctx.clone()
    ctx2[1, 5:] = 100.0  # change only padded text positions of the second caption
    assert torch.allclose(unet(z, t, ctx2, mask), out, atol=1e-5)
    assert unet.cross_attention_maps().shape == (2, 4, 64, 9)


def test_pixel_unet_runs_on_images():
    unet = ld.UNet(3, 16, 32, 64)
    out = unet(torch.randn(2, 3, 16, 16), torch.tensor([1, 2]), torch.randn(2, 9, 64), None)
    assert out.shape == (2, 3, 16, 16)


def test_the_pipeline_samples_latents_of_the_unets_resolution():
    pipe = tiny_pipeline()
    pipe.unet = ld.UNet(4, 4, 32, 64)  # a U-Net for 4x4 latents
    assert pipe.latent_shape(3) == (3, 4, 4, 4)
    z = pipe(["a red circle at the top left"], 3.0, 2, generator=torch.Generator().manual_seed(0), return_latents=True)
    assert z.shape == (1, 4, 4, 4)


def tiny_pipeline():
    torch.manual_seed(0)
    tok = WordTokenizer(ld.CAPTION_WORDS)
    unet = ld.UNet(4, 8, 32, 64)
    torch.nn.init.normal_(unet.conv_out.weight, std=0.05)
    return pl.LatentDiffusionPipeline(tok, ld.ConditioningTextEncoder(tok.vocab_size), unet, ld.KLAutoencoder(4),
                                      DDPMSchedule(linear_betas(1000)), 0.5)


def test_guided_eps_model_at_w1_is_the_conditional_call():
    pipe = tiny_pipeline()
    captions = ["a red circle at the top left", "a blue square at the bottom right"]
    z, t = torch.randn(2, 4, 8, 8), torch.tensor([500, 500])
    ctx, mask = pipe.encode_text(captions)
    with torch.no_grad():
        assert torch.allclose(pipe.guided_eps_model(captions, 1.0)(z, t), pipe.unet(z, t, ctx, mask), atol=1e-5)


def test_pipeline_text_to_image_img2img_and_inpainting_run():
    pipe = tiny_pipeline()
    captions = ["a red circle at the top left", "a blue square at the bottom right"]
    g = torch.Generator().manual_seed(0)
    images = pipe(captions, 3.0, 4, generator=g)
    assert images.shape == (2, 3, 16, 16) and images.min() >= 0 and images.max() <= 1
    real = captioned_shapes(2, seed=1).images
    assert pipe.image_to_image(real, captions, 0.5, num_steps=4, generator=g).shape == real.shape
    mask = torch.zeros(2, 1, 16, 16)
    mask[..., :8, :] = 1
    painted = pipe.inpaint(real, mask, captions, num_steps=4, generator=g)
    assert torch.equal(painted[..., 8:, :], real[..., 8:, :])


def test_training_loops_reduce_their_losses():
    torch.manual_seed(0)
    data = captioned_shapes(256, seed=0)
    ae = ld.KLAutoencoder(4, 16)
    losses = pl.train_autoencoder(ae, data.images, steps=40, batch_size=32)
    assert sum(losses[-5:]) < sum(losses[:5])
    clf = ld.ShapeClassifier()
    c_losses = pl.train_classifier(clf, data, steps=30, batch_size=64)
    assert sum(c_losses[-5:]) < sum(c_losses[:5])
    scores = pl.judge(clf, data.images, data.shape, data.colour, data.position)
    assert set(scores) == {"shape", "colour", "position", "all"} and scores["all"] <= min(scores["shape"], scores["colour"])


def test_latent_diffusion_training_is_seeded_and_leaves_the_networks_in_eval_mode():
    captions = [caption_for(*combination) for combination in ALL_COMBINATIONS[:32]]
    g = torch.Generator().manual_seed(7)
    mu, logvar = torch.randn(32, 4, 8, 8, generator=g), torch.full((32, 4, 8, 8), -4.0)
    runs = []
    for _ in range(2):
        pipe = tiny_pipeline()
        runs.append(pl.train_latent_diffusion(pipe, mu, logvar, captions, steps=3, batch_size=8, seed=5))
        assert not pipe.unet.training and not pipe.text_encoder.training
    assert runs[0] == runs[1] and len(runs[0]) == 3 and all(math.isfinite(loss) for loss in runs[0])
