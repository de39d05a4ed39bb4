"""Behaviour of gradelib.reference.attention, checked against PyTorch and hand-computed values."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gradelib.reference import attention as ref


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def close(a, b, atol=1e-5):
    return torch.allclose(a, b, atol=atol, rtol=1e-5)


# ----------------------------------------------------------------------------- scaled dot-product


@pytest.mark.parametrize("lead", [(), (3,), (2, 4)])
def test_sdpa_matches_torch_without_mask(lead):
    q, k, v = torch.randn(*lead, 5, 8), torch.randn(*lead, 7, 8), torch.randn(*lead, 7, 3)  # d_v != d_k
    out, weights = ref.scaled_dot_product_attention(q, k, v)
    assert out.shape == (*lead, 5, 3) and weights.shape == (*lead, 5, 7)
    assert close(out, F.scaled_dot_product_attention(q, k, v))
    assert close(weights.sum(-1), torch.ones(*lead, 5))


def test_sdpa_matches_torch_with_bool_masks():
    q, k, v = torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 8), torch.randn(2, 3, 6, 4)
    random_mask = torch.rand(2, 1, 6, 6) > 0.4
    random_mask[..., 0] = True  # every query sees a key, so torch gives no NaN either
    for mask in (ref.causal_mask(6), random_mask):
        out, weights = ref.scaled_dot_product_attention(q, k, v, mask)
        assert close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
        assert torch.all(weights[~mask.expand_as(weights)] == 0)
        assert close(weights.sum(-1), torch.ones(2, 3, 6))
    out, _ = ref.scaled_dot_product_attention(q, k, v, ref.causal_mask(6))
    assert close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_sdpa_fully_masked_row_gives_zeros_and_finite_gradients():
    q = torch.randn(2, 4, 8, requires_grad=True)
    k, v = torch.randn(2, 5, 8), torch.randn(2, 5, 3)
    mask = torch.ones(2, 4, 5, dtype=torch.bool)
    mask[0, 2] = False  # query 2 of sequence 0 may see nothing (a padding query)
    out, weights = ref.scaled_dot_product_attention(q, k, v, mask)
    assert torch.all(out[0, 2] == 0) and torch.all(weights[0, 2] == 0)
    assert not out.isnan().any()
    out.sum().backward()
    assert torch.isfinite(q.grad).all()


def test_masks():
    assert torch.equal(ref.causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool))
    assert torch.equal(ref.causal_mask(2, num_past=2), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool))
    pad = ref.padding_mask(torch.tensor([2, 4, 0]), 4)
    assert pad.dtype == torch.bool
    assert torch.equal(pad.int(), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]]))


# ----------------------------------------------------------------------------- positional encoding


def test_sinusoidal_positional_encoding_known_values():
    d = 16
    pe = ref.sinusoidal_positional_encoding(50, d)
    assert pe.shape == (50, d) and pe.dtype == torch.float32
    assert torch.equal(pe[0], torch.tensor([0.0, 1.0] * (d // 2)))
    assert math.isclose(pe[1, 0], math.sin(1), abs_tol=1e-6)
    assert math.isclose(pe[1, 1], math.cos(1), abs_tol=1e-6)
    assert math.isclose(pe[1, 2], math.sin(1 / 10000 ** (2 / d)), abs_tol=1e-6)
    assert math.isclose(pe[7, 5], math.cos(7 / 10000 ** (4 / d)), abs_tol=1e-6)


def test_sinusoidal_positional_encoding_odd_d_model():
    pe = ref.sinusoidal_positional_encoding(10, 7)
    assert pe.shape == (10, 7)
    # The exponent keeps d_model = 7 (not 8): column 6 is sin(pos / 10000^(6/7)), with no cosine partner.
    assert math.isclose(pe[3, 6], math.sin(3 / 10000 ** (6 / 7)), abs_tol=1e-6)
    assert math.isclose(pe[3, 3], math.cos(3 / 10000 ** (2 / 7)), abs_tol=1e-6)
    assert torch.equal(pe[0], torch.tensor([0.0, 1, 0, 1, 0, 1, 0]))


# ----------------------------------------------------------------------------- multi-head attention


def test_split_and_merge_heads_are_inverse():
    x = torch.randn(2, 5, 12)
    heads = ref.split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    assert torch.equal(heads[:, 1], x[..., 4:8])
    assert torch.equal(ref.merge_heads(heads), x)


def _mha_pair(d_model=16, num_heads=4, bias=True):
    torch_mha = nn.MultiheadAttention(d_model, num_heads, batch_first=True, bias=bias)
    mha = ref.MultiHeadAttention(d_model, num_heads, bias=bias)
    ref.load_torch_mha_weights(mha, torch_mha)
    return mha, torch_mha


@pytest.mark.parametrize("bias", [True, False])
def test_mha_matches_torch_cross_attention(bias):
    mha, torch_mha = _mha_pair(bias=bias)
    query, key = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    out, weights = mha(query, key, key)
    want_out, want_avg = torch_mha(query, key, key)
    _, want_heads = torch_mha(query, key, key, average_attn_weights=False)
    assert out.shape == (2, 5, 16) and weights.shape == (2, 4, 5, 7)
    assert close(out, want_out) and close(weights.mean(1), want_avg) and close(weights, want_heads)


def test_mha_matches_torch_with_causal_and_padding_masks():
    mha, torch_mha = _mha_pair()
    x = torch.randn(3, 6, 16)
    causal = ref.causal_mask(6)
    out, weights = mha(x, x, x, mask=causal)
    want_out, want_w = torch_mha(x, x, x, attn_mask=~causal, average_attn_weights=False)  # torch: True = blocked
    assert close(out, want_out) and close(weights, want_w)

    lengths = torch.tensor([6, 4, 2])
    keys_ok = ref.padding_mask(lengths, 6)
    out, weights = mha(x, x, x, mask=keys_ok[:, None, None, :])
    want_out, want_w = torch_mha(x, x, x, key_padding_mask=~keys_ok)
    assert close(out, want_out) and close(weights.mean(1), want_w)

    both = keys_ok[:, None, None, :] & causal
    out, _ = mha(x, x, x, mask=both)
    want_out, _ = torch_mha(x, x, x, attn_mask=~causal, key_padding_mask=~keys_ok)
    assert close(out, want_out)


def test_load_torch_mha_weights_rejects_wrong_size():
    with pytest.raises(AssertionError, match="embed_dim"):
        ref.load_torch_mha_weights(ref.MultiHeadAttention(16, 4), nn.MultiheadAttention(8, 4))


# ----------------------------------------------------------------------------- RoPE


def test_rope_angles():
    angles = ref.rope_angles(5, 8)
    assert angles.shape == (5, 4)
    assert close(angles[3], 3 * 10000.0 ** (-torch.arange(0, 8, 2) / 8))


def test_rope_rotates_adjacent_pairs_and_preserves_norms():
    x = torch.randn(2, 3, 10, 8)
    y = ref.apply_rope(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert close(y.norm(dim=-1), x.norm(dim=-1))
    assert torch.equal(y[..., 0, :], x[..., 0, :])  # position 0: identity
    # Interleaved convention: features (0, 1) at position 4 rotate by 4 radians (theta_0 = 1).
    e0 = torch.tensor([[1.0, 0, 0, 0]]).repeat(5, 1)
    assert close(ref.apply_rope(e0)[4, :2], torch.tensor([math.cos(4), math.sin(4)]))
    assert ref.apply_rope(x.half()).dtype == torch.float16


def test_rope_scores_depend_only_on_relative_position():
    q, k = torch.randn(1, 16), torch.randn(1, 16)

    def score(m, n):
        return (ref.apply_rope(q, torch.tensor([m])) * ref.apply_rope(k, torch.tensor([n]))).sum()

    for offset in (0, 3, -5):
        scores = torch.stack([score(m, m + offset) for m in (0, 2, 7, 30)])
        assert close(scores, scores[0].expand(4), atol=1e-4)
    assert not torch.isclose(score(0, 3), score(0, 4))


def test_rope_positions_argument_matches_default():
    x = torch.randn(2, 12, 8)
    assert close(ref.apply_rope(x)[:, 5:9], ref.apply_rope(x[:, 5:9], torch.arange(5, 9)))


# ----------------------------------------------------------------------------- additive attention


def test_additive_attention_hand_computed_example():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    s0 = torch.tensor([1.0, 2.0])
    W_s, W_h, v = torch.eye(2), torch.ones(2, 2), torch.ones(2)
    context, weights = ref.additive_attention(s0, h, W_s, W_h, v)

    h_np, s_np = h.numpy().astype(np.float64), s0.numpy().astype(np.float64)
    e = np.array([np.tanh(s_np + np.ones((2, 2)) @ h_j).sum() for h_j in h_np])  # v = [1, 1]: a sum
    alpha = np.exp(e) / np.exp(e).sum()
    np.testing.assert_allclose(weights.numpy(), alpha, atol=1e-6)
    np.testing.assert_allclose(context.numpy(), alpha @ h_np, atol=1e-6)
    assert weights[0] == weights[1] < weights[2]  # h1 and h2 score alike, h3 higher


def test_additive_attention_module_batched():
    attn = ref.AdditiveAttention(d_s=6, d_h=4, d_a=5)
    s, h = torch.randn(3, 6), torch.randn(3, 7, 4)
    context, weights = attn(s, h)
    assert context.shape == (3, 4) and weights.shape == (3, 7)
    assert close(weights.sum(-1), torch.ones(3))
    assert close(context[1], ref.additive_attention(s[1], h[1], attn.W_s, attn.W_h, attn.v)[0])


# ----------------------------------------------------------------------------- KV cache and GQA


@pytest.mark.parametrize("chunk", [1, 3])
def test_kv_cache_decode_step_equals_full_causal_attention(chunk):
    mha = ref.MultiHeadAttention(16, 4)
    x = torch.randn(2, 9, 16)
    full, _ = mha(x, x, x, mask=ref.causal_mask(9))
    cache, outputs = None, []
    for t in range(0, 9, chunk):
        y, cache = ref.kv_cache_decode_step(mha, x[:, t : t + chunk], cache)
        outputs.append(y)
    assert cache.length == 9 and cache.k.shape == (2, 4, 9, 4)
    assert torch.allclose(torch.cat(outputs, dim=1), full, atol=1e-5)


def _gqa_to_mha(gqa):
    """An MHA whose key/value heads are the GQA K/V heads, repeated for each query head of their group."""
    group = gqa.num_heads // gqa.num_kv_heads
    d_model = gqa.w_q.in_features
    mha = ref.MultiHeadAttention(d_model, gqa.num_heads, bias=False)
    with torch.no_grad():
        mha.w_q.weight.copy_(gqa.w_q.weight)
        mha.w_o.weight.copy_(gqa.w_o.weight)
        for mine, theirs in ((mha.w_k, gqa.w_k), (mha.w_v, gqa.w_v)):
            per_head = theirs.weight.view(gqa.num_kv_heads, gqa.head_dim, d_model)
            mine.weight.copy_(per_head.repeat_interleave(group, dim=0).reshape(d_model, d_model))
    return mha


@pytest.mark.parametrize("num_kv_heads", [4, 2, 1])
def test_gqa_equals_mha_with_shared_heads(num_kv_heads):
    gqa = ref.GroupedQueryAttention(16, 4, num_kv_heads)
    assert gqa.w_k.out_features == num_kv_heads * 4
    x = torch.randn(2, 6, 16)
    mask = ref.causal_mask(6)
    y, cache = gqa(x, mask=mask)
    assert cache.k.shape == (2, num_kv_heads, 6, 4)
    want, _ = _gqa_to_mha(gqa)(x, x, x, mask=mask)
    assert close(y, want)
    if num_kv_heads == 4:  # plain MHA: identical parameter names and shapes
        mha = ref.MultiHeadAttention(16, 4, bias=False)
        mha.load_state_dict(gqa.state_dict())
        assert close(y, mha(x, x, x, mask=mask)[0])


@pytest.mark.parametrize("use_rope", [False, True])
def test_gqa_with_cache_equals_without(use_rope):
    gqa = ref.GroupedQueryAttention(16, 4, 2)
    x = torch.randn(2, 8, 16)
    full, _ = gqa(x, mask=ref.causal_mask(8), use_rope=use_rope)
    y_prefix, cache = gqa(x[:, :3], mask=ref.causal_mask(3), use_rope=use_rope)  # prefill 3 tokens
    outputs = [y_prefix]
    for t in range(3, 8):
        y, cache = gqa(x[:, t : t + 1], cache=cache, use_rope=use_rope)
        outputs.append(y)
    assert cache.length == 8
    assert torch.allclose(torch.cat(outputs, dim=1), full, atol=1e-5)


def test_kv_cache_bytes_llama2_7b():
    mha_bytes = ref.kv_cache_bytes(batch=1, num_layers=32, num_kv_heads=32, head_dim=128, seq_len=4096)
    assert mha_bytes == 2 * 32 * 32 * 128 * 4096 * 2 == 2 * 2**30
    gqa_bytes = ref.kv_cache_bytes(batch=1, num_layers=32, num_kv_heads=8, head_dim=128, seq_len=4096)
    assert gqa_bytes * 4 == mha_bytes


# ----------------------------------------------------------------------------- Transformer


def test_feed_forward_activations():
    x = torch.randn(2, 3, 8)
    relu_ffn, gelu_ffn = ref.FeedForward(8, 32), ref.FeedForward(8, 32, activation="gelu")
    gelu_ffn.load_state_dict(relu_ffn.state_dict())
    assert relu_ffn(x).shape == (2, 3, 8)
    assert close(relu_ffn(x), relu_ffn.w_2(torch.relu(relu_ffn.w_1(x))))
    assert not close(relu_ffn(x), gelu_ffn(x))


def test_transformer_block_pre_ln_and_post_ln():
    pre = ref.TransformerBlock(16, 4, 32, norm_first=True)
    post = ref.TransformerBlock(16, 4, 32, norm_first=False)
    post.load_state_dict(pre.state_dict())
    x = torch.randn(2, 5, 16)
    y_pre, y_post = pre(x, mask=ref.causal_mask(5)), post(x, mask=ref.causal_mask(5))
    assert y_pre.shape == y_post.shape == (2, 5, 16)
    assert not close(y_pre, y_post)
    # Post-LN ends with LayerNorm (default affine = identity): each position has mean 0, variance 1.
    assert close(y_post.mean(-1), torch.zeros(2, 5), atol=1e-5)
    assert pre.last_attention_weights.shape == (2, 4, 5, 5)
    assert torch.all(pre.last_attention_weights[0].triu(1) == 0)


def test_transformer_block_activation_is_its_feed_forward_nonlinearity():
    torch.manual_seed(3)
    gelu = ref.TransformerBlock(16, 4, 32, activation="gelu")
    torch.manual_seed(3)
    patched = ref.TransformerBlock(16, 4, 32)
    patched.ffn.activation = nn.GELU()  # how BERT and TVLT used to get GELU: same weights, same draws
    for name, tensor in gelu.state_dict().items():
        assert torch.equal(tensor, patched.state_dict()[name]), name
    x = torch.randn(2, 5, 16)
    assert isinstance(gelu.ffn.activation, nn.GELU) and isinstance(ref.TransformerBlock(16, 4, 32).ffn.activation, nn.ReLU)
    assert torch.equal(gelu(x), patched(x))
    relu = ref.TransformerBlock(16, 4, 32)
    relu.load_state_dict(gelu.state_dict())
    assert not close(relu(x), gelu(x))
    with pytest.raises(AssertionError, match="activation"):
        ref.TransformerBlock(16, 4, 32, activation="tanh")


def test_transformer_block_cross_attention():
    block = ref.TransformerBlock(16, 4, 32, cross_attention=True)
    x, context = torch.randn(2, 5, 16), torch.randn(2, 7, 16)
    y = block(x, context=context)
    assert y.shape == (2, 5, 16)
    assert not close(y, block(x, context=torch.randn(2, 7, 16)))
    with pytest.raises(AssertionError, match="cross_attention"):
        ref.TransformerBlock(16, 4, 32)(x, context=context)


def test_transformer_block_forward_cached_matches_forward():
    block = ref.TransformerBlock(16, 4, 32)
    x = torch.randn(2, 6, 16)
    full = block(x, mask=ref.causal_mask(6))
    y_prefix, cache = block.forward_cached(x[:, :4], None)
    y_last, cache = block.forward_cached(x[:, 4:], cache)
    assert torch.allclose(torch.cat([y_prefix, y_last], dim=1), full, atol=1e-5)


def test_transformer_block_accepts_custom_attention_class():
    class MyAttention(ref.MultiHeadAttention):
        pass

    block = ref.TransformerBlock(16, 4, 32, attention_cls=MyAttention)
    assert isinstance(block.self_attn, MyAttention)
    assert block(torch.randn(1, 3, 16)).shape == (1, 3, 16)


@pytest.mark.parametrize("causal", [True, False])
def test_tiny_transformer_causality(causal):
    model = ref.TinyTransformer(vocab_size=11, d_model=32, num_heads=4, num_layers=2, max_len=16, causal=causal)
    tokens = torch.randint(0, 11, (2, 10))
    changed = tokens.clone()
    changed[:, 6] = (tokens[:, 6] + 1) % 11
    logits, logits_changed = model(tokens), model(changed)
    assert logits.shape == (2, 10, 11)
    assert not close(logits[:, 6:], logits_changed[:, 6:])
    assert close(logits[:, :6], logits_changed[:, :6]) == causal  # the past only ignores the future if causal
    maps = model.attention_maps()
    assert len(maps) == 2 and maps[0].shape == (2, 4, 10, 10)


def test_tiny_transformer_generate_with_and_without_cache_agree():
    model = ref.TinyTransformer(vocab_size=13, d_model=32, num_heads=4, num_layers=2, max_len=40, causal=True).eval()
    prompt = torch.randint(0, 13, (3, 5))
    with_cache = model.generate(prompt, max_new_tokens=30, use_kv_cache=True)
    without_cache = model.generate(prompt, max_new_tokens=30, use_kv_cache=False)
    assert with_cache.shape == (3, 35)
    assert torch.equal(with_cache[:, :5], prompt)
    assert torch.equal(with_cache, without_cache)
    # Greedy decoding: every generated token is the argmax of the model's logits on its prefix.
    assert torch.equal(model(with_cache[:, :-1])[:, 4:].argmax(-1), with_cache[:, 5:])


def test_tiny_transformer_generate_guards():
    model = ref.TinyTransformer(vocab_size=13, d_model=32, max_len=10, causal=True)
    with pytest.raises(AssertionError, match="max_len"):
        model.generate(torch.zeros(1, 5, dtype=torch.long), max_new_tokens=6)
    with pytest.raises(AssertionError, match="causal"):
        ref.TinyTransformer(vocab_size=13, d_model=32).generate(torch.zeros(1, 2, dtype=torch.long), 3)


def test_tiny_transformer_padding_mask_hides_pad_tokens():
    """With a padding mask, what sits in the padded positions cannot change the real positions' logits."""
    torch.manual_seed(0)
    model = ref.TinyTransformer(vocab_size=10, d_model=16, num_heads=2, num_layers=2, max_len=8).eval()
    tokens = torch.randint(0, 10, (2, 8))
    is_token = torch.arange(8) < torch.tensor([[5], [8]])
    other = tokens.clone()
    other[0, 5:] = (other[0, 5:] + 1) % 10  # change only sequence 0's padded positions
    with torch.no_grad():
        masked_a = model(tokens, padding_mask=is_token)
        masked_b = model(other, padding_mask=is_token)
        unmasked_b = model(other)
    assert torch.allclose(masked_a[0, :5], masked_b[0, :5], atol=1e-6)
    assert not torch.allclose(masked_a[0, :5], unmasked_b[0, :5], atol=1e-4)
