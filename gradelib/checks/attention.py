"""Checks for notebook 01 (attention math), one per graded exercise.

Each check compares the student's code with ``gradelib.reference.attention`` on seeded random cases
and, when they disagree, looks for the mistake it resembles (a missing 1/√d_k, an inverted mask, a
softmax over the wrong axis, …) so the feedback names the fault without printing the solution.
``seed`` selects the cases: the visible tests use the default, the hidden tests other seeds.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from gradelib.checks import _core
from gradelib.checks._core import (Case, EarlierExercises, close, compare_case, exercise, first_match, generator, make_read_only,
                                   max_abs_diff, ReferenceUsed, tensor_problem, unpack_pair)
from gradelib.checks.derive import derivation, integer, positive, real
from gradelib.reference import attention as ref

# Bound before student code runs (see gradelib.checks._core), wherever this module is first imported.
_softmax, _randn, _rand, _equal = _core.softmax, _core.randn, _core.rand, _core.equal


def _random_mask(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """A random boolean mask in which every query row may attend to at least one key."""
    mask = _rand(shape, generator=gen) < 0.6
    mask[..., 0] |= ~mask.any(dim=-1)
    return mask


def _case_mask(kind: str | None, B: int, T_q: int, T_k: int, gen: torch.Generator) -> torch.Tensor | None:
    """A case's attention mask: None, causal_mask(T_q) (self-attention), or a random key padding mask (B, 1, 1, T_k)."""
    if kind == "causal":
        return ref.causal_mask(T_q)
    if kind == "padding":
        return _random_mask((B, 1, 1, T_k), gen)
    return None


# ----------------------------------------------------------------------------------------------
# One mistake costs one exercise. The notebook's later exercises call the student's earlier ones through
# the notebook's globals (MultiHeadAttention calls scaled_dot_product_attention, a KV step may call
# causal_mask, the block builds MultiHeadAttention). A check first runs the answer as it is; where that
# fails, it runs it again with gradelib's reference swapped in for those earlier pieces and grades that run.
# When the reference pieces make the answer right, the answer passes and a note names the earlier exercise
# that broke it.

EARLIER = EarlierExercises({
    "scaled_dot_product_attention": ("exercise 1 (scaled_dot_product_attention)", ref.scaled_dot_product_attention),
    "causal_mask": ("exercise 2 (causal_mask)", ref.causal_mask),
    "MultiHeadAttention": ("exercise 4 (MultiHeadAttention)", ref.MultiHeadAttention),
})


def _short(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# ----------------------------------------------------------------------------------------------
# Exercise: scaled dot-product attention


def _sdpa_variants(q, k, v, mask):
    """Known-wrong versions of attention, each paired with the diagnosis it deserves."""
    d_k = q.shape[-1]

    def attend(scores, mask_to_use, dim=-1):
        if mask_to_use is not None:
            scores = scores.masked_fill(~mask_to_use, float("-inf"))
        weights = _softmax(scores, dim=dim)
        return weights @ v, weights

    raw = q @ k.transpose(-2, -1)
    variants = [
        ("output is √d_k too large in the scores: is the 1/√d_k scaling missing?", attend(raw, mask)),
        ("scores are divided by d_k; divide by √d_k", attend(raw / d_k, mask)),
        ("softmax over the query axis: each row of weights must sum to 1 over the keys (dim=-1)", attend(raw / math.sqrt(d_k), mask, dim=-2)),
    ]
    if mask is not None:
        inverted = ~mask
        inverted[..., 0] |= ~inverted.any(dim=-1)
        variants.append(("the mask is inverted: True means 'may attend', so fill the positions where mask is False", attend(raw / math.sqrt(d_k), inverted)))
        variants.append(("the mask is ignored: masked positions must get weight 0", attend(raw / math.sqrt(d_k), None)))
    return variants


def _sdpa_weight_variants(q, k, v, mask):
    """The weights of each known-wrong version of attention, with its diagnosis."""
    return [(diagnosis, weights) for diagnosis, (_, weights) in _sdpa_variants(q, k, v, mask)]


def _same_with_nans(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-4) -> bool:
    """Equal up to ``atol``, with NaN in exactly the same places (a fully masked row gives NaN)."""
    if type(a) is not torch.Tensor or tuple(a.shape) != tuple(b.shape):
        return False
    nan_a, nan_b = _core.isnan(a), _core.isnan(b)
    return _equal(nan_a, nan_b) and close(_core.nan_to_num(a.detach().double()), _core.nan_to_num(b.double()), atol)


def _sdpa_case(fn, q, k, v, mask=None) -> str | None:
    result = fn(q, k, v, mask) if mask is not None else fn(q, k, v)
    out, weights = unpack_pair(result, "scaled_dot_product_attention")
    want_out, want_w = ref.scaled_dot_product_attention(q, k, v, mask)
    if mask is not None:
        # An inverted causal mask leaves the last row with nothing to attend to, hence NaN: match it as is.
        inverted = _softmax((q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])).masked_fill(mask, float("-inf")), dim=-1)
        if _same_with_nans(weights, inverted):
            return "the mask is inverted: True means 'may attend', so fill the positions where mask is False"
    problem = tensor_problem(weights, "weights", want_w.shape) or tensor_problem(out, "output", want_out.shape)
    if problem:
        return problem
    if out.dtype != q.dtype:
        return f"output dtype {out.dtype} differs from the input's {q.dtype}"
    if mask is not None:
        leaked = float(weights.detach().masked_select(~mask.expand_as(weights)).abs().max()) if (~mask).any() else 0.0
        if leaked > 1e-6:
            for diagnosis, (_, variant_w) in _sdpa_variants(q, k, v, mask):
                if "mask" in diagnosis and close(weights, variant_w, 1e-4):
                    return diagnosis
            return f"a masked position receives weight (up to {leaked:.3f}): set masked scores to -inf before the softmax"
    row_sums = weights.detach().sum(dim=-1)
    if not close(row_sums, torch.ones_like(row_sums), 1e-4):
        diagnosis = first_match(weights, _sdpa_weight_variants(q, k, v, mask))
        return diagnosis or "rows of the weights do not sum to 1: softmax over the keys (last axis)"

    def otherwise():
        if close(weights, want_w.transpose(-2, -1), 1e-5):
            return "weights are transposed: scores are q @ kᵀ, with one row per query"
        return f"weights differ from scaled dot-product attention (max error {max_abs_diff(weights, want_w):.3g})"

    diagnosis = compare_case(weights, want_w, 1e-5, lambda: _sdpa_weight_variants(q, k, v, mask), otherwise, variant_atol=1e-4)
    if diagnosis:
        return diagnosis
    if close(out, want_out, 1e-4):
        return None
    return "weights are right but the output is not weights @ v"


@exercise("Scaled dot-product attention", reference=ref.scaled_dot_product_attention)
def check_scaled_dot_product_attention(fn: Callable, points: float = 3, seed: int = 0) -> list[Case]:
    """Check ``fn(q, k, v, mask=None) -> (output, weights)``."""
    gen = generator(seed)
    B, H = 2, 3
    T_q, T_k = 4 + seed % 3, 6 + seed % 4
    d_k, d_v = 8, 5

    def tensors(*shape):
        return _randn(*shape, generator=gen)

    q, k, v = tensors(B, H, T_q, d_k), tensors(B, H, T_k, d_k), tensors(B, H, T_k, d_v)
    q_self, k_self, v_self = tensors(B, T_k, d_k), tensors(B, T_k, d_k), tensors(B, T_k, d_k)
    padding = _random_mask((B, 1, T_q, T_k), gen)
    causal = torch.ones(T_k, T_k).tril().bool()
    big_q = tensors(1, T_q, d_k) * 40
    small = [t.double() for t in (tensors(1, 3, 4), tensors(1, 3, 4), tensors(1, 3, 4))]
    cases = [
        ("no mask, batched heads (B, H, T, d), d_v ≠ d_k, T_q ≠ T_k", lambda: _sdpa_case(fn, q, k, v)),
        ("boolean mask, True = may attend (broadcast over heads)", lambda: _sdpa_case(fn, q, k, v, padding)),
        ("causal (T, T) mask broadcast over the batch", lambda: _sdpa_case(fn, q_self, k_self, v_self, causal)),
        ("large scores stay finite (numerically stable softmax)", lambda: _sdpa_case(fn, big_q, k_self[:1], v_self[:1])),
        ("keeps float64 inputs in float64", lambda: _sdpa_case(fn, *small)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: causal mask


def _causal_case(fn, T: int) -> str | None:
    mask = fn(T)
    want = ref.causal_mask(T)
    if type(mask) is not torch.Tensor:
        return f"causal_mask should return a torch.Tensor, got {type(mask).__name__}"
    if tuple(mask.shape) != (T, T):
        return f"shape {tuple(mask.shape)}, expected ({T}, {T})"
    if mask.dtype != torch.bool:
        return f"return a bool tensor (True = may attend), not {mask.dtype}"
    return compare_case(mask, want, 0.0, [
        ("True must mean 'may attend': you marked the positions to hide", ~want),
        ("this lets each position see the future: position i may attend to j ≤ i (lower triangle)", want.T),
        ("the diagonal must be True: a position may attend to itself", want & ~torch.eye(T, dtype=torch.bool)),
    ], lambda: f"{int((mask != want).sum())} of {T * T} entries are wrong")


@exercise("Causal mask", reference=ref.causal_mask)
def check_causal_mask(fn: Callable, points: float = 1, seed: int = 0) -> list[Case]:
    """Check ``fn(T) -> (T, T) bool`` with True where position i may attend to position j ≤ i."""
    small, large = 5 + seed % 4, 16 + seed % 7
    # T = 1 (which almost any mask passes) is part of a case, not a case of its own.
    cases = [(f"T = 1 and T = {small}", lambda: _causal_case(fn, 1) or _causal_case(fn, small)),
             (f"T = {large}", lambda: _causal_case(fn, large))]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: sinusoidal positional encoding


def _pe_variants(P: int, d: int):
    pos = torch.arange(P, dtype=torch.float64)[:, None]
    i = torch.arange(0, d, 2, dtype=torch.float64)
    angle_2i = pos / 10000 ** (i / d)
    angle_i = pos / 10000 ** ((i / 2) / d)

    def interleave(even, odd):
        out = torch.zeros(P, d + d % 2, dtype=torch.float64)
        out[:, 0::2], out[:, 1::2] = even, odd
        return out[:, :d]

    halves = torch.cat([torch.sin(angle_2i), torch.cos(angle_2i)], dim=-1)[:, :d]
    return [
        ("even columns must be sin and odd columns cos (they are swapped)", interleave(torch.cos(angle_2i), torch.sin(angle_2i))),
        ("the exponent is 2i/d_model where i indexes the (sin, cos) pair: column 2i and 2i+1 share one frequency", interleave(torch.sin(angle_i), torch.cos(angle_i))),
        ("interleave: column 2i is sin and 2i+1 is cos (you put all the sines first)", halves),
    ]


def _pe_case(fn, P: int, d: int) -> str | None:
    pe = fn(P, d)
    problem = tensor_problem(pe, "encoding", (P, d))
    if problem:
        return problem
    if not pe.is_floating_point():
        return f"the encoding should be floating point, got {pe.dtype}"
    want = ref.sinusoidal_positional_encoding(P, d)

    def otherwise():
        if close(pe[0], want[0], 1e-4):
            return "position 0 is right but later positions are not: angle = pos / 10000^(2i/d_model)"
        return f"differs from the formula (max error {max_abs_diff(pe, want):.3g})"

    return compare_case(pe, want, 1e-4, lambda: _pe_variants(P, d), otherwise)


@exercise("Sinusoidal positional encoding", reference=ref.sinusoidal_positional_encoding)
def check_sinusoidal_positional_encoding(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(num_positions, d_model) -> (num_positions, d_model)``."""
    cases = [
        ("small table (4 positions, d_model = 6)", lambda: _pe_case(fn, 4, 6)),
        (f"long table (50 positions, d_model = {16 + 2 * (seed % 5)})", lambda: _pe_case(fn, 50, 16 + 2 * (seed % 5))),
        ("odd d_model (10 positions, d_model = 7)", lambda: _pe_case(fn, 10, 7)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: multi-head attention


def _mha_variants(mha: ref.MultiHeadAttention, query, key, value, mask):
    """Common multi-head mistakes, computed with the reference module's weights."""
    B, T_q, D = query.shape
    H, d = mha.num_heads, mha.head_dim
    q, k, v = mha.w_q(query), mha.w_k(key), mha.w_v(value)

    def heads_ok(x):
        return x.view(B, -1, H, d).transpose(1, 2)

    def heads_scrambled(x):
        return x.reshape(B, H, -1, d)

    def merge_ok(x):
        return x.transpose(1, 2).reshape(B, T_q, D)

    def merge_scrambled(x):
        return x.reshape(B, T_q, D)

    def run(split, scale, project=True, m=mask, merge=merge_ok):
        qh, kh, vh = split(q), split(k), split(v)
        scores = qh @ kh.transpose(-2, -1) / scale
        if m is not None:
            scores = scores.masked_fill(~m, float("-inf"))
        out = merge(_softmax(scores, dim=-1) @ vh)
        return mha.w_o(out) if project else out

    return [
        ("scale by √head_dim (the per-head d_k), not √d_model", run(heads_ok, math.sqrt(D))),
        ("the output projection w_o is missing", run(heads_ok, math.sqrt(d), project=False)),
        ("heads are merged without the transpose: (B, H, T, head_dim) must become (B, T, H, head_dim) "
         "(transpose(1, 2)) before the reshape to (B, T, d_model)", run(heads_ok, math.sqrt(d), merge=merge_scrambled)),
        ("heads are split (and merged) by a reshape alone: view as (B, T, H, head_dim), then transpose to (B, H, T, head_dim)",
         run(heads_scrambled, math.sqrt(d), merge=merge_scrambled)),
        ("heads are split incorrectly: view as (B, T, H, head_dim), then transpose to (B, H, T, head_dim)", run(heads_scrambled, math.sqrt(d))),
        ("the mask is not applied (or not broadcast to every head)", run(heads_ok, math.sqrt(d), m=None)),
    ]


def _mha_case(cls, d_model: int, num_heads: int, T_q: int, T_k: int, gen: torch.Generator, mask_kind: str | None,
              noted: set) -> str | None:
    torch_mha = torch.nn.MultiheadAttention(d_model, num_heads, batch_first=True)
    with torch.no_grad():
        for p in torch_mha.parameters():
            p.copy_(_randn(p.shape, generator=gen) * 0.3)
    if issubclass(cls, ref.MultiHeadAttention):
        raise ReferenceUsed("your answer calls gradelib.reference's MultiHeadAttention (your class is or subclasses it): "
                            "the module must be your own code")
    B = 2
    query = _randn(B, T_q, d_model, generator=gen)
    key = query if T_q == T_k else _randn(B, T_k, d_model, generator=gen)
    mask = _case_mask(mask_kind, B, T_q, T_k, gen)
    with torch.no_grad():
        # nn.MultiheadAttention takes a boolean mask with True = *not* allowed: hence the ~.
        torch_mask = None if mask is None else ~mask.expand(B, num_heads, T_q, T_k).reshape(B * num_heads, T_q, T_k)
        want_out, want_w = torch_mha(query, key, key, attn_mask=torch_mask, average_attn_weights=False)
    reference = ref.MultiHeadAttention(d_model, num_heads)
    ref.load_torch_mha_weights(reference, torch_mha)

    def attempt() -> str | None:
        student = cls(d_model, num_heads)
        for name in ("w_q", "w_k", "w_v", "w_o"):
            if not isinstance(getattr(student, name, None), torch.nn.Linear):
                return f"{cls.__name__} needs an nn.Linear attribute {name} (d_model -> d_model)"
        ref.load_torch_mha_weights(student, torch_mha)
        with torch.no_grad():
            result = student(query, key, key, mask=mask) if mask is not None else student(query, key, key)
        out, weights = unpack_pair(result, "forward")
        problem = tensor_problem(out, "output", want_out.shape) or tensor_problem(weights, "weights", want_w.shape)
        if problem:
            return problem

        def variants():
            with torch.no_grad():
                return _mha_variants(reference, query, key, key, mask)

        diagnosis = compare_case(out, want_out, 1e-4, variants, "output differs from nn.MultiheadAttention with the same weights")
        if diagnosis:
            return diagnosis
        return None if close(weights, want_w, 1e-4) else "output matches but the per-head weights (B, H, T_q, T_k) do not"

    return EARLIER.grade(cls, ("scaled_dot_product_attention", "causal_mask"), attempt, "your MultiHeadAttention", noted)


@exercise("Multi-head attention", reference=ref.MultiHeadAttention)
def check_multi_head_attention(cls: type, points: float = 3, seed: int = 0) -> list[Case]:
    """Check a ``MultiHeadAttention(d_model, num_heads)`` module against ``nn.MultiheadAttention``.

    The module is graded with gradelib's scaled_dot_product_attention swapped in where the student's
    (exercise 1) makes it fail, so a slip there costs exercise 1 only."""
    gen = generator(seed)
    T = 5 + seed % 3
    noted: set = set()
    cases = [
        ("self-attention, 4 heads, matches nn.MultiheadAttention", lambda: _mha_case(cls, 16, 4, T, T, gen, None, noted)),
        ("cross-attention (T_q ≠ T_k), 2 heads", lambda: _mha_case(cls, 12, 2, T, T + 3, gen, None, noted)),
        ("causal mask", lambda: _mha_case(cls, 16, 4, T, T, gen, "causal", noted)),
        ("key padding mask (B, 1, 1, T_k)", lambda: _mha_case(cls, 16, 8, T, T + 2, gen, "padding", noted)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: rotary position embedding (RoPE)


def _rope_with_frequencies(x: torch.Tensor, positions: torch.Tensor, theta: torch.Tensor, *, half_split: bool = False) -> torch.Tensor:
    """Rotate pairs of x by positions × theta (adjacent pairs, or (i, i + D/2) pairs with half_split)."""
    D = x.shape[-1]
    angles = positions.to(torch.float64)[:, None] * theta.to(torch.float64)[None, :]
    cos, sin = torch.cos(angles), torch.sin(angles)
    xd = x.double()
    if half_split:
        first, second = xd[..., : D // 2], xd[..., D // 2:]
        return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)
    even, odd = xd[..., 0::2], xd[..., 1::2]
    return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).flatten(-2)


def _rope_frequency_variants(x: torch.Tensor, pos: torch.Tensor):
    """RoPE with the usual wrong frequencies, each with its diagnosis."""
    D = x.shape[-1]
    pair = torch.arange(D // 2, dtype=torch.float64)
    wrong = [
        ("wrong frequencies: the exponent of pair i is 2i/D (i counts pairs, 0 … D/2 − 1); yours is i/D, "
         "so the frequencies fall too slowly", 10000.0 ** (-pair / D)),
        ("wrong frequencies: the exponent of pair i is 2i/D with i counting pairs; yours counts features "
         "(4i/D), so the frequencies fall twice as fast", 10000.0 ** (-4 * pair / D)),
        ("wrong frequencies: they must fall with i (10000 to a negative power); yours grow", 10000.0 ** (2 * pair / D)),
        ("wrong frequencies: every pair turns at the same rate; pair i must turn more slowly as i grows", torch.ones(D // 2, dtype=torch.float64)),
        ("wrong frequencies: the exponent divides by D, the size of the rotated vector (its last dimension)",
         10000.0 ** (-2 * pair / (D // 2))),
    ]
    return [(diagnosis, _rope_with_frequencies(x, pos, theta)) for diagnosis, theta in wrong]


def _pairs_rotated(got: torch.Tensor, x: torch.Tensor) -> bool:
    """Whether each adjacent pair of ``got`` has the length of the same pair of ``x`` (some rotation of it)."""
    norms = lambda t: (t[..., 0::2].double() ** 2 + t[..., 1::2].double() ** 2).sqrt()  # noqa: E731
    return close(norms(got), norms(x), 1e-4)


def _rope_case(fn, x: torch.Tensor, positions: torch.Tensor | None) -> str | None:
    got = fn(x, positions) if positions is not None else fn(x)
    problem = tensor_problem(got, "output", x.shape)
    if problem:
        return problem
    want = ref.apply_rope(x, positions)
    if close(got, want, 1e-4):
        return None
    pos = positions if positions is not None else torch.arange(x.shape[-2])
    if not close(got.norm(dim=-1), x.norm(dim=-1), 1e-4):
        return "vector norms change: RoPE only rotates each pair (x[2i], x[2i+1]), by an angle that depends on the position"
    if close(got, ref.apply_rope(x, -pos), 1e-4):
        return "rotation direction reversed: a positive angle turns (1, 0) towards (0, 1)"
    if close(got, _rope_half_split(x, pos), 1e-4):
        return "you rotate (i, i + D/2) pairs (the GPT-NeoX convention); this exercise rotates adjacent pairs (2i, 2i+1)"
    if positions is not None and close(got, ref.apply_rope(x), 1e-4):
        return "the positions argument is ignored"
    if close(got, ref.apply_rope(x, pos + 1), 1e-4):
        return "positions are off by one: the first position is 0 and is not rotated"
    diagnosis = first_match(got, _rope_frequency_variants(x, pos), 1e-4)
    if diagnosis:
        return diagnosis
    if _pairs_rotated(got, x):
        if close(got[..., :1, :], x[..., :1, :], 1e-4) and pos[0] == 0:
            return "each pair is rotated, but by the wrong angles: check the frequency θ_i of each pair (position 0 is right)"
        return "each pair is rotated, but by the wrong angles: check the frequencies θ_i and the positions"
    return f"differs from RoPE (max error {max_abs_diff(got, want):.3g})"


def _rope_half_split(x, positions):
    D = x.shape[-1]
    angles = ref.rope_angles(int(positions.max()) + 1, D).to(x.dtype)[positions]
    cos, sin = torch.cos(angles), torch.sin(angles)
    first, second = x[..., : D // 2], x[..., D // 2:]
    return torch.cat([first * cos - second * sin, first * sin + second * cos], dim=-1)


def _rope_relative_case(fn, gen: torch.Generator) -> str | None:
    """⟨RoPE(q, m), RoPE(k, n)⟩ must depend on m − n only."""
    D = 8
    q, k = _randn(D, generator=gen), _randn(D, generator=gen)

    def score(m: int, n: int) -> float:
        positions = torch.tensor([m, n])
        rotated = fn(torch.stack([q, k]), positions)
        problem = tensor_problem(rotated, "output", (2, D))
        if problem:
            raise ValueError(problem)
        return float(rotated[0] @ rotated[1])

    scores = [score(m, m - 3) for m in (3, 7, 20)]
    if max(scores) - min(scores) > 1e-4 * max(1.0, abs(scores[0])):
        return f"⟨RoPE(q, m), RoPE(k, m−3)⟩ changes with m ({scores[0]:.3f}, {scores[1]:.3f}, {scores[2]:.3f}): it must depend on m − n only"
    # An answer that ignores positions (the identity) has this property trivially: the score must also see m − n.
    if abs(score(5, 5) - scores[0]) <= 1e-4 * max(1.0, abs(scores[0])):
        return "⟨RoPE(q, m), RoPE(k, n)⟩ does not change with the offset m − n: the rotation must depend on the position"
    return None


@exercise("Rotary position embedding", reference=ref.apply_rope)
def check_apply_rope(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(x, positions=None) -> x rotated``, x: (..., T, D)."""
    gen = generator(seed)
    x = _randn(2, 3, 6 + seed % 3, 8, generator=gen)
    positions = torch.randperm(40, generator=gen)[: 6 + seed % 3]

    def default_positions():
        # Position 0 alone (the trivial case, which almost any answer passes) is part of this case, not one of its own.
        return _rope_case(fn, x[..., :1, :], None) or _rope_case(fn, x, None)

    cases = [
        ("matches RoPE on (B, H, T, D) with default positions (position 0 unchanged)", default_positions),
        ("uses explicit positions", lambda: _rope_case(fn, x, positions)),
        ("relative-position property", lambda: _rope_relative_case(fn, gen)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: KV-cache decoding


def _kv_case(fn, chunk: int, gen: torch.Generator, noted: set) -> str | None:
    d_model, num_heads, T, B = 16, 4, 7, 2
    mha = ref.MultiHeadAttention(d_model, num_heads)
    with torch.no_grad():
        for p in mha.parameters():
            p.copy_(_randn(p.shape, generator=gen) * 0.3)
    x = _randn(B, T, d_model, generator=gen)
    with torch.no_grad():
        full, _ = mha(x, x, x, mask=ref.causal_mask(T))

    def attempt() -> str | None:
        with torch.no_grad():
            cache, outputs = None, []
            for start in range(0, T, chunk):
                x_new = x[:, start:start + chunk]
                result = fn(mha, x_new, cache)
                y, cache = unpack_pair(result, "kv_cache_decode_step")
                problem = tensor_problem(y, "y_new", x_new.shape)
                if problem:
                    return problem
                if not isinstance(cache, ref.KVCache):
                    return f"return the updated cache as a KVCache, got {type(cache).__name__}"
                seen = start + x_new.shape[1]
                shape = (B, num_heads, seen, d_model // num_heads)
                if tuple(cache.k.shape) != shape or tuple(cache.v.shape) != shape:
                    return f"after {seen} tokens the cache k/v should be {shape}, got {tuple(cache.k.shape)}"
                outputs.append(y)
        got = torch.cat(outputs, dim=1)

        def variants():
            return [("within a chunk of several new tokens each may only see earlier ones: apply a causal mask inside the chunk",
                     _kv_without_mask_in_chunks(mha, x, chunk))] if chunk > 1 else []

        def otherwise():
            first_wrong = next(t for t in range(T) if not close(got[:, t], full[:, t], 1e-5))
            if first_wrong == 0 and chunk == 1:
                return "the first token is already wrong: it must attend to itself (append its k, v before attending)"
            return f"differs from full causal attention from token {first_wrong} on (max error {max_abs_diff(got, full):.3g})"

        return compare_case(got, full, 1e-5, variants, otherwise)

    return EARLIER.grade(fn, ("scaled_dot_product_attention", "causal_mask"), attempt, "your kv_cache_decode_step", noted)


def _kv_without_mask_in_chunks(mha, x: torch.Tensor, chunk: int) -> torch.Tensor:
    """The output of a cache whose new tokens all see each other (no causal mask inside a chunk)."""
    q, k, v = (ref.split_heads(w(x), mha.num_heads) for w in (mha.w_q, mha.w_k, mha.w_v))
    outputs = []
    for start in range(0, x.shape[1], chunk):
        end = min(start + chunk, x.shape[1])
        heads, _ = ref.scaled_dot_product_attention(q[:, :, start:end], k[:, :, :end], v[:, :, :end])
        outputs.append(mha.w_o(ref.merge_heads(heads)))
    return torch.cat(outputs, dim=1)


@exercise("KV-cache decoding", reference=ref.kv_cache_decode_step)
def check_kv_cache_decode_step(fn: Callable, points: float = 3, seed: int = 0) -> list[Case]:
    """Check ``fn(mha, x_new, cache) -> (y_new, cache)`` against full causal self-attention.

    Graded with gradelib's scaled_dot_product_attention and causal_mask swapped in where the student's
    (exercises 1 and 2) make it fail."""
    gen = generator(seed)
    noted: set = set()
    cases = [
        ("token by token equals full causal attention (1e-5)", lambda: _kv_case(fn, 1, gen, noted)),
        ("chunks of 3 new tokens", lambda: _kv_case(fn, 3, gen, noted)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the transformer block


BLOCK_PARTS = ("self_attn", "attn_norm", "ffn_norm", "ffn_in", "ffn_out")


def _block_variants(block: ref.TransformerBlock, x: torch.Tensor, mask):
    """Plausible wrong blocks, computed with the reference block's weights, each with its diagnosis."""
    attn, ln1, ln2, w1, w2 = block.self_attn, block.attn_norm, block.ffn_norm, block.ffn.w_1, block.ffn.w_2
    relu = torch.nn.functional.relu
    gelu = torch.nn.functional.gelu

    def mha(h, m=mask):
        return attn(h, h, h, mask=m)[0]

    def ffn(h, activation=relu):
        return w2(activation(w1(h)))

    h = x + mha(ln1(x))
    post_h = ln1(x + mha(x))
    return [
        ("post-norm: this is LayerNorm(x + sublayer(x)) (the original paper's Add & Norm); the block is pre-norm: "
         "normalise the sublayer's input, and add its output to the un-normalised x", ln2(post_h + ffn(post_h))),
        ("the residual connection around attention is missing: h must be x plus the attention sublayer's output",
         mha(ln1(x)) + ffn(ln2(mha(ln1(x))))),
        ("the residual connection around the FFN is missing: the output must be h plus the FFN sublayer's output", ffn(ln2(h))),
        ("both residual connections are missing", ffn(ln2(mha(ln1(x))))),
        ("the FFN has no activation between its two linear layers (ReLU): without it the FFN is one linear map",
         h + ffn(ln2(h), activation=lambda t: t)),
        ("the FFN's activation is GELU; this block uses ReLU", h + ffn(ln2(h), activation=gelu)),
        ("the residual adds the normalised input: add the sublayer's output to x itself, not to LayerNorm(x)",
         (lambda h2: ln2(h2) + ffn(ln2(h2)))(ln1(x) + mha(ln1(x)))),
        ("the residual adds the normalised input: add the sublayer's output to x itself, not to LayerNorm(x)",
         (lambda h2: h2 + ffn(ln2(h2)))(ln1(x) + mha(ln1(x)))),
        ("the residual adds the normalised input: add the sublayer's output to h itself, not to LayerNorm(h)",
         ln2(h) + ffn(ln2(h))),
        ("one LayerNorm is used for both sublayers: attn_norm before attention, ffn_norm before the FFN",
         h + ffn(ln1(h))),
        ("the FFN reads x, not h: it must refine the attention sublayer's output h", h + ffn(ln2(x))),
        ("the mask is not passed to the attention", (lambda h0: h0 + ffn(ln2(h0)))(x + mha(ln1(x), m=None))),
        ("LayerNorm is missing: normalise each sublayer's input", (lambda h0: h0 + ffn(h0))(x + mha(x))),
    ]


def _load_block_weights(student: torch.nn.Module, block: ref.TransformerBlock) -> str | None:
    for name in BLOCK_PARTS:
        if not isinstance(getattr(student, name, None), torch.nn.Module):
            return f"keep the submodule {name} that __init__ builds (the check loads its weights)"
    try:
        with torch.no_grad():
            student.self_attn.load_state_dict(block.self_attn.state_dict())
            student.attn_norm.load_state_dict(block.attn_norm.state_dict())
            student.ffn_norm.load_state_dict(block.ffn_norm.state_dict())
            student.ffn_in.load_state_dict(block.ffn.w_1.state_dict())
            student.ffn_out.load_state_dict(block.ffn.w_2.state_dict())
    except RuntimeError as error:
        return f"the submodules built in __init__ were changed, their weights no longer load: {_short(error)}"
    return None


def _block_case(cls, d_model: int, num_heads: int, d_ff: int, T: int, gen: torch.Generator, mask_kind: str | None,
                noted: set) -> str | None:
    if issubclass(cls, ref.TransformerBlock):
        raise ReferenceUsed("your answer calls gradelib.reference's TransformerBlock (your class is or subclasses it): "
                            "the block must be your own code")
    block = ref.TransformerBlock(d_model, num_heads, d_ff)
    with torch.no_grad():
        for name, p in block.named_parameters():
            noise = _randn(p.shape, generator=gen)
            # LayerNorm gains around 1 (and not all equal), so that a missing or misplaced norm shows.
            p.copy_(1 + 0.3 * noise if name.endswith("norm.weight") else 0.3 * noise)
    B = 2
    x = _randn(B, T, d_model, generator=gen) * 2 + 0.5
    mask = _case_mask(mask_kind, B, T, T, gen)
    with torch.no_grad():
        want = block(x, mask=mask)

    def attempt() -> str | None:
        student = cls(d_model, num_heads, d_ff)
        problem = _load_block_weights(student, block)
        if problem:
            return problem
        with torch.no_grad():
            got = student(x, mask=mask) if mask is not None else student(x)
        if isinstance(got, (tuple, list)):
            return "forward should return the block's output alone, a tensor (B, T, d_model), not a tuple"
        problem = tensor_problem(got, "output", want.shape)
        if problem:
            return problem

        def variants():
            with torch.no_grad():
                return _block_variants(block, x, mask)

        return compare_case(got, want, 1e-4, variants, "output differs from the pre-norm block with the same weights")

    return EARLIER.grade(cls, ("MultiHeadAttention", "scaled_dot_product_attention", "causal_mask"), attempt,
                                "your TransformerBlock", noted)


@exercise("Transformer block", reference=(ref.TransformerBlock, ref.FeedForward))
def check_transformer_block(cls: type, points: float = 3, seed: int = 0) -> list[Case]:
    """Check a pre-norm ``TransformerBlock(d_model, num_heads, d_ff)`` against the reference block with the
    same weights. Graded with gradelib's MultiHeadAttention swapped in where the student's (exercise 4)
    makes it fail, so a slip there costs exercise 4 only."""
    gen = generator(seed)
    T = 5 + seed % 3
    noted: set = set()
    cases = [
        ("pre-norm block, no mask, matches the reference block", lambda: _block_case(cls, 16, 4, 32, T, gen, None, noted)),
        ("key padding mask (B, 1, 1, T) reaches the attention", lambda: _block_case(cls, 16, 2, 24, T + 2, gen, "padding", noted)),
        ("causal mask, another width", lambda: _block_case(cls, 24, 4, 40, T, gen, "causal", noted)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Derivations (keys verified with SymPy in tests/test_checks_attention.py)

#: Var(q·k) for q, k with independent zero-mean entries of variances σ_q², σ_k²: a sum of d_k independent
#: products, each of variance σ_q² σ_k²; dividing by √d_k leaves a standard deviation σ_q σ_k, whatever d_k.
derive_scaling = derivation(
    "Why √d_k: the variance of q·k",
    symbols={"d_k": integer(1, 512), "sigma_q": positive(0.2, 5.0), "sigma_k": positive(0.2, 5.0)},
    expected={"var_qk": "d_k * sigma_q**2 * sigma_k**2", "std_scaled": "sigma_q * sigma_k"},
    special={"σ_q = σ_k = 1": {"sigma_q": 1, "sigma_k": 1}, "d_k = 1": {"d_k": 1}},
)

#: R(m)ᵀR(n) = R((n − m)θ) for the 2-D rotation R(m) by the angle mθ, hence
#: ⟨R(m) q, R(n) k⟩ = qᵀ R((n − m)θ) k = (q₁k₁ + q₂k₂) cos((n − m)θ) + (q₂k₁ − q₁k₂) sin((n − m)θ).
derive_rope_relative = derivation(
    "RoPE: rotations by mθ and nθ leave a relative angle",
    symbols={"m": integer(0, 64), "n": integer(0, 64), "theta": positive(0.01, 1.0),
             "q1": real(), "q2": real(), "k1": real(), "k2": real()},
    expected={"angle": "(n - m) * theta",
              "score": "(q1*k1 + q2*k2) * cos((n - m)*theta) + (q2*k1 - q1*k2) * sin((n - m)*theta)"},
    special={"m = 0": {"m": 0}, "m = n": {"m": "n"}},
)


make_read_only(__name__)
