"""Every GPT check accepts the reference and rejects plausible wrong answers, naming the fault."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from gradelib.checks import CheckFailed, gpt as checks
from gradelib.reference import gpt as ref
import checking
from checking import assert_rejected, own_copy, score_of


assert_accepted = functools.partial(checking.assert_accepted, seeds=(0, 5, 1234))  # every check at three seeds


def stub(*args, **kwargs):
    raise NotImplementedError()


# --- causal LM loss --------------------------------------------------------------------------------


def lm_loss_template(model, tokens, *, mask="causal", shift=True, reduction="mean"):
    T = tokens.shape[1] - 1
    inputs, targets = (tokens[:, :-1], tokens[:, 1:]) if shift else (tokens[:, :-1], tokens[:, :-1])
    masks = {
        "causal": torch.ones(T, T, dtype=torch.bool).tril(),
        "look-ahead": torch.ones(T, T, dtype=torch.bool).tril(1),
        "upper": torch.ones(T, T, dtype=torch.bool).triu(),
        "no-diagonal": torch.ones(T, T, dtype=torch.bool).tril(-1) | (torch.arange(T)[:, None] == 0) & (torch.arange(T) == 0),
        "none": None,
    }
    logits = model(inputs, masks[mask])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction)


def full_input_then_drop_last(model, tokens):
    """Also right: feed all T tokens with a causal mask and ignore the last position's logits."""
    T = tokens.shape[1]
    logits = model(tokens, torch.ones(T, T, dtype=torch.bool).tril())[:, :-1]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def test_causal_lm_loss_accepts_reference_and_an_equivalent_answer(capsys):
    assert_accepted(checks.check_causal_lm_loss, own_copy(ref.causal_lm_loss), capsys, 3)
    assert_accepted(checks.check_causal_lm_loss, full_input_then_drop_last, capsys, 3, seeds=(0,))


@pytest.mark.parametrize(
    ("wrong", "diagnosis"),
    [
        (lambda m, t: lm_loss_template(m, t, shift=False), "targets are not shifted"),
        (lambda m, t: lm_loss_template(m, t, mask="look-ahead"), "look-ahead mask"),
        (lambda m, t: lm_loss_template(m, t, mask="upper"), "look-ahead mask"),
        (lambda m, t: lm_loss_template(m, t, mask="none"), "no mask was passed"),
        (lambda m, t: lm_loss_template(m, t, mask="no-diagonal"), "attend to itself"),
        (lambda m, t: lm_loss_template(m, t, reduction="sum"), "summed"),
        (lambda m, t: lm_loss_template(m, t) / math.log(2), "bits"),
        (lambda m, t: float(lm_loss_template(m, t)), "should be a torch.Tensor"),
        (lambda m, t: F.cross_entropy(m(t[:, 1:], torch.ones(t.shape[1] - 1, t.shape[1] - 1, dtype=torch.bool).tril()).flatten(0, 1),
                                      t[:, :-1].flatten()), "shifted the wrong way"),
        (stub, "not implemented yet"),
    ],
    ids=["unshifted", "look-ahead", "upper-triangular", "no-mask", "no-diagonal", "sum", "bits", "float", "reversed", "stub"],
)
def test_causal_lm_loss_rejects_wrong_answers(wrong, diagnosis, capsys):
    assert_rejected(checks.check_causal_lm_loss, wrong, capsys, diagnosis, points=3)


def test_causal_lm_loss_refuses_the_reference(capsys):
    with pytest.raises(CheckFailed):
        checks.check_causal_lm_loss(lambda m, t: ref.causal_lm_loss(m, t), points=3)
    assert "0 / 3 points" in capsys.readouterr().out


# --- perplexity ------------------------------------------------------------------------------------


def nll_per_token(logits, targets):
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none").view(targets.shape)


def ppl_ignoring_mask(logits, targets, mask=None):
    return nll_per_token(logits, targets).mean().exp()


def ppl_mean_of_sequences(logits, targets, mask=None):
    nll = nll_per_token(logits, targets)
    m = torch.ones_like(nll) if mask is None else mask.float()
    return ((nll * m).sum(1) / m.sum(1)).exp().mean()


def ppl_base2(logits, targets, mask=None):
    nll = nll_per_token(logits, targets)
    m = torch.ones_like(nll) if mask is None else mask.float()
    return 2 ** ((nll * m).sum() / m.sum())


def test_perplexity_accepts_reference(capsys):
    assert_accepted(checks.check_perplexity, own_copy(ref.perplexity), capsys, 2)


@pytest.mark.parametrize(
    ("wrong", "diagnosis"),
    [
        (ppl_ignoring_mask, "padding positions are counted"),
        (ppl_mean_of_sequences, "averages per-sequence perplexities"),
        (ppl_base2, "2 ** NLL"),
        (lambda logits, targets, mask=None: nll_per_token(logits, targets).mean(), "not its exponential"),
        (stub, "not implemented yet"),
    ],
    ids=["padding", "per-sequence", "base-2", "no-exp", "stub"],
)
def test_perplexity_rejects_wrong_answers(wrong, diagnosis, capsys):
    assert_rejected(checks.check_perplexity, wrong, capsys, diagnosis, points=2)


# --- temperature, top-k, top-p -------------------------------------------------------------------------


def test_decoding_checks_accept_reference(capsys):
    assert_accepted(checks.check_temperature_probs, own_copy(ref.temperature_probs), capsys, 2)
    assert_accepted(checks.check_top_k_probs, own_copy(ref.top_k_probs), capsys, 2)
    assert_accepted(checks.check_top_p_probs, own_copy(ref.top_p_probs), capsys, 3)


@pytest.mark.parametrize(
    ("wrong", "diagnosis"),
    [
        (lambda logits, T: torch.softmax(logits * T, -1), "multiplied by the temperature"),
        (lambda logits, T: torch.softmax(logits / T, -1), "not a division by zero"),
        (lambda logits, T: logits.argmax(-1) if T == 0 else torch.softmax(logits / T, -1), "not the chosen token ids"),
        (lambda logits, T: torch.softmax(logits, -1) ** (1 / max(T, 1e-3)), "not normalised"),
        (lambda logits, T: torch.softmax(logits, -1), "temperature is ignored"),
    ],
    ids=["times-T", "zero-division", "greedy-ids", "power-unnormalised", "ignored"],
)
def test_temperature_rejects_wrong_answers(wrong, diagnosis, capsys):
    assert_rejected(checks.check_temperature_probs, wrong, capsys, diagnosis, points=2)


def top_k_unnormalised(logits, k):
    probs = torch.softmax(logits, -1)
    kth = logits.topk(k, -1).values[..., -1:]
    return probs.masked_fill(logits < kth, 0.0)


def top_k_off_by_one(logits, k):
    kth = logits.topk(min(k + 1, logits.shape[-1]), -1).values[..., -1:]
    return torch.softmax(logits.masked_fill(logits < kth, float("-inf")), -1)


def top_k_smallest(logits, k):
    kth = (-logits).topk(k, -1).values[..., -1:]
    return torch.softmax(logits.masked_fill(-logits < kth, float("-inf")), -1)


@pytest.mark.parametrize(
    ("wrong", "diagnosis"),
    [
        (top_k_unnormalised, "not renormalised"),
        (top_k_off_by_one, "off by one"),
        (top_k_smallest, "least likely"),
        (lambda logits, k: torch.softmax(logits, -1), "outside the top k"),
    ],
    ids=["unnormalised", "off-by-one", "smallest", "ignored"],
)
def test_top_k_rejects_wrong_answers(wrong, diagnosis, capsys):
    assert_rejected(checks.check_top_k_probs, wrong, capsys, diagnosis, points=2)


def top_p_template(logits, p, *, include_crossing=True, renormalise=True, descending=True):
    probs = torch.softmax(logits, -1)
    sorted_probs, order = probs.sort(-1, descending=descending)
    cumulative = sorted_probs.cumsum(-1)
    keep_sorted = (cumulative - sorted_probs < p) if include_crossing else (cumulative <= p)
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = probs.masked_fill(~keep, 0.0)
    return kept / kept.sum(-1, keepdim=True) if renormalise else kept


@pytest.mark.parametrize(
    ("wrong", "diagnosis"),
    [
        (lambda logits, p: top_p_template(logits, p, include_crossing=False), "the token that crosses p is dropped"),
        (lambda logits, p: top_p_template(logits, p, renormalise=False), "not renormalised"),
        (lambda logits, p: top_p_template(logits, p, descending=False), "least likely tokens"),
        (lambda logits, p: torch.softmax(logits, -1), "outside the nucleus"),
    ],
    ids=["excludes-crossing", "unnormalised", "ascending", "ignored"],
)
def test_top_p_rejects_wrong_answers(wrong, diagnosis, capsys):
    assert_rejected(checks.check_top_p_probs, wrong, capsys, diagnosis, points=3)


def test_top_p_excluding_the_crossing_token_gets_partial_credit_only(capsys):
    with pytest.raises(CheckFailed) as failure:
        checks.check_top_p_probs(lambda logits, p: top_p_template(logits, p, include_crossing=False), points=3)
    assert failure.value.score < 3
    capsys.readouterr()


# --- Bradley-Terry and DPO --------------------------------------------------------------------------


def test_alignment_checks_accept_reference(capsys):
    assert_accepted(checks.check_reward_model_loss, own_copy(ref.reward_model_loss), capsys, 2)
    assert_accepted(checks.check_dpo_loss, own_copy(ref.dpo_loss), capsys, 2)


@pytest.mark.parametrize(
    ("wrong", "diagnosis"),
    [
        (lambda c, r: -F.logsigmoid(r - c).mean(), "swapped"),
        (lambda c, r: F.logsigmoid(c - r).mean(), "sign is wrong"),
        (lambda c, r: -torch.log(torch.sigmoid(c - r)).mean(), "use F.logsigmoid"),
        (lambda c, r: -F.logsigmoid(c - r).sum(), "summed"),
        (lambda c, r: -torch.sigmoid(c - r).mean(), "not a loss"),
    ],
    ids=["swapped", "sign", "unstable", "sum", "probability"],
)
def test_reward_model_loss_rejects_wrong_answers(wrong, diagnosis, capsys):
    assert_rejected(checks.check_reward_model_loss, wrong, capsys, diagnosis, points=2)


@pytest.mark.parametrize(
    ("wrong", "diagnosis"),
    [
        (lambda pc, pr, rc, rr, beta: -F.logsigmoid((pc - rc) - (pr - rr)).mean(), "β is missing"),
        (lambda pc, pr, rc, rr, beta: -F.logsigmoid(beta * ((pr - rr) - (pc - rc))).mean(), "swapped"),
        (lambda pc, pr, rc, rr, beta: -F.logsigmoid(beta * (pc - pr)).mean(), "reference model is ignored"),
        (lambda pc, pr, rc, rr, beta: -beta * F.logsigmoid((pc - rc) - (pr - rr)).mean(), "β multiplies the loss"),
        (lambda pc, pr, rc, rr, beta: -F.logsigmoid(beta * ((pc + rc) - (pr + rr))).mean(), "added instead of subtracted"),
    ],
    ids=["no-beta", "swapped", "no-reference", "beta-outside", "reference-added"],
)
def test_dpo_loss_rejects_wrong_answers(wrong, diagnosis, capsys):
    assert_rejected(checks.check_dpo_loss, wrong, capsys, diagnosis, points=2)


# --- Feedback quality: trivial cases earn little (issue #14, section 6) ----------------------------


@pytest.mark.parametrize(
    ("check", "answer", "points"),
    [
        (checks.check_temperature_probs, lambda logits, T: torch.softmax(logits, -1), 2),        # passed T = 1
        (checks.check_top_k_probs, lambda logits, k: torch.softmax(logits, -1), 2),              # passed k = V
        (checks.check_top_p_probs, lambda logits, p: top_p_template(logits, p, renormalise=False), 3),  # passed p = 1
        (checks.check_top_p_probs, lambda logits, p: torch.softmax(logits, -1), 3),              # passed p = 1
        (checks.check_reward_model_loss, lambda c, r: -F.logsigmoid(r - c).mean(), 2),           # passed equal rewards
        (checks.check_dpo_loss, lambda pc, pr, rc, rr, beta: -F.logsigmoid((pc - rc) - (pr - rr)).mean(), 2),  # passed π = π_ref
        (checks.check_dpo_loss, lambda pc, pr, rc, rr, beta: -F.logsigmoid(beta * ((pr - rr) - (pc - rc))).mean(), 2),
    ],
    ids=["temperature-ignored", "top-k-uncut", "top-p-unnormalised", "top-p-uncut", "bt-swapped", "dpo-no-beta",
         "dpo-swapped"],
)
def test_answers_right_only_on_trivial_inputs_earn_nothing(check, answer, points, capsys):
    """T = 1, k = V, p = 1, equal rewards and a policy equal to its reference are passed by these wrong answers;
    they ride along with a case that needs the real rule instead of being a case (a third of the points) alone."""
    assert score_of(check, answer, points) == 0


# --- Derivations ---------------------------------------------------------------------------------

import sympy as sp  # noqa: E402

from gradelib.checks.derive import make_symbols  # noqa: E402

d, h = make_symbols(checks.BLOCK_SYMBOLS)
k, V = make_symbols(checks.TEMPERATURE_SYMBOLS)
beta, u = make_symbols(checks.DPO_SYMBOLS)
BLOCK = {"classic_params": 12 * d**2 + 13 * d, "modern_params": 4 * d**2 + 3 * d * h + 2 * d}


def test_block_params_match_the_reference_modules():
    """The key against torch: the reference's GPT blocks, classic (width 4d) and modern (any width h)."""
    for D, H in [(64, 176), (128, 344), (96, 100)]:
        classic = ref.GPTBlock(ref.GPTConfig(50, d_model=D, num_heads=4, block="classic"))
        modern = ref.GPTBlock(ref.GPTConfig(50, d_model=D, num_heads=4, block="modern", d_ff=H))
        assert BLOCK["classic_params"].subs(d, D) == sum(p.numel() for p in classic.parameters())
        assert BLOCK["modern_params"].subs({d: D, h: H}) == sum(p.numel() for p in modern.parameters())
    # Section 2.5's claim: SwiGLU of width 8d/3 has as many MLP weights as a 4d GELU MLP (biases aside).
    assert sp.expand(3 * d * sp.Rational(8, 3) * d - 2 * d * 4 * d) == 0


def test_temperature_limits_and_dpo_gradient_are_verified_independently():
    T = sp.Symbol("T", positive=True)
    gap = sp.Symbol("g", positive=True)  # the lower logits sit g below the tied maximum (all alike: enough for a limit)
    for K, VV in [(1, 10), (3, 10), (4, 50)]:
        p_top = 1 / (K + (VV - K) * sp.exp(-gap / T))
        assert sp.limit(p_top, T, 0, "+") == sp.Rational(1, K)
        assert sp.limit(p_top, T, sp.oo) == sp.Rational(1, VV)
    loss = -sp.log(1 / (1 + sp.exp(-beta * u)))
    assert sp.simplify(sp.diff(loss, u) - (-beta / (1 + sp.exp(beta * u)))) == 0
    # And numerically against torch's autograd of the DPO loss's margin.
    margin = torch.tensor([0.0, 1.3, -2.0], dtype=torch.float64, requires_grad=True)
    (-F.logsigmoid(0.4 * margin)).sum().backward()
    assert torch.allclose(margin.grad, torch.tensor([-0.4 / (1 + math.exp(0.4 * x)) for x in [0.0, 1.3, -2.0]], dtype=torch.float64))


@pytest.mark.parametrize(("check", "answers", "points"), [
    (checks.derive_block_params, BLOCK, 2),
    (checks.derive_block_params, {"classic_params": 4 * (d**2 + d) + (4 * d**2 + 4 * d) + (4 * d**2 + d) + 4 * d,
                                  "modern_params": d * (4 * d + 3 * h + 2)}, 2),
    (checks.derive_temperature_limits, {"p_cold": 1 / k, "p_hot": 1 / V}, 2),
    (checks.derive_temperature_limits, {"p_cold": k**-1, "p_hot": (V - k) / (V * (V - k))}, 2),
    (checks.derive_dpo_gradient, {"dloss_du": -beta / (1 + sp.exp(beta * u))}, 1),
    (checks.derive_dpo_gradient, {"dloss_du": -beta * sp.exp(-beta * u) / (1 + sp.exp(-beta * u))}, 1),
    (checks.derive_dpo_gradient, {"dloss_du": sp.diff(-sp.log(1 / (1 + sp.exp(-beta * u))), u)}, 1),
], ids=["block-expanded", "block-by-parts", "limits", "limits-roundabout", "dpo-form", "dpo-sigmoid-form", "dpo-diff"])
def test_derivations_accept_equivalent_forms(check, answers, points, capsys):
    assert check(answers, points=points) == points
    assert check(answers, points=points, seed=99) == points


@pytest.mark.parametrize(("check", "answers", "diagnosis"), [
    (checks.derive_block_params, {**BLOCK, "modern_params": 4 * d**2 + 3 * d * h + 2 * d + h}, "not equivalent"),
    (checks.derive_block_params, {**BLOCK, "modern_params": 12 * d**2 + 2 * d}, "misses a dependence on h"),  # took h = 8d/3
    (checks.derive_block_params, {**BLOCK, "classic_params": 12 * d**2 + 13 * d + h}, "depends on h, which it should not"),
    (checks.derive_temperature_limits, {"p_cold": k / k, "p_hot": 1 / V}, "misses a dependence on k"),       # "greedy: 1"
    (checks.derive_temperature_limits, {"p_cold": 1 / k, "p_hot": k / V}, "depends on k, which it should not"),
    (checks.derive_temperature_limits, {"p_cold": 1, "p_hot": 1 / V}, "a number (int), not an expression"),
    (checks.derive_dpo_gradient, {"dloss_du": beta / (1 + sp.exp(beta * u))}, "has the wrong sign"),
    (checks.derive_dpo_gradient, {"dloss_du": -beta / (1 + sp.exp(-beta * u))}, "correct at u = 0 (the policy equals the reference) but not in general"),
], ids=["modern-extra-h", "modern-fixed-width", "classic-with-h", "cold-greedy", "hot-k", "cold-int", "dpo-sign",
        "dpo-sigma-plus"])
def test_derivations_reject_wrong_forms_by_diagnosis(check, answers, diagnosis, capsys):
    with pytest.raises(CheckFailed):
        check(answers, points=2)
    printed = capsys.readouterr().out
    assert diagnosis in printed, printed
