"""Checks for notebook 08 (CLIP and a tiny vision-language model), one per graded exercise.

Each check runs the student's function on seeded cases, compares it with ``gradelib.reference.clip``
and, when they disagree, looks for the mistake it resembles (a one-sided loss, image->text and
text->image swapped, a forgotten normalisation or temperature, the prefix positions left in the
loss, ...), so the feedback names the fault without printing the solution. ``seed`` selects the
cases: visible tests use the default, hidden tests other seeds.

The contrastive-loss cases use *separate* image and text embeddings, so the logits matrix is not
symmetric: for a symmetric matrix the image->text and text->image losses coincide, and neither a
one-sided loss nor a transposed matrix could be told from the right answer.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Callable

import torch
import torch.nn.functional as F

from gradelib.checks import _core
from gradelib.checks._core import Case, close, compare_case, exercise, generator, make_read_only, max_abs_diff, tensor_problem
from gradelib.checks.derive import derivation, integer, real
from gradelib.reference import clip as ref
from gradelib.reference.tokenization import IGNORE_INDEX

# Bound at import, before any student code runs.
_randn, _rand, _randint, _equal = _core.randn, _core.rand, _core.randint, _core.equal
_log_softmax = _core.log_softmax
_grad = _core.grad
_normalize = F.normalize
_unfold = F.unfold
_MAX_LOG_SCALE = ref.MAX_LOG_SCALE


# ----------------------------------------------------------------------------------------------
# Exercise: cutting an image into patches


def _patchify_variants(images: torch.Tensor, p: int):
    B, C, H, W = images.shape
    rows, cols = H // p, W // p
    six = images.reshape(B, C, rows, p, cols, p)
    return [
        ("reshaped without permuting: each 'patch' is a run of consecutive pixels of one row, not a p x p square",
         images.reshape(B, rows * cols, C * p * p)),
        ("patches are in column-major order: go left to right along a row of patches first, then down",
         six.permute(0, 4, 2, 1, 3, 5).reshape(B, rows * cols, C * p * p)),
        ("each patch is flattened pixel by pixel with the channels last (p, p, C); flatten channel by channel (C, p, p)",
         six.permute(0, 2, 4, 3, 5, 1).reshape(B, rows * cols, C * p * p)),
        ("the rows and columns inside each patch are swapped (the patch is transposed)",
         six.permute(0, 2, 4, 1, 5, 3).reshape(B, rows * cols, C * p * p)),
    ]


def _patchify_case(fn, images: torch.Tensor, p: int) -> str | None:
    out = fn(images.clone(), p)
    B, C, H, W = images.shape
    want = _unfold(images, p, stride=p).transpose(1, 2)
    problem = tensor_problem(out, "the patches", (B, (H // p) * (W // p), C * p * p))
    if problem:
        return problem
    return compare_case(out, want, 0.0, lambda: _patchify_variants(images, p), lambda: "the patches hold the right pixels in the wrong places")


@exercise("Patchify", reference=ref.patchify)
def check_patchify(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(images (B, C, H, W), patch_size) -> (B, P, C * p * p)`` against F.unfold."""
    gen = generator(seed)
    cases = [
        ("3 channels, 8 x 8 images, patches of 4", lambda: _patchify_case(fn, _rand(2, 3, 8, 8, generator=gen), 4)),
        ("non-square images (6 x 10), patches of 2", lambda: _patchify_case(fn, _rand(3, 3, 6, 10, generator=gen), 2)),
        ("one channel, 16 x 16, patches of 4", lambda: _patchify_case(fn, _rand(1, 1, 16, 16, generator=gen), 4)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the symmetric InfoNCE loss


def _infonce_from_logits(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The explicit formula: mean_i -log softmax(L[i, :])[i] and mean_j -log softmax(L[:, j])[j]."""
    image_to_text = -_log_softmax(logits, dim=1).diagonal().mean()
    text_to_image = -_log_softmax(logits, dim=0).diagonal().mean()
    return image_to_text, text_to_image


def _cosine(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    return _normalize(image, dim=-1) @ _normalize(text, dim=-1).T


def _infonce_wanted(image, text, log_scale) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    scale = math.exp(min(float(log_scale), _MAX_LOG_SCALE))
    i2t, t2i = _infonce_from_logits(scale * _cosine(image, text))
    return (i2t + t2i) / 2, i2t, t2i


def _infonce_wrong_logits(image, text, log_scale: float):
    """Logits computed wrongly, each with its diagnosis."""
    clamped = math.exp(min(log_scale, _MAX_LOG_SCALE))
    cosine = _cosine(image, text)
    variants = [
        ("the embeddings are not L2-normalised: CLIP's logits are scaled *cosine* similarities", clamped * (image @ text.T)),
        ("the temperature is missing: the cosine similarities must be multiplied by the logit scale exp(log_scale)", cosine),
        ("log_scale is used as the scale itself: the parameter is the *log* of the scale, multiply by exp(log_scale)", log_scale * cosine),
        ("the cosine similarities are divided by exp(log_scale): exp(log_scale) is 1 / temperature, so multiply", cosine / math.exp(log_scale)),
        ("the normalisation is right but the temperature is missing and the embeddings were normalised along the batch", _normalize(image, dim=0) @ _normalize(text, dim=0).T),
    ]
    if log_scale > _MAX_LOG_SCALE:
        variants.insert(0, ("the logit scale is not clamped: CLIP clips exp(log_scale) at 100 (clamp log_scale at log 100)",
                            math.exp(log_scale) * cosine))
    else:
        variants.insert(0, ("log_scale is clamped from below (or the scale set to 100): clamp only its maximum, at log 100",
                            100.0 * cosine))
    return variants


def _triple_problem(result: object) -> str | None:
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        return f"should return a triple (loss, loss_image_to_text, loss_text_to_image), got {type(result).__name__}"
    for value, name in zip(result, ("loss", "loss_image_to_text", "loss_text_to_image")):
        problem = tensor_problem(value, name)
        if problem:
            return problem
        if value.dim() != 0:
            return f"{name} should be a scalar (0-d tensor, a batch mean), got shape {tuple(value.shape)}"
    return None


def _infonce_case(fn, image: torch.Tensor, text: torch.Tensor, log_scale: float, check_grad: bool = False) -> str | None:
    scale_param = torch.tensor(log_scale, dtype=image.dtype, requires_grad=True)
    image_in, text_in = image.clone().requires_grad_(check_grad), text.clone().requires_grad_(check_grad)
    result = fn(image_in, text_in, scale_param)
    problem = _triple_problem(result)
    if problem:
        return problem
    loss, i2t, t2i = result
    want_loss, want_i2t, want_t2i = _infonce_wanted(image, text, log_scale)
    tol = 1e-5 * max(1.0, float(want_loss))
    if close(loss, want_loss, tol) and close(i2t, want_i2t, tol) and close(t2i, want_t2i, tol):
        if check_grad:
            grads = _grad(loss, [image_in, text_in, scale_param], allow_unused=True)
            if any(g is None for g in grads):
                return "the loss is detached from the embeddings or from log_scale: no gradient would reach them"
            want_grads = _reference_grads(image, text, log_scale)
            if not all(close(g, w, 1e-5) for g, w in zip(grads, want_grads)):
                return "the value is right but its gradients are not (is something detached or computed outside torch?)"
        return None
    # Right logits, wrong assembly.
    if close(loss, want_i2t, tol) or close(loss, want_t2i, tol):
        return "the loss is one-sided: average the image->text and the text->image cross-entropies"
    if close(i2t, want_t2i, tol) and close(t2i, want_i2t, tol):
        return ("image->text and text->image are swapped (a transposed logits matrix): row i of logits_per_image "
                "scores image i against every text, so image->text is the cross-entropy over rows")
    if close(loss, want_i2t + want_t2i, tol):
        return "the two directions are summed: CLIP's loss is their mean, (image->text + text->image) / 2"
    n = image.shape[0]
    if close(loss, n * want_loss, tol * n):
        return "summed over the batch: each cross-entropy is a mean over the N pairs"
    # Wrong logits.
    for diagnosis, logits in _infonce_wrong_logits(image, text, log_scale):
        a, b = _infonce_from_logits(logits)
        if close(loss, (a + b) / 2, tol) or close(i2t, a, tol):
            return diagnosis
    if close(i2t, want_i2t, tol) and not close(t2i, want_t2i, tol):
        return "loss_text_to_image is wrong: it is the cross-entropy over the *columns* of the logits (each text picks its image)"
    return f"differs from the symmetric InfoNCE loss (off by {max_abs_diff(loss, want_loss):.3g})"


def _reference_grads(image, text, log_scale):
    image_in, text_in = image.clone().requires_grad_(True), text.clone().requires_grad_(True)
    scale_param = torch.tensor(log_scale, dtype=image.dtype, requires_grad=True)
    loss = ref.symmetric_infonce(image_in, text_in, scale_param)[0]
    return _grad(loss, [image_in, text_in, scale_param])


def _embeddings(gen: torch.Generator, n: int, d: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Separate image and text embeddings with unequal norms and an asymmetric similarity matrix."""
    norms_i = 0.5 + 3 * _rand(n, 1, generator=gen, dtype=torch.float64)
    norms_t = 0.5 + 3 * _rand(n, 1, generator=gen, dtype=torch.float64)
    image = _randn(n, d, generator=gen, dtype=torch.float64)
    text = image + 0.8 * _randn(n, d, generator=gen, dtype=torch.float64)  # matching pairs are related
    return image * norms_i, text * norms_t


@exercise("Symmetric InfoNCE", reference=(ref.symmetric_infonce, ref.clip_logits))
def check_symmetric_infonce(fn: Callable, points: float = 3, seed: int = 0) -> list[Case]:
    """Check ``fn(image_embeddings (N, D), text_embeddings (N, D), log_scale ()) -> (loss, i2t, t2i)``."""
    gen = generator(seed)
    a = _embeddings(gen, 6 + seed % 3, 5)
    b = _embeddings(gen, 9, 4)
    c = _embeddings(gen, 5, 3)
    cases = [
        ("unnormalised embeddings, log_scale = log 10", lambda: _infonce_case(fn, *a, math.log(10.0))),
        ("log_scale = log(1/0.07), CLIP's initial value", lambda: _infonce_case(fn, *b, ref.INIT_LOG_SCALE)),
        ("log_scale = log 300 is clamped at log 100", lambda: _infonce_case(fn, *c, math.log(300.0))),
        ("gradients reach the embeddings and log_scale", lambda: _infonce_case(fn, *a, math.log(4.0), check_grad=True)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: prompt ensembling


def _zero_shot_variants(emb: torch.Tensor):
    unit = _normalize(emb, dim=-1)
    return [
        ("the average is not renormalised: the class vectors must have unit norm", unit.mean(dim=1)),
        ("the prompts are averaged before normalising: a prompt with a large norm would dominate its class",
         _normalize(emb.mean(dim=1), dim=-1)),
        ("no normalisation at all: normalise each prompt, average, normalise again", emb.mean(dim=1)),
        ("normalised over the templates axis instead of the embedding axis", _normalize(_normalize(emb, dim=1).mean(dim=1), dim=-1)),
        ("summed over the templates instead of averaged, and not renormalised", unit.sum(dim=1)),
    ]


def _zero_shot_case(fn, emb: torch.Tensor) -> str | None:
    out = fn(emb.clone())
    C, M, D = emb.shape
    problem = tensor_problem(out, "the class weights", (C, D))
    if problem:
        return problem
    want = _normalize(_normalize(emb, dim=-1).mean(dim=1), dim=-1)
    return compare_case(out, want, 1e-6, lambda: _zero_shot_variants(emb),
                        lambda: f"differs from the ensembled class vectors (off by {max_abs_diff(out, want):.3g})")


@exercise("Zero-shot weights (prompt ensembling)", reference=ref.zero_shot_weights)
def check_zero_shot_weights(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(prompt_embeddings (C, M, D)) -> (C, D)`` unit-norm ensembled class vectors."""
    gen = generator(seed)

    def embeddings(c, m, d):
        return _randn(c, m, d, generator=gen, dtype=torch.float64) * (0.2 + 5 * _rand(c, m, 1, generator=gen, dtype=torch.float64))

    def two_then_one():
        # One template per class is a trivial case (most wrong recipes get it right), so it earns nothing on
        # its own: it is asked only after a two-template case, in which one prompt is far longer than the other.
        return _zero_shot_case(fn, embeddings(3, 2, 4)) or _zero_shot_case(fn, embeddings(3, 1, 4))

    cases = [
        ("4 classes x 3 templates, prompts of very different norms", lambda: _zero_shot_case(fn, embeddings(4, 3, 6))),
        ("10 classes x 5 templates", lambda: _zero_shot_case(fn, embeddings(10, 5, 8))),
        ("2 templates per class, then a single template", two_then_one),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: Recall@K


def _recall(similarity: torch.Tensor, k: int) -> float:
    """The explicit count: query i succeeds if fewer than k other candidates score at least its match's score."""
    hits = 0
    for i in range(similarity.shape[0]):
        above = int((similarity[i] >= similarity[i, i]).sum()) - 1
        hits += above < k
    return hits / similarity.shape[0]


def _as_float(value: object) -> float | str:
    if isinstance(value, torch.Tensor):
        problem = tensor_problem(value, "the recall")
        if problem:
            return problem
        if value.numel() != 1:
            return f"the recall should be one number, got a tensor of shape {tuple(value.shape)}"
        return float(value)
    if isinstance(value, Real) and not isinstance(value, bool):
        return float(value)
    return f"the recall should be a number or a 0-d tensor, got {type(value).__name__}"


def _recall_case(fn, similarity: torch.Tensor, k: int) -> str | None:
    got = _as_float(fn(similarity.clone(), k))
    if isinstance(got, str):
        return got
    want = _recall(similarity, k)
    if abs(got - want) < 1e-6:
        return None
    n_q, n_c = similarity.shape
    if n_q == n_c and abs(got - _recall(similarity.T.contiguous(), k)) < 1e-6:
        return "ranked down the columns: query i is row i, so rank the candidates of row i"
    if k + 1 <= n_c and abs(got - _recall(similarity, k + 1)) < 1e-6:
        return "off by one: this is Recall@(k+1); the match must be among the k best (rank 0 .. k-1)"
    if k > 1 and abs(got - _recall(similarity, k - 1)) < 1e-6:
        return "off by one: this is Recall@(k-1); the match must be among the k best (rank 0 .. k-1)"
    if abs(got - want * n_q) < 1e-6:
        return "this is the number of hits: Recall@K is the *share* of queries whose match is in the top k"
    return f"differs from Recall@{k} ({got:.3f} instead of {want:.3f})"


@exercise("Recall@K", reference=ref.recall_at_k)
def check_recall_at_k(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(similarity (N_q, N_c), k) -> recall`` (match of query i = candidate i)."""
    gen = generator(seed)

    def similarity(n_q, n_c, signal):
        s = _randn(n_q, n_c, generator=gen, dtype=torch.float64)
        s[torch.arange(n_q), torch.arange(n_q)] += signal  # matches score higher, but not always highest
        return s

    square = similarity(40, 40, 1.5)
    cases = [
        ("40 x 40, Recall@1", lambda: _recall_case(fn, square, 1)),
        ("40 x 40, Recall@5", lambda: _recall_case(fn, square, 5)),
        ("10 queries x 30 candidates, Recall@3", lambda: _recall_case(fn, similarity(10, 30, 1.0), 3)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the captioner's targets (loss only on caption tokens)


def _targets_case(fn, tokens: torch.Tensor, num_prefix: int, pad_id: int) -> str | None:
    out = fn(tokens.clone(), num_prefix, pad_id)
    B, T = tokens.shape
    P = num_prefix
    problem = tensor_problem(out, "the targets", (B, P + T), torch.int64)
    if problem:
        return problem
    want = ref.caption_targets(tokens, P, pad_id)
    if _equal(out, want):
        return None
    ignore = IGNORE_INDEX
    if not bool((out[:, :P - 1] == ignore).all()):
        return "the image-prefix positions are not ignored: put -100 there, there is no token to predict about the image"
    if not bool((out[:, P - 1] == ignore).all()):
        if _equal(out[:, P - 1], tokens[:, 0]):
            return "the last prefix position is asked to predict <bos>, which is given, not generated: ignore it (-100)"
        return "the last prefix position should be ignored (-100)"
    caption_part = out[:, P:]
    unshifted = tokens.masked_fill(tokens == pad_id, ignore)
    if _equal(caption_part, unshifted):
        return "the targets are not shifted: position j predicts the *next* token, tokens[:, j - P + 1]"
    shifted_unmasked = torch.full_like(caption_part, ignore)
    shifted_unmasked[:, :T - 1] = tokens[:, 1:]
    if _equal(caption_part, shifted_unmasked):
        return "padding is a target: <pad> positions must be -100, or the model learns to predict padding"
    if bool((caption_part[:, -1] != ignore).any()):
        return "the last position has a target, but nothing follows it: it should be -100"
    return "the caption targets are wrong (compare position P + t with tokens[:, t + 1])"


@exercise("Caption targets", reference=ref.caption_targets)
def check_caption_targets(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(tokens (B, T), num_prefix, pad_id) -> (B, P + T)`` with -100 outside the caption."""
    gen = generator(seed)

    def captions(B, T, pad_id):
        vocab = 20 if pad_id < 3 else pad_id  # real tokens never equal the pad id
        tokens = _randint(3, vocab, (B, T), generator=gen)
        lengths = _randint(3, T + 1, (B,), generator=gen)
        lengths[0] = T
        for b, n in enumerate(lengths.tolist()):
            tokens[b, 0] = 1
            tokens[b, n - 1] = 2
            tokens[b, n:] = pad_id
        return tokens

    cases = [
        ("4 prefix tokens, captions with padding", lambda: _targets_case(fn, captions(5, 9, 0), 4, 0)),
        ("16 prefix tokens (a 4 x 4 patch grid)", lambda: _targets_case(fn, captions(3, 7, 0), 16, 0)),
        ("a pad id other than 0", lambda: _targets_case(fn, captions(4, 8, 19), 2, 19)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Derivations (their keys live here, like the reference code: the visible call gives immediate feedback)

# One row of the logits, N = 3 captions, the positive is caption 1: loss = -log softmax(l)_1.
derive_infonce_gradient = derivation(
    "The gradient of InfoNCE",
    symbols={"l1": real(), "l2": real(), "l3": real()},
    expected={"grad_positive": "exp(l1) / (exp(l1) + exp(l2) + exp(l3)) - 1",
              "grad_negative": "exp(l2) / (exp(l1) + exp(l2) + exp(l3))"},
    # With equal logits every softmax entry is 1/3, so the positive's probability in place of the
    # negative's (an index slip) is right there and nowhere else.
    special={"equal logits": {"l2": "l1", "l3": "l1"}},
)

# All N logits of a row equal (unrelated embeddings, or a tiny logit scale): one direction's loss, and the
# gradient of a row's cross-entropy with respect to its positive logit.
derive_infonce_chance = derivation(
    "InfoNCE at uniform logits",
    symbols={"N": integer(2, 4096)},
    expected={"loss_uniform": "log(N)", "grad_uniform": "1/N - 1"},
)


make_read_only(__name__)
