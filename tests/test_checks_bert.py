"""Every notebook-02 check accepts the reference and rejects plausible wrong answers, naming the fault."""

from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F

from gradelib.checks import CheckFailed
from gradelib.checks import bert as checks
from gradelib.reference import bert as ref
from gradelib.reference import tokenization as tk
from checking import assert_rejected, own_copy, score_of


# Copies of the reference used inside wrong answers (calling the reference itself is refused by the checks).
naive_bpe = own_copy(tk.learn_bpe_naive)
encode_bpe = own_copy(tk.bpe_encode_word)
encode_wp = own_copy(tk.wordpiece_encode_word)
pair_input = own_copy(ref.make_pair_input)
embed = own_copy(ref.embed_input)

ACCEPT = [
    (checks.check_learn_bpe, tk.learn_bpe_naive),
    (checks.check_learn_bpe, tk.learn_bpe),
    (checks.check_bpe_encode_word, tk.bpe_encode_word),
    (checks.check_wordpiece_encode_word, tk.wordpiece_encode_word),
    (checks.check_make_pair_input, ref.make_pair_input),
    (checks.check_embed_input, ref.embed_input),
    (checks.check_mask_tokens, ref.mask_tokens),
    (checks.check_mlm_loss, ref.mlm_loss),
    (checks.check_nsp_pairs, ref.nsp_pairs),
]


@pytest.mark.parametrize("seed", [0, 5])
@pytest.mark.parametrize(("check", "function"), ACCEPT, ids=lambda x: getattr(x, "__name__", ""))
def test_checks_accept_the_reference(check, function, seed, capsys):
    assert check(own_copy(function), points=2, seed=seed) == 2.0
    assert "✗" not in capsys.readouterr().out


def test_calling_the_reference_scores_zero(capsys):
    with pytest.raises(CheckFailed):
        checks.check_mlm_loss(ref.mlm_loss, points=2)
    assert "0 / 2 points" in capsys.readouterr().out


# --- BPE training --------------------------------------------------------------------------------


def bpe_unweighted(word_counts, num_merges):
    """Counts each pair once per distinct word, ignoring frequencies."""
    return naive_bpe({w: 1 for w in word_counts}, num_merges)


def bpe_no_early_stop(word_counts, num_merges):
    merges = naive_bpe(word_counts, num_merges)
    return merges + [("z", "z")] * (num_merges - len(merges))


def bpe_first_occurrence_only(word_counts, num_merges):
    words = {tuple(w): c for w, c in word_counts.items()}
    merges = []
    for _ in range(num_merges):
        counts = tk.pair_counts(words)
        if not counts:
            break
        best = max(sorted(counts), key=counts.get)
        merges.append(best)
        new = defaultdict(int)
        for symbols, c in words.items():
            symbols = list(symbols)
            for i in range(len(symbols) - 1):
                if (symbols[i], symbols[i + 1]) == best:
                    symbols[i:i + 2] = [best[0] + best[1]]
                    break
            new[tuple(symbols)] += c
        words = dict(new)
    return merges


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (bpe_unweighted, "weight each word's pairs by its count"),
    (bpe_no_early_stop, "stop early"),
    (bpe_first_occurrence_only, "every earlier merge must replace all its occurrences"),
    (lambda wc, n: [list(p) for p in naive_bpe(wc, n)][:-1], "expected"),
    (lambda wc, n: "".join(a + b for a, b in naive_bpe(wc, n)), "list of (left, right) pairs"),
], ids=["unweighted", "no-early-stop", "first-occurrence", "one-short", "string"])
def test_learn_bpe_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_learn_bpe, wrong, capsys, diagnosis)


# --- BPE encoding --------------------------------------------------------------------------------


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (checks._encode_left_to_right, "lowest rank (earliest) first"),
    (checks._encode_longest_match, "earliest"),
    (checks._encode_single_pass, "every occurrence"),
    (lambda w, m: encode_bpe(w, m[::-1]), "reverse"),
    (lambda w, m: list(w), "expected"),
], ids=["left-to-right", "longest-match", "single-pass", "reverse", "characters"])
def test_bpe_encode_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_bpe_encode_word, wrong, capsys, diagnosis)


# --- WordPiece -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (checks._wp_partial_unk, "the whole word is one [UNK]"),
    (checks._wp_shortest, "*longest* vocabulary entry"),
    (checks._wp_no_prefix, "'##' prefix"),
    (lambda w, v: encode_wp(w, v, max_chars=10_000), "100 characters"),
], ids=["partial-unk", "shortest", "no-prefix", "no-length-limit"])
def test_wordpiece_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_wordpiece_encode_word, wrong, capsys, diagnosis)


# --- input construction and embedding ------------------------------------------------------------


def pair_variant(ids_a, ids_b, cls_id, sep_id, *, final_sep=True, sep_segment=0, last_segment=1):
    ids = [cls_id] + list(ids_a) + [sep_id]
    seg = [0] * (len(ids_a) + 1) + [sep_segment]
    if ids_b is not None:
        ids += list(ids_b) + ([sep_id] if final_sep else [])
        seg += [1] * len(ids_b) + ([last_segment] if final_sep else [])
    return torch.tensor(ids), torch.tensor(seg)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda a, b, c, s: pair_variant(a, b, c, s, final_sep=False), "[SEP] is missing"),
    (lambda a, b, c, s: pair_variant(a, b, c, s, sep_segment=1), "first [SEP] closes segment A"),
    (lambda a, b, c, s: pair_variant(a, b, c, s, last_segment=0), "final [SEP] belongs to segment B"),
    (lambda a, b, c, s: (pair_input(a, b, c, s)[0], torch.zeros_like(pair_input(a, b, c, s)[0])), "segment id 1"),
    (lambda a, b, c, s: (pair_input(a, b, c, s)[0].float(), pair_input(a, b, c, s)[1]), "int64"),
], ids=["no-final-sep", "sep-in-b", "final-sep-in-a", "all-zero-segments", "float"])
def test_make_pair_input_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_make_pair_input, wrong, capsys, diagnosis)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda i, s, tok, seg, pos: tok(i) + pos(torch.arange(i.shape[1]))[None], "segment embedding is missing"),
    (lambda i, s, tok, seg, pos: tok(i) + seg(s), "position embedding is missing"),
    (lambda i, s, tok, seg, pos: tok(i) + seg(s) + pos(torch.arange(1, i.shape[1] + 1))[None], "positions start at 0"),
    (lambda i, s, tok, seg, pos: tok(i) + seg(s) + pos(i), "looked up with the token ids"),
    (lambda i, s, tok, seg, pos: F.layer_norm(embed(i, s, tok, seg, pos), (tok.weight.shape[1],)), "plain sum"),
    (lambda i, s, tok, seg, pos: embed(i, s, tok, seg, pos).detach(), "detached"),
], ids=["no-segment", "no-position", "positions-from-1", "position-by-token", "layernorm", "detached"])
def test_embed_input_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_embed_input, lambda *a: wrong(*a), capsys, diagnosis)


# --- MLM masking ---------------------------------------------------------------------------------


def mask_template(input_ids, vocab_size, generator=None, *, protect=True, split=(0.8, 0.9), labels_everywhere=False,
                  label_mask_token=False, rate=0.15, random_low=ref.NUM_SPECIAL):
    shape = input_ids.shape
    u = torch.rand(shape, generator=generator)
    selected = u < rate
    if protect:
        selected &= input_ids >= ref.NUM_SPECIAL
    action = torch.rand(shape, generator=generator)
    random_tokens = torch.randint(random_low, vocab_size, shape, generator=generator)
    corrupted = torch.where(selected & (action < split[0]), torch.full_like(input_ids, ref.MASK_ID), input_ids)
    corrupted = torch.where(selected & (action >= split[0]) & (action < split[1]), random_tokens, corrupted)
    if labels_everywhere:
        return corrupted, input_ids.clone()
    labels = torch.where(selected, corrupted if label_mask_token else input_ids, torch.full_like(input_ids, -100))
    return corrupted, labels


def mask_global_rng(input_ids, vocab_size, generator=None):
    return mask_template(input_ids, vocab_size, None)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda i, v, g: mask_template(i, v, g, protect=False), "special tokens"),
    (lambda i, v, g: mask_template(i, v, g, split=(1.0, 1.0)), "every selected position became [MASK]"),
    (lambda i, v, g: mask_template(i, v, g, labels_everywhere=True), "-100"),
    (lambda i, v, g: mask_template(i, v, g, split=(0.8, 0.8)), "became a random token, expected 0.10"),
    (lambda i, v, g: mask_template(i, v, g, split=(0.7, 0.85)), "became [MASK], expected 0.80"),
    (lambda i, v, g: mask_template(i, v, g, rate=0.12), "expected 0.15"),
    (lambda i, v, g: mask_template(i, v, g, random_low=0), "ordinary tokens"),
    (lambda i, v, g: mask_template(i, v, g, label_mask_token=True), "original"),
    (mask_global_rng, "generator"),
], ids=["masks-specials", "all-mask", "labels-everywhere", "no-unchanged", "wrong-split", "rate", "random-special",
        "labels-corrupted", "global-rng"])
def test_mask_tokens_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_mask_tokens, wrong, capsys, diagnosis)


# --- MLM loss ------------------------------------------------------------------------------------


def loss_all_positions(logits, labels):
    return F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0))


def loss_per_sequence(logits, labels):
    per = [F.cross_entropy(l[m], y[m]) for l, y, m in zip(logits, labels, labels != -100) if m.any()]
    return torch.stack(per).mean()


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (loss_all_positions, "masked positions only"),
    (lambda lo, la: F.cross_entropy(lo.transpose(1, 2), la, reduction="sum"), "a sum, not a mean"),
    (loss_per_sequence, "averaged per sequence"),
    (lambda lo, la: -F.cross_entropy(lo.transpose(1, 2), la), "*negative*"),
    (lambda lo, la: F.cross_entropy(lo.transpose(1, 2), la, reduction="none"), "(a scalar)"),
    (lambda lo, la: F.cross_entropy(lo.transpose(1, 2), la).detach(), "detached"),
], ids=["all-positions", "sum", "per-sequence", "sign", "not-scalar", "detached"])
def test_mlm_loss_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_mlm_loss, wrong, capsys, diagnosis)


# --- NSP pairs -----------------------------------------------------------------------------------


def nsp_template(documents, generator=None, *, invert=False, same_doc=False, p_next=0.5, first_doc_only=False):
    pairs = []
    for d, document in enumerate(documents):
        for i in range(len(document) - 1):
            if torch.rand((), generator=generator).item() < p_next:
                pairs.append((document[i], document[i + 1], 0 if invert else 1))
                continue
            if same_doc:
                other = d
            elif first_doc_only:
                other = 0 if d != 0 else 1
            else:
                other = int(torch.randint(len(documents) - 1, (), generator=generator))
                other += other >= d
            j = int(torch.randint(len(documents[other]), (), generator=generator))
            pairs.append((document[i], documents[other][j], 1 if invert else 0))
    return pairs


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda docs, g: nsp_template(docs, g, invert=True), "labels are inverted"),
    (lambda docs, g: nsp_template(docs, g, same_doc=True), "from another document"),
    (lambda docs, g: nsp_template(docs, g, p_next=0.7), "expected 0.5"),
    (lambda docs, g: nsp_template(docs, g, first_doc_only=True), "only a few documents"),
    (lambda docs, g: nsp_template(docs, None), "generator"),
    (lambda docs, g: [(d[i], d[i + 1], 1) for d in docs for i in range(len(d) - 1)][:10], "expected one for each"),
], ids=["inverted", "same-document", "rate", "one-document", "global-rng", "wrong-count"])
def test_nsp_pairs_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_nsp_pairs, wrong, capsys, diagnosis)


# --- Feedback quality: trivial cases earn little (issue #14, section 6) ----------------------------


def test_trivial_answers_earn_little(capsys):
    """Answers that only get the trivial inputs right (characters for BPE encoding, always [UNK] for
    WordPiece, any generator-driven masking) earn no case of their own: a trivial input rides along with a
    case that needs the real algorithm."""
    assert score_of(checks.check_bpe_encode_word, lambda w, m: list(w)) == 0
    assert score_of(checks.check_wordpiece_encode_word, lambda w, v: ["[UNK]"]) == 0
    # Masking that selects every kind of token at the wrong rates, but draws from the generator.
    wrong = lambda i, v, g: mask_template(i, v, g, protect=False, rate=0.3, split=(0.5, 0.5))
    assert score_of(checks.check_mask_tokens, wrong) == 0


def test_masking_special_tokens_is_named_in_every_case(capsys):
    """Every masking case checks the structure first, so selecting special tokens fails them all, each naming it
    (before, only the reproducibility case passed, for a quarter of the points)."""
    wrong = lambda i, v, g: mask_template(i, v, g, protect=False)
    assert score_of(checks.check_mask_tokens, wrong) == 0


# --- Derivations ---------------------------------------------------------------------------------

import sympy as sp  # noqa: E402

from gradelib.checks.derive import make_symbols  # noqa: E402

d, d_ff, V, P = make_symbols(checks.BERT_SIZE_SYMBOLS)
s, m, r, N = make_symbols(checks.CORRUPTION_SYMBOLS)
SIZE = {"layer_params": 4 * d**2 + 2 * d * d_ff + 9 * d + d_ff, "embedding_params": (V + P + 4) * d}
CORRUPTION = {"p_changed": s * (m + r * (N - 1) / N), "p_graded_but_intact": s * (1 - m - r) + s * r / N}


def test_derivations_are_verified_independently():
    """The keys against the reference's parameter count (itself checked against torch modules in
    test_reference_bert) and against a simulation of the corruption."""
    for D, F_ in [(64, 256), (768, 3072), (100, 37)]:
        one = ref.bert_parameter_count(30, D, 1, F_, 7, 2, pooler=False)
        none = ref.bert_parameter_count(30, D, 0, F_, 7, 2, pooler=False)
        assert SIZE["layer_params"].subs({d: D, d_ff: F_}) == one - none
        assert SIZE["embedding_params"].subs({d: D, V: 30, P: 7}) == none
    assert sp.expand(SIZE["layer_params"].subs(d_ff, 4 * d)) == 12 * d**2 + 13 * d  # the shortcut, at d_ff = 4d
    # Simulate: N ordinary ids, rates s, m, r; count positions whose input changed / graded but intact.
    g = torch.Generator().manual_seed(0)
    n, S, M, R, NN = 400_000, 0.3, 0.5, 0.3, 4
    original = torch.randint(0, NN, (n,), generator=g)
    selected = torch.rand(n, generator=g) < S
    action = torch.rand(n, generator=g)
    random_ids = torch.randint(0, NN, (n,), generator=g)
    shown = torch.where(selected & (action < M), torch.full_like(original, -1), original)
    shown = torch.where(selected & (action >= M) & (action < M + R), random_ids, shown)
    values = {s: S, m: M, r: R, N: NN}
    assert abs((shown != original).float().mean() - float(CORRUPTION["p_changed"].subs(values))) < 0.004
    assert abs((selected & (shown == original)).float().mean() - float(CORRUPTION["p_graded_but_intact"].subs(values))) < 0.004


@pytest.mark.parametrize("answers", [
    SIZE,
    {"layer_params": 4 * (d**2 + d) + (d * d_ff + d_ff) + (d_ff * d + d) + 2 * (2 * d), "embedding_params": d * (V + P + 2) + 2 * d},
], ids=["expanded", "by-parts"])
def test_bert_size_accepts_equivalent_forms(answers, capsys):
    assert checks.derive_bert_size(answers, points=2) == 2.0
    assert checks.derive_bert_size(answers, points=2, seed=31) == 2.0


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    ({"layer_params": 12 * d**2 + 13 * d}, "misses a dependence on d_ff"),          # the 4d shortcut
    ({"layer_params": 4 * d**2 + 2 * d * d_ff + 9 * d + d_ff + V}, "depends on V, which it should not"),
    ({"layer_params": 4 * d**2 + 2 * d * d_ff + 4 * d}, "not equivalent"),          # no biases
    ({"embedding_params": (V + P) * d}, "not equivalent"),                          # no segments, no LayerNorm
    ({"embedding_params": "(V + P + 2) * d"}, "a string, not an expression"),
], ids=["shortcut-12d2", "vocabulary-in-layer", "no-biases", "no-segments", "string"])
def test_bert_size_rejects_wrong_forms(wrong, diagnosis, capsys):
    with pytest.raises(CheckFailed):
        checks.derive_bert_size({**SIZE, **wrong}, points=2)
    printed = capsys.readouterr().out
    assert "1 / 2 points" in printed and diagnosis in printed, printed


@pytest.mark.parametrize("answers", [
    CORRUPTION,
    {"p_changed": s * m + s * r - s * r / N, "p_graded_but_intact": s - s * m - s * r * (N - 1) / N},
], ids=["factored", "expanded"])
def test_corruption_accepts_equivalent_forms(answers, capsys):
    assert checks.derive_corruption(answers, points=2) == 2.0
    assert checks.derive_corruption(answers, points=2, seed=7) == 2.0


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    ({"p_changed": s * (m + r)}, "misses a dependence on N"),                   # a random draw always changes it
    ({"p_changed": m + r * (N - 1) / N}, "misses a dependence on s"),           # forgot the selection
    ({"p_graded_but_intact": s * (1 - m - r)}, "misses a dependence on N"),     # only the 'unchanged' branch
    ({"p_graded_but_intact": 1 - m - r + r / N}, "misses a dependence on s"),
], ids=["random-always-changes", "no-selection", "unchanged-only", "no-selection-intact"])
def test_corruption_rejects_wrong_forms(wrong, diagnosis, capsys):
    with pytest.raises(CheckFailed):
        checks.derive_corruption({**CORRUPTION, **wrong}, points=2)
    printed = capsys.readouterr().out
    assert "1 / 2 points" in printed and diagnosis in printed, printed


def test_an_always_unk_answer_is_told_the_word_can_be_spelt(capsys):
    assert_rejected(checks.check_wordpiece_encode_word, lambda w, v: ["[UNK]"], capsys,
                    "can be spelt with the vocabulary (no part is unmatched), but came out as [UNK]")
