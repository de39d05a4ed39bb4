"""Every CLIP check accepts the reference and rejects plausible wrong answers, naming the fault."""

import math

import pytest
import torch
import torch.nn.functional as F

from gradelib.checks import CheckFailed, clip as checks
from gradelib.reference import clip as ref
from checking import assert_accepted, assert_rejected, own_copy


# --- patchify --------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 7])
def test_patchify_accepts_reference_and_unfold(seed, capsys):
    assert_accepted(checks.check_patchify, own_copy(ref.patchify), capsys, 2, seed=seed)
    assert_accepted(checks.check_patchify, lambda x, p: F.unfold(x, p, stride=p).transpose(1, 2), capsys, 2, seed=seed)


def _reshape_only(x, p):
    B, C, H, W = x.shape
    return x.reshape(B, (H // p) * (W // p), C * p * p)


def _channels_last(x, p):
    B, C, H, W = x.shape
    return x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 3, 5, 1).reshape(B, -1, C * p * p)


def _column_major(x, p):
    B, C, H, W = x.shape
    return x.reshape(B, C, H // p, p, W // p, p).permute(0, 4, 2, 1, 3, 5).reshape(B, -1, C * p * p)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (_reshape_only, "reshaped without permuting"),
    (_channels_last, "channels last"),
    (_column_major, "column-major"),
    (lambda x, p: F.unfold(x, p, stride=p), "has shape"),
    (lambda x, p: ref.patchify(x, p), "calls gradelib.reference"),
], ids=["reshape", "channels-last", "column-major", "not-transposed", "reference"])
def test_patchify_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_patchify, wrong, capsys, diagnosis)


def test_calling_the_reference_scores_zero(capsys):
    with pytest.raises(CheckFailed) as failure:
        checks.check_patchify(lambda x, p: ref.patchify(x, p), points=2)
    assert failure.value.score == 0


# --- symmetric InfoNCE ------------------------------------------------------------------------


def explicit_infonce(image, text, log_scale):
    """Written differently from the reference: an explicit loop over the pairs."""
    image, text = image / image.norm(dim=1, keepdim=True), text / text.norm(dim=1, keepdim=True)
    scale = torch.exp(torch.clamp(log_scale, max=math.log(100)))
    logits = scale * image @ text.T
    n = len(logits)
    i2t = sum(-(logits[i, i] - torch.logsumexp(logits[i], 0)) for i in range(n)) / n
    t2i = sum(-(logits[j, j] - torch.logsumexp(logits[:, j], 0)) for j in range(n)) / n
    return (i2t + t2i) / 2, i2t, t2i


@pytest.mark.parametrize("seed", [0, 3])
def test_infonce_accepts_reference_and_explicit_loop(seed, capsys):
    assert_accepted(checks.check_symmetric_infonce, explicit_infonce, capsys, 3, seed=seed)
    # The reference's own code, with the logits written out (it calls ref.clip_logits, which answers are not allowed to).
    assert_accepted(checks.check_symmetric_infonce, _from_logits(
        lambda i, t, s: s.clamp(max=math.log(100)).exp() * _cos(i, t)), capsys, 3, seed=seed)


def _from_logits(logits_fn):
    def loss(image, text, log_scale):
        logits = logits_fn(image, text, log_scale)
        targets = torch.arange(len(logits))
        i2t, t2i = F.cross_entropy(logits, targets), F.cross_entropy(logits.T, targets)
        return (i2t + t2i) / 2, i2t, t2i
    return loss


def _cos(image, text):
    return F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T


def one_sided(image, text, log_scale):
    loss, i2t, t2i = explicit_infonce(image, text, log_scale)
    return i2t, i2t, t2i


def transposed(image, text, log_scale):
    loss, i2t, t2i = explicit_infonce(image, text, log_scale)
    return loss, t2i, i2t


def detached_scale(image, text, log_scale):
    return explicit_infonce(image, text, log_scale.detach())


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (one_sided, "one-sided"),
    (transposed, "swapped (a transposed logits matrix)"),
    (_from_logits(lambda i, t, s: s.clamp(max=math.log(100)).exp() * i @ t.T), "not L2-normalised"),
    (_from_logits(lambda i, t, s: _cos(i, t)), "temperature is missing"),
    (_from_logits(lambda i, t, s: s * _cos(i, t)), "used as the scale itself"),
    (_from_logits(lambda i, t, s: _cos(i, t) / s.exp()), "divided by exp(log_scale)"),
    (_from_logits(lambda i, t, s: s.exp() * _cos(i, t)), "not clamped"),
    (lambda i, t, s: tuple(x * 2 if k == 0 else x for k, x in enumerate(explicit_infonce(i, t, s))), "summed"),
    (detached_scale, "detached"),
    (lambda i, t, s: explicit_infonce(i, t, s)[0], "should return a triple"),
    (lambda i, t, s: ref.symmetric_infonce(i, t, s), "calls gradelib.reference"),
    (_from_logits(lambda i, t, s: ref.clip_logits(i, t, s)), "calls gradelib.reference"),
], ids=["one-sided", "transposed", "no-normalisation", "no-temperature", "log-as-scale", "divided", "no-clamp",
        "sum-of-directions", "detached", "not-a-triple", "reference", "reference-logits"])
def test_infonce_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_symmetric_infonce, wrong, capsys, diagnosis)


def test_a_symmetric_logits_matrix_cannot_tell_one_sided_from_symmetric():
    """Why the check uses separate image and text embeddings: with text == image, L = L^T, and the one-sided
    loss equals the symmetric one, so neither mistake would be detectable."""
    x = torch.randn(6, 4, dtype=torch.float64)
    loss, i2t, t2i = ref.symmetric_infonce(x, x, torch.tensor(math.log(10.0)))
    assert torch.allclose(i2t, t2i) and torch.allclose(loss, i2t)
    y = x + 0.8 * torch.randn(6, 4, dtype=torch.float64)
    loss, i2t, t2i = ref.symmetric_infonce(x, y, torch.tensor(math.log(10.0)))
    assert abs(float(i2t - t2i)) > 1e-3


# --- prompt ensembling ------------------------------------------------------------------------


def test_zero_shot_weights_accepts_reference(capsys):
    assert_accepted(checks.check_zero_shot_weights, own_copy(ref.zero_shot_weights), capsys, 2, seeds=(0, 11))


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda e: F.normalize(e, dim=-1).mean(dim=1), "not renormalised"),
    (lambda e: F.normalize(e.mean(dim=1), dim=-1), "averaged before normalising"),
    (lambda e: e.mean(dim=1), "no normalisation at all"),
    (lambda e: F.normalize(F.normalize(e, dim=-1).mean(dim=0), dim=-1), "has shape"),
], ids=["no-renormalise", "average-first", "none", "wrong-axis"])
def test_zero_shot_weights_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_zero_shot_weights, wrong, capsys, diagnosis)


@pytest.mark.parametrize("wrong", [
    lambda e: F.normalize(e.mean(dim=1), dim=-1),        # averaged before normalising
    lambda e: F.normalize(e, dim=-1).mean(dim=1),        # not renormalised
    lambda e: F.normalize(e.sum(dim=1), dim=-1),         # summed, then normalised
], ids=["average-first", "no-renormalise", "sum-first"])
@pytest.mark.parametrize("seed", [0, 77])
def test_zero_shot_weights_a_single_template_earns_nothing_on_its_own(wrong, seed, capsys):
    """With M = 1 most wrong recipes are right; that case comes only after a two-template one in the same row,
    so an answer right only there scores 0, not a third of the points."""
    single = [torch.randn(3, 1, 4, dtype=torch.float64) * 3 for _ in range(3)]
    assert all(torch.allclose(wrong(e), ref.zero_shot_weights(e)) for e in single)
    with pytest.raises(CheckFailed) as failure:
        checks.check_zero_shot_weights(wrong, points=2, seed=seed)
    assert failure.value.score == 0
    capsys.readouterr()


# --- Recall@K ---------------------------------------------------------------------------------


def recall_by_topk(similarity, k):
    top = similarity.topk(k, dim=1).indices
    return (top == torch.arange(len(similarity))[:, None]).any(dim=1).float().mean()


def test_recall_accepts_reference_and_topk(capsys):
    assert_accepted(checks.check_recall_at_k, own_copy(ref.recall_at_k), capsys, 2)
    assert_accepted(checks.check_recall_at_k, recall_by_topk, capsys, 2, seed=4)
    assert_accepted(checks.check_recall_at_k, lambda s, k: float(recall_by_topk(s, k)), capsys, 2)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda s, k: recall_by_topk(s.T, k) if s.shape[0] == s.shape[1] else recall_by_topk(s, k), "ranked down the columns"),
    (lambda s, k: recall_by_topk(s, k + 1), "Recall@(k+1)"),
    (lambda s, k: recall_by_topk(s, k) * len(s), "number of hits"),
    (lambda s, k: (s.topk(k, dim=1).indices == torch.arange(len(s))[:, None]).any(dim=1).float(), "one number"),
], ids=["columns", "off-by-one", "count", "not-reduced"])
def test_recall_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_recall_at_k, wrong, capsys, diagnosis)


# --- caption targets --------------------------------------------------------------------------


def test_caption_targets_accepts_reference(capsys):
    assert_accepted(checks.check_caption_targets, own_copy(ref.caption_targets), capsys, 2, seeds=(0, 2))


def _targets(tokens, P, pad_id, *, prefix_value=-100, shift=True, mask_pad=True, bos_from_prefix=False):
    B, T = tokens.shape
    out = torch.full((B, P + T), prefix_value, dtype=torch.int64)
    out[:, P:] = -100
    src = tokens[:, 1:] if shift else tokens
    src = src.masked_fill(src == pad_id, -100) if mask_pad else src
    out[:, P:P + src.shape[1]] = src
    if bos_from_prefix:
        out[:, P - 1] = tokens[:, 0]
    return out


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda t, P, pad: _targets(t, P, pad, prefix_value=0), "prefix positions are not ignored"),
    (lambda t, P, pad: _targets(t, P, pad, shift=False), "not shifted"),
    (lambda t, P, pad: _targets(t, P, pad, mask_pad=False), "padding is a target"),
    (lambda t, P, pad: _targets(t, P, pad, bos_from_prefix=True), "predict <bos>"),
    (lambda t, P, pad: _targets(t, P, pad).int(), "dtype"),
], ids=["prefix", "unshifted", "pads", "bos", "dtype"])
def test_caption_targets_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_caption_targets, wrong, capsys, diagnosis)


# --- derivations --------------------------------------------------------------------------------

import sympy  # noqa: E402


from checking import score_and_table as _derive  # noqa: E402


def test_infonce_gradient_key_is_the_derivative_of_the_cross_entropy():
    l1, l2, l3 = checks.derive_infonce_gradient.symbols_for_notebook()
    loss = -sympy.log(sympy.exp(l1) / (sympy.exp(l1) + sympy.exp(l2) + sympy.exp(l3)))
    # Independently: SymPy's derivative against the key, and a finite difference at one point.
    point = {l1: 0.3, l2: -1.2, l3: 2.0}
    for name, symbol in (("grad_positive", l1), ("grad_negative", l2)):
        key = sympy.sympify(dict(zip(checks.derive_infonce_gradient.results,
                                     ("exp(l1) / (exp(l1) + exp(l2) + exp(l3)) - 1", "exp(l2) / (exp(l1) + exp(l2) + exp(l3))")))[name],
                            locals={"l1": l1, "l2": l2, "l3": l3})
        assert sympy.simplify(sympy.diff(loss, symbol) - key) == 0
        h = 1e-6
        numeric = (loss.subs({**point, symbol: point[symbol] + h}) - loss.subs({**point, symbol: point[symbol] - h})) / (2 * h)
        assert abs(float(numeric) - float(key.subs(point))) < 1e-6
    logits = torch.tensor([0.3, -1.2, 2.0], requires_grad=True)
    F.cross_entropy(logits[None], torch.tensor([0])).backward()
    assert torch.allclose(logits.grad, torch.softmax(logits.detach(), 0) - torch.tensor([1.0, 0, 0]))


@pytest.mark.parametrize("seed", [0, 31])
def test_infonce_gradient_accepts_equivalent_forms(seed, capsys):
    l1, l2, l3 = checks.derive_infonce_gradient.symbols_for_notebook()
    Z = sympy.exp(l1) + sympy.exp(l2) + sympy.exp(l3)
    forms = [
        {"grad_positive": sympy.exp(l1) / Z - 1, "grad_negative": sympy.exp(l2) / Z},
        {"grad_positive": -(sympy.exp(l2) + sympy.exp(l3)) / Z, "grad_negative": 1 / (1 + sympy.exp(l1 - l2) + sympy.exp(l3 - l2))},
        {"grad_positive": sympy.diff(-l1 + sympy.log(Z), l1), "grad_negative": sympy.diff(sympy.log(Z), l2)},
    ]
    for answers in forms:
        score, table = _derive(checks.derive_infonce_gradient, answers, capsys, seed=seed)
        assert score == 2, table


def test_infonce_gradient_names_plausible_mistakes(capsys):
    l1, l2, l3 = checks.derive_infonce_gradient.symbols_for_notebook()
    Z = sympy.exp(l1) + sympy.exp(l2) + sympy.exp(l3)
    right_negative = sympy.exp(l2) / Z
    cases = [  # (grad_positive, grad_negative, the diagnosis of the wrong one)
        (sympy.exp(l1) / Z, right_negative, "grad_positive  <- off by an additive constant"),         # forgot the −1
        (1 - sympy.exp(l1) / Z, right_negative, "grad_positive  <- has the wrong sign"),               # the gradient of +log p
        (sympy.exp(l1) / Z - 1, sympy.exp(l1) / Z, "grad_negative  <- correct at equal logits but not in general"),  # index slip
        (sympy.exp(l1) / Z - 1, sympy.exp(l2) / Z - 1, "grad_negative  <- off by an additive constant"),  # a −1 for every logit
        (sympy.exp(l1) / Z - 1, sympy.exp(l2), "grad_negative  <- misses a dependence on l1, l3"),  # forgot the normaliser
    ]
    for positive, negative, diagnosis in cases:
        score, table = _derive(checks.derive_infonce_gradient, {"grad_positive": positive, "grad_negative": negative}, capsys)
        assert score == 1, table  # one of the two results is right: half the points
        assert diagnosis in table, table


def test_infonce_chance_key(capsys):
    (N,) = checks.derive_infonce_chance.symbols_for_notebook()
    for n in (2, 7, 128):  # a batch with all logits equal, computed with torch
        logits = torch.zeros(n, n, requires_grad=True)
        loss = F.cross_entropy(logits, torch.arange(n))
        (n * loss).backward()  # row i's own cross-entropy, differentiated at its positive logit
        assert math.isclose(loss.item(), math.log(n), rel_tol=1e-6)
        assert math.isclose(logits.grad[0, 0].item(), 1 / n - 1, rel_tol=1e-6)
    score, table = _derive(checks.derive_infonce_chance, {"loss_uniform": sympy.log(N), "grad_uniform": 1 / N - 1}, capsys)
    assert score == 2, table


@pytest.mark.parametrize("seed", [0, 31])
def test_infonce_chance_accepts_equivalent_forms(seed, capsys):
    (N,) = checks.derive_infonce_chance.symbols_for_notebook()
    for answers in ({"loss_uniform": -sympy.log(1 / N), "grad_uniform": -(N - 1) / N},
                    {"loss_uniform": sympy.log(N**2) / 2, "grad_uniform": (1 - N) / N}):
        score, table = _derive(checks.derive_infonce_chance, answers, capsys, seed=seed)
        assert score == 2, table


@pytest.mark.parametrize(("loss", "grad", "diagnosis"), [
    ("log(N, 2)", "1/N - 1", "loss_uniform  <- off by a constant factor (×1/ln 2): a logarithm in another base?"),
    ("-log(N)", "1/N - 1", "loss_uniform  <- has the wrong sign"),
    ("log(N - 1)", "1/N - 1", "loss_uniform  <- not equivalent"),                     # only the negatives counted
    ("log(N)", "1/N", "grad_uniform  <- off by an additive constant"),                  # forgot the −1 of the target
    ("log(N)", "(N - 1)/N", "grad_uniform  <- has the wrong sign"),
    ("log(N)", "-1", "grad_uniform  <- misses a dependence on N"),
], ids=["log2", "sign", "negatives-only", "no-target", "grad-sign", "constant"])
def test_infonce_chance_names_plausible_mistakes(loss, grad, diagnosis, capsys):
    (N,) = checks.derive_infonce_chance.symbols_for_notebook()
    answers = {"loss_uniform": sympy.sympify(loss, locals={"N": N}), "grad_uniform": sympy.sympify(grad, locals={"N": N})}
    score, table = _derive(checks.derive_infonce_chance, answers, capsys)
    assert score == 1, table
    assert diagnosis in table, table


def test_derivations_say_no_answer_yet_for_none(capsys):
    score, table = _derive(checks.derive_infonce_chance, {"loss_uniform": None, "grad_uniform": None}, capsys)
    assert score == 0 and "no answer yet" in table, table
