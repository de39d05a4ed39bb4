"""Every latent-diffusion check accepts a correct answer and rejects plausible wrong ones, naming the fault."""

import math

import pytest
import torch

from gradelib.checks import CheckFailed, latent_diffusion as checks
from gradelib.reference import latent_diffusion as ref
from checking import assert_accepted, assert_rejected, own_copy


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
    assert_accepted(checks.check_drop_captions, own_copy(ref.drop_captions), capsys, 2, seeds=(0, 1234))


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
    assert_accepted(checks.check_inpaint_blend, own_copy(ref.inpaint_blend), capsys, 2, seeds=(0, 7))


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


# --- the cross-attention cases are unambiguous for every seed ----------------------------------


def _recording(calls):
    inner = make_cross()

    def cross_attention(image_tokens, text_tokens, text_mask, w_q, w_k, w_v):
        calls.append({"N": image_tokens.shape[1], "L": text_tokens.shape[1], "d": image_tokens.shape[2],
                      "d_text": text_tokens.shape[2], "d_k": w_q.shape[1], "d_v": w_v.shape[1]})
        return inner(image_tokens, text_tokens, text_mask, w_q, w_k, w_v)

    return cross_attention


@pytest.mark.parametrize("seed", [0, 1, 2, 5, 707])
def test_cross_attention_sizes_never_coincide(seed, capsys):
    """d_k equalled the image width when seed % 3 == 2 (the hidden seed 707 among them), so a wrong scale passed
    and a transposed answer had the right shape; now N != L and d_k differs from N, L, d and d_text in every case."""
    calls = []
    assert_accepted(checks.check_cross_attention, _recording(calls), capsys, 3, seed=seed)
    assert len(calls) == 5
    for sizes in calls:
        assert sizes["N"] != sizes["L"], sizes
        assert sizes["d_k"] not in (sizes["N"], sizes["L"], sizes["d"], sizes["d_text"]), sizes
    assert sum(sizes["d_v"] == sizes["d_k"] for sizes in calls) == 1  # only where keys and values swapped must show


def _no_transpose(image_tokens, text_tokens, text_mask, w_q, w_k, w_v):
    q, k, v = image_tokens @ w_q, text_tokens @ w_k, text_tokens @ w_v
    weights = (q @ k / math.sqrt(q.shape[-1])).softmax(-1)  # K not transposed: runs only if d_k == L
    return weights @ v, weights


@pytest.mark.parametrize("seed", [2, 5, 707])  # seed % 3 == 2: the seeds that were ambiguous
@pytest.mark.parametrize(("wrong", "diagnosis", "most"), [
    (make_cross(scale="d"), "scale by √d_k", 0.6),             # only the zero-weight-on-padding case is right
    (make_cross(scale="none"), "not divided by √d_k", 0.6),
    (make_cross(swap=True), "the queries must come from the image tokens", 0.0),
    (_no_transpose, "", 0.0),
], ids=["scale-by-d", "no-scale", "swapped-roles", "no-transpose"])
def test_cross_attention_wrong_answers_fail_every_value_case(seed, wrong, diagnosis, most, capsys):
    with pytest.raises(CheckFailed) as failure:
        checks.check_cross_attention(wrong, points=3, seed=seed)
    printed = capsys.readouterr().out
    assert failure.value.score <= most, printed
    assert diagnosis in printed, printed


@pytest.mark.parametrize("seed", [0, 1, 2, 707])
@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (make_cross(swap=True), "the queries must come from the image tokens"),
    (make_cross(use_mask=False), "padded text tokens receive attention weight"),
    (make_cross(scale="d"), "scale by √d_k"),
    (make_cross(softmax_dim=-2), "over the text tokens"),
    (make_cross(swap_kv=True), "keys and values swapped"),
], ids=["swapped-roles", "no-mask", "scale-by-d", "softmax-axis", "swap-kv"])
def test_cross_attention_diagnoses_hold_for_every_seed(seed, wrong, diagnosis, capsys):
    assert_rejected(checks.check_cross_attention, wrong, capsys, diagnosis, points=3, seed=seed)


# --- trivial cases earn (almost) nothing on their own ------------------------------------------


def _score(check, candidate, capsys, points=2, **kwargs):
    try:
        score = check(candidate, points=points, **kwargs)
    except CheckFailed as failure:
        score = failure.score
    return score, capsys.readouterr().out


@pytest.mark.parametrize(("check", "wrong", "most", "diagnosis"), [
    # right only at w = 1 (and at w = 0): it used to earn half the points
    (checks.check_classifier_free_guidance, lambda u, c, w: c, 0.0, ""),
    (checks.check_classifier_free_guidance, lambda u, c, w: u + w * (u - c), 0.0, "points away from the caption"),
    # right only at strength 1, where the late start step is clamped to T - 1
    (checks.check_sdedit_noise, sdedit(offset=0), 0.0, "one step too late"),
    # right only at ᾱ = 1, where the known region is z0 itself
    (checks.check_inpaint_blend, lambda g, z0, m, ab, n: m * g + (1 - m) * z0, 0.0, "pasted clean"),
    (checks.check_inpaint_blend, lambda g, z0, m, ab, n: m * g + (1 - m) * (torch.as_tensor(ab) * z0 + (1 - torch.as_tensor(ab)) * n),
     0.0, "take the square roots"),
    # keeps everything at p = 0 and drops everything at p > 0: it used to pass p = 0 and p = 1
    (checks.check_drop_captions, lambda c, p, g=None: list(c) if p == 0 else [""] * len(c), 0.4, "dropped a fraction"),
], ids=["cfg-eps-cond", "cfg-sign", "sdedit-late", "inpaint-clean", "inpaint-no-sqrt", "drop-all-or-nothing"])
def test_a_trivial_case_alone_earns_little(check, wrong, most, diagnosis, capsys):
    score, printed = _score(check, wrong, capsys)
    assert score <= most, printed
    assert diagnosis in printed, printed


def test_the_endpoints_are_still_named(capsys):
    """A rule right for w > 1 but wrong at w = 1 (impossible for an affine rule, so a constructed one) is told so."""
    def wrong_at_one(u, c, w):
        return c + 1.0 if w == 1.0 else u + w * (c - u)
    score, printed = _score(checks.check_classifier_free_guidance, wrong_at_one, capsys)
    assert "with w = 1 the result must be ε_c" in printed, printed


# --- derivations --------------------------------------------------------------------------------

import sympy  # noqa: E402


from checking import score_and_table as _derive  # noqa: E402


def test_guidance_score_key_from_bayes():
    """Independently: with Gaussian densities, −σ ∇ log[p(z) p(y|z)^w] equals the key at a point."""
    z, mu, sigma, w = sympy.symbols("z mu sigma w", positive=True)
    log_p = -z**2 / 2                       # p(z_t) = N(0, 1)
    log_p_given_y = -(z - mu) ** 2 / 2      # p(z_t | y) = N(mu, 1)
    log_p_y_given_z = log_p_given_y - log_p  # Bayes, up to a constant in z
    eps_u, eps_c = -sigma * sympy.diff(log_p, z), -sigma * sympy.diff(log_p_given_y, z)
    guided = -sigma * sympy.diff(log_p + w * log_p_y_given_z, z)
    assert sympy.simplify(guided - (eps_u + w * (eps_c - eps_u))) == 0
    gamma = w - 1  # Ho & Salimans: (1 + γ) ε_c − γ ε_u
    assert sympy.simplify((1 + gamma) * eps_c - gamma * eps_u - guided) == 0


@pytest.mark.parametrize("seed", [0, 31])
def test_guidance_score_accepts_equivalent_forms(seed, capsys):
    eps_u, eps_c, w, sigma = checks.derive_guidance_score.symbols_for_notebook()
    for answers in ({"eps_guided": eps_u + w * (eps_c - eps_u), "gamma": w - 1},
                    {"eps_guided": w * eps_c + (1 - w) * eps_u, "gamma": -(1 - w)},
                    {"eps_guided": -sigma * (-eps_u / sigma + w * (-eps_c / sigma + eps_u / sigma)), "gamma": (w**2 - w) / w}):
        score, table = _derive(checks.derive_guidance_score, answers, capsys, seed=seed)
        assert score == 2, table


@pytest.mark.parametrize(("guided", "gamma", "diagnosis"), [
    ("eps_u + w * (eps_u - eps_c)", "w - 1", "eps_guided  <- correct at w = 0 but not in general"),      # sign of the difference
    ("eps_u + w * eps_c", "w - 1", "eps_guided  <- correct at w = 0 but not in general"),               # w on ε_c alone
    ("eps_c + (w - 1) * (eps_u - eps_c)", "w - 1", "eps_guided  <- correct at w = 1 but not in general"),  # from ε_c, flipped
    ("w * (eps_c - eps_u)", "w - 1", "eps_guided  <- not equivalent"),                                  # the base ε_u dropped
    ("-(eps_u + w * (eps_c - eps_u))", "w - 1", "eps_guided  <- has the wrong sign"),                    # a score, not an ε
    ("eps_u + w * (eps_c - eps_u) / sigma", "w - 1", "eps_guided  <- depends on sigma, which it should not"),  # σ not cancelled
    ("eps_u + w * (eps_c - eps_u)", "w", "gamma  <- off by an additive constant"),
    ("eps_u + w * (eps_c - eps_u)", "1 - w", "gamma  <- has the wrong sign"),
], ids=["flipped", "w-on-cond", "from-cond-flipped", "no-base", "score", "sigma", "gamma-w", "gamma-sign"])
def test_guidance_score_names_plausible_mistakes(guided, gamma, diagnosis, capsys):
    names = dict(zip(("eps_u", "eps_c", "w", "sigma"), checks.derive_guidance_score.symbols_for_notebook()))
    answers = {"eps_guided": sympy.sympify(guided, locals=names), "gamma": sympy.sympify(gamma, locals=names)}
    score, table = _derive(checks.derive_guidance_score, answers, capsys)
    assert score == 1, table
    assert diagnosis in table, table


def test_sdedit_start_key_matches_the_pipeline():
    """s·T − 1 is the reference's start index and s·K the number of DDIM steps the pipeline runs, where whole."""
    from gradelib.reference.ddpm import DDPMSchedule, linear_betas

    schedule = DDPMSchedule(linear_betas(1000))
    for s, K in ((0.2, 25), (0.6, 25), (0.5, 40), (1.0, 10)):
        t_start = ref.sdedit_timestep(s, 1000)
        assert t_start == round(s * 1000) - 1
        steps = schedule.ddim_timesteps(max(1, round(s * K)), t_start=t_start)
        assert len(steps) == round(s * K) and steps[0] == t_start


@pytest.mark.parametrize("seed", [0, 31])
def test_sdedit_start_accepts_equivalent_forms(seed, capsys):
    s, T, K = checks.derive_sdedit_start.symbols_for_notebook()
    for answers in ({"t_start": s * T - 1, "n_steps": s * K}, {"t_start": (s * T * 2 - 2) / 2, "n_steps": K - (1 - s) * K}):
        score, table = _derive(checks.derive_sdedit_start, answers, capsys, seed=seed)
        assert score == 2, table


@pytest.mark.parametrize(("t_start", "n_steps", "diagnosis"), [
    ("s * T", "s * K", "t_start  <- off by an additive constant"),                      # the paper's step, not the code index
    ("(1 - s) * T - 1", "s * K", "t_start  <- correct at s = 1/2 but not in general"),   # strength read as what is kept
    ("s * T - 1", "(1 - s) * K", "n_steps  <- correct at s = 1/2 but not in general"),
    ("s * T - 1", "K", "n_steps  <- misses a dependence on s"),                           # every step run anyway
    ("s * T - 1", "s * T", "n_steps  <- depends on T, which it should not; misses a dependence on K"),
    ("s * T - 1", "2 * s * K", "n_steps  <- off by a constant factor (×2)"),              # U-Net calls, not steps
], ids=["paper-step", "kept-fraction", "steps-kept-fraction", "all-steps", "training-steps", "unet-calls"])
def test_sdedit_start_names_plausible_mistakes(t_start, n_steps, diagnosis, capsys):
    names = dict(zip(("s", "T", "K"), checks.derive_sdedit_start.symbols_for_notebook()))
    answers = {"t_start": sympy.sympify(t_start, locals=names), "n_steps": sympy.sympify(n_steps, locals=names)}
    score, table = _derive(checks.derive_sdedit_start, answers, capsys)
    assert score == 1, table
    assert diagnosis in table, table
