"""Checks for notebook 02 (BERT and subword tokenization), one per graded exercise.

Each check runs the student's function on seeded cases, compares it with
``gradelib.reference.tokenization`` / ``gradelib.reference.bert``, and names the mistake it resembles
(unweighted pair counts, merges replayed in the wrong order, a partial [UNK], masked special tokens,
a loss averaged over every position, …) without printing the solution. The MLM and NSP checks are
statistical: they measure rates on a large seeded sample against tolerances of about five standard
errors, so a correct answer passes for any seed and a biased one fails.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Callable

import torch
import torch.nn as nn

from gradelib.checks import _core
from gradelib.checks._core import Case, compare_case, exercise, generator, make_read_only, tensor_problem, within_sigmas
from gradelib.checks.derive import derivation, integer, interval
from gradelib.reference import bert as ref
from gradelib.reference import tokenization as tok

_log_softmax = _core.log_softmax
_randn = _core.randn
_randint = _core.randint
_equal = _core.equal


def _rng(seed: int) -> random.Random:
    return random.Random(seed)


def _compare_with_gradient(got: torch.Tensor, want: torch.Tensor, atol: float, variants, otherwise, *, detached: str) -> str | None:
    """compare_case, then, for a right value, the message ``detached`` if no gradient can flow back through it."""
    return compare_case(got, want, atol, variants, otherwise) or (None if got.requires_grad else detached)


# ----------------------------------------------------------------------------------------------
# Exercise: learning BPE merges


def _as_merges(result: object) -> tuple[list[tuple[str, str]] | None, str | None]:
    if not isinstance(result, (list, tuple)):
        return None, f"learn_bpe should return a list of (left, right) pairs, got {type(result).__name__}"
    merges = []
    for item in result:
        if not isinstance(item, (list, tuple)) or len(item) != 2 or not all(type(s) is str for s in item):
            return None, f"each merge should be a pair of strings (left, right), got {item!r:.60}"
        merges.append((item[0], item[1]))
    return merges, None


def _replay(word_counts: dict[str, int], merges: list[tuple[str, str]], num_merges: int) -> str | None:
    """Check that merge k is a most frequent pair after merges 0..k-1 (any tie-break is accepted)."""
    words = {tuple(w): c for w, c in word_counts.items()}
    for k, pair in enumerate(merges):
        counts = tok.pair_counts(words)
        if not counts:
            return f"merge {k} was learned although no word has two symbols left: stop early"
        if pair not in counts:
            return (f"merge {k} {pair} is not an adjacent pair inside any word at that point: merges never cross "
                    "word boundaries, and every earlier merge must replace all its occurrences")
        best = max(counts.values())
        if counts[pair] != best:
            unweighted = Counter()
            for symbols in words:
                unweighted.update(zip(symbols, symbols[1:]))
            if unweighted[pair] == max(unweighted.values()):
                return f"merge {k} {pair} is the pair found in the most *distinct* words: weight each word's pairs by its count"
            return f"merge {k} {pair} occurs {counts[pair]} times, but the most frequent pair occurs {best} times"
        words_next: Counter = Counter()
        for symbols, count in words.items():
            words_next[tuple(tok.merge_pair(symbols, pair))] += count
        words = dict(words_next)
    if len(merges) < num_merges and tok.pair_counts(words):
        return f"returned {len(merges)} merges, expected {num_merges} (pairs were still left to merge)"
    if len(merges) > num_merges:
        return f"returned {len(merges)} merges, expected {num_merges}"
    return None


def _learn_bpe_case(fn, word_counts: dict[str, int], num_merges: int) -> str | None:
    result = fn(dict(word_counts), num_merges)
    merges, problem = _as_merges(result)
    if problem:
        return problem
    return _replay(word_counts, merges, num_merges)


def _random_word_counts(rng: random.Random, num_words: int = 40) -> dict[str, int]:
    counts = {}
    while len(counts) < num_words:
        word = "".join(rng.choice("abcde") for _ in range(rng.randint(2, 7)))
        counts[word] = rng.randint(1, 30)
    return counts


@exercise("BPE training", reference=(tok.learn_bpe, tok.learn_bpe_naive))
def check_learn_bpe(fn: Callable, points: float = 3, seed: int = 0) -> list[Case]:
    """Check ``fn(word_counts: dict[str, int], num_merges: int) -> list[(left, right)]``."""
    rng = _rng(seed)
    textbook = {"low": 5, "lower": 2, "newest": 6, "widest": 3}
    # ("e", "r") is in the most words (3), but ("x", "y") occurs most often once counts are weighted.
    weighted = {"er": 1, "her": 1, "per": 1, "xy": 10}
    repeats = {"aaa": 10, "bc": 15, "aaaa": 2}  # overlapping pairs: ("a", "a") occurs twice in "aaa"
    random_counts = _random_word_counts(rng)
    cases = [
        ("the textbook corpus {low: 5, lower: 2, newest: 6, widest: 3}, 10 merges", lambda: _learn_bpe_case(fn, textbook, 10)),
        ("pairs are weighted by word frequency", lambda: _learn_bpe_case(fn, weighted, 2)),
        ("repeated symbols: every adjacent pair counts, merges do not overlap", lambda: _learn_bpe_case(fn, repeats, 4)),
        ("stops early when no pair is left", lambda: _learn_bpe_case(fn, {"ab": 3, "c": 4}, 5)),
        (f"random corpus of {len(random_counts)} words, 25 merges", lambda: _learn_bpe_case(fn, random_counts, 25)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: BPE encoding


def _encode_left_to_right(word: str, merges) -> list[str]:
    """Wrong: merge the leftmost learned pair first, whatever its rank."""
    known = set(merges)
    symbols = list(word)
    changed = True
    while changed:
        changed = False
        for i in range(len(symbols) - 1):
            if (symbols[i], symbols[i + 1]) in known:
                symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]
                changed = True
                break
    return symbols


def _encode_longest_match(word: str, merges) -> list[str]:
    """Wrong: greedy longest match against the BPE vocabulary."""
    vocab = set(word) | {a + b for a, b in merges}
    out, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start + 1 and word[start:end] not in vocab:
            end -= 1
        out.append(word[start:end])
        start = end
    return out


def _encode_single_pass(word: str, merges) -> list[str]:
    """Wrong: each merge replaces only its first occurrence."""
    symbols = list(word)
    for a, b in merges:
        for i in range(len(symbols) - 1):
            if symbols[i] == a and symbols[i + 1] == b:
                symbols[i:i + 2] = [a + b]
                break
    return symbols


def _as_tokens(result: object, function: str) -> tuple[list[str] | None, str | None]:
    """A word tokenizer's answer as a list of strings, or the message saying that it is not one."""
    if not isinstance(result, (list, tuple)) or not all(type(t) is str for t in result):
        return None, f"{function} should return a list of strings, got {type(result).__name__}"
    return list(result), None


def _named_variant(result: object, variants, *args) -> str | None:
    """The diagnosis of the first (diagnosis, wrong_function) whose output on args equals result, if any."""
    return next((diagnosis for diagnosis, variant in variants if result == variant(*args)), None)


def _first_wrong_word(answer: Callable, reference: Callable, words: list[str], function: str, diagnose: Callable) -> str | None:
    """answer(word) must be the list of strings reference(word) for every word; the first word it gets
    wrong is explained by diagnose(word, result, want)."""
    for word in words:
        result, problem = _as_tokens(answer(word), function)
        if problem:
            return problem
        want = reference(word)
        if result != want:
            return diagnose(word, result, want)
    return None


def _bpe_encode_case(fn, words: list[str], merges: list[tuple[str, str]]) -> str | None:
    def diagnose(word: str, result: list[str], want: list[str]) -> str:
        if "".join(result) != word:
            return f"the tokens of {word!r} do not concatenate back to the word"
        return _named_variant(result, [
            ("merges are applied left to right; apply the learned merge with the lowest rank (earliest) first", _encode_left_to_right),
            ("that is greedy longest match (WordPiece's rule), not BPE: replay the merges by rank, earliest first", _encode_longest_match),
            ("a merge must replace every occurrence of its pair, not just the first", _encode_single_pass),
            ("merges are replayed in reverse: the earliest-learned merge has priority", lambda w, m: tok.bpe_encode_word(w, m[::-1])),
        ], word, merges) or f"{word!r} is split into {len(result)} tokens, expected {len(want)}"

    return _first_wrong_word(lambda word: fn(word, list(merges)), lambda word: tok.bpe_encode_word(word, merges), words,
                             "bpe_encode_word", diagnose)


@exercise("BPE encoding", reference=tok.bpe_encode_word)
def check_bpe_encode_word(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(word: str, merges: list[(left, right)]) -> list[str]``."""
    rng = _rng(seed)
    textbook = tok.learn_bpe_naive({"low": 5, "lower": 2, "newest": 6, "widest": 3}, 10)
    # Rank matters: ("b", "c") was learned before ("a", "b"), so "abc" -> ["a", "bc"].
    ranked = [("b", "c"), ("a", "b"), ("a", "bc")]
    counts = _random_word_counts(rng, 60)
    merges = tok.learn_bpe_naive(counts, 30)
    fresh = ["".join(rng.choice("abcde") for _ in range(rng.randint(3, 10))) for _ in range(30)]
    cases = [
        ("textbook merges: lowest, newer, wider, slow", lambda: _bpe_encode_case(fn, ["lowest", "newer", "wider", "slow", "low"], textbook)),
        ("the earliest-learned merge wins: 'abc' with merges bc, ab, a+bc", lambda: _bpe_encode_case(fn, ["abc", "xabc", "abcab"], ranked[:2])),
        # Words with no learned pair ("xyz", "q") stay as characters: a trivial case on its own (returning the
        # characters passes it), so it rides along with a case that needs real merging.
        ("repeated pairs are all merged: 'aaaa', 'abab'; a word with no learned pair stays as characters",
         lambda: _bpe_encode_case(fn, ["aaaa", "ababab", "aaa"], [("a", "a"), ("a", "b"), ("aa", "aa"), ("ab", "ab")])
         or _bpe_encode_case(fn, ["xyz", "q"], textbook)),
        ("random words, 30 learned merges", lambda: _bpe_encode_case(fn, fresh, merges)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: WordPiece greedy longest-match


def _wp_shortest(word, vocab, unk="[UNK]"):
    """Wrong: shortest match first."""
    pieces, start = [], 0
    while start < len(word):
        for end in range(start + 1, len(word) + 1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                start = end
                break
        else:
            return [unk]
    return pieces


def _wp_partial_unk(word, vocab, unk="[UNK]"):
    """Wrong: only the unmatched character becomes [UNK]."""
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while start < end and (word[start:end] if start == 0 else "##" + word[start:end]) not in vocab:
            end -= 1
        if end == start:
            pieces.append(unk)
            start += 1
        else:
            pieces.append(word[start:end] if start == 0 else "##" + word[start:end])
            start = end
    return pieces


def _wp_no_prefix(word, vocab, unk="[UNK]"):
    """Wrong: continuation pieces looked up without '##'."""
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while start < end and word[start:end] not in vocab:
            end -= 1
        if end == start:
            return [unk]
        pieces.append(word[start:end])
        start = end
    return pieces


def _wordpiece_case(fn, words: list[str], vocab: set[str]) -> str | None:
    def diagnose(word: str, result: list[str], want: list[str]) -> str:
        if result == ["[UNK]"]:  # a word the vocabulary can spell (want is not [UNK])
            hint = (": are the pieces after the first looked up with the '##' prefix?"
                    if _wp_no_prefix(word, vocab) == ["[UNK]"] else "")
            return f"{word!r} can be spelt with the vocabulary (no part is unmatched), but came out as [UNK]{hint}"
        diagnosis = _named_variant(result, [
            ("only the unmatched part became [UNK]: if any part of a word has no match, the whole word is one [UNK]", _wp_partial_unk),
            ("shortest match first: take the *longest* vocabulary entry at each step", _wp_shortest),
            ("pieces after the first must be looked up with the '##' prefix (and returned with it)", _wp_no_prefix),
        ], word, vocab)
        if diagnosis:
            return diagnosis
        if len(word) > 100:  # result is not [UNK] here
            return "a word longer than 100 characters must become a single [UNK] (BERT's max_input_chars_per_word)"
        return f"{word!r} gives {len(result)} pieces, expected {len(want)}"

    return _first_wrong_word(lambda word: fn(word, set(vocab)), lambda word: tok.wordpiece_encode_word(word, vocab), words,
                             "wordpiece_encode_word", diagnose)


@exercise("WordPiece encoding", reference=tok.wordpiece_encode_word)
def check_wordpiece_encode_word(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(word: str, vocab: set[str]) -> list[str]`` (greedy longest match, '##', [UNK])."""
    rng = _rng(seed)
    vocab = {"un", "##aff", "##able", "a", "##a", "##f", "##b", "##l", "##e", "u", "##n", "play", "##ing", "##s",
             "p", "##l", "##a", "##y", "##i", "##g", "##in", "[UNK]"}
    letters = "abcdef"
    random_vocab = set(letters) | {"##" + c for c in letters[:-1]}  # "##f" missing: words with a non-initial f are [UNK]
    for _ in range(25):
        piece = "".join(rng.choice(letters) for _ in range(rng.randint(2, 4)))
        random_vocab.add(piece if rng.random() < 0.4 else "##" + piece)
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 9))) for _ in range(40)]
    cases = [
        ("'unaffable' -> un ##aff ##able; 'playing', 'plays'", lambda: _wordpiece_case(fn, ["unaffable", "playing", "plays", "a"], vocab)),
        ("the longest match wins at every step", lambda: _wordpiece_case(fn, ["unaff", "playin"], vocab)),
        # The [UNK] cases mix in words that must *not* be [UNK], so that always answering ["[UNK]"] earns nothing;
        # the over-long word rides along with them (on its own it would be a trivial case).
        ("a word with an unmatched part is one [UNK], and so is a word over 100 characters",
         lambda: _wordpiece_case(fn, ["unaffablez", "xplay", "playx", "a" * 101, "a" * 100], vocab)),
        ("continuations need the '##' prefix: 'unun' has no '##un'", lambda: _wordpiece_case(fn, ["unun", "unable", "playplay"], vocab)),
        ("random vocabulary and words", lambda: _wordpiece_case(fn, words, random_vocab)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: [CLS] A [SEP] B [SEP]


def _pair_case(fn, ids_a: list[int], ids_b: list[int] | None, cls_id: int, sep_id: int) -> str | None:
    result = fn(list(ids_a), None if ids_b is None else list(ids_b), cls_id, sep_id)
    if not isinstance(result, (tuple, list)) or len(result) != 2:
        return "make_pair_input should return a pair (input_ids, segment_ids)"
    input_ids, segment_ids = result
    want_ids, want_segments = ref.make_pair_input(ids_a, ids_b, cls_id, sep_id)
    problem = tensor_problem(input_ids, "input_ids") or tensor_problem(segment_ids, "segment_ids")
    if problem:
        return problem
    if input_ids.dtype != torch.int64 or segment_ids.dtype != torch.int64:
        return "input_ids and segment_ids should be int64 (torch.long) tensors"
    if input_ids.dim() != 1:
        return f"input_ids should be 1-D, got shape {tuple(input_ids.shape)}"
    if not _equal(input_ids, want_ids):
        if int(input_ids[0]) != cls_id:
            return "the sequence must start with [CLS]"
        if len(input_ids) == len(want_ids) - 1:
            return "a [SEP] is missing: [CLS] A [SEP] B [SEP] ends with a [SEP] too"
        return f"input_ids has {len(input_ids)} tokens, expected {len(want_ids)}, or they are in the wrong order"
    if tuple(segment_ids.shape) != tuple(want_ids.shape):
        return f"segment_ids has shape {tuple(segment_ids.shape)}, expected {tuple(want_ids.shape)}"
    if _equal(segment_ids, want_segments):
        return None
    if ids_b is not None:
        n_a = len(ids_a)
        if int(segment_ids[n_a + 1]) == 1:
            return "the first [SEP] closes segment A: its segment id is 0"
        if int(segment_ids[-1]) == 0 and int(segment_ids[n_a + 2]) == 1:
            return "the final [SEP] belongs to segment B: its segment id is 1"
        if int(segment_ids.sum()) == 0:
            return "segment B must have segment id 1"
        if int(segment_ids[0]) == 1:
            return "[CLS] belongs to segment A: its segment id is 0"
    return "segment ids are wrong"


@exercise("[CLS] A [SEP] B [SEP]", reference=ref.make_pair_input)
def check_make_pair_input(fn: Callable, points: float = 1, seed: int = 0) -> list[Case]:
    """Check ``fn(ids_a, ids_b, cls_id, sep_id) -> (input_ids, segment_ids)``."""
    rng = _rng(seed)

    def ids(n):
        return [rng.randint(5, 99) for _ in range(n)]

    a, b, c = ids(4 + seed % 3), ids(6), ids(5)
    cases = [
        ("[CLS] A [SEP] B [SEP] and its segments", lambda: _pair_case(fn, a, b, 2, 3)),
        ("other special ids (cls_id=101, sep_id=102, as in bert-base)", lambda: _pair_case(fn, b, a, 101, 102)),
        ("a single segment (ids_b=None): [CLS] A [SEP]", lambda: _pair_case(fn, c, None, 2, 3)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the input embedding


def _embed_case(fn, B: int, T: int, D: int, gen: torch.Generator) -> str | None:
    vocab, max_len = 30, 40  # max_len > vocab: looking positions up by token id must not crash
    token, segment, position = nn.Embedding(vocab, D), nn.Embedding(2, D), nn.Embedding(max_len, D)
    for module in (token, segment, position):
        nn.init.normal_(module.weight, generator=gen)
    input_ids = _randint(0, vocab, (B, T), generator=gen)
    segment_ids = (torch.arange(T)[None] >= _randint(1, T, (B, 1), generator=gen)).long()
    result = fn(input_ids, segment_ids, token, segment, position)
    want = ref.embed_input(input_ids, segment_ids, token, segment, position)
    problem = tensor_problem(result, "embedding", want.shape)
    if problem:
        return problem

    def variants():
        with torch.no_grad():
            tok_e, seg_e = token(input_ids), segment(segment_ids)
            pos_e = position(torch.arange(T))[None]
            return [
                ("the segment embedding is missing", tok_e + pos_e),
                ("the position embedding is missing", tok_e + seg_e),
                ("positions start at 0: look up position(0 .. T-1)", tok_e + seg_e + position(torch.arange(1, T + 1))[None]),
                ("the position embedding is looked up with the token ids instead of the positions 0 .. T-1", tok_e + seg_e + position(input_ids)),
                ("return the plain sum; LayerNorm and dropout come after, in BertEmbeddings", nn.functional.layer_norm(tok_e + seg_e + pos_e, (D,))),
            ]

    return _compare_with_gradient(result, want, 1e-5, variants, "differs from token + segment + position embeddings",
                                  detached="the result is detached: gradients must flow to the three embedding tables")


@exercise("BERT input embedding", reference=ref.embed_input)
def check_embed_input(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(input_ids, segment_ids, token_embedding, segment_embedding, position_embedding) -> (B, T, D)``."""
    gen = generator(seed)
    cases = [
        ("batch of 3, T = 7, D = 8", lambda: _embed_case(fn, 3, 7, 8, gen)),
        (f"batch of 1, T = {12 + seed % 5}, D = 16", lambda: _embed_case(fn, 1, 12 + seed % 5, 16, gen)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: MLM masking (statistical)


def _mask_sample(seed: int, B: int = 512, T: int = 128, vocab_size: int = 1000) -> torch.Tensor:
    """A batch that looks like BERT input: [CLS] at 0, a [SEP] in the middle and at the end, [PAD] after."""
    gen = generator(seed)
    ids = _randint(ref.NUM_SPECIAL, vocab_size, (B, T), generator=gen)
    lengths = _randint(T // 2, T + 1, (B,), generator=gen)
    positions = torch.arange(T)[None]
    ids[:, 0] = ref.CLS_ID
    middle = (lengths // 2)[:, None]
    ids = torch.where(positions == middle, torch.full_like(ids, ref.SEP_ID), ids)
    ids = torch.where(positions == (lengths - 1)[:, None], torch.full_like(ids, ref.SEP_ID), ids)
    ids = torch.where(positions >= lengths[:, None], torch.full_like(ids, ref.PAD_ID), ids)
    ids[::7, 5] = ref.UNK_ID  # a few [UNK]s: special too, never masked
    return ids


class _MaskRun:
    """Runs the student's mask_tokens once on the big sample and caches the outcome for the cases."""

    def __init__(self, fn, seed: int, vocab_size: int = 100):
        self.fn, self.seed, self.vocab_size = fn, seed, vocab_size
        self.ids = _mask_sample(seed, vocab_size=vocab_size)
        self._result = None

    def result(self):
        if self._result is None:
            gen = generator(self.seed + 1)
            out = self.fn(self.ids.clone(), self.vocab_size, gen)
            if not isinstance(out, (tuple, list)) or len(out) != 2:
                raise TypeError("mask_tokens should return a pair (corrupted, labels)")
            self._result = tuple(out)
        return self._result

    def basic_problem(self) -> str | None:
        corrupted, labels = self.result()
        problem = tensor_problem(corrupted, "corrupted", self.ids.shape) or tensor_problem(labels, "labels", self.ids.shape)
        if problem:
            return problem
        if corrupted.dtype != torch.int64 or labels.dtype != torch.int64:
            return "corrupted and labels should be int64 tensors"
        return None


def _mask_structure(run: _MaskRun) -> str | None:
    problem = run.basic_problem()
    if problem:
        return problem
    corrupted, labels = run.result()
    ids = run.ids
    special = ids < ref.NUM_SPECIAL
    selected = labels != ref.IGNORE_INDEX
    if bool((selected & special).any()) or not _equal(corrupted[special], ids[special]):
        return "special tokens ([CLS], [SEP], [PAD], [UNK]) were selected or changed: they must never be masked"
    if bool(((labels != ids) & selected).any()):
        if bool((labels[selected] == ref.MASK_ID).all()):
            return "labels hold [MASK]: the label of a selected position is its *original* token"
        return "at selected positions, the label must be the original token id"
    if bool(selected.all()) or float(selected.float().mean()) > 0.9:
        return "labels must be -100 at positions that were not selected (the loss ignores them)"
    changed = corrupted != ids
    if bool((changed & ~selected).any()):
        return "a position was changed but its label is -100: every changed position must be selected and labelled"
    return None


def _after_the_structure(statistic):
    """A case that names _mask_structure's problem first; else statistic(run, corrupted, labels, selected)."""

    def case(run: _MaskRun) -> str | None:
        problem = _mask_structure(run)
        if problem:
            return problem
        corrupted, labels = run.result()
        return statistic(run, corrupted, labels, labels != ref.IGNORE_INDEX)

    return case


@_after_the_structure
def _mask_rates(run: _MaskRun, corrupted: torch.Tensor, labels: torch.Tensor, selected: torch.Tensor) -> str | None:
    ids = run.ids
    eligible = ids >= ref.NUM_SPECIAL
    n = int(eligible.sum())
    rate = float(selected.sum()) / n
    sigma = math.sqrt(0.15 * 0.85 / n)
    if not within_sigmas(rate - 0.15, sigma):
        if within_sigmas(float(selected.sum()) / ids.numel() - 0.15, sigma):
            return f"{rate:.3f} of the ordinary tokens were selected: draw the 15% over non-special positions only"
        return f"{rate:.3f} of the ordinary tokens were selected, expected 0.15"
    k = int(selected.sum())
    to_mask = float((corrupted[selected] == ref.MASK_ID).sum()) / k
    kept = float((corrupted[selected] == ids[selected]).sum()) / k
    randomised = 1.0 - to_mask - kept
    sigma_split = math.sqrt(0.1 * 0.9 / k)
    if to_mask > 0.99:
        return "every selected position became [MASK]: 80% [MASK], 10% a random token, 10% unchanged"
    if not within_sigmas(to_mask - 0.8, math.sqrt(0.8 * 0.2 / k)):
        return f"{to_mask:.3f} of the selected positions became [MASK], expected 0.80"
    if not within_sigmas(randomised - 0.1, sigma_split):
        return f"{randomised:.3f} of the selected positions became a random token, expected 0.10"
    if not within_sigmas(kept - 0.1, sigma_split):
        return f"{kept:.3f} of the selected positions kept their token, expected 0.10"
    return None


@_after_the_structure
def _mask_random_tokens(run: _MaskRun, corrupted: torch.Tensor, labels: torch.Tensor, selected: torch.Tensor) -> str | None:
    replaced = selected & (corrupted != run.ids) & (corrupted != ref.MASK_ID)
    values = corrupted[replaced]
    if values.numel() == 0:
        return "no selected position was replaced by a random token"
    if bool((values < ref.NUM_SPECIAL).any()) or bool((values >= run.vocab_size).any()):
        return f"random replacements must be ordinary tokens, ids {ref.NUM_SPECIAL} .. vocab_size - 1"
    # Uniform over 95 ids: the most common replacement should not dominate.
    if Counter(values.tolist()).most_common(1)[0][1] > max(10, 0.05 * values.numel()):
        return "random replacements are not spread uniformly over the vocabulary"
    return None


def _mask_reproducible(fn, vocab_size: int = 1000) -> str | None:
    ids = _mask_sample(3, B=32, T=64, vocab_size=vocab_size)
    outs = []
    for seed in (11, 11, 12):
        out = fn(ids.clone(), vocab_size, generator(seed))
        if not isinstance(out, (tuple, list)) or len(out) != 2 or type(out[1]) is not torch.Tensor:
            return "mask_tokens should return a pair of tensors (corrupted, labels)"
        outs.append(out)
    if not (_equal(outs[0][0], outs[1][0]) and _equal(outs[0][1], outs[1][1])):
        return "two calls with identically seeded generators differ: draw every random number from `generator`"
    if _equal(outs[0][1], outs[2][1]):
        return "different generators give the same mask: draw the random numbers from `generator`"
    per_row = (outs[0][1] != ref.IGNORE_INDEX).sum(1)
    if bool((per_row == per_row[0]).all()) and bool((outs[0][1][0] != ref.IGNORE_INDEX).eq(outs[0][1][1] != ref.IGNORE_INDEX).all()):
        return "every sequence is masked at the same positions: select each position independently"
    return None


@exercise("MLM masking", reference=ref.mask_tokens)
def check_mask_tokens(fn: Callable, points: float = 3, seed: int = 0) -> list[Case]:
    """Check ``fn(input_ids (B, T), vocab_size, generator) -> (corrupted, labels)`` statistically."""
    run = _MaskRun(fn, seed)
    cases = [
        ("special tokens are never selected; labels = original ids at selected positions, -100 elsewhere", lambda: _mask_structure(run)),
        ("15% of ordinary tokens selected; of those 80% [MASK], 10% random, 10% unchanged (65,000-token sample)", lambda: _mask_rates(run)),
        # Reproducibility alone is passed by almost any answer that draws from the generator, so it is part of a
        # case that also needs the right replacements, not a case (a quarter of the points) of its own.
        ("random replacements are ordinary tokens, spread over the vocabulary; reproducible with the generator, "
         "positions chosen independently", lambda: _mask_random_tokens(run) or _mask_reproducible(fn)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the MLM loss


def _mlm_case(fn, B: int, T: int, V: int, gen: torch.Generator, counts: list[int]) -> str | None:
    logits = (_randn(B, T, V, generator=gen) * 2).requires_grad_(True)
    targets = _randint(0, V, (B, T), generator=gen)
    labels = torch.full((B, T), ref.IGNORE_INDEX, dtype=torch.int64)
    for b, k in enumerate(counts):
        positions = torch.randperm(T, generator=gen)[:k]
        labels[b, positions] = targets[b, positions]
    loss = fn(logits, labels.clone())
    want = ref.mlm_loss(logits, labels)
    problem = tensor_problem(loss, "loss", ())
    if problem:
        return problem + " (a scalar)" if "shape" in problem else problem

    def variants():
        with torch.no_grad():
            log_p = _log_softmax(logits, dim=-1)
            masked = labels != ref.IGNORE_INDEX
            nll = -log_p.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)  # -100 -> token 0 where unmasked
            per_sequence = torch.stack([nll[b][masked[b]].mean() for b in range(B) if masked[b].any()])
            all_positions_target = -log_p.gather(-1, targets[..., None]).squeeze(-1)
            return [
                ("averaged over every position: the mean must run over the masked positions only", (nll * masked).sum() / masked.numel()),
                ("averaged over every position: the mean must run over the masked positions only", nll.mean()),
                ("averaged over every position: the mean must run over the masked positions only", all_positions_target.mean()),
                ("a sum, not a mean: divide by the number of masked positions", nll[masked].sum()),
                ("averaged per sequence, then over the batch: average over all masked tokens of the batch at once", per_sequence.mean()),
                ("the loss is the *negative* log-likelihood", -nll[masked].mean()),
                ("use log-softmax of the logits, not the raw logits", -logits.gather(-1, labels.clamp(min=0)[..., None]).squeeze(-1)[masked].mean()),
            ]

    return _compare_with_gradient(loss, want, 1e-4, variants, lambda: f"differs from the mean NLL over masked positions (got {float(loss):.4f})",
                                  detached="the loss is detached from the logits: no gradient would flow")


@exercise("MLM loss", reference=ref.mlm_loss)
def check_mlm_loss(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(logits (B, T, V), labels (B, T) with -100 at unmasked positions) -> scalar``."""
    gen = generator(seed)
    cases = [
        ("one sequence, 3 of 12 positions masked", lambda: _mlm_case(fn, 1, 12, 20, gen, [3])),
        ("a batch with different numbers of masked positions per sequence", lambda: _mlm_case(fn, 4, 16, 30, gen, [1, 5, 2, 8])),
        ("a sequence without any masked position", lambda: _mlm_case(fn, 3, 10, 25, gen, [2, 0, 4])),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: NSP pairs (statistical)


def _nsp_documents(seed: int, num_documents: int = 300) -> list[list[str]]:
    rng = _rng(seed)
    return [[f"d{d}s{s}" for s in range(rng.randint(1, 12))] for d in range(num_documents)]


def _parse(sentence: object) -> tuple[int, int] | None:
    if type(sentence) is not str or not sentence.startswith("d") or "s" not in sentence:
        return None
    d, s = sentence[1:].split("s")
    return int(d), int(s)


def _nsp_run(fn, documents, seed):
    pairs = fn([list(d) for d in documents], generator(seed))
    if not isinstance(pairs, (list, tuple)):
        raise TypeError(f"nsp_pairs should return a list of (a, b, is_next) triples, got {type(pairs).__name__}")
    return list(pairs)


def _nsp_structure(fn, documents, seed) -> str | None:
    pairs = _nsp_run(fn, documents, seed)
    expected_a = [s for d in documents for s in d[:-1]]
    for item in pairs:
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            return "each example should be a triple (sentence_a, sentence_b, is_next)"
        if item[2] not in (0, 1) or isinstance(item[2], bool):
            return "is_next should be the int 1 (B follows A) or 0 (B is random)"
    if sorted(a for a, _, _ in pairs) != sorted(expected_a):
        return (f"got {len(pairs)} pairs, expected one for each of the {len(expected_a)} sentences that have a next sentence "
                "(a document's last sentence has none)")
    parsed = [(_parse(a), _parse(b), label) for a, b, label in pairs]
    if any(pb is None for _, pb, _ in parsed):
        return "sentence B must be a sentence from the documents"
    follows = [pb == (pa[0], pa[1] + 1) for pa, pb, _ in parsed]
    positives = [f for f, (_, _, label) in zip(follows, parsed) if label == 1]
    negatives = [f for f, (_, _, label) in zip(follows, parsed) if label == 0]
    if positives and negatives and not any(positives) and all(negatives):
        return "the labels are inverted: is_next = 1 means B is the true next sentence"
    if not all(positives):
        return "is_next = 1 but B is not the sentence that follows A"
    if any(pa[0] == pb[0] for pa, pb, label in parsed if label == 0):
        return "a random B must come from another document (from the same one it could be the true next sentence)"
    return None


def _nsp_rates(fn, documents, seed) -> str | None:
    problem = _nsp_structure(fn, documents, seed)
    if problem:
        return problem
    pairs = _nsp_run(fn, documents, seed)
    n = len(pairs)
    rate = sum(label for _, _, label in pairs) / n
    if not within_sigmas(rate - 0.5, math.sqrt(0.25 / n)):
        return f"{rate:.3f} of the pairs are true next sentences, expected 0.5"
    negatives = [_parse(b) for _, b, label in pairs if label == 0]
    if len({d for d, _ in negatives}) < 0.5 * min(len(negatives), len(documents)):
        return "random sentences come from only a few documents: pick the other document at random"
    if len(set(negatives)) < 0.6 * len(negatives):
        return "random B sentences repeat too often: pick a random sentence of a random other document"
    again = _nsp_run(fn, documents, seed)
    if again != pairs:
        return "two calls with identically seeded generators differ: draw every random number from `generator`"
    return None


@exercise("NSP pairs", reference=ref.nsp_pairs)
def check_nsp_pairs(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(documents: list[list[sentence]], generator) -> list[(a, b, is_next)]``."""
    documents = _nsp_documents(seed)
    cases = [
        ("one pair per sentence with a successor; is_next = 1 iff B follows A; random B from another document",
         lambda: _nsp_structure(fn, documents, seed + 5)),
        (f"50% true next sentences over {sum(len(d) - 1 for d in documents)} pairs; random B spread over documents; reproducible",
         lambda: _nsp_rates(fn, documents, seed + 6)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Derivations (graded with gradelib.checks.derive: a SymPy expression, compared by value and by simplify)

# Section 3.1: the parameters of one encoder layer (biases, two LayerNorms, an FFN of any width) and of the
# input embeddings (token, position and segment tables, then a LayerNorm). The shortcut 12 d^2 + 13 d holds
# only at the special point d_ff = 4d; the notes' FFN of d units is not it.
BERT_SIZE_SYMBOLS = {"d": integer(16, 1024), "d_ff": integer(16, 4096), "V": integer(10, 1000),
                     "P": integer(4, 600)}  # small V and P, so that a missing 2d is not a near-constant factor
derive_bert_size = derivation(
    "Parameters of BERT's layer and embeddings",
    symbols=BERT_SIZE_SYMBOLS,
    expected={"layer_params": "4*d**2 + 4*d + 2*d*d_ff + d_ff + d + 4*d",
              "embedding_params": "(V + P + 2)*d + 2*d"},
    special={"an FFN of 4d units": {"d_ff": "4*d"}},
)

# After exercise 6: what the 15% / 80-10-10 corruption does to one ordinary position, with selection rate s,
# [MASK] share m, random share r and N ordinary tokens to draw a random replacement from (the original among them).
CORRUPTION_SYMBOLS = {"s": interval(0, 1), "m": interval(0, 1), "r": interval(0, 1), "N": integer(2, 60)}
derive_corruption = derivation(
    "What MLM corruption does to one position",
    symbols=CORRUPTION_SYMBOLS,
    expected={"p_changed": "s*(m + r*(N - 1)/N)",
              "p_graded_but_intact": "s*(1 - m - r) + s*r/N"},
)


make_read_only(__name__)
