"""Every attention check accepts the reference and rejects plausible wrong answers with a diagnosis."""

import math

import pytest
import torch
import torch.nn as nn

from gradelib.checks import CheckFailed, attention as checks
from gradelib.checks.answers import check_answer, check_answer_form
from gradelib.reference import attention as ref
from checking import assert_rejected, own_copy


# --- scaled dot-product attention ------------------------------------------------------------


def sdpa_template(q, k, v, mask=None, *, scale=None, softmax_dim=-1, invert_mask=False, use_mask=True, naive_softmax=False):
    d_k = q.shape[-1]
    scores = q @ k.transpose(-2, -1) / (math.sqrt(d_k) if scale is None else scale)
    if mask is not None and use_mask:
        scores = scores.masked_fill(mask if invert_mask else ~mask, float("-inf"))
    if naive_softmax:
        weights = scores.exp() / scores.exp().sum(dim=softmax_dim, keepdim=True)
    else:
        weights = torch.softmax(scores, dim=softmax_dim)
    return weights @ v, weights


@pytest.mark.parametrize("seed", [0, 7])
def test_sdpa_accepts_reference(seed, capsys):
    assert checks.check_scaled_dot_product_attention(own_copy(ref.scaled_dot_product_attention), points=3, seed=seed) == 3.0
    assert "✗" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("wrong", "diagnosis"),
    [
        (lambda q, k, v, mask=None: sdpa_template(q, k, v, mask, scale=1.0), "1/√d_k scaling missing"),
        (lambda q, k, v, mask=None: sdpa_template(q, k, v, mask, scale=q.shape[-1]), "divided by d_k"),
        (lambda q, k, v, mask=None: sdpa_template(q, k, v, mask, softmax_dim=-2), "softmax over the query axis"),
        (lambda q, k, v, mask=None: sdpa_template(q, k, v, mask, invert_mask=True), "mask is inverted"),
        (lambda q, k, v, mask=None: sdpa_template(q, k, v, mask, use_mask=False), "mask is ignored"),
        (lambda q, k, v, mask=None: sdpa_template(q, k, v, mask, naive_softmax=True), "NaN or inf"),
        (lambda q, k, v, mask=None: (sdpa_template(q, k, v, mask)[0].float(), sdpa_template(q, k, v, mask)[1]), "dtype"),
    ],
    ids=["unscaled", "divided-by-dk", "softmax-dim", "inverted-mask", "ignored-mask", "unstable-softmax", "float32-output"],
)
def test_sdpa_rejects_wrong_answers(wrong, diagnosis, capsys):
    assert_rejected(checks.check_scaled_dot_product_attention, wrong, capsys, diagnosis, points=3)


def test_sdpa_rejects_non_tensor_and_stub(capsys):
    assert_rejected(checks.check_scaled_dot_product_attention, lambda q, k, v, mask=None: (1, 2), capsys, "should be a torch.Tensor")

    def stub(q, k, v, mask=None):
        raise NotImplementedError()

    assert_rejected(checks.check_scaled_dot_product_attention, stub, capsys, "not implemented yet")


def test_partial_credit_is_proportional_to_passing_cases(capsys):
    unstable = lambda q, k, v, mask=None: sdpa_template(q, k, v, mask, naive_softmax=True)  # noqa: E731
    with pytest.raises(CheckFailed):
        checks.check_scaled_dot_product_attention(unstable, points=5)
    # 4 of the 5 cases pass: only the large-score case overflows.
    assert "4 / 5 points" in capsys.readouterr().out


# --- causal mask -----------------------------------------------------------------------------


def test_causal_mask_accepts_reference():
    assert checks.check_causal_mask(own_copy(ref.causal_mask), points=1) == 1.0


@pytest.mark.parametrize(
    ("wrong", "diagnosis"),
    [
        (lambda T: torch.ones(T, T, dtype=torch.bool).tril(-1), "diagonal must be True"),
        (lambda T: torch.ones(T, T, dtype=torch.bool).triu(), "see the future"),
        (lambda T: torch.ones(T, T, dtype=torch.bool).triu(1), "True must mean 'may attend'"),
        (lambda T: torch.zeros(T, T).masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf")), "bool tensor"),
    ],
    ids=["no-diagonal", "upper", "inverted", "float-additive"],
)
def test_causal_mask_rejects_wrong_answers(wrong, diagnosis, capsys):
    assert_rejected(checks.check_causal_mask, wrong, capsys, diagnosis)


# --- sinusoidal positional encoding ----------------------------------------------------------


def pe_template(P, d, *, swap=False, exponent_per_column=False, halves=False):
    pos = torch.arange(P, dtype=torch.float32)[:, None]
    pair = torch.arange(0, d, 2, dtype=torch.float32)
    exponent = (pair / 2) / d if exponent_per_column else pair / d
    angles = pos / 10000 ** exponent
    sin, cos = torch.sin(angles), torch.cos(angles)
    if halves:
        return torch.cat([sin, cos], dim=-1)[:, :d]
    out = torch.zeros(P, d + d % 2)
    out[:, 0::2], out[:, 1::2] = (cos, sin) if swap else (sin, cos)
    return out[:, :d]


def test_positional_encoding_accepts_reference():
    assert checks.check_sinusoidal_positional_encoding(own_copy(ref.sinusoidal_positional_encoding), points=2) == 2.0


@pytest.mark.parametrize(
    ("wrong", "diagnosis"),
    [
        (lambda P, d: pe_template(P, d, swap=True), "they are swapped"),
        (lambda P, d: pe_template(P, d, exponent_per_column=True), "share one frequency"),
        (lambda P, d: pe_template(P, d, halves=True), "all the sines first"),
        (lambda P, d: pe_template(P, d)[:, : d - 1] if d % 2 else pe_template(P, d), "shape"),
    ],
    ids=["swapped", "exponent", "halves", "odd-dmodel"],
)
def test_positional_encoding_rejects_wrong_answers(wrong, diagnosis, capsys):
    assert_rejected(checks.check_sinusoidal_positional_encoding, wrong, capsys, diagnosis)


# --- multi-head attention --------------------------------------------------------------------


class MHATemplate(nn.Module):
    scale_by_d_model = False
    project_output = True
    scramble_heads = False

    def __init__(self, d_model, num_heads):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(d_model, d_model) for _ in range(4))

    def split(self, x):
        B, T, D = x.shape
        if self.scramble_heads:
            return x.reshape(B, self.num_heads, T, self.head_dim)
        return x.view(B, T, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query, key, value, mask=None):
        q, k, v = self.split(self.w_q(query)), self.split(self.w_k(key)), self.split(self.w_v(value))
        scale = math.sqrt(query.shape[-1] if self.scale_by_d_model else self.head_dim)
        scores = q @ k.transpose(-2, -1) / scale
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        out = (weights @ v).transpose(1, 2).reshape(query.shape)
        return (self.w_o(out) if self.project_output else out), weights


def test_mha_template_is_correct_by_default():
    assert checks.check_multi_head_attention(MHATemplate, points=3) == 3.0
    assert checks.check_multi_head_attention(MHATemplate, points=3, seed=5) == 3.0


@pytest.mark.parametrize(
    ("flag", "diagnosis"),
    [("scale_by_d_model", "not √d_model"), ("project_output", "w_o is missing"), ("scramble_heads", "heads are split incorrectly")],
)
def test_mha_rejects_wrong_answers(flag, diagnosis, capsys):
    wrong = type("WrongMHA", (MHATemplate,), {flag: not getattr(MHATemplate, flag)})
    assert_rejected(checks.check_multi_head_attention, wrong, capsys, diagnosis)


def test_mha_rejects_transposed_weights(capsys):
    class TransposedLoad(MHATemplate):
        def forward(self, query, key, value, mask=None):
            # Uses W instead of Wᵀ: a classic slip when writing x @ W by hand.
            q = self.split(query @ self.w_q.weight + self.w_q.bias)
            k = self.split(key @ self.w_k.weight + self.w_k.bias)
            v = self.split(value @ self.w_v.weight + self.w_v.bias)
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            return self.w_o((weights @ v).transpose(1, 2).reshape(query.shape)), weights

    assert_rejected(checks.check_multi_head_attention, TransposedLoad, capsys, "differs from nn.MultiheadAttention")


# --- RoPE ------------------------------------------------------------------------------------


def rope_template(x, positions=None, *, sign=1.0, half_split=False, ignore_positions=False, offset=0):
    T, D = x.shape[-2], x.shape[-1]
    pos = torch.arange(T) if positions is None or ignore_positions else positions
    pos = pos.to(x.dtype) + offset
    freqs = 10000.0 ** (-torch.arange(0, D, 2, dtype=x.dtype) / D)
    angles = sign * pos[:, None] * freqs
    cos, sin = torch.cos(angles), torch.sin(angles)
    if half_split:
        a, b = x[..., : D // 2], x[..., D // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    a, b = x[..., 0::2], x[..., 1::2]
    out = torch.empty_like(x)
    out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
    return out


def test_rope_template_and_reference_pass():
    assert checks.check_apply_rope(rope_template, points=2) == 2.0
    assert checks.check_apply_rope(own_copy(ref.apply_rope), points=2, seed=3) == 2.0


@pytest.mark.parametrize(
    ("kwargs", "diagnosis"),
    [
        ({"half_split": True}, "GPT-NeoX convention"),
        ({"sign": -1.0}, "rotation direction reversed"),
        ({"ignore_positions": True}, "positions argument is ignored"),
        ({"offset": 1}, "off by one"),
    ],
    ids=["half-split", "reversed", "ignores-positions", "off-by-one"],
)
def test_rope_rejects_wrong_answers(kwargs, diagnosis, capsys):
    assert_rejected(checks.check_apply_rope, lambda x, positions=None: rope_template(x, positions, **kwargs), capsys, diagnosis)


def test_rope_rejects_absolute_scaling(capsys):
    # Scaling by position is "position-aware" but breaks both the norm and the relative property.
    wrong = lambda x, positions=None: x * (1 + (torch.arange(x.shape[-2]) if positions is None else positions)[:, None])  # noqa: E731
    assert_rejected(checks.check_apply_rope, wrong, capsys, "norms change")


# --- KV cache --------------------------------------------------------------------------------


def kv_template(mha, x_new, cache, *, attend_before_append=False, causal_in_chunk=True, drop_cache=False):
    B, T_new, _ = x_new.shape
    q, k, v = (ref.split_heads(w(x_new), mha.num_heads) for w in (mha.w_q, mha.w_k, mha.w_v))
    past_k = cache.k if cache is not None else k[:, :, :0]
    past_v = cache.v if cache is not None else v[:, :, :0]
    all_k, all_v = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)
    T_past = past_k.shape[2]
    mask = torch.ones(T_new, T_past + T_new, dtype=torch.bool)
    if causal_in_chunk:
        mask[:, T_past:] = torch.ones(T_new, T_new, dtype=torch.bool).tril()
    keys, values = (k, v) if drop_cache else (all_k, all_v)
    if drop_cache:
        mask = mask[:, T_past:]
    if attend_before_append:
        keys, values, mask = (past_k, past_v, mask[:, :T_past]) if T_past else (k, v, mask[:, T_past:] & False)
    out, _ = ref.scaled_dot_product_attention(q, keys, values, mask)
    return mha.w_o(ref.merge_heads(out)), ref.KVCache(all_k, all_v)


def test_kv_cache_accepts_reference_and_template():
    assert checks.check_kv_cache_decode_step(own_copy(ref.kv_cache_decode_step), points=3) == 3.0
    assert checks.check_kv_cache_decode_step(kv_template, points=3, seed=4) == 3.0


@pytest.mark.parametrize(
    ("kwargs", "diagnosis"),
    [
        ({"attend_before_append": True}, "must attend to itself"),
        ({"causal_in_chunk": False}, "apply a causal mask inside the chunk"),
        ({"drop_cache": True}, "differs from full causal attention from token 1"),
    ],
    ids=["attend-before-append", "non-causal-chunk", "ignores-cache"],
)
def test_kv_cache_rejects_wrong_answers(kwargs, diagnosis, capsys):
    assert_rejected(checks.check_kv_cache_decode_step, lambda m, x, c: kv_template(m, x, c, **kwargs), capsys, diagnosis)


# --- concept questions -----------------------------------------------------------------------


def test_answer_checks():
    assert check_answer("Q", "b ", expected="B", kind="choice", points=1) == 1.0
    assert check_answer("Q", 64, expected=64.0, kind="number", points=1) == 1.0
    assert check_answer("Q", [2, 1, 0], expected={0, 1, 2}, kind="indices", points=2) == 2.0
    with pytest.raises(CheckFailed):
        check_answer("Q", "C", expected="B", kind="choice", points=1)
    with pytest.raises(CheckFailed):
        check_answer("Q", {0, 1}, expected={0, 1, 2}, kind="indices", points=1)
    with pytest.raises(CheckFailed):
        check_answer("Q", 4096, expected=4 * 4096, kind="integer", points=1)
    with pytest.raises(AssertionError, match="no answer yet"):
        check_answer_form("Q", None, kind="choice")
    with pytest.raises(AssertionError, match="one letter"):
        check_answer_form("Q", "E", kind="choice")
    with pytest.raises(AssertionError, match="whole number"):
        check_answer_form("Q", 2.5, kind="integer")


def test_rebinding_torch_allclose_does_not_fool_a_check(monkeypatch, capsys):
    monkeypatch.setattr(torch, "allclose", lambda *a, **k: True)
    monkeypatch.setattr(torch, "equal", lambda *a, **k: True)
    wrong = lambda q, k, v, mask=None: sdpa_template(q, k, v, mask, scale=1.0)  # noqa: E731
    assert_rejected(checks.check_scaled_dot_product_attention, wrong, capsys, "scaling missing")


@pytest.mark.parametrize(
    ("check", "answer"),
    [(checks.check_scaled_dot_product_attention, ref.scaled_dot_product_attention),
     (checks.check_causal_mask, lambda T, device=None: ref.causal_mask(T, device)),
     (checks.check_sinusoidal_positional_encoding, ref.sinusoidal_positional_encoding),
     (checks.check_multi_head_attention, ref.MultiHeadAttention),
     (checks.check_apply_rope, lambda x, positions=None: ref.apply_rope(x, positions)),
     (checks.check_kv_cache_decode_step, ref.kv_cache_decode_step),
     (checks.check_transformer_block, ref.TransformerBlock)],
    ids=["sdpa", "causal", "pe", "mha", "rope", "kv", "block"],
)
def test_answers_that_call_the_reference_score_zero(check, answer, capsys):
    with pytest.raises(CheckFailed) as failure:
        check(answer)
    assert failure.value.score == 0
    printed = capsys.readouterr().out
    assert "gradelib.reference" in printed and ": 0 / " in printed


def test_mha_wrapping_the_reference_is_caught(capsys):
    class Wrapper(nn.Module):
        def __init__(self, d_model, num_heads):
            super().__init__()
            self.inner = ref.MultiHeadAttention(d_model, num_heads)
            self.w_q, self.w_k, self.w_v, self.w_o = self.inner.w_q, self.inner.w_k, self.inner.w_v, self.inner.w_o

        def forward(self, query, key, value, mask=None):
            return self.inner(query, key, value, mask)

    assert_rejected(checks.check_multi_head_attention, Wrapper, capsys, "gradelib.reference")


def test_check_modules_cannot_be_rebound():
    import gradelib.checks._core as core

    with pytest.raises(AttributeError, match="read-only"):
        checks.check_causal_mask = lambda *a, **k: 1.0
    with pytest.raises(AttributeError, match="read-only"):
        core.run_check = lambda *a, **k: 1.0


def test_published_partial_score_cannot_be_redirected(monkeypatch):
    """A check publishes partial credit through the display hook bound at import, not the one in place later."""
    import gradelib.checks._core as core

    published = []

    class Hook:
        def __call__(self, value):
            published.append(value)

    hook = Hook()
    monkeypatch.setitem(vars(core), "_DISPLAYHOOK", (hook, Hook.__call__))
    hook.__call__ = lambda value: published.append(99.0)  # what a student's rebinding would do
    Hook.__call__ = lambda self, value: published.append(99.0)
    unstable = lambda q, k, v, mask=None: sdpa_template(q, k, v, mask, naive_softmax=True)  # noqa: E731
    with pytest.raises(CheckFailed):
        checks.check_scaled_dot_product_attention(unstable, points=5)
    assert published == [4.0]


def test_checks_imported_after_a_patch_still_use_the_real_torch(monkeypatch, capsys):
    """Grade cells import their check late; the comparison primitives were bound when gradelib was."""
    import importlib
    import sys

    monkeypatch.setattr(torch, "equal", lambda *a, **k: True)
    monkeypatch.delitem(sys.modules, "gradelib.checks.attention")
    late = importlib.import_module("gradelib.checks.attention")
    assert_rejected(late.check_causal_mask, lambda T, device=None: torch.ones(T, T, dtype=torch.bool).tril(-1), capsys,
                    "diagonal must be True")


# --- one mistake costs one exercise (issue #14, §6) -------------------------------------------
# In the notebook, MultiHeadAttention and kv_cache_decode_step call the student's scaled_dot_product_attention
# (and perhaps causal_mask) through the notebook's globals. `notebook` builds such a namespace.

SDPA_WITHOUT_SCALE = '''
def scaled_dot_product_attention(q, k, v, mask=None):
    scores = q @ k.transpose(-2, -1)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    return weights @ v, weights
'''
SDPA_RIGHT = SDPA_WITHOUT_SCALE.replace("k.transpose(-2, -1)", "k.transpose(-2, -1) / math.sqrt(q.shape[-1])")
FLOAT_CAUSAL_MASK = '''
def causal_mask(T, device=None):
    return torch.zeros(T, T).masked_fill(torch.ones(T, T).triu(1).bool(), float("-inf"))
'''
BOOL_CAUSAL_MASK = '''
def causal_mask(T, device=None):
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()
'''
MHA = '''
class MultiHeadAttention(nn.Module):
    def __init__(self, d_model, num_heads):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.w_q, self.w_k, self.w_v, self.w_o = (nn.Linear(d_model, d_model) for _ in range(4))

    def forward(self, query, key, value, mask=None):
        q = split_heads(self.w_q(query), self.num_heads)
        k = split_heads(self.w_k(key), self.num_heads)
        v = split_heads(self.w_v(value), self.num_heads)
        heads, weights = scaled_dot_product_attention(q, k, v, mask)
        return self.w_o(merge_heads(heads)), weights
'''
KV_STEP = '''
def kv_cache_decode_step(mha, x_new, cache=None):
    q, k, v = (split_heads(w(x_new), mha.num_heads) for w in (mha.w_q, mha.w_k, mha.w_v))
    if cache is not None:
        k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
    T_new, T_total = q.shape[2], k.shape[2]
    mask = causal_mask(T_total)[-T_new:]
    heads, _ = scaled_dot_product_attention(q, k, v, mask)
    return mha.w_o(merge_heads(heads)), KVCache(k, v)
'''


def notebook(*sources: str) -> dict:
    """The globals of a notebook whose cells are ``sources`` (after the set-up cell's imports)."""
    namespace = {"__name__": "__main__", "math": math, "torch": torch, "nn": nn, "split_heads": ref.split_heads,
                 "merge_heads": ref.merge_heads, "KVCache": ref.KVCache}
    for source in sources:
        exec(source, namespace)
    return namespace


def test_a_missing_scale_in_exercise_1_does_not_cost_exercises_4_and_6(capsys):
    nb = notebook(SDPA_WITHOUT_SCALE, BOOL_CAUSAL_MASK, MHA, KV_STEP)
    assert checks.check_multi_head_attention(nb["MultiHeadAttention"], points=3) == 3.0
    printed = capsys.readouterr().out
    assert "✗" not in printed and "fix exercise 1 (scaled_dot_product_attention)" in printed
    assert printed.count("note:") == 1                       # once per check, not once per case
    assert checks.check_kv_cache_decode_step(nb["kv_cache_decode_step"], points=3, seed=99) == 3.0
    assert "fix exercise 1 (scaled_dot_product_attention)" in capsys.readouterr().out
    # the notebook's own functions are back in place after the check
    assert nb["scaled_dot_product_attention"].__globals__ is nb


def test_a_float_mask_from_exercise_2_does_not_zero_exercise_6(capsys):
    nb = notebook(SDPA_RIGHT, FLOAT_CAUSAL_MASK, MHA, KV_STEP)
    assert checks.check_kv_cache_decode_step(nb["kv_cache_decode_step"], points=3) == 3.0
    printed = capsys.readouterr().out
    assert "fix exercise 2 (causal_mask)" in printed and "exercise 1" not in printed


def test_a_wrong_exercise_4_still_fails_with_its_own_diagnosis(capsys):
    wrong_merge = MHA.replace("merge_heads(heads)", "heads.reshape(query.shape)")
    nb = notebook(SDPA_WITHOUT_SCALE, BOOL_CAUSAL_MASK, wrong_merge)
    assert_rejected(checks.check_multi_head_attention, nb["MultiHeadAttention"], capsys, "merged without the transpose")


def test_right_pieces_give_no_note(capsys):
    nb = notebook(SDPA_RIGHT, BOOL_CAUSAL_MASK, MHA, KV_STEP)
    assert checks.check_multi_head_attention(nb["MultiHeadAttention"], points=3) == 3.0
    assert checks.check_kv_cache_decode_step(nb["kv_cache_decode_step"], points=3) == 3.0
    assert "note:" not in capsys.readouterr().out


def test_mha_merged_without_the_transpose_is_named(capsys):
    class NoTransposeMerge(MHATemplate):
        def forward(self, query, key, value, mask=None):
            q, k, v = self.split(self.w_q(query)), self.split(self.w_k(key)), self.split(self.w_v(value))
            scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)
            if mask is not None:
                scores = scores.masked_fill(~mask, float("-inf"))
            weights = torch.softmax(scores, dim=-1)
            return self.w_o((weights @ v).reshape(query.shape)), weights

    assert_rejected(checks.check_multi_head_attention, NoTransposeMerge, capsys, "merged without the transpose")


# --- trivial cases earn little ----------------------------------------------------------------


def test_trivial_cases_are_not_cases_of_their_own(capsys):
    upper = lambda T: torch.ones(T, T, dtype=torch.bool).triu()  # noqa: E731  right at T = 1 only
    with pytest.raises(CheckFailed) as failure:
        checks.check_causal_mask(upper, points=1)
    assert failure.value.score == 0
    identity = lambda x, positions=None: x.clone()  # noqa: E731  right at position 0 only
    with pytest.raises(CheckFailed) as failure:
        checks.check_apply_rope(identity, points=2)
    assert failure.value.score == 0
    assert "does not change with the offset" in capsys.readouterr().out


# --- RoPE frequencies ---------------------------------------------------------------------------


def rope_with_theta(theta_of):
    def rope(x, positions=None):
        T, D = x.shape[-2], x.shape[-1]
        pos = torch.arange(T) if positions is None else positions
        angles = pos.double()[:, None] * theta_of(D)
        cos, sin = torch.cos(angles), torch.sin(angles)
        a, b = x[..., 0::2].double(), x[..., 1::2].double()
        out = torch.empty_like(x)
        out[..., 0::2], out[..., 1::2] = (a * cos - b * sin).to(x.dtype), (a * sin + b * cos).to(x.dtype)
        return out
    return rope


@pytest.mark.parametrize(
    ("theta_of", "diagnosis"),
    [
        (lambda D: 10000.0 ** (-torch.arange(D // 2, dtype=torch.float64) / D), "wrong frequencies: the exponent of pair i is 2i/D (i counts pairs, 0 … D/2 − 1); yours is i/D"),
        (lambda D: 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) * 2 / D), "wrong frequencies: the exponent of pair i is 2i/D with i counting pairs; yours counts features"),
        (lambda D: 10000.0 ** (torch.arange(0, D, 2, dtype=torch.float64) / D), "wrong frequencies: they must fall with i (10000 to a negative power); yours grow"),
        (lambda D: torch.ones(D // 2, dtype=torch.float64), "wrong frequencies: every pair turns at the same rate"),
        (lambda D: 1000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) / D), "each pair is rotated, but by the wrong angles"),
    ],
    ids=["pair-exponent-halved", "feature-index", "growing", "constant", "other-base"],
)
def test_rope_wrong_frequencies_are_named(theta_of, diagnosis, capsys):
    assert_rejected(checks.check_apply_rope, rope_with_theta(theta_of), capsys, diagnosis)


def test_rope_right_frequencies_pass():
    assert checks.check_apply_rope(rope_with_theta(lambda D: 10000.0 ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)),
                                   points=2, seed=11) == 2.0


# --- the transformer block (exercise 7) --------------------------------------------------------

BLOCK = '''
class TransformerBlock(nn.Module):
    def __init__(self, d_model, num_heads, d_ff):
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads)
        self.attn_norm = nn.LayerNorm(d_model)
        self.ffn_norm = nn.LayerNorm(d_model)
        self.ffn_in = nn.Linear(d_model, d_ff)
        self.ffn_out = nn.Linear(d_ff, d_model)

    def forward(self, x, mask=None):
        a = self.attn_norm(x)
        h = x + self.self_attn(a, a, a, mask=mask)[0]
        return h + self.ffn_out(torch.relu(self.ffn_in(self.ffn_norm(h))))
'''


def test_block_accepts_a_right_block(capsys):
    nb = notebook(SDPA_RIGHT, MHA, BLOCK)
    assert checks.check_transformer_block(nb["TransformerBlock"], points=3) == 3.0
    assert checks.check_transformer_block(nb["TransformerBlock"], points=3, seed=5) == 3.0
    assert "note:" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("old", "new", "diagnosis"),
    [
        ("a = self.attn_norm(x)\n        h = x + self.self_attn(a, a, a, mask=mask)[0]\n        return h + self.ffn_out(torch.relu(self.ffn_in(self.ffn_norm(h))))",
         "h = self.attn_norm(x + self.self_attn(x, x, x, mask=mask)[0])\n        return self.ffn_norm(h + self.ffn_out(torch.relu(self.ffn_in(h))))",
         "post-norm"),
        ("h = x + self.self_attn", "h = self.self_attn", "residual connection around attention is missing"),
        ("return h + self.ffn_out", "return self.ffn_out", "residual connection around the FFN is missing"),
        ("torch.relu(self.ffn_in(self.ffn_norm(h)))", "self.ffn_in(self.ffn_norm(h))", "no activation"),
        ("torch.relu(", "torch.nn.functional.gelu(", "GELU"),
        ("h = x + self", "h = a + self", "adds the normalised input"),
        ("self.ffn_norm(h)", "self.attn_norm(h)", "one LayerNorm is used for both"),
        ("self.ffn_norm(h)", "self.ffn_norm(x)", "the FFN reads x, not h"),
        ("mask=mask)[0]", "mask=None)[0]", "mask is not passed"),
        ("return h + self", "return (h + self", "shape"),
    ],
    ids=["post-norm", "no-attention-residual", "no-ffn-residual", "no-activation", "gelu", "normalised-residual",
         "shared-norm", "ffn-reads-x", "no-mask", "broken"],
)
def test_block_rejects_wrong_blocks(old, new, diagnosis, capsys):
    source = BLOCK.replace(old, new)
    if diagnosis == "shape":   # a syntax slip is not a block; instead: return a tuple
        source = BLOCK.replace("return h + self.ffn_out(torch.relu(self.ffn_in(self.ffn_norm(h))))",
                               "return h + self.ffn_out(torch.relu(self.ffn_in(self.ffn_norm(h)))), None")
        diagnosis = "not a tuple"
    assert source != BLOCK
    nb = notebook(SDPA_RIGHT, MHA, source)
    assert_rejected(checks.check_transformer_block, nb["TransformerBlock"], capsys, diagnosis)


def test_a_wrong_exercise_4_does_not_cost_the_block(capsys):
    nb = notebook(SDPA_RIGHT, MHA.replace("merge_heads(heads)", "heads.reshape(query.shape)"), BLOCK)
    assert checks.check_transformer_block(nb["TransformerBlock"], points=3) == 3.0
    assert "fix exercise 4 (MultiHeadAttention)" in capsys.readouterr().out
    nb = notebook(SDPA_WITHOUT_SCALE, MHA, BLOCK)
    assert checks.check_transformer_block(nb["TransformerBlock"], points=3) == 3.0
    assert "fix exercise 1 (scaled_dot_product_attention)" in capsys.readouterr().out


def test_a_block_with_a_changed_submodule_is_told_so(capsys):
    nb = notebook(SDPA_RIGHT, MHA, BLOCK.replace("self.ffn_in = nn.Linear(d_model, d_ff)", "self.ffn_in = nn.Linear(d_model, 2 * d_ff)"))
    assert_rejected(checks.check_transformer_block, nb["TransformerBlock"], capsys, "no longer load")


def test_block_built_on_the_reference_is_caught(capsys):
    assert_rejected(checks.check_transformer_block, type("Sub", (ref.TransformerBlock,), {}), capsys, "gradelib.reference")

    class UsesFeedForward(nn.Module):
        def __init__(self, d_model, num_heads, d_ff):
            super().__init__()
            self.self_attn = ref.MultiHeadAttention(d_model, num_heads)
            self.attn_norm, self.ffn_norm = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
            self.ffn = ref.FeedForward(d_model, d_ff)
            self.ffn_in, self.ffn_out = self.ffn.w_1, self.ffn.w_2

        def forward(self, x, mask=None):
            a = self.attn_norm(x)
            h = x + self.self_attn(a, a, a, mask=mask)[0]
            return h + self.ffn(self.ffn_norm(h))

    assert_rejected(checks.check_transformer_block, UsesFeedForward, capsys, "gradelib.reference")


def test_tiny_transformer_trains_with_a_notebook_block():
    nb = notebook(SDPA_RIGHT, MHA, BLOCK)
    torch.manual_seed(0)
    model = ref.TinyTransformer(vocab_size=7, d_model=16, num_heads=2, num_layers=2, max_len=6, block_cls=nb["TransformerBlock"])
    assert all(type(b).__name__ == "TransformerBlock" and type(b) is not ref.TransformerBlock for b in model.blocks)
    tokens = torch.randint(0, 7, (3, 6))
    is_token = torch.ones(3, 6, dtype=torch.bool)
    is_token[0, 4:] = False
    logits = model(tokens, padding_mask=is_token)
    assert logits.shape == (3, 6, 7)
    maps = model.attention_maps()
    assert len(maps) == 2 and maps[0].shape == (3, 2, 6, 6) and not maps[0].requires_grad
    assert float(maps[0][0, :, :, 4:].abs().max()) == 0.0       # nobody attends to the pads
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


# --- derivations ----------------------------------------------------------------------------------

import sympy as sp  # noqa: E402

d_k, sigma_q, sigma_k = sp.symbols("d_k sigma_q sigma_k", positive=True)
m, n = sp.symbols("m n", integer=True, nonnegative=True)
theta = sp.symbols("theta", positive=True)
q1, q2, k1, k2 = sp.symbols("q1 q2 k1 k2", real=True)


def rotation(angle):
    return sp.Matrix([[sp.cos(angle), -sp.sin(angle)], [sp.sin(angle), sp.cos(angle)]])


def test_derivation_keys_are_right():
    """Each key, derived independently: Var of a sum of d_k independent products, and the rotations' product."""
    # Var(q_j k_j) = E[q_j²] E[k_j²] − (E q_j E k_j)² = σ_q² σ_k²; the d_k products are independent.
    from sympy.stats import E, Normal
    Q, K = Normal("Q", 0, sigma_q), Normal("K", 0, sigma_k)
    one_term = sp.simplify(E((Q * K) ** 2) - E(Q * K) ** 2)
    assert sp.simplify(one_term - sigma_q**2 * sigma_k**2) == 0
    assert sp.simplify(sp.sqrt(d_k * one_term / d_k) - sigma_q * sigma_k) == 0
    product = sp.simplify(rotation(m * theta).T * rotation(n * theta))
    assert sp.simplify(product - rotation((n - m) * theta)) == sp.zeros(2, 2)
    q, k = sp.Matrix([q1, q2]), sp.Matrix([k1, k2])
    score = ((rotation(m * theta) * q).T * (rotation(n * theta) * k))[0]
    assert sp.simplify(sp.expand_trig(score - RIGHT_SCORE)) == 0


@pytest.mark.parametrize("answers", [
    {"var_qk": d_k * sigma_q**2 * sigma_k**2, "std_scaled": sigma_q * sigma_k},
    {"var_qk": (sp.sqrt(d_k) * sigma_q * sigma_k) ** 2, "std_scaled": sp.sqrt(d_k * sigma_q**2 * sigma_k**2 / d_k)},
    {"var_qk": sp.Sum(sigma_q**2 * sigma_k**2, (sp.Symbol("j"), 1, d_k)), "std_scaled": sp.sqrt(sigma_q**2 * sigma_k**2)},
], ids=["plain", "squared-std", "as-a-sum"])
def test_derive_scaling_accepts_equivalent_forms(answers, capsys):
    assert checks.derive_scaling(answers, points=2) == 2.0
    assert checks.derive_scaling(answers, points=2, seed=17) == 2.0


@pytest.mark.parametrize(("answers", "diagnoses"), [
    ({"var_qk": d_k, "std_scaled": sp.Integer(1)},                 # the unit-variance result, taken as general
     ["var_qk  <- misses a dependence on sigma_q, sigma_k", "std_scaled  <- misses a dependence on sigma_q, sigma_k"]),
    ({"var_qk": 2 * d_k * sigma_q**2 * sigma_k**2, "std_scaled": sp.sqrt(d_k) * sigma_q * sigma_k},  # forgot to divide
     ["var_qk  <- off by a constant factor (×2)", "std_scaled  <- depends on d_k, which it should not"]),
    ({"var_qk": sigma_q**2 * sigma_k**2, "std_scaled": sigma_q**2 * sigma_k**2},   # one term only; a variance for a std
     ["var_qk  <- misses a dependence on d_k", "std_scaled  <- correct at σ_q = σ_k = 1 but not in general"]),
    ({"var_qk": d_k * sigma_q * sigma_k, "std_scaled": sigma_q * sigma_k},         # standard deviations multiplied
     ["var_qk  <- correct at σ_q = σ_k = 1 but not in general"]),
], ids=["unit-variance", "factor-2-undivided", "one-term", "stds"])
def test_derive_scaling_rejects_wrong_forms(answers, diagnoses, capsys):
    assert_rejected(checks.derive_scaling, answers, capsys, *diagnoses, points=2)


RIGHT_SCORE = (q1 * k1 + q2 * k2) * sp.cos((n - m) * theta) + (q2 * k1 - q1 * k2) * sp.sin((n - m) * theta)


@pytest.mark.parametrize("answers", [
    {"angle": (n - m) * theta, "score": RIGHT_SCORE},
    {"angle": n * theta - m * theta,
     "score": ((rotation(m * theta) * sp.Matrix([q1, q2])).T * (rotation(n * theta) * sp.Matrix([k1, k2])))[0]},
    {"angle": -(m - n) * theta, "score": (sp.Matrix([q1, q2]).T * rotation((n - m) * theta) * sp.Matrix([k1, k2]))[0]},
], ids=["plain", "expanded-product", "matrix-form"])
def test_derive_rope_accepts_equivalent_forms(answers):
    assert checks.derive_rope_relative(answers, points=2) == 2.0
    assert checks.derive_rope_relative(answers, points=2, seed=5) == 2.0


@pytest.mark.parametrize(("answers", "diagnoses"), [
    ({"angle": (m - n) * theta, "score": (q1 * k1 + q2 * k2) * sp.cos((n - m) * theta) - (q2 * k1 - q1 * k2) * sp.sin((n - m) * theta)},
     ["angle  <- has the wrong sign", "score  <- correct at m = n but not in general"]),
    ({"angle": (m + n) * theta, "score": (q1 * k1 + q2 * k2) * sp.cos((n - m) * theta)},
     ["angle  <- correct at m = 0 but not in general", "score  <- correct at m = n but not in general"]),
    ({"angle": n * theta, "score": q1 * k1 + q2 * k2},
     ["angle  <- misses a dependence on m", "score  <- misses a dependence on m, n, theta"]),
], ids=["transposed-rotation", "sum-of-angles", "absolute"])
def test_derive_rope_rejects_wrong_forms(answers, diagnoses, capsys):
    assert_rejected(checks.derive_rope_relative, answers, capsys, *diagnoses, points=2)
