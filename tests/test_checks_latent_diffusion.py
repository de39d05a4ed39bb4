"""Every latent-diffusion check accepts a correct answer and rejects plausible wrong ones, naming the fault."""

import math

import pytest
import torch

from gradelib.checks import latent_diffusion as checks
from gradelib.reference import latent_diffusion as ref
from checking import assert_rejected, own_copy


def assert_accepted(check, candidate, capsys, points, **kwargs):
    assert check(candidate, points=points, **kwargs) == points
    assert "✗" not in capsys.readouterr().out


# --- cross-attention -------------------------------------------------------------------------


def make_cross(*, swap=False, use_mask=True, scale="dk", invert=False, softmax_dim=-1, swap_kv=False):
    """A student's cross-attention with one optional mistake."""

    def cross_attention(image_tokens, text_tokens, text_mask, w_q, w_k, w_v):
        queries_from, keys_from = (text_tokens, image_tokens) if swap else (image_tokens, text_tokens)
        q, k, v = queries_from @ w_q, keys_from @ w_k, keys_from @ w_v
        if swap_kv:
            k, v = keys_from @ w_v, keys_from @ w_k
        d = {"dk": q.shape[-1], "none": 1, "d": image_tokens.shape[-1]}[scale]
        scores = q @ k.transpose(-2, -1) / math.sqrt(d)
        if use_mask and text_mask is not None and not swap:
            mask = ~text_mask if invert else text_mask
            scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
        weights = scores.softmax(dim=softmax_dim)
        return weights @ v, weights

    return cross_attention


@pytest.mark.parametrize("seed", [0, 1, 1234])
def test_cross_attention_accepts_a_correct_answer(seed, capsys):
    assert_accepted(checks.check_cross_attention, make_cross(), capsys, 3, seed=seed)


def test_cross_attention_rejects_calling_the_reference(capsys):
    assert_rejected(checks.check_cross_attention, lambda *a: ref.cross_attention(*a), capsys, "must be your own code")


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (make_cross(swap=True), "the queries must come from the image tokens"),
    (make_cross(use_mask=False), "padded text tokens receive attention weight"),
    (make_cross(scale="none"), "not divided by √d_k"),
    (make_cross(scale="d"), "scale by √d_k"),
    (make_cross(invert=True), "the mask is inverted"),
    (make_cross(softmax_dim=-2), "over the text tokens"),
    (make_cross(swap_kv=True), "keys and values swapped"),
], ids=["swapped-roles", "no-mask", "no-scale", "scale-by-d", "inverted-mask", "softmax-axis", "swap-kv"])
def test_cross_attention_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_cross_attention, wrong, capsys, diagnosis, points=3)


# --- condition dropout -----------------------------------------------------------------------


def test_drop_captions_accepts_the_reference_code(capsys):
    assert_accepted(checks.check_drop_captions, own_copy(ref.drop_captions), capsys, 2)
    assert_accepted(checks.check_drop_captions, own_copy(ref.drop_captions), capsys, 2, seed=1234)


def bernoulli_version(captions, p, generator=None):
    keep = torch.bernoulli(torch.full((len(captions),), 1 - p), generator=generator).bool()
    return [c if k else "" for c, k in zip(captions, keep.tolist())]


def test_drop_captions_accepts_bernoulli(capsys):
    assert_accepted(checks.check_drop_captions, bernoulli_version, capsys, 2)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda c, p, g=None: ["" if u > p else x for x, u in zip(c, torch.rand(len(c), generator=g).tolist())], "not above"),
    (lambda c, p, g=None: ["<pad>" if u < p else x for x, u in zip(c, torch.rand(len(c), generator=g).tolist())], "null caption"),
    (lambda c, p, g=None: ["" if i < round(p * len(c)) else x for i, x in enumerate(c)], "independently"),
    (lambda c, p, g=None: [""] * len(c) if torch.rand(1, generator=g).item() < p else list(c), "dropped a fraction"),
    (lambda c, p, g=None: ["" if u < p else x for x, u in zip(c, torch.rand(len(c)).tolist())], "generator"),
], ids=["inverted", "pad-token", "prefix", "whole-batch", "global-rng"])
def test_drop_captions_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_drop_captions, wrong, capsys, diagnosis)


# --- classifier-free guidance ----------------------------------------------------------------


def test_guidance_accepts_both_written_forms(capsys):
    assert_accepted(checks.check_classifier_free_guidance, own_copy(ref.classifier_free_guidance), capsys, 2)
    assert_accepted(checks.check_classifier_free_guidance, lambda u, c, w: w * c + (1 - w) * u, capsys, 2, seed=3)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda u, c, w: u + w * (u - c), "points away from the caption"),
    (lambda u, c, w: c + w * (c - u), "start from ε_u"),
    (lambda u, c, w: (1 - w) * c + w * u, "swapped"),
    (lambda u, c, w: u + w * c, "multiplies ε_c alone"),
    (lambda u, c, w: w * (c - u), "base ε_u is missing"),
], ids=["sign-flip", "from-cond", "swapped-weights", "w-on-cond", "no-base"])
def test_guidance_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_classifier_free_guidance, wrong, capsys, diagnosis)


# --- SDEdit ----------------------------------------------------------------------------------


def sdedit(*, offset=-1, sqrt=True, as_tensor=False):
    def sdedit_noise(z0, strength, alpha_bars, noise):
        t = int(round(strength * len(alpha_bars))) + offset
        t = min(max(t, 0), len(alpha_bars) - 1)
        ab = alpha_bars[t]
        z = (ab.sqrt() * z0 + (1 - ab).sqrt() * noise) if sqrt else (ab * z0 + (1 - ab) * noise)
        return z, (torch.tensor(t) if as_tensor else t)
    return sdedit_noise


def test_sdedit_accepts_a_correct_answer(capsys):
    for seed in (0, 1, 2):
        assert_accepted(checks.check_sdedit_noise, sdedit(), capsys, 2, seed=seed)
    assert_accepted(checks.check_sdedit_noise, sdedit(as_tensor=True), capsys, 2)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (sdedit(offset=0), "one step too late"),
    (sdedit(offset=-2), "one step too early"),
    (sdedit(sqrt=False), "take the square roots"),
], ids=["off-by-one", "early", "no-sqrt"])
def test_sdedit_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_sdedit_noise, wrong, capsys, diagnosis)


# --- inpainting ------------------------------------------------------------------------------


def test_inpaint_accepts_the_reference_code(capsys):
    assert_accepted(checks.check_inpaint_blend, own_copy(ref.inpaint_blend), capsys, 2)
    assert_accepted(checks.check_inpaint_blend, own_copy(ref.inpaint_blend), capsys, 2, seed=7)


def _known(z0, ab, noise):
    ab = torch.as_tensor(ab, dtype=z0.dtype)
    return ab.sqrt() * z0 + (1 - ab).sqrt() * noise


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda g, z0, m, ab, n: (1 - m) * g + m * _known(z0, ab, n), "the mask is inverted"),
    (lambda g, z0, m, ab, n: m * g + (1 - m) * z0, "pasted clean"),
    (lambda g, z0, m, ab, n: g + (1 - m) * _known(z0, ab, n), "added instead of replaced"),
], ids=["inverted", "clean-paste", "added"])
def test_inpaint_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_inpaint_blend, wrong, capsys, diagnosis)
