"""Attention and the Transformer, from first principles.

One readable file, in the spirit of nanoGPT's ``model.py`` and the Annotated Transformer. It is the
reference that the students' exercises are checked against, and later notebooks (BERT, GPT, CLIP,
diffusion U-Nets) import their building blocks from here.

Shape letters used throughout:
    B   batch size
    T   sequence length (T_q queries, T_k keys/values, T_past cached positions)
    H   number of attention heads (H_kv: key/value heads in grouped-query attention)
    d_k, d_v, head_dim   per-head query/key and value sizes
    d_model              width of the residual stream

Mask convention (everywhere in this file): a **boolean** tensor in which ``True`` means "this query
may attend to this key", the same convention as the boolean ``attn_mask`` of
``torch.nn.functional.scaled_dot_product_attention``. Beware: ``torch.nn.MultiheadAttention`` uses
the opposite one (``True`` = *not* allowed), so invert a mask with ``~mask`` before handing it there.

References:
    Bahdanau, Cho & Bengio (2015), Neural Machine Translation by Jointly Learning to Align and Translate.
    Vaswani et al. (2017), Attention Is All You Need.
    Shazeer (2019), Fast Transformer Decoding: One Write-Head is All You Need (multi-query attention).
    Su et al. (2021), RoFormer: Enhanced Transformer with Rotary Position Embedding.
    Ainslie et al. (2023), GQA: Training Generalized Multi-Query Transformer Models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

__all__ = [
    "scaled_dot_product_attention",
    "causal_mask",
    "padding_mask",
    "sinusoidal_positional_encoding",
    "split_heads",
    "merge_heads",
    "MultiHeadAttention",
    "load_torch_mha_weights",
    "rope_angles",
    "apply_rope",
    "additive_attention",
    "AdditiveAttention",
    "KVCache",
    "kv_cache_decode_step",
    "GroupedQueryAttention",
    "kv_cache_bytes",
    "FeedForward",
    "TransformerBlock",
    "TinyTransformer",
]


# --------------------------------------------------------------------------------------------------
# Scaled dot-product attention and masks
# --------------------------------------------------------------------------------------------------


def scaled_dot_product_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k)) V  (Vaswani et al. 2017, eq. 1).

    Args:
        q: (..., T_q, d_k) queries.
        k: (..., T_k, d_k) keys.
        v: (..., T_k, d_v) values.
        mask: optional bool tensor broadcastable to (..., T_q, T_k); True = "query may attend to key".

    Returns:
        output: (..., T_q, d_v), each row a weighted average of the rows of v.
        weights: (..., T_q, T_k), each row sums to 1 (or is all zeros, see below).

    A query whose keys are *all* masked gets weights = 0 and output = 0 instead of the NaN that
    softmax over a row of -inf would give. Such rows are normal, not errors: with a padding mask on
    both sides, the padding *queries* of a short sequence may see no key at all. Their outputs are
    ignored later (the loss masks them out), but a single NaN would poison every gradient.
    """
    d_k = q.shape[-1]
    # Dividing by sqrt(d_k) keeps the scores' variance ~1 when q and k have unit-variance entries;
    # without it softmax saturates for large d_k and its gradients vanish.
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)
    if mask is None:
        weights = scores.softmax(dim=-1)
    else:
        assert mask.dtype == torch.bool, f"mask must be bool (True = may attend), got {mask.dtype}"
        scores = scores.masked_fill(~mask, float("-inf"))
        no_key = ~mask.any(dim=-1, keepdim=True)  # (..., T_q, 1): rows with nothing to attend to
        # Give those rows finite scores so softmax (and its backward pass) stays NaN-free, then zero them.
        scores = scores.masked_fill(no_key, 0.0)
        weights = scores.softmax(dim=-1).masked_fill(no_key, 0.0)
    return weights @ v, weights


def causal_mask(T: int, device: torch.device | str | None = None, *, num_past: int = 0) -> Tensor:
    """Mask that lets position i attend only to positions j <= i (no peeking at the future).

    Args:
        T: number of (query) positions.
        device: where to create the mask.
        num_past: number of earlier positions already in a KV cache (default 0). The queries are then
            the absolute positions num_past .. num_past + T - 1, and all cached keys are visible.

    Returns:
        (T, num_past + T) bool, True on and below the (shifted) diagonal; (T, T) when num_past == 0.
    """
    ones = torch.ones(T, num_past + T, dtype=torch.bool, device=device)
    return torch.tril(ones, diagonal=num_past)


def padding_mask(lengths: Tensor, max_len: int) -> Tensor:
    """Mark the real tokens of right-padded sequences.

    Args:
        lengths: (B,) int, the true length of each sequence.
        max_len: padded length T.

    Returns:
        (B, max_len) bool, True = real token, False = padding.

    To stop every query from attending to padding *keys*, insert head and query axes so that it
    broadcasts against attention scores of shape (B, H, T_q, T_k)::

        key_mask = padding_mask(lengths, T)[:, None, None, :]   # (B, 1, 1, T_k)
        mask = key_mask & causal_mask(T)                          # (B, 1, T, T), both at once
    """
    lengths = torch.as_tensor(lengths)
    positions = torch.arange(max_len, device=lengths.device)
    return positions[None, :] < lengths[:, None]


# --------------------------------------------------------------------------------------------------
# Sinusoidal positional encoding
# --------------------------------------------------------------------------------------------------


def sinusoidal_positional_encoding(num_positions: int, d_model: int) -> Tensor:
    """Fixed positional encodings of Vaswani et al. (2017), section 3.5.

    PE[pos, 2i]   = sin(pos / 10000^(2i / d_model))
    PE[pos, 2i+1] = cos(pos / 10000^(2i / d_model))

    Each pair of columns is a clock ticking at its own frequency, from one turn per 2*pi positions
    down to one per 10000 * 2*pi, so that PE[pos + k] is a fixed linear function (a rotation) of PE[pos].
    An odd d_model keeps the formula's exponent 2i / d_model; the last sine column has no cosine partner.

    Returns:
        (num_positions, d_model) float32.
    """
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]  # (P, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64)  # (ceil(d_model / 2),)
    angle = position / 10000.0 ** (two_i / d_model)  # (P, ceil(d_model / 2)); float64: exact for long sequences
    pe = torch.zeros(num_positions, d_model + d_model % 2, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angle)
    pe[:, 1::2] = torch.cos(angle)
    return pe[:, :d_model].float()


# --------------------------------------------------------------------------------------------------
# Multi-head attention
# --------------------------------------------------------------------------------------------------


def split_heads(x: Tensor, num_heads: int) -> Tensor:
    """(B, T, H * d) -> (B, H, T, d): give every head its own slice of the features."""
    B, T, C = x.shape
    assert C % num_heads == 0, f"feature size {C} is not divisible by num_heads={num_heads}"
    return x.view(B, T, num_heads, C // num_heads).transpose(1, 2)


def merge_heads(x: Tensor) -> Tensor:
    """(B, H, T, d) -> (B, T, H * d): concatenate the heads again (the inverse of split_heads)."""
    B, H, T, d = x.shape
    return x.transpose(1, 2).reshape(B, T, H * d)


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_H) W^O, head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).

    The H per-head projections W_i^Q (d_model x head_dim) are stored side by side as one
    d_model x d_model linear layer ``w_q`` (likewise ``w_k``, ``w_v``), and split_heads cuts its
    output into heads: same maths, one matrix multiply instead of H.
    """

    def __init__(self, d_model: int, num_heads: int, bias: bool = True):
        super().__init__()
        assert d_model % num_heads == 0, f"d_model={d_model} must be divisible by num_heads={num_heads}"
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.w_q = nn.Linear(d_model, d_model, bias=bias)
        self.w_k = nn.Linear(d_model, d_model, bias=bias)
        self.w_v = nn.Linear(d_model, d_model, bias=bias)
        self.w_o = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Attend from each query position to the key/value positions, in every head.

        Args:
            query: (B, T_q, d_model).
            key, value: (B, T_k, d_model); pass the same tensor three times for self-attention.
            mask: bool, broadcastable to (B, H, T_q, T_k), True = may attend; e.g. causal_mask(T) of
                shape (T, T) or padding_mask(...)[:, None, None, :] of shape (B, 1, 1, T_k).

        Returns:
            output: (B, T_q, d_model).
            weights: (B, H, T_q, T_k), per head (not averaged as torch.nn.MultiheadAttention does).
        """
        q = split_heads(self.w_q(query), self.num_heads)  # (B, H, T_q, head_dim)
        k = split_heads(self.w_k(key), self.num_heads)  # (B, H, T_k, head_dim)
        v = split_heads(self.w_v(value), self.num_heads)  # (B, H, T_k, head_dim)
        out, weights = scaled_dot_product_attention(q, k, v, mask)
        return self.w_o(merge_heads(out)), weights


@torch.no_grad()
def load_torch_mha_weights(mha: nn.Module, torch_mha: nn.MultiheadAttention) -> None:
    """Copy the weights of ``torch.nn.MultiheadAttention`` into ``mha``, so both compute the same function.

    Works for any module whose ``w_q``, ``w_k``, ``w_v``, ``w_o`` are ``nn.Linear(d_model, d_model)``
    (the students' classes included). torch stores W^Q, W^K, W^V stacked in one (3 d_model, d_model)
    ``in_proj_weight`` (and ``in_proj_bias``), in that order, and W^O in ``out_proj``.
    """
    d_model = mha.w_q.in_features
    assert torch_mha.embed_dim == d_model, (
        f"embed_dim mismatch: torch_mha.embed_dim={torch_mha.embed_dim} but mha.w_q has in_features={d_model}"
    )
    assert torch_mha.in_proj_weight is not None, "torch_mha must have kdim == vdim == embed_dim (a single in_proj_weight)"
    if hasattr(mha, "num_heads"):
        assert mha.num_heads == torch_mha.num_heads, f"num_heads mismatch: {mha.num_heads} vs {torch_mha.num_heads}"

    w_q, w_k, w_v = torch_mha.in_proj_weight.chunk(3, dim=0)
    biases = torch_mha.in_proj_bias.chunk(3, dim=0) if torch_mha.in_proj_bias is not None else (None, None, None)
    pairs = [(mha.w_q, w_q, biases[0]), (mha.w_k, w_k, biases[1]), (mha.w_v, w_v, biases[2])]
    pairs.append((mha.w_o, torch_mha.out_proj.weight, torch_mha.out_proj.bias))
    for linear, weight, bias in pairs:
        assert linear.weight.shape == weight.shape, f"weight shape mismatch: {tuple(linear.weight.shape)} vs {tuple(weight.shape)}"
        linear.weight.copy_(weight)
        if linear.bias is not None:
            # torch_mha built with bias=False computes as if the bias were zero.
            linear.bias.copy_(bias if bias is not None else torch.zeros_like(linear.bias))
        else:
            assert bias is None or not bias.any(), "torch_mha has a nonzero bias but mha was built with bias=False"


# --------------------------------------------------------------------------------------------------
# Rotary position embedding (RoPE)
# --------------------------------------------------------------------------------------------------


def _rope_frequencies(head_dim: int, base: float, dtype: torch.dtype = torch.float32, device=None) -> Tensor:
    """(head_dim // 2,) rotation speeds theta_i = base^(-2i / head_dim), i = 0 .. head_dim/2 - 1."""
    assert head_dim % 2 == 0, f"RoPE rotates pairs of features: head_dim must be even, got {head_dim}"
    two_i = torch.arange(0, head_dim, 2, dtype=dtype, device=device)
    return base ** (-two_i / head_dim)


def rope_angles(num_positions: int, head_dim: int, base: float = 10000.0) -> Tensor:
    """Rotation angles m * theta_i of RoPE for positions m = 0 .. num_positions - 1.

    Returns:
        (num_positions, head_dim // 2) float32, angles[m, i] = m * base^(-2i / head_dim).
    """
    positions = torch.arange(num_positions, dtype=torch.float32)
    return positions[:, None] * _rope_frequencies(head_dim, base)[None, :]


def apply_rope(x: Tensor, positions: Tensor | None = None, base: float = 10000.0) -> Tensor:
    """Rotate queries or keys by their position (RoFormer, Su et al. 2021).

    Each *adjacent* pair of features (x[..., 2i], x[..., 2i+1]) at position m is rotated by the angle
    m * theta_i, theta_i = base^(-2i / D). Because rotations compose, <rope(q, m), rope(k, n)> depends
    only on q, k and m - n: attention scores see *relative* positions, with no extra parameters.

    This is the interleaved convention of the paper. GPT-NeoX and the Hugging Face LLaMA code pair
    feature i with feature i + D/2 instead ("rotate_half"); it is the same idea with the features
    permuted, has the same relative-position property, but the two are not interchangeable on
    pretrained weights.

    Args:
        x: (..., T, D), D even, e.g. (B, H, T, head_dim) queries or keys.
        positions: optional (T,) integer positions; default arange(T). With a KV cache pass the
            absolute positions of the new tokens, e.g. arange(T_past, T_past + T).
        base: the 10000 of theta_i.

    Returns:
        Tensor of the same shape and dtype as x.
    """
    T, D = x.shape[-2], x.shape[-1]
    if positions is None:
        positions = torch.arange(T, device=x.device)
    # Angles in float32 (float64 for float64 inputs): in float16 position * theta loses whole radians.
    dtype = torch.promote_types(x.dtype, torch.float32)
    angles = positions.to(dtype)[:, None] * _rope_frequencies(D, base, dtype, x.device)[None, :]  # (T, D/2)
    cos, sin = angles.cos(), angles.sin()
    x_even, x_odd = x[..., 0::2].to(dtype), x[..., 1::2].to(dtype)  # (..., T, D/2) each
    # 2-D rotation of every pair: [x_even, x_odd] -> [x_even cos - x_odd sin, x_even sin + x_odd cos]
    rotated_even = x_even * cos - x_odd * sin
    rotated_odd = x_even * sin + x_odd * cos
    return torch.stack([rotated_even, rotated_odd], dim=-1).flatten(-2).to(x.dtype)


# --------------------------------------------------------------------------------------------------
# Additive (Bahdanau) attention
# --------------------------------------------------------------------------------------------------


def additive_attention(s: Tensor, h: Tensor, W_s: Tensor, W_h: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Bahdanau et al. (2015): score each encoder state with a one-hidden-layer network.

    e_j = v^T tanh(W_s s + W_h h_j),  alpha = softmax(e),  context = sum_j alpha_j h_j.

    Args:
        s: (..., d_s) decoder state (the query).
        h: (..., T, d_h) encoder states (keys and values at once).
        W_s: (d_a, d_s), W_h: (d_a, d_h), v: (d_a,).

    Returns:
        context: (..., d_h).
        weights: (..., T), summing to 1.
    """
    hidden = torch.tanh((s @ W_s.T)[..., None, :] + h @ W_h.T)  # (..., T, d_a)
    scores = hidden @ v  # (..., T)
    weights = scores.softmax(dim=-1)
    context = (weights[..., :, None] * h).sum(dim=-2)  # (..., d_h)
    return context, weights


class AdditiveAttention(nn.Module):
    """Learnable Bahdanau attention: parameters W_s (d_a, d_s), W_h (d_a, d_h), v (d_a,)."""

    def __init__(self, d_s: int, d_h: int, d_a: int):
        super().__init__()
        # Same uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) initialisation as nn.Linear.
        self.W_s = nn.Parameter(torch.empty(d_a, d_s).uniform_(-1, 1) / math.sqrt(d_s))
        self.W_h = nn.Parameter(torch.empty(d_a, d_h).uniform_(-1, 1) / math.sqrt(d_h))
        self.v = nn.Parameter(torch.empty(d_a).uniform_(-1, 1) / math.sqrt(d_a))

    def forward(self, s: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
        """s: (..., d_s), h: (..., T, d_h) -> (context (..., d_h), weights (..., T))."""
        return additive_attention(s, h, self.W_s, self.W_h, self.v)


# --------------------------------------------------------------------------------------------------
# KV cache, multi-query and grouped-query attention
# --------------------------------------------------------------------------------------------------


@dataclass
class KVCache:
    """Keys and values of the positions already processed, so decoding never recomputes them.

    k, v: (B, H_kv, T_past, head_dim).
    """

    k: Tensor
    v: Tensor

    @property
    def length(self) -> int:
        """T_past, the number of cached positions."""
        return self.k.shape[-2]

    def append(self, k_new: Tensor, v_new: Tensor) -> KVCache:
        """Return a new cache with k_new, v_new (B, H_kv, T_new, head_dim) added after the cached positions."""
        return KVCache(torch.cat([self.k, k_new], dim=-2), torch.cat([self.v, v_new], dim=-2))


def kv_cache_decode_step(mha: nn.Module, x_new: Tensor, cache: KVCache | None) -> tuple[Tensor, KVCache]:
    """Causal self-attention for new positions, reusing the cached keys and values of the earlier ones.

    Only x_new is projected: the past keys and values come from the cache. Each new position attends
    to all cached positions and, causally, to the new positions up to itself. Running this token by
    token gives the same result as mha(x, x, x, mask=causal_mask(T)) on the whole sequence, at O(T)
    instead of O(T^2) work per generated token.

    Works for any module with ``w_q``, ``w_k``, ``w_v``, ``w_o`` (nn.Linear) and ``num_heads``.

    Args:
        mha: the attention module (e.g. MultiHeadAttention).
        x_new: (B, T_new, d_model), usually T_new == 1 (T_new = prompt length for the first call).
        cache: KVCache with (B, H, T_past, head_dim) tensors, or None before the first step.

    Returns:
        y_new: (B, T_new, d_model).
        cache: the new KVCache, holding T_past + T_new positions.
    """
    q = split_heads(mha.w_q(x_new), mha.num_heads)  # (B, H, T_new, head_dim)
    k_new = split_heads(mha.w_k(x_new), mha.num_heads)
    v_new = split_heads(mha.w_v(x_new), mha.num_heads)
    num_past = 0 if cache is None else cache.length
    cache = KVCache(k_new, v_new) if cache is None else cache.append(k_new, v_new)
    mask = causal_mask(x_new.shape[1], x_new.device, num_past=num_past)  # (T_new, T_past + T_new)
    out, _ = scaled_dot_product_attention(q, cache.k, cache.v, mask)
    return mha.w_o(merge_heads(out)), cache


class GroupedQueryAttention(nn.Module):
    """Self-attention in which groups of query heads share one key/value head (Ainslie et al. 2023).

    num_kv_heads == num_heads is ordinary multi-head attention; num_kv_heads == 1 is multi-query
    attention (Shazeer 2019). Fewer K/V heads shrink the KV cache (see kv_cache_bytes), which is
    what limits batch size and context length when serving large models, at little cost in quality.
    Query head h uses K/V head h // (num_heads // num_kv_heads).
    """

    def __init__(self, d_model: int, num_heads: int, num_kv_heads: int, bias: bool = False):
        super().__init__()
        assert d_model % num_heads == 0, f"d_model={d_model} must be divisible by num_heads={num_heads}"
        assert num_heads % num_kv_heads == 0, f"num_heads={num_heads} must be divisible by num_kv_heads={num_kv_heads}"
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = d_model // num_heads
        self.w_q = nn.Linear(d_model, d_model, bias=bias)
        self.w_k = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias)
        self.w_v = nn.Linear(d_model, num_kv_heads * self.head_dim, bias=bias)
        self.w_o = nn.Linear(d_model, d_model, bias=bias)

    def forward(
        self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None, use_rope: bool = False
    ) -> tuple[Tensor, KVCache]:
        """Self-attention of x over the cached positions and itself.

        Args:
            x: (B, T, d_model), the new positions.
            mask: bool, broadcastable to (B, num_heads, T, T_past + T), True = may attend; None lets
                every position see everything (right for T == 1 decoding). For causal attention use
                causal_mask(T, num_past=cache.length) (or causal_mask(T) without a cache).
            cache: KVCache of (B, num_kv_heads, T_past, head_dim) tensors, or None.
            use_rope: rotate q and k with apply_rope at absolute positions T_past .. T_past + T - 1.
                The cache stores keys already rotated, so they are never rotated twice.

        Returns:
            y: (B, T, d_model).
            cache: KVCache holding T_past + T positions (keys after RoPE, if used).
        """
        q = split_heads(self.w_q(x), self.num_heads)  # (B, H, T, head_dim)
        k = split_heads(self.w_k(x), self.num_kv_heads)  # (B, H_kv, T, head_dim)
        v = split_heads(self.w_v(x), self.num_kv_heads)
        num_past = 0 if cache is None else cache.length
        if use_rope:
            positions = torch.arange(num_past, num_past + x.shape[1], device=x.device)
            q, k = apply_rope(q, positions), apply_rope(k, positions)
        cache = KVCache(k, v) if cache is None else cache.append(k, v)
        # Only the small H_kv heads are cached; each is repeated for the query heads of its group here.
        group_size = self.num_heads // self.num_kv_heads
        k_all = cache.k.repeat_interleave(group_size, dim=1)  # (B, H, T_past + T, head_dim)
        v_all = cache.v.repeat_interleave(group_size, dim=1)
        out, _ = scaled_dot_product_attention(q, k_all, v_all, mask)
        return self.w_o(merge_heads(out)), cache


def kv_cache_bytes(
    batch: int, num_layers: int, num_kv_heads: int, head_dim: int, seq_len: int, bytes_per_element: int = 2
) -> int:
    """Memory of a KV cache: K and V (the 2) for every layer, K/V head, position and feature.

    E.g. LLaMA-2-7B (32 layers, 32 heads of 128, fp16) at 4096 tokens: 2 GiB per sequence.
    """
    return 2 * batch * num_layers * num_kv_heads * head_dim * seq_len * bytes_per_element


# --------------------------------------------------------------------------------------------------
# The Transformer block and a tiny Transformer
# --------------------------------------------------------------------------------------------------


class FeedForward(nn.Module):
    """Position-wise feed-forward network: FFN(x) = activation(x W_1 + b_1) W_2 + b_2.

    The same two-layer MLP is applied to every position separately. activation is "relu" (as in the
    paper) or "gelu" (as in BERT and GPT).
    """

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu"):
        super().__init__()
        activations = {"relu": nn.ReLU(), "gelu": nn.GELU()}
        assert activation in activations, f"activation must be one of {sorted(activations)}, got {activation!r}"
        self.w_1 = nn.Linear(d_model, d_ff)
        self.activation = activations[activation]
        self.dropout = nn.Dropout(dropout)
        self.w_2 = nn.Linear(d_ff, d_model)

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., d_model) -> (..., d_model)."""
        return self.w_2(self.dropout(self.activation(self.w_1(x))))


class TransformerBlock(nn.Module):
    """Self-attention, optional cross-attention, and a feed-forward network, each in a residual sublayer.

    norm_first=True (pre-LN, the modern default, as in GPT-2): x + Sublayer(LayerNorm(x)). The residual
        stream is never normalised, so gradients flow straight through deep stacks and training is
        stable without learning-rate warm-up (Xiong et al. 2020). Needs a final LayerNorm after the
        last block.
    norm_first=False (post-LN, the original paper's "Add & Norm"): LayerNorm(x + Sublayer(x)).

    attention_cls builds the attention modules as attention_cls(d_model, num_heads), so a notebook can
    plug in a student's own MultiHeadAttention. cross_attention=True adds the encoder-decoder
    attention sublayer used when forward() is given a context. activation is the feed-forward
    network's nonlinearity: "relu" as in the paper, "gelu" as in BERT, GPT and the ViT-style encoders.
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        norm_first: bool = True,
        attention_cls: type[nn.Module] = MultiHeadAttention,
        cross_attention: bool = False,
        activation: str = "relu",
    ):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = attention_cls(d_model, num_heads)
        self.attn_norm = nn.LayerNorm(d_model)
        self.cross_attn = attention_cls(d_model, num_heads) if cross_attention else None
        self.cross_norm = nn.LayerNorm(d_model) if cross_attention else None
        self.ffn = FeedForward(d_model, d_ff, dropout, activation)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)  # on each sublayer's output, before the residual add (paper, 5.4)
        self.last_attention_weights: Tensor | None = None

    def _sublayer(self, x: Tensor, norm: nn.LayerNorm, sublayer) -> Tensor:
        """The residual connection around one sublayer, pre-LN or post-LN."""
        if self.norm_first:
            return x + self.dropout(sublayer(norm(x)))
        return norm(x + self.dropout(sublayer(x)))

    def _cross_attend(self, h: Tensor, context: Tensor, context_mask: Tensor | None) -> Tensor:
        return self.cross_attn(h, context, context, mask=context_mask)[0]

    def forward(
        self, x: Tensor, mask: Tensor | None = None, context: Tensor | None = None, context_mask: Tensor | None = None
    ) -> Tensor:
        """Apply the block.

        Args:
            x: (B, T, d_model).
            mask: self-attention mask, bool broadcastable to (B, H, T, T), True = may attend.
            context: optional (B, T_c, d_model), e.g. encoder output; queries come from x, keys and
                values from context. Requires cross_attention=True.
            context_mask: optional cross-attention mask, broadcastable to (B, H, T, T_c), e.g.
                padding_mask(context_lengths, T_c)[:, None, None, :].

        Returns:
            (B, T, d_model). The self-attention weights (B, H, T, T) are kept, detached, in
            self.last_attention_weights for visualisation.
        """

        def self_attention(h: Tensor) -> Tensor:
            out, weights = self.self_attn(h, h, h, mask=mask)
            self.last_attention_weights = weights.detach()
            return out

        x = self._sublayer(x, self.attn_norm, self_attention)
        if context is not None:
            assert self.cross_attn is not None, "got a context, but this block was built without cross_attention=True"
            x = self._sublayer(x, self.cross_norm, lambda h: self._cross_attend(h, context, context_mask))
        return self._sublayer(x, self.ffn_norm, self.ffn)

    def forward_cached(
        self, x_new: Tensor, cache: KVCache | None, context: Tensor | None = None, context_mask: Tensor | None = None
    ) -> tuple[Tensor, KVCache]:
        """Incremental causal forward() for new positions x_new (B, T_new, d_model), using kv_cache_decode_step.

        Returns (output (B, T_new, d_model), the updated KVCache of this block's self-attention).
        Equal to forward(x, mask=causal_mask(T)) on the new positions; does not update
        last_attention_weights.
        """
        new_cache = cache

        def self_attention(h: Tensor) -> Tensor:
            nonlocal new_cache
            out, new_cache = kv_cache_decode_step(self.self_attn, h, cache)
            return out

        x = self._sublayer(x_new, self.attn_norm, self_attention)
        if context is not None:
            assert self.cross_attn is not None, "got a context, but this block was built without cross_attention=True"
            x = self._sublayer(x, self.cross_norm, lambda h: self._cross_attend(h, context, context_mask))
        return self._sublayer(x, self.ffn_norm, self.ffn), new_cache


class TinyTransformer(nn.Module):
    """A small pre-LN Transformer over tokens: an encoder (causal=False) or a decoder-only LM (causal=True).

    tokens -> token embedding + sinusoidal positional encoding -> blocks -> final LayerNorm -> logits.

    causal=False: every position sees the whole sequence; for tasks whose output has the input's
        length (sorting, reversing a sequence), logits at position i predict target token i.
    causal=True: position i sees tokens 0..i only; logits at position i predict token i + 1.

    block_cls, if given, replaces the reference TransformerBlock: each block is block_cls(d_model, num_heads, d_ff),
    with forward(x, mask=None) and a ``self_attn`` module whose weights attention_maps() reports. Such blocks have
    no forward_cached, so generate() needs use_kv_cache=False with them.

    The embeddings are *not* multiplied by sqrt(d_model) as in the paper: there the embedding matrix is
    shared with the output layer and so initialised small, and the factor brings it up to the scale
    of the positional encoding. nn.Embedding is initialised N(0, 1), already on that scale; scaling it
    by sqrt(d_model) would drown out the positions.
    """

    def __init__(
        self,
        vocab_size: int,
        d_model: int = 64,
        num_heads: int = 4,
        num_layers: int = 2,
        d_ff: int | None = None,
        max_len: int = 64,
        dropout: float = 0.0,
        causal: bool = False,
        attention_cls: type[nn.Module] = MultiHeadAttention,
        block_cls: type[nn.Module] | None = None,
    ):
        super().__init__()
        d_ff = 4 * d_model if d_ff is None else d_ff
        self.causal = causal
        self.max_len = max_len
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        # A buffer, not a parameter: fixed, but moves with .to(device). Not saved: it is recomputable.
        self.register_buffer("positional_encoding", sinusoidal_positional_encoding(max_len, d_model), persistent=False)
        self.dropout = nn.Dropout(dropout)
        if block_cls is None:
            self.blocks = nn.ModuleList(
                TransformerBlock(d_model, num_heads, d_ff, dropout, norm_first=True, attention_cls=attention_cls)
                for _ in range(num_layers)
            )
        else:
            # A notebook's own block, built as block_cls(d_model, num_heads, d_ff) (it builds its own attention).
            self.blocks = nn.ModuleList(block_cls(d_model, num_heads, d_ff) for _ in range(num_layers))
            for block in self.blocks:
                if not hasattr(block, "last_attention_weights"):
                    self._keep_attention_weights(block)
        self.final_norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)

    @staticmethod
    def _keep_attention_weights(block: nn.Module) -> None:
        """Record the weights of a custom block's self_attn in block.last_attention_weights (for attention_maps)."""
        block.last_attention_weights = None

        def keep(module: nn.Module, inputs: tuple, output: tuple) -> None:
            block.last_attention_weights = output[1].detach()

        block.self_attn.register_forward_hook(keep)

    def _embed(self, tokens: Tensor, start: int) -> Tensor:
        """tokens (B, T) at absolute positions start .. start + T - 1 -> (B, T, d_model)."""
        end = start + tokens.shape[1]
        assert end <= self.max_len, f"sequence reaches position {end - 1} but max_len={self.max_len}"
        return self.dropout(self.token_embedding(tokens) + self.positional_encoding[start:end])

    def forward(self, tokens: Tensor, padding_mask: Tensor | None = None) -> Tensor:
        """tokens: (B, T) int64 -> logits (B, T, vocab_size).

        padding_mask: optional (B, T) bool, True = real token; no query attends to a padded key.
        """
        T = tokens.shape[1]
        x = self._embed(tokens, start=0)
        mask = causal_mask(T, tokens.device) if self.causal else None
        if padding_mask is not None:
            keys = padding_mask[:, None, None, :]  # (B, 1, 1, T): broadcast over heads and queries
            mask = keys if mask is None else mask & keys
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.head(self.final_norm(x))

    def attention_maps(self) -> list[Tensor]:
        """Self-attention weights of the last forward(), one (B, H, T, T) tensor per layer."""
        assert all(b.last_attention_weights is not None for b in self.blocks), "call forward() first"
        return [block.last_attention_weights for block in self.blocks]

    def _forward_cached(self, tokens_new: Tensor, caches: list[KVCache | None]) -> tuple[Tensor, list[KVCache]]:
        """Logits (B, T_new, vocab_size) for new tokens (B, T_new), given one KVCache per layer."""
        start = 0 if caches[0] is None else caches[0].length
        x = self._embed(tokens_new, start)
        new_caches = []
        for block, cache in zip(self.blocks, caches):
            x, cache = block.forward_cached(x, cache)
            new_caches.append(cache)
        return self.head(self.final_norm(x)), new_caches

    @torch.no_grad()
    def generate(self, prompt: Tensor, max_new_tokens: int, use_kv_cache: bool = True, temperature: float = 0.0) -> Tensor:
        """Continue prompt (B, T_prompt) by max_new_tokens tokens; returns (B, T_prompt + max_new_tokens).

        temperature == 0: greedy (argmax); otherwise sample from softmax(logits / temperature).
        use_kv_cache=True feeds the prompt once, then one token per step, each layer keeping a KVCache;
        use_kv_cache=False recomputes the whole prefix at every step. Both give the same tokens.
        Call model.eval() first if the model has dropout.
        """
        assert self.causal, "generate() needs a causal model (TinyTransformer(..., causal=True))"
        total = prompt.shape[1] + max_new_tokens
        assert total <= self.max_len, f"prompt + max_new_tokens = {total} positions exceeds max_len={self.max_len}"
        tokens = prompt
        caches: list[KVCache | None] = [None] * len(self.blocks)
        new_tokens = prompt  # what the model has not seen yet: the prompt first, then one token at a time
        for _ in range(max_new_tokens):
            if use_kv_cache:
                logits, caches = self._forward_cached(new_tokens, caches)
            else:
                logits = self(tokens)
            new_tokens = _pick_next_token(logits[:, -1, :], temperature)  # (B, 1)
            tokens = torch.cat([tokens, new_tokens], dim=1)
        return tokens


def _pick_next_token(logits: Tensor, temperature: float) -> Tensor:
    """logits (B, vocab_size) -> next tokens (B, 1): argmax if temperature == 0, else a sample."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    return torch.multinomial((logits / temperature).softmax(dim=-1), num_samples=1)
