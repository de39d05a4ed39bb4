"""Checks for notebook 07 (Stable Diffusion / latent diffusion), one per graded exercise.

Each check runs the student's function on seeded cases, compares it with
``gradelib.reference.latent_diffusion`` and, when they disagree, looks for the known mistake it
reproduces (queries and keys swapped, the padding mask forgotten, the guidance sign flipped, the
image-to-image start step one too late, the inpainting mask inverted, ...), naming the fault without
printing the answer. ``seed`` picks the cases: visible tests use the default, hidden tests other seeds.
"""

from __future__ import annotations

import math

import torch

from gradelib.checks import _core
from gradelib.checks._core import Case, close, compare_case, exercise, first_match, generator, make_read_only, max_abs_diff, tensor_problem, unpack_pair, within_sigmas
from gradelib.checks.derive import derivation, integer, interval, positive, real
from gradelib.reference import attention as attention_ref
from gradelib.reference import latent_diffusion as ref
from gradelib.reference.ddpm import linear_betas

# Bound before student code runs (see gradelib.checks._core).
_softmax, _randn, _rand, _manual_seed = _core.softmax, _core.randn, _core.rand, _core.manual_seed
_SCHEDULE_ALPHA_BARS = torch.cumprod(1 - linear_betas(1000).double(), 0).float()
_SHORT_ALPHA_BARS = torch.cumprod(1 - torch.linspace(0.05, 0.5, 10, dtype=torch.float64), 0).float()


# ----------------------------------------------------------------------------------------------
# Exercise: cross-attention


def _attend(q, k, v, mask, scale, dim=-1):
    scores = q @ k.transpose(-2, -1) / scale
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, :], float("-inf"))
    weights = _softmax(scores, dim=dim)
    return weights @ v, weights


def _cross_attention_variants(img, txt, mask, w_q, w_k, w_v):
    q, k, v = img @ w_q, txt @ w_k, txt @ w_v
    d_k = w_q.shape[1]
    variants = [
        ("scores are not divided by √d_k", _attend(q, k, v, mask, 1.0)),
        ("scores are divided by d_k; divide by √d_k", _attend(q, k, v, mask, d_k)),
        ("scores are scaled by √d of the image features; scale by √d_k, the width of the queries and keys",
         _attend(q, k, v, mask, math.sqrt(img.shape[-1]))),
        ("scores are scaled by √d_text; scale by √d_k, the width of the queries and keys",
         _attend(q, k, v, mask, math.sqrt(txt.shape[-1]))),
        ("softmax over the image positions: each image token's weights must sum to 1 over the text tokens (dim=-1)",
         _attend(q, k, v, mask, math.sqrt(d_k), dim=-2) if mask is None else (None, None)),
    ]
    if mask is not None:
        variants.append(("padded text tokens receive attention weight: apply text_mask to the keys (False → -inf before softmax)",
                         _attend(q, k, v, None, math.sqrt(d_k))))
        inverted = ~mask
        inverted[:, 0] |= ~inverted.any(dim=-1)
        variants.append(("the mask is inverted: True marks a real token, so fill the positions where text_mask is False",
                         _attend(q, k, v, inverted, math.sqrt(d_k))))
    if img.shape[-1] == txt.shape[-1]:
        variants.append(("queries come from the text and keys/values from the image: the image tokens ask (queries), the caption answers (keys, values)",
                         _attend(txt @ w_q, img @ w_k, img @ w_v, None, math.sqrt(d_k))))
    variants.append(("keys and values swapped (K from W_v, V from W_k)", _attend(q, txt @ w_v, txt @ w_k, mask, math.sqrt(d_k))
                     if w_k.shape == w_v.shape else (None, None)))
    return [(d, pair) for d, pair in variants if pair[0] is not None]


def _cross_case(fn, B, N, L, d, d_text, d_k, d_v, gen, padded):
    img = _randn(B, N, d, generator=gen)
    txt = _randn(B, L, d_text, generator=gen)
    w_q = _randn(d, d_k, generator=gen)
    w_k = _randn(d_text, d_k, generator=gen)
    w_v = _randn(d_text, d_v, generator=gen)
    mask = None
    if padded:
        lengths = torch.arange(B) % (L - 1) + 2  # every caption has >= 2 real tokens, several are padded
        mask = torch.arange(L)[None, :] < lengths[:, None]
    result = fn(img.clone(), txt.clone(), None if mask is None else mask.clone(), w_q, w_k, w_v)
    out, weights = unpack_pair(result, "cross_attention")
    want_out, want_w = ref.cross_attention(img, txt, mask, w_q, w_k, w_v)
    if type(weights) is torch.Tensor and tuple(weights.shape) == (B, L, N) and N != L:
        return "weights have one row per text token: the queries must come from the image tokens, keys and values from the text"
    if type(out) is torch.Tensor and tuple(out.shape) == (B, L, d_v) and N != L:
        return "the output has one row per text token: the queries must come from the image tokens, keys and values from the text"
    problem = tensor_problem(out, "output", want_out.shape) or tensor_problem(weights, "weights", want_w.shape)
    if problem:
        return problem
    if close(out, want_out, 1e-4) and close(weights, want_w, 1e-5):
        return None
    variants = _cross_attention_variants(img, txt, mask, w_q, w_k, w_v)
    diagnosis = first_match(weights, [(d, pair[1]) for d, pair in variants], atol=1e-5)
    if diagnosis is None and close(weights, want_w, 1e-5):
        diagnosis = first_match(out, [(d, pair[0]) for d, pair in variants], atol=1e-4) or "weights are right but the output is not weights @ V with V = text_tokens @ w_v"
    return diagnosis or f"output differs from softmax(QKᵀ/√d_k)V by up to {max_abs_diff(out, want_out):.3g}"


@exercise("Cross-attention", reference=(ref.cross_attention, attention_ref.scaled_dot_product_attention))
def check_cross_attention(fn, points: float = 3, seed: int = 0) -> list[Case]:
    """fn(image_tokens, text_tokens, text_mask, w_q, w_k, w_v) -> (out (B, N, d_v), weights (B, N, L)).

    Every size is unambiguous, whatever the seed: d_k (4, 5 or 6) never equals the number of image tokens N,
    of text tokens L, the widths d and d_text, or d_v (except where d_v = d_k on purpose, so that keys and
    values swapped can be told apart), and N != L. Where two sizes agree, a transposed or mixed-up answer
    runs without an error, and a wrong scale (√d instead of √d_k) gives the right numbers.
    """
    gen = generator(seed)
    d_k = 4 + seed % 3

    def padded_weights_zero():
        B, N, L = 3, 9, 7
        img, txt = _randn(B, N, 8, generator=gen), _randn(B, L, 8, generator=gen)
        w_q, w_k, w_v = _randn(8, d_k, generator=gen), _randn(8, d_k, generator=gen), _randn(8, 10, generator=gen)
        mask = torch.arange(L)[None, :] < torch.tensor([[L], [3], [2]])
        out, weights = unpack_pair(fn(img, txt, mask.clone(), w_q, w_k, w_v), "cross_attention")
        problem = tensor_problem(weights, "weights", (B, N, L))
        if problem:
            return problem
        leaked = float(weights.detach().masked_select(~mask[:, None, :].expand(B, N, L)).abs().max())
        if leaked > 1e-6:
            return "padded text tokens receive attention weight: apply text_mask to the keys (False → -inf before softmax)"
        if not close(weights.detach().sum(-1), torch.ones(B, N), 1e-5):
            return "each image token's weights should sum to 1 over the caption's real tokens"
        return None

    # (B, N, L, d, d_text, d_k, d_v): N image tokens, L text tokens; d_k is 4, 5 or 6 and no other size is.
    cases = [
        ("shapes: N image tokens attend to L text tokens of another width",
         lambda: _cross_case(fn, 2, 9, 3, 8, 12, d_k, 10, gen, padded=False)),
        ("queries from the image, keys and values from the text (same widths)",
         lambda: _cross_case(fn, 2, 7, 3, 8, 8, d_k, 10, gen, padded=False)),
        ("values match softmax(QKᵀ/√d_k)V", lambda: _cross_case(fn, 2, 9, 7, 11, 10, d_k, d_k, gen, padded=False)),
        ("padded text tokens get zero weight", padded_weights_zero),
        ("values with a padding mask, per batch element", lambda: _cross_case(fn, 4, 9, 7, 8, 12, d_k, 10, gen, padded=True)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: condition dropout


_CAPTIONS = ["a red circle at the top left", "a green square at the bottom right", "a blue triangle at the top right",
             "a red square at the bottom left"]


@exercise("Condition dropout", reference=ref.drop_captions)
def check_drop_captions(fn, points: float = 2, seed: int = 0) -> list[Case]:
    """fn(captions: list[str], p: float, generator) -> list[str], each caption replaced by "" with probability p."""
    n = 4000
    captions = [_CAPTIONS[i % 4] + "" for i in range(n)]

    def call(p, s):
        result = fn(list(captions), p, generator(s))
        if type(result) is not list or len(result) != n or not all(type(c) is str for c in result):
            raise TypeError(f"drop_captions should return a list of {n} strings")
        return result

    def changed_kept(result):
        for got, was in zip(result, captions):
            if got != "" and got != was:
                return f"a kept caption was changed ({was!r} → {got!r}): keep captions whole and in order"
        not_empty = [c for c in result if c != "" and c not in _CAPTIONS]
        return f"a dropped caption should be the null caption \"\" (got {not_empty[0]!r})" if not_empty else None

    def fraction(p, endpoint):
        def case():
            # The endpoint (p = 0 keeps everything, p = 1 drops everything) is a trivial case that many wrong
            # answers pass: it is checked only together with a fraction in between, so it earns nothing alone.
            problem = fraction_only(p)
            if problem:
                return problem
            if endpoint == 0.0 and call(0.0, seed) != captions:
                return "with p = 0 every caption must be kept unchanged"
            if endpoint == 1.0 and call(1.0, seed) != [""] * n:
                return "with p = 1 every caption must become the null caption \"\""
            return None
        return case

    def fraction_only(p):
        result = call(p, 1000 + seed)
        problem = changed_kept(result)
        if problem:
            return problem
        dropped = sum(c == "" for c in result) / n
        sigma = math.sqrt(p * (1 - p) / n)
        if not within_sigmas(dropped - p, sigma):
            hint = ": drop when a uniform draw is below p, not above" if within_sigmas(dropped - (1 - p), sigma) else ""
            return f"dropped a fraction {dropped:.2f} of the captions with p = {p}{hint}"
        return None

    def dropped_is_null():
        result = call(0.5, seed + 7)
        for got, was in zip(result, captions):
            if got != was and got != "":
                return f"a dropped caption should be the null caption \"\" (got {got!r})"
        return None if any(c == "" for c in result) else "nothing was dropped with p = 0.5"

    def independent():
        result = call(0.5, seed + 11)
        dropped = [c == "" for c in result]
        first, second = sum(dropped[: n // 2]), sum(dropped[n // 2:])
        if abs(first - second) > 0.1 * n or dropped == sorted(dropped, reverse=True) or dropped == sorted(dropped):
            return "the dropped captions form a block: decide for each caption independently"
        if all(dropped[i] == dropped[0] for i in range(n)):
            return "the whole batch is dropped or kept at once: decide for each caption independently"
        return None

    def uses_generator():
        a, b, c = call(0.3, seed + 21), call(0.3, seed + 21), call(0.3, seed + 22)
        if a != b:
            return "two calls with identically seeded generators differ: draw your random numbers from `generator`"
        if a == c:
            return "the result does not depend on the generator: draw your random numbers from `generator`"
        return None

    cases = [
        ("about 10% dropped with p = 0.1, none with p = 0", fraction(0.1, 0.0)),
        ("about 25% dropped with p = 0.25, all with p = 1", fraction(0.25, 1.0)),
        ("a dropped caption becomes the null caption \"\"", dropped_is_null),
        ("each caption is dropped independently", independent),
        ("randomness comes from the generator", uses_generator),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: classifier-free guidance


def _cfg_variants(eu, ec, w):
    return [
        ("the guidance points away from the caption: the difference must be ε_c − ε_u, not ε_u − ε_c", eu + w * (eu - ec)),
        ("you extrapolate from ε_c, i.e. ε_c + w(ε_c − ε_u): start from ε_u (with w = 1 the result must be ε_c)", ec + w * (ec - eu)),
        ("the weights of ε_c and ε_u are swapped: w goes with ε_c", (1 - w) * ec + w * eu),
        ("w multiplies ε_c alone; it must multiply the difference ε_c − ε_u", eu + w * ec),
        ("the unconditional base ε_u is missing: ε̂ = ε_u + w(ε_c − ε_u)", w * (ec - eu)),
    ]


@exercise("Classifier-free guidance", reference=ref.classifier_free_guidance)
def check_classifier_free_guidance(fn, points: float = 2, seed: int = 0) -> list[Case]:
    """fn(eps_uncond, eps_cond, guidance_scale) -> eps_hat, same shape."""
    gen = generator(seed)
    shape = (3, 4, 8, 8)
    eu, ec = _randn(shape, generator=gen), _randn(shape, generator=gen)
    w_main = 3.0 + seed % 5

    def one(w, special=None):
        got = fn(eu.clone(), ec.clone(), w)
        want = ref.classifier_free_guidance(eu, ec, w)
        problem = tensor_problem(got, "the guided prediction", shape)
        if problem:
            return problem
        return compare_case(got, want, 1e-4, lambda: _cfg_variants(eu, ec, w),
                            lambda: special or f"differs from the guided prediction by up to {max_abs_diff(got, want):.3g}")

    def case(w, endpoint=None):
        # w = 0 and w = 1 are trivial cases (returning eps_cond passes w = 1): each is checked only after a
        # guidance scale that extrapolates, so on its own it earns nothing.
        def run():
            problem = one(w)
            if problem or endpoint is None:
                return problem
            return one(endpoint, ("with w = 0 the result must be ε_u, the unconditional prediction" if endpoint == 0.0
                                  else "with w = 1 the result must be ε_c, the conditional prediction"))
        return run

    cases = [
        (f"w = {w_main:g} extrapolates beyond ε_c; w = 0 gives ε_u", case(w_main, 0.0)),
        ("w = 7.5 (Stable Diffusion's default); w = 1 gives ε_c", case(7.5, 1.0)),
        ("w = 1.5, a little guidance", case(1.5)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: SDEdit, noising to strength s


@exercise("SDEdit noising", reference=(ref.sdedit_noise, ref.sdedit_timestep))
def check_sdedit_noise(fn, points: float = 2, seed: int = 0) -> list[Case]:
    """fn(z0, strength, alpha_bars, noise) -> (z_t, t) with t = round(strength * T) - 1."""
    gen = generator(seed)
    strengths = [0.5, 0.25, 0.75][seed % 3]

    def case(strength, alpha_bars, then=None):
        def run():
            # Strength 1 is a trivial case for a start step one too late (clamped to T - 1, it is right there):
            # it is checked only after a strength in between.
            return one(strength, alpha_bars) or (one(then, alpha_bars) if then is not None else None)
        return run

    def one(strength, alpha_bars):
        T = len(alpha_bars)
        z0, noise = _randn(2, 4, 8, 8, generator=gen), _randn(2, 4, 8, 8, generator=gen)
        result = fn(z0.clone(), strength, alpha_bars.clone(), noise.clone())
        z_t, t = unpack_pair(result, "sdedit_noise")
        want_z, want_t = ref.sdedit_noise(z0, strength, alpha_bars, noise)
        if isinstance(t, torch.Tensor) and t.numel() == 1:
            t = t.item()
        if isinstance(t, bool) or not isinstance(t, int):
            return f"t should be a Python int (the code step to start from), got {type(t).__name__}"
        if t == want_t + 1:
            return f"t is one step too late (got {t}): paper step s·T is code index s·T − 1"
        if t == want_t - 1:
            return f"t is one step too early (got {t}): code index round(s·T) − 1"
        if t != want_t:
            return f"t = {t} for strength {strength} and T = {T}: expected the code index round(s·T) − 1"
        problem = tensor_problem(z_t, "z_t", z0.shape)
        if problem:
            return problem
        ab, a = alpha_bars[t], 1 - alpha_bars[t]
        return compare_case(z_t, want_z, 1e-4, [
            ("the coefficients are √ᾱ_t and √(1 − ᾱ_t): take the square roots", ab * z0 + a * noise),
            ("z_t is noised with ᾱ of the next step: use alpha_bars[t]", alpha_bars[min(t + 1, T - 1)].sqrt() * z0 + (1 - alpha_bars[min(t + 1, T - 1)]).sqrt() * noise),
            ("the noise is added without its coefficient √(1 − ᾱ_t)", ab.sqrt() * z0 + noise),
            ("signal and noise coefficients swapped", a.sqrt() * z0 + ab.sqrt() * noise),
        ], lambda: f"z_t differs from √ᾱ_t z0 + √(1 − ᾱ_t) ε by up to {max_abs_diff(z_t, want_z):.3g}")

    cases = [
        (f"strength {strengths} with T = 1000, then strength 1 (the last step)", case(strengths, _SCHEDULE_ALPHA_BARS, 1.0)),
        ("strength 0.3 with T = 10", case(0.3, _SHORT_ALPHA_BARS)),
        ("strength 0.1 with T = 10 (the first step)", case(0.1, _SHORT_ALPHA_BARS)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the inpainting blend


@exercise("Inpainting blend", reference=ref.inpaint_blend)
def check_inpaint_blend(fn, points: float = 2, seed: int = 0) -> list[Case]:
    """fn(z_generated, z0_known, mask, alpha_bar_prev, noise) -> blended z, mask = 1 on the hole."""
    gen = generator(seed)

    def case(alpha_bar_prev, as_tensor=False, then=None):
        def run():
            # ᾱ = 1 (after the last step) is a trivial case: the known region is z0 itself, so answers that forget
            # to noise it or to take square roots are right there. It is checked only after a level in between.
            return one(alpha_bar_prev, as_tensor) or (one(then) if then is not None else None)
        return run

    def one(alpha_bar_prev, as_tensor=False):
        z_gen, z0, noise = (_randn(2, 4, 8, 8, generator=gen) for _ in range(3))
        mask = torch.zeros(2, 1, 8, 8)
        mask[0, :, :4, :] = 1.0  # top half is the hole
        mask[1, :, :, 4 + seed % 2:] = 1.0  # right part is the hole
        ab = torch.tensor(alpha_bar_prev) if as_tensor else alpha_bar_prev
        got = fn(z_gen.clone(), z0.clone(), mask.clone(), ab, noise.clone())
        want = ref.inpaint_blend(z_gen, z0, mask, alpha_bar_prev, noise)
        problem = tensor_problem(got, "the blended latent", z_gen.shape)
        if problem:
            return problem
        a = torch.tensor(float(alpha_bar_prev))
        known = a.sqrt() * z0 + (1 - a).sqrt() * noise
        return compare_case(got, want, 1e-5, [
            ("the mask is inverted: mask = 1 marks the hole, where the generated latent must be kept", (1 - mask) * z_gen + mask * known),
            ("the known region is pasted clean: noise z0_known to the current level, √ᾱ z0 + √(1 − ᾱ) ε", mask * z_gen + (1 - mask) * z0),
            ("the coefficients are √ᾱ and √(1 − ᾱ): take the square roots", mask * z_gen + (1 - mask) * (a * z0 + (1 - a) * noise)),
            ("the hole is filled with the noised known latent too: keep z_generated where mask = 1", known),
            ("the known region was added instead of replaced: multiply z_generated by the mask", z_gen + (1 - mask) * known),
        ], lambda: f"differs from the blend by up to {max_abs_diff(got, want):.3g}", variant_atol=1e-4)

    cases = [
        ("mid-way, ᾱ = 0.5; then the last step, ᾱ = 1 (the known region is exactly z0)", case(0.5, then=1.0)),
        ("early, ᾱ = 0.05, given as a tensor", case(0.05, as_tensor=True)),
        ("late, ᾱ = 0.9", case(0.9)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Derivations (their keys live here, like the reference code: the visible call gives immediate feedback)

# ε_θ(z_t, y) = −σ_t ∇ log p(z_t | y) and ε_θ(z_t, ∅) = −σ_t ∇ log p(z_t), σ_t = √(1 − ᾱ_t). The guided ε is
# −σ_t ∇ log [p(z_t) p(y | z_t)^w], with Bayes p(y | z_t) ∝ p(z_t | y) / p(z_t). Ho & Salimans write the same
# rule as (1 + γ) ε_c − γ ε_u: gamma is the γ that matches Stable Diffusion's w.
derive_guidance_score = derivation(
    "Guidance as the score of p(z_t) p(y|z_t)^w",
    symbols={"eps_u": real(), "eps_c": real(), "w": positive(0.2, 10), "sigma": interval(0, 1)},
    expected={"eps_guided": "eps_u + w * (eps_c - eps_u)", "gamma": "w - 1"},
    # w = 0 is unconditional and w = 1 plain conditional: a rule with the difference's sign flipped, or with
    # w on ε_c alone, is right at w = 0; one that drops ε_u is right at w = 1.
    special={"w = 0": {"w": 0}, "w = 1": {"w": 1}},
)

# SDEdit with strength s: the input's latent is noised to paper step s·T (code index s·T − 1, code step t being
# paper step t + 1) and a K-step sampler whose steps are spread evenly over the T steps runs those at or below
# it, s·K of them (s·T and s·K taken to be whole numbers).
derive_sdedit_start = derivation(
    "SDEdit's starting step",
    symbols={"s": interval(0, 1), "T": integer(100, 1000), "K": integer(10, 100)},
    expected={"t_start": "s * T - 1", "n_steps": "s * K"},
    # Strength read the wrong way round (the fraction of the input kept) is right at s = 1/2.
    special={"s = 1/2": {"s": 0.5}},
)


make_read_only(__name__)
