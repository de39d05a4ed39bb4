"""Checks for notebook 03 (GPT), one per graded exercise.

Each check runs the student's function on seeded cases, compares it with ``gradelib.reference.gpt``
and, when they disagree, looks for the mistake it resembles (unshifted targets, a look-ahead mask,
padding counted in perplexity, top-p that drops the token crossing p, swapped preferences, a
missing beta, ...), so the feedback names the fault without printing the solution.
``seed`` selects the cases: the visible tests use the default, the hidden tests other seeds.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from gradelib.checks import _core
from gradelib.checks._core import Case, close, compare_case, exercise, first_match, generator, make_read_only, max_abs_diff, tensor_problem
from gradelib.checks.derive import derivation, integer, positive, real
from gradelib.reference import gpt as ref
from gradelib.reference.attention import causal_mask as _causal_mask

_randn = _core.randn
_randint = _core.randint
_softmax = _core.softmax
_log_softmax = _core.log_softmax
_cross_entropy = F.cross_entropy
_logsigmoid = F.logsigmoid
_equal = _core.equal


def _scalar_problem(value: object, name: str = "the result") -> str | None:
    return tensor_problem(value, name, ())


# ----------------------------------------------------------------------------------------------
# Exercise: causal language-modelling loss


class _MaskedModel:
    """A small GPT that applies exactly the mask it is given (None = no mask at all), recording each call."""

    def __init__(self, vocab_size: int, gen: torch.Generator):
        config = ref.GPTConfig(vocab_size=vocab_size, block_size=32, d_model=24, num_heads=2, num_layers=2)
        self.gpt = ref.GPT(config).eval()
        with torch.no_grad():  # larger than GPT's init, so that what each position sees matters a lot
            for parameter in self.gpt.parameters():
                parameter.copy_(_randn(parameter.shape, generator=gen) * 0.4)
        self.calls: list[tuple[torch.Tensor, object]] = []

    def __call__(self, inputs, mask=None):
        self.calls.append((inputs, mask))
        if type(inputs) is not torch.Tensor or inputs.dim() != 2 or inputs.dtype != torch.int64:
            raise TypeError("the model takes inputs as a (B, T) int64 tensor of token ids")
        T = inputs.shape[1]
        if mask is None:
            mask = torch.ones(T, T, dtype=torch.bool)
        if type(mask) is not torch.Tensor or mask.dtype != torch.bool:
            raise TypeError("the mask must be a bool tensor (True = may attend)")
        return self.gpt(inputs, mask=mask)

    def loss(self, inputs, targets, mask, reduction="mean"):
        logits = self.gpt(inputs, mask=mask)
        return _cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction)


def _mask_problem(mask: object, T: int) -> str | None:
    """A diagnosis of the attention mask the student passed for T positions, or None if it is causal."""
    if mask is None:
        return "no mask was passed: the model (which has no mask of its own) lets every position see the token it must predict"
    try:
        square = torch.broadcast_to(mask, mask.shape[:-2] + (T, T)).reshape(-1, T, T)[0]
    except Exception:
        return f"the mask has shape {tuple(mask.shape)}, which does not broadcast to ({T}, {T})"
    want = _causal_mask(T)
    if _equal(square, want):
        return None
    if bool((square & ~want).any()):
        i, j = next((i, j) for i in range(T) for j in range(i + 1, T) if square[i, j])
        return f"look-ahead mask: position {i} may attend to position {j} in its future (keep j ≤ i only)"
    if not bool(square.diagonal().all()):
        return "each position must also attend to itself: the diagonal of the causal mask is True"
    return f"the mask hides {int((want & ~square).sum())} past positions that should be visible"


def _causal_loss_case(fn, B: int, T: int, vocab_size: int, gen: torch.Generator) -> str | None:
    model = _MaskedModel(vocab_size, gen)
    tokens = _randint(0, vocab_size, (B, T), generator=gen)
    with torch.no_grad():
        loss = fn(model, tokens)
    problem = _scalar_problem(loss, "the loss")
    if problem:
        return problem + (" (return the mean over all predictions)" if type(loss) is torch.Tensor else "")
    if not model.calls:
        return "the model was never called"
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    causal = _causal_mask(T - 1)
    with torch.no_grad():
        want = model.loss(inputs, targets, causal)
    if close(loss, want, 1e-5):
        return None
    fed, mask = model.calls[-1]
    if type(fed) is torch.Tensor and fed.dim() == 2:
        mask_problem = _mask_problem(mask, fed.shape[1]) if (mask is None or type(mask) is torch.Tensor) else None
        if mask_problem:
            return mask_problem
    with torch.no_grad():
        full = _causal_mask(T)
        variants = [
            ("targets are not shifted: the logits at position t must be scored against token t + 1", model.loss(inputs, inputs, causal)),
            ("targets are not shifted: the logits at position t must be scored against token t + 1", model.loss(tokens, tokens, full)),
            ("shifted the wrong way: inputs are tokens[:, :-1] and targets tokens[:, 1:]", model.loss(targets, inputs, causal)),
            ("the loss is summed: return the mean negative log-likelihood per predicted token", model.loss(inputs, targets, causal, "sum")),
            ("the loss is in bits (log base 2): use natural logs, nats per token", want / math.log(2)),
        ]
    return first_match(loss, variants, 1e-4) or f"differs from the mean next-token NLL (got {float(loss):.4f}, expected about {float(want):.2f})"


@exercise("Causal language-modelling loss", reference=ref.causal_lm_loss)
def check_causal_lm_loss(fn: Callable, points: float = 3, seed: int = 0) -> list[Case]:
    """Check ``fn(model, tokens) -> scalar``: mean NLL of tokens[:, 1:] given a causal model of tokens[:, :-1]."""
    gen = generator(seed)
    cases = [
        ("one sequence of 6 tokens", lambda: _causal_loss_case(fn, 1, 6, 7, gen)),
        (f"a batch of 3 sequences of {10 + seed % 5} tokens", lambda: _causal_loss_case(fn, 3, 10 + seed % 5, 11, gen)),
        ("a batch of 5 sequences of 16 tokens, vocabulary of 30", lambda: _causal_loss_case(fn, 5, 16, 30, gen)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: perplexity


def _perplexity_variants(logits, targets, mask):
    nll = _cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), targets.reshape(-1), reduction="none").view(targets.shape)
    everything = nll.mean()
    variants = [("2 ** NLL: perplexity is exp of the NLL in nats (use the natural exponential)", 2 ** everything)]
    if mask is not None:
        m = mask.double()
        per_sequence = (nll * m).sum(1) / m.sum(1)
        variants += [
            ("padding positions are counted: average only over tokens where mask is True", everything.exp()),
            ("this averages per-sequence perplexities: pool every real token, then take exp of the mean NLL", per_sequence.exp().mean()),
            ("this averages per-sequence mean NLLs, so short sequences weigh too much: divide the total NLL by the number of real tokens",
             per_sequence.mean().exp()),
        ]
        everything = (nll * m).sum() / m.sum()
    variants += [
        ("this is the mean NLL (cross-entropy), not its exponential", everything),
        ("exp of the summed NLL: divide by the number of tokens first", nll.sum().exp() if nll.sum() < 700 else torch.tensor(math.inf)),
    ]
    return variants


def _perplexity_case(fn, logits, targets, mask=None) -> str | None:
    got = fn(logits, targets, mask) if mask is not None else fn(logits, targets)
    problem = _scalar_problem(got, "perplexity")
    if problem:
        return problem
    want = ref.perplexity(logits.double(), targets, mask)
    return compare_case(got, want, 1e-6 + 1e-4 * float(want.abs().max()),
                        lambda: [(d, v.reshape(()).double()) for d, v in _perplexity_variants(logits, targets, mask)],
                        lambda: f"differs from exp(mean NLL) (got {float(got):.4g}, expected about {float(want):.3g})",
                        variant_atol=1e-4 * max(1.0, float(want)))


@exercise("Perplexity", reference=ref.perplexity)
def check_perplexity(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(logits (B, T, V), targets (B, T), mask=None) -> exp(mean NLL over real tokens)``."""
    gen = generator(seed)
    V = 9 + seed % 4
    logits = 2 * _randn(4, 7, V, generator=gen)
    targets = _randint(0, V, (4, 7), generator=gen)
    lengths = torch.tensor([7, 2, 5, 1])
    mask = torch.arange(7)[None, :] < lengths[:, None]
    confident = F.one_hot(targets, V).float() * 30.0
    cases = [
        ("no padding", lambda: _perplexity_case(fn, logits, targets)),
        (f"uniform logits over {V} tokens give perplexity {V}", lambda: _perplexity_case(fn, torch.zeros(2, 5, V), targets[:2, :5])),
        ("padded batch of unequal lengths (mask)", lambda: _perplexity_case(fn, logits, targets, mask)),
        ("a nearly perfect model (large logits): perplexity close to 1", lambda: _perplexity_case(fn, confident, targets)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Decoding exercises: temperature / greedy, top-k, top-p


def _distribution_problem(probs, logits) -> str | None:
    problem = tensor_problem(probs, "probabilities", logits.shape)
    if problem:
        if type(probs) is torch.Tensor and probs.shape == logits.shape[:-1]:
            return problem + ": return a distribution over the vocabulary (..., V), not the chosen token ids"
        return problem
    if not probs.is_floating_point():
        return f"probabilities should be floating point, got {probs.dtype}"
    if bool((probs < -1e-7).any()):
        return "some probabilities are negative"
    return None


def _sums_to_one(probs) -> bool:
    return bool(((probs.double().sum(-1) - 1).abs() < 1e-4).all())


def _temperature_case(fn, logits, temperature) -> str | None:
    got = fn(logits, temperature)
    problem = _distribution_problem(got, logits)
    if problem:
        if temperature == 0 and "NaN" in problem:
            return problem + ": temperature 0 means greedy decoding (one-hot on the argmax), not a division by zero"
        return problem
    want = ref.temperature_probs(logits, temperature)
    if close(got, want, 1e-5):
        return None
    if not _sums_to_one(got):
        p = _softmax(logits, dim=-1) ** (1 / temperature) if temperature > 0 else None
        if p is not None and close(got, p, 1e-5):
            return "softmax(logits) ** (1/T) is not normalised: divide the logits by T before the softmax"
        return "rows do not sum to 1"
    variants = [("logits are multiplied by the temperature: divide them by T", _softmax(logits * temperature, dim=-1))] if temperature > 0 else []
    variants += [
        ("the temperature is ignored", _softmax(logits, dim=-1)),
        ("greedy must put all the mass on the largest logit (argmax), not the smallest", F.one_hot(logits.argmin(-1), logits.shape[-1]).to(logits.dtype)),
    ]
    return first_match(got, variants, 1e-5) or f"differs from softmax(logits / T) (max error {max_abs_diff(got, want):.3g})"


@exercise("Temperature and greedy decoding", reference=ref.temperature_probs)
def check_temperature_probs(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(logits (..., V), temperature) -> (..., V)``: softmax(logits / T); one-hot argmax for T = 0."""
    gen = generator(seed)
    logits = 3 * _randn(4, 10 + seed % 3, generator=gen)
    batched = _randn(2, 3, 6, generator=gen)
    # T = 1 is passed by an answer that ignores the temperature, so it is not a case (a share of the points) of
    # its own: it rides along with T = 0.5.
    cases = [
        ("temperature 0.5 sharpens; temperature 1 is the model's own distribution",
         lambda: _temperature_case(fn, logits, 0.5) or _temperature_case(fn, logits, 1.0)),
        ("temperature 2.5 flattens, (2, 3, V) logits", lambda: _temperature_case(fn, batched, 2.5)),
        ("temperature 0 is greedy: one-hot on the argmax", lambda: _temperature_case(fn, logits, 0.0)),
    ]
    return cases


def _top_k_case(fn, logits, k) -> str | None:
    got = fn(logits, k)
    problem = _distribution_problem(got, logits)
    if problem:
        return problem
    want = ref.top_k_probs(logits, k)
    if close(got, want, 1e-5):
        return None
    V = logits.shape[-1]
    kept = (got > 0).sum(-1)
    full = _softmax(logits, dim=-1)
    if close(got, full.masked_fill(want == 0, 0.0), 1e-5):
        return "the kept probabilities are not renormalised: they must sum to 1"
    if not _sums_to_one(got):
        return "rows do not sum to 1"
    if bool((kept == k + 1).all()) or bool((kept == k - 1).all()):
        return f"keeps {int(kept[0])} tokens per row instead of k = {k}: off by one"
    kth_smallest = -((-logits).topk(k, dim=-1).values[..., -1:])
    least_likely = _softmax(logits.masked_fill(logits > kth_smallest, float("-inf")), dim=-1)
    variants = [("keeps the k least likely tokens: keep the k largest logits", least_likely)]
    if k < V:
        variants.append(("the whole distribution: tokens outside the top k must get probability 0", full))
    return first_match(got, variants, 1e-5) or f"differs from top-k sampling (max error {max_abs_diff(got, want):.3g})"


@exercise("Top-k sampling distribution", reference=ref.top_k_probs)
def check_top_k_probs(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(logits (..., V), k) -> (..., V)``: softmax over the k largest logits, 0 elsewhere."""
    gen = generator(seed)
    logits = 2 * _randn(5, 12, generator=gen)
    batched = _randn(2, 3, 8, generator=gen)
    cases = [
        ("k = 1 is greedy", lambda: _top_k_case(fn, logits, 1)),
        (f"k = {3 + seed % 3}", lambda: _top_k_case(fn, logits, 3 + seed % 3)),
        # k = V is passed by the whole softmax: it rides along with a case that cuts.
        ("k = 4, and k = V keeps everything, (2, 3, V) logits", lambda: _top_k_case(fn, batched, 4) or _top_k_case(fn, batched, 8)),
    ]
    return cases


def _top_p_variants(logits, p):
    probs = _softmax(logits, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    cumulative = sorted_probs.cumsum(-1)

    def keep_sorted(keep):
        mask = torch.zeros_like(keep).scatter(-1, order, keep)
        kept = probs.masked_fill(~mask, 0.0)
        return kept, kept / kept.sum(-1, keepdim=True).clamp_min(1e-30)

    _, strict = keep_sorted(cumulative <= p)  # stops before the token that crosses p
    strict_first = cumulative <= p
    strict_first[..., 0] = True
    _, strict_nonempty = keep_sorted(strict_first)
    raw, _ = keep_sorted(cumulative - sorted_probs < p)
    asc_probs, asc_order = probs.sort(dim=-1)
    asc_keep = torch.zeros_like(asc_probs, dtype=torch.bool).scatter(-1, asc_order, asc_probs.cumsum(-1) - asc_probs < p)
    ascending = probs.masked_fill(~asc_keep, 0.0)
    ascending = ascending / ascending.sum(-1, keepdim=True)
    return [
        ("the token that crosses p is dropped: keep tokens while the mass *before* them is below p, so the nucleus reaches p", strict),
        ("the token that crosses p is dropped: keep tokens while the mass *before* them is below p, so the nucleus reaches p", strict_nonempty),
        ("the kept probabilities are not renormalised: they must sum to 1", raw),
        ("the nucleus is built from the least likely tokens: sort in decreasing order", ascending),
        ("the whole distribution: tokens outside the nucleus must get probability 0", probs),
    ]


def _top_p_case(fn, logits, p) -> str | None:
    got = fn(logits, p)
    if type(got) is torch.Tensor and got.shape == logits.shape and got.is_floating_point() and bool(torch.isnan(got).any()):
        top_above_p = _softmax(logits, dim=-1).max(dim=-1).values > p
        if bool(top_above_p[torch.isnan(got).any(dim=-1)].all()):
            return ("a row with one token above p came out empty (0/0): the token that crosses p is dropped; "
                    "keep tokens while the mass *before* them is below p")
    problem = _distribution_problem(got, logits)
    if problem:
        return problem
    want = ref.top_p_probs(logits, p)

    def otherwise():
        if not _sums_to_one(got):
            return "rows do not sum to 1"
        return f"differs from nucleus sampling (max error {max_abs_diff(got, want):.3g})"

    return compare_case(got, want, 1e-5, lambda: _top_p_variants(logits, p), otherwise)


def _top_p_logits(gen: torch.Generator, shape, p: float, scale: float = 2.0) -> torch.Tensor:
    """Seeded logits whose cumulative sorted probabilities stay well away from p (no boundary ties)."""
    while True:
        logits = scale * _randn(shape, generator=gen)
        cumulative = _softmax(logits.double(), dim=-1).sort(dim=-1, descending=True).values.cumsum(-1)
        if bool(((cumulative - p).abs() > 1e-3).all()):
            return logits


@exercise("Top-p (nucleus) sampling distribution", reference=ref.top_p_probs)
def check_top_p_probs(fn: Callable, points: float = 3, seed: int = 0) -> list[Case]:
    """Check ``fn(logits (..., V), p) -> (..., V)``: nucleus of most likely tokens with mass >= p, renormalised."""
    gen = generator(seed)
    peaked = torch.tensor([[6.0, 1.0, 0.5, 0.0, -1.0]])
    cases = [
        ("p = 0.9, several rows with different nucleus sizes", lambda: _top_p_case(fn, _top_p_logits(gen, (6, 10 + seed % 4), 0.9), 0.9)),
        # p = 1 cuts nothing, so an unnormalised or uncut answer passes it: it rides along with p = 0.5.
        ("p = 0.5, (2, 3, V) logits; p = 1 keeps every token",
         lambda: _top_p_case(fn, _top_p_logits(gen, (2, 3, 7), 0.5), 0.5) or _top_p_case(fn, _top_p_logits(gen, (3, 6), 1.5, 1.0), 1.0)),
        ("one token already above p: the nucleus is that token alone", lambda: _top_p_case(fn, peaked, 0.8)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Alignment: Bradley-Terry reward-model loss and DPO


def _bt_case(fn, chosen, rejected) -> str | None:
    got = fn(chosen.clone(), rejected.clone())
    problem = _scalar_problem(got, "the loss")
    if problem:
        return problem + (": use F.logsigmoid, which stays finite for large margins" if "NaN or inf" in problem else "")
    want = ref.reward_model_loss(chosen, rejected)
    margin = (chosen - rejected).double()
    return compare_case(got, want, 1e-5, [
        ("chosen and rejected are swapped: the loss must fall as r_chosen - r_rejected grows", -_logsigmoid(-margin).mean()),
        ("the sign is wrong: minimise the *negative* log-likelihood -log σ(r_chosen - r_rejected)", _logsigmoid(margin).mean()),
        ("summed over pairs: take the mean", -_logsigmoid(margin).sum()),
        ("σ of the margin is a probability, not a loss: take -log σ(r_chosen - r_rejected)", -_core.sigmoid(margin).mean()),
        ("σ of the margin is a probability, not a loss: take -log σ(r_chosen - r_rejected)", (1 - _core.sigmoid(margin)).mean()),
    ], lambda: f"differs from -mean log σ(r_chosen - r_rejected) (got {float(got):.4g})")


@exercise("Bradley-Terry reward-model loss", reference=ref.reward_model_loss)
def check_reward_model_loss(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(reward_chosen (N,), reward_rejected (N,)) -> -mean log σ(r_c - r_r)``."""
    gen = generator(seed)
    chosen, rejected = _randn(8, generator=gen), _randn(8, generator=gen)
    far = torch.tensor([200.0, -150.0, 3.0, 80.0])
    cases = [
        # Equal rewards (log 2) are passed by swapped preferences: that input rides along with random rewards.
        ("random rewards; equal rewards give log 2",
         lambda: _bt_case(fn, chosen, rejected) or _bt_case(fn, chosen[:3], chosen[:3].clone())),
        ("chosen clearly better", lambda: _bt_case(fn, chosen + 3, rejected)),
        ("huge margins stay finite (|margin| up to 200)", lambda: _bt_case(fn, far, torch.zeros(4))),
    ]
    return cases


def _dpo_case(fn, pc, pr, rc, rr, beta) -> str | None:
    got = fn(pc.clone(), pr.clone(), rc.clone(), rr.clone(), beta)
    problem = _scalar_problem(got, "the loss")
    if problem:
        return problem
    want = ref.dpo_loss(pc, pr, rc, rr, beta)

    def loss(margin):
        return -_logsigmoid(margin.double()).mean()

    logits = (pc - rc) - (pr - rr)
    return compare_case(got, want, 1e-5, [
        ("β is missing: the implicit reward is β·log(π/π_ref)", loss(logits)),
        ("chosen and rejected are swapped", loss(-beta * logits)),
        ("the reference model is ignored: use the log-ratios log π - log π_ref", loss(beta * (pc - pr))),
        ("the reference log-probabilities are added instead of subtracted", loss(beta * ((pc + rc) - (pr + rr)))),
        ("β multiplies the loss instead of the margin inside log σ", beta * loss(logits)),
        ("summed over pairs: take the mean", -_logsigmoid(beta * logits.double()).sum()),
        ("β divides the margin: multiply by β", loss(logits / beta)),
    ], lambda: f"differs from the DPO loss (got {float(got):.4g})")


@exercise("DPO loss", reference=ref.dpo_loss)
def check_dpo_loss(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta) -> scalar``."""
    gen = generator(seed)

    def logps(n):
        return -20 * _core.rand(n, generator=gen) - 5  # summed log-probabilities of whole answers

    pc, pr, rc, rr = logps(6), logps(6), logps(6), logps(6)
    beta = 0.1 + 0.1 * (seed % 3)
    cases = [
        (f"β = {beta:.1f}", lambda: _dpo_case(fn, pc, pr, rc, rr, beta)),
        # A policy equal to the reference (log 2) is passed by a missing β or swapped pairs, and was a third of the
        # points: it rides along with β = 2.
        ("β = 2; a policy equal to the reference gives log 2 (β = 0.5)",
         lambda: _dpo_case(fn, pc, pr, rc, rr, 2.0) or _dpo_case(fn, rc, rr, rc, rr, 0.5)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Derivations (graded with gradelib.checks.derive: a SymPy expression, compared by value and by simplify)

# Section 3.1: the parameters of one decoder block. Classic (GPT-2): biases everywhere, two LayerNorms, a GELU
# MLP of width 4d. Modern (LLaMA): no biases, two RMSNorms (a gain each), SwiGLU of width h (three matrices).
BLOCK_SYMBOLS = {"d": integer(8, 2048), "h": integer(8, 8192)}
derive_block_params = derivation(
    "Parameters of one GPT block",
    symbols=BLOCK_SYMBOLS,
    expected={"classic_params": "12*d**2 + 13*d", "modern_params": "4*d**2 + 3*d*h + 2*d"},
)

# After exercise 3: the probability of one of k tokens that tie for the largest logit, among V tokens,
# as the temperature goes to 0 and to infinity.
TEMPERATURE_SYMBOLS = {"k": integer(1, 9), "V": integer(10, 500)}
derive_temperature_limits = derivation(
    "Temperature limits",
    symbols=TEMPERATURE_SYMBOLS,
    expected={"p_cold": "1/k", "p_hot": "1/V"},
    special={"k = 1 (a single largest logit)": {"k": 1}},
)

# After exercise 7: the derivative of the DPO loss -log σ(β u) with respect to the log-ratio margin u.
DPO_SYMBOLS = {"beta": positive(0.05, 5.0), "u": real(-4.0, 4.0)}
derive_dpo_gradient = derivation(
    "The gradient of the DPO loss",
    symbols=DPO_SYMBOLS,
    expected={"dloss_du": "-beta / (1 + exp(beta*u))"},
    special={"u = 0 (the policy equals the reference)": {"u": 0}},
)


make_read_only(__name__)
