"""Subword tokenization from scratch: byte-pair encoding (BPE) and WordPiece.

Two families of subword tokenizers split rare words into frequent pieces, so that a vocabulary of a
few thousand entries covers any text without an "unknown word" problem:

* **BPE** (Sennrich et al. 2016; GPT-2, LLaMA, …) starts from single characters and repeatedly
  merges the most frequent adjacent pair of symbols into a new symbol. The ordered list of merges
  *is* the tokenizer: encoding a word replays the merges in the order they were learned.
* **WordPiece** (Schuster & Nakajima 2012; BERT) stores a vocabulary of word-initial pieces and
  continuation pieces marked ``##``. Encoding a word is greedy longest-match-first: take the longest
  vocabulary entry that starts the word, then the longest ``##`` entry that continues it, and so on;
  if some remainder matches nothing, the whole word becomes ``[UNK]``.

Pre-tokenization splits text into "words" before any of this (merges never cross a word boundary):

* :func:`pretokenize` (GPT-2 style) keeps a word's leading space inside the word, so the chunks
  concatenate back to the exact text and BPE decoding is lossless.
* :func:`bert_pretokenize` (BERT style) splits on whitespace and isolates every punctuation
  character; the spaces are thrown away, so WordPiece decoding is only approximately invertible.

The subword tokenizers are plain Python (``collections.Counter`` and ``heapq``); the corpus is ASCII. Only the
word-level tokenizer at the end returns tensors.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter, defaultdict
from typing import Iterable, Mapping, Sequence

import torch

# GPT-2's split pattern, restricted to ASCII: a word with its leading space, a number, a run of
# punctuation, or whitespace (a run of spaces gives its last space to the word that follows it).
PRETOKENIZE_PATTERN = r" ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+"
_PRETOKENIZE = re.compile(PRETOKENIZE_PATTERN)
# BERT's BasicTokenizer on ASCII text: runs of letters and digits; each other printable character
# (punctuation, symbols, the underscore) is a word of its own; whitespace separates and is dropped.
_BERT_PRETOKENIZE = re.compile(r"[A-Za-z0-9]+|[^A-Za-z0-9\s]")

CONTINUATION = "##"
PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)  # ids 0..4 in every WordPiece vocabulary built here

# The ids every word-level vocabulary of the course starts with (captions in 07 and 08, transcripts in 09):
# <pad> = 0, <bos> = 1, <eos> = 2, then the words. Padding is 0 so that an all-zero row is empty.
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
# The label that the course's cross-entropy losses skip: F.cross_entropy's default ignore_index.
IGNORE_INDEX = -100


def pretokenize(text: str) -> list[str]:
    """GPT-2-style chunks of text; ``"".join(pretokenize(text)) == text`` always holds."""
    return _PRETOKENIZE.findall(text)


def bert_pretokenize(text: str) -> list[str]:
    """BERT-style words: letter/digit runs and single punctuation characters, whitespace dropped."""
    return _BERT_PRETOKENIZE.findall(text)


def word_counts(text: str, bert_style: bool = False) -> Counter:
    """How often each pre-tokenized word occurs in text (the table BPE is trained on)."""
    return Counter(bert_pretokenize(text) if bert_style else pretokenize(text))


# --------------------------------------------------------------------------------------------------
# BPE training
# --------------------------------------------------------------------------------------------------


def initial_symbols(word: str, continuation_prefix: str | None = None) -> tuple[str, ...]:
    """Split a word into characters: ("l", "o", "w"), or ("l", "##o", "##w") with a continuation prefix."""
    if continuation_prefix is None:
        return tuple(word)
    return (word[0],) + tuple(continuation_prefix + c for c in word[1:]) if word else ()


def join_pair(a: str, b: str, continuation_prefix: str | None = None) -> str:
    """The symbol a merge creates: "lo" from ("l", "o"); "##ow" from ("##o", "##w") with prefix "##"."""
    if continuation_prefix and b.startswith(continuation_prefix):
        b = b[len(continuation_prefix):]
    return a + b


def merge_pair(symbols: Sequence[str], pair: tuple[str, str], new_symbol: str | None = None) -> list[str]:
    """Replace every occurrence of the adjacent pair in symbols, scanning left to right.

    Occurrences do not overlap: ("a", "a", "a") with pair ("a", "a") becomes ["aa", "a"].
    """
    new_symbol = pair[0] + pair[1] if new_symbol is None else new_symbol
    out, i = [], 0
    while i < len(symbols):
        if i + 1 < len(symbols) and symbols[i] == pair[0] and symbols[i + 1] == pair[1]:
            out.append(new_symbol)
            i += 2
        else:
            out.append(symbols[i])
            i += 1
    return out


def pair_counts(words: Mapping[tuple[str, ...], int]) -> Counter:
    """Count every adjacent symbol pair, each word weighted by its frequency."""
    counts: Counter = Counter()
    for symbols, count in words.items():
        for pair in zip(symbols, symbols[1:]):
            counts[pair] += count
    return counts


def learn_bpe_naive(word_counts: Mapping[str, int], num_merges: int,
                    continuation_prefix: str | None = None) -> list[tuple[str, str]]:
    """BPE training, written for reading: recount all pairs after every merge.

    Each step merges the most frequent adjacent pair (ties: the smallest pair in Python's tuple
    order). Stops early when no word has two symbols left. O(num_merges × corpus) time; see learn_bpe.

    Returns:
        merges: list of (left, right) pairs, in the order they were learned.
    """
    words = {initial_symbols(w, continuation_prefix): c for w, c in word_counts.items() if w}
    merges = []
    for _ in range(num_merges):
        counts = pair_counts(words)
        if not counts:
            break
        best_count = max(counts.values())
        best = min(pair for pair, count in counts.items() if count == best_count)
        new_symbol = join_pair(*best, continuation_prefix)
        merged: dict[tuple[str, ...], int] = defaultdict(int)
        for symbols, count in words.items():
            merged[tuple(merge_pair(symbols, best, new_symbol))] += count
        words = dict(merged)
        merges.append(best)
    return merges


def learn_bpe(word_counts: Mapping[str, int], num_merges: int,
              continuation_prefix: str | None = None) -> list[tuple[str, str]]:
    """BPE training, fast: the same merges as learn_bpe_naive, with incremental pair counts.

    Keeps, for every pair, its count and the words that contain it, and a heap of candidate pairs
    (stale heap entries are skipped when popped). A merge then only touches the words containing
    the merged pair. A few hundred merges on a 1 MB corpus take about a second.

    Args:
        word_counts: word -> frequency, e.g. word_counts(text).
        num_merges: how many merges to learn (fewer if the words run out of pairs).
        continuation_prefix: None for GPT-style BPE; "##" for a WordPiece-style vocabulary in which
            every non-initial piece carries the prefix.

    Returns:
        merges: list of (left, right) pairs, in the order they were learned.
    """
    words = [list(initial_symbols(w, continuation_prefix)) for w in word_counts if w]
    freqs = [c for w, c in word_counts.items() if w]
    counts: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for index, symbols in enumerate(words):
        for pair in zip(symbols, symbols[1:]):
            counts[pair] += freqs[index]
            where[pair].add(index)
    # Python's heapq is a min-heap: (-count, pair) pops the highest count, then the smallest pair.
    heap = [(-count, pair) for pair, count in counts.items()]
    heapq.heapify(heap)
    merges = []
    while len(merges) < num_merges and heap:
        negative_count, best = heapq.heappop(heap)
        if counts.get(best, 0) != -negative_count or negative_count == 0:
            continue  # stale entry: this pair's count changed after it was pushed
        new_symbol = join_pair(*best, continuation_prefix)
        merges.append(best)
        changed: set[tuple[str, str]] = set()
        for index in list(where[best]):
            symbols, freq = words[index], freqs[index]
            for pair in zip(symbols, symbols[1:]):  # remove this word's old pairs ...
                counts[pair] -= freq
                changed.add(pair)
            symbols = merge_pair(symbols, best, new_symbol)
            words[index] = symbols
            for pair in zip(symbols, symbols[1:]):  # ... and add its new ones
                counts[pair] += freq
                where[pair].add(index)
                changed.add(pair)
        for pair in changed:
            if counts[pair] > 0:
                heapq.heappush(heap, (-counts[pair], pair))
            else:
                counts.pop(pair, None)
        counts.pop(best, None)
        where.pop(best, None)
    return merges


# --------------------------------------------------------------------------------------------------
# BPE encoding and a complete, lossless BPE tokenizer
# --------------------------------------------------------------------------------------------------


def bpe_encode_word(word: str, merges: Sequence[tuple[str, str]] | Mapping[tuple[str, str], int]) -> list[str]:
    """Split one pre-tokenized word into BPE tokens by replaying the learned merges.

    Repeatedly find the adjacent pair that was learned *earliest* (lowest rank) and merge all its
    occurrences, until no adjacent pair is a learned merge. (Applying every merge in training order
    to the whole word gives the same result.)

    Args:
        word: e.g. " lowest".
        merges: the learned merges in order, or a dict pair -> rank.

    Returns:
        tokens: e.g. [" low", "est"]; "".join(tokens) == word.
    """
    ranks = merges if isinstance(merges, Mapping) else {pair: rank for rank, pair in enumerate(merges)}
    symbols = list(word)
    while len(symbols) > 1:
        best = min(zip(symbols, symbols[1:]), key=lambda pair: ranks.get(pair, float("inf")))
        if best not in ranks:
            break
        symbols = merge_pair(symbols, best)
    return symbols


class BPETokenizer:
    """A lossless BPE tokenizer: pretokenize(), then bpe_encode_word() on each chunk.

    The vocabulary is the base alphabet (every character of the training text) followed by one
    token per merge, in merge order. decode(encode(text)) == text for any text over the alphabet.
    """

    def __init__(self, merges: Sequence[tuple[str, str]], alphabet: Iterable[str]):
        self.merges = list(merges)
        self.ranks = {pair: rank for rank, pair in enumerate(self.merges)}
        self.vocab = sorted(set(alphabet)) + [a + b for a, b in self.merges]
        self.token_to_id = {token: i for i, token in enumerate(self.vocab)}
        self._cache: dict[str, list[str]] = {}

    @classmethod
    def train(cls, text: str, num_merges: int) -> "BPETokenizer":
        """Learn num_merges merges on the word-frequency table of text."""
        return cls(learn_bpe(word_counts(text), num_merges), alphabet=set(text))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        """text -> list of token strings (chunks never merge across a pre-tokenization boundary)."""
        tokens = []
        for chunk in pretokenize(text):
            if chunk not in self._cache:
                self._cache[chunk] = bpe_encode_word(chunk, self.ranks)
            tokens.extend(self._cache[chunk])
        return tokens

    def encode(self, text: str) -> list[int]:
        """text -> token ids. Raises KeyError on a character outside the alphabet."""
        return [self.token_to_id[token] for token in self.tokenize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """token ids -> text: concatenate the tokens (they carry their own spaces)."""
        return "".join(self.vocab[i] for i in ids)


# --------------------------------------------------------------------------------------------------
# WordPiece
# --------------------------------------------------------------------------------------------------


def wordpiece_encode_word(word: str, vocab: Iterable[str] | Mapping[str, int], unk_token: str = UNK,
                          prefix: str = CONTINUATION, max_chars: int = 100) -> list[str]:
    """Greedy longest-match-first WordPiece (BERT's WordpieceTokenizer) on one word.

    Take the longest vocabulary entry that is a prefix of the word; then, from where it ended, the
    longest entry "##piece" whose piece continues the word; and so on. If at some point nothing
    matches, or the word is longer than max_chars, the whole word becomes [unk_token].

    Returns:
        pieces: e.g. ["un", "##aff", "##able"] for "unaffable".
    """
    if len(word) > max_chars:
        return [unk_token]
    pieces, start = [], 0
    while start < len(word):
        end, piece = len(word), None
        while start < end:
            candidate = word[start:end] if start == 0 else prefix + word[start:end]
            if candidate in vocab:
                piece = candidate
                break
            end -= 1
        if piece is None:
            return [unk_token]
        pieces.append(piece)
        start = end
    return pieces


def wordpiece_vocab(word_counts: Mapping[str, int], num_merges: int) -> list[str]:
    """A WordPiece vocabulary: the special tokens, the characters, the "##" characters, and the merges.

    Every character of the corpus is in it; "##c" only for the characters c that occur inside a word.

    Learned with BPE on words split as ("l", "##o", "##w"), which is how Hugging Face's
    WordPieceTrainer builds its vocabulary too. (Google's original WordPiece picks merges by the
    likelihood gain count(ab) / (count(a) count(b)) rather than by count(ab).)
    """
    merges = learn_bpe(word_counts, num_merges, continuation_prefix=CONTINUATION)
    characters = sorted({c for w in word_counts for c in w})
    continuing = sorted({c for w in word_counts for c in w[1:]})  # e.g. no "##." : "." is always a word of its own
    alphabet = characters + [CONTINUATION + c for c in continuing]
    learned = [join_pair(a, b, CONTINUATION) for a, b in merges]
    vocab = list(SPECIAL_TOKENS)
    for token in alphabet + learned:
        if token not in vocab:
            vocab.append(token)
    return vocab


class WordPieceTokenizer:
    """BERT-style tokenizer: bert_pretokenize(), then wordpiece_encode_word() on each word.

    vocab[0:5] are the special tokens [PAD], [UNK], [CLS], [SEP], [MASK].
    """

    def __init__(self, vocab: Sequence[str]):
        assert tuple(vocab[: len(SPECIAL_TOKENS)]) == SPECIAL_TOKENS, "the vocabulary must start with SPECIAL_TOKENS"
        self.vocab = list(vocab)
        self.token_to_id = {token: i for i, token in enumerate(self.vocab)}
        self._cache: dict[str, list[str]] = {}
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = range(len(SPECIAL_TOKENS))

    @classmethod
    def train(cls, text: str, num_merges: int) -> "WordPieceTokenizer":
        return cls(wordpiece_vocab(word_counts(text, bert_style=True), num_merges))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def tokenize(self, text: str) -> list[str]:
        tokens = []
        for word in bert_pretokenize(text):
            if word not in self._cache:
                self._cache[word] = wordpiece_encode_word(word, self.token_to_id)
            tokens.extend(self._cache[word])
        return tokens

    def encode(self, text: str) -> list[int]:
        return [self.token_to_id[token] for token in self.tokenize(text)]

    def decode(self, ids: Iterable[int]) -> str:
        """Join pieces: "##" pieces attach to the previous one, words are separated by spaces.

        Not the exact inverse of encode: the pre-tokenizer dropped the original spacing, so
        "f(x)" comes back as "f ( x )".
        """
        text = ""
        for i in ids:
            token = self.vocab[i]
            text += token[len(CONTINUATION):] if token.startswith(CONTINUATION) else (" " + token if text else token)
        return text


def tokens_per_word(tokenize, text: str) -> float:
    """Compression: tokens produced per whitespace-separated word of text (lower = more compressed)."""
    return len(tokenize(text)) / max(1, len(text.split()))


# --------------------------------------------------------------------------------------------------
# Word-level tokenization for small closed vocabularies (the captions of notebooks 07 and 08)
# --------------------------------------------------------------------------------------------------



class WordTokenizer:
    """One id per word of a closed vocabulary, wrapped as CLIP wraps a prompt: <bos> words <eos> <pad>...

    The vocabulary is <pad> = PAD_ID, <bos> = BOS_ID, <eos> = EOS_ID, then the words in sorted order,
    so the ids depend only on the set of words. CLIP's BPE tokenizer (49,408 tokens) also wraps every
    prompt in <|startoftext|> ... <|endoftext|> and pads to 77 tokens: the empty prompt "" becomes
    [<bos>, <eos>], never an all-padding row, so attention always has a key to look at. A word outside
    the vocabulary raises KeyError (a caption vocabulary is closed: there is no <unk>).

        tokenizer = WordTokenizer(["a", "circle", "red"])
        tokenizer.encode("a red circle")            # [1, 3, 5, 4, 2]
        ids, mask = tokenizer(["a red circle", ""])  # (2, 5) ids, (2, 5) bool mask (True = real token)
        tokenizer.decode(ids[0])                     # "a red circle"
    """

    SPECIALS = ("<pad>", "<bos>", "<eos>")

    def __init__(self, words: Iterable[str]):
        self.vocab = list(self.SPECIALS) + sorted(set(words))
        self.word_to_id = {word: i for i, word in enumerate(self.vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        """"a red circle" -> [BOS_ID, id(a), id(red), id(circle), EOS_ID]."""
        return [BOS_ID] + [self.word_to_id[word] for word in text.split()] + [EOS_ID]

    def __call__(self, texts: Sequence[str], length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch and right-pad it with <pad>, as Hugging Face's ``tokenizer(texts)`` does.

        length: the padded length (a model's context length); None pads to the longest text.
        Returns ids (len(texts), length) int64 and mask (len(texts), length) bool, True = a real token
        (the attention mask: padding must receive no weight).
        """
        rows = [self.encode(text) for text in texts]
        length = max(map(len, rows)) if length is None else length
        for text, row in zip(texts, rows):
            if len(row) > length:
                raise ValueError(f"{text!r} has {len(row)} tokens, more than length={length}")
        ids = torch.tensor([row + [PAD_ID] * (length - len(row)) for row in rows], dtype=torch.int64)
        return ids, ids != PAD_ID

    def decode(self, ids: torch.Tensor | Iterable[int]) -> str:
        """The words up to the first <eos>; <pad> and <bos> are dropped."""
        words = []
        for i in (ids.tolist() if isinstance(ids, torch.Tensor) else ids):
            if i == EOS_ID:
                break
            if i >= len(self.SPECIALS):
                words.append(self.vocab[i])
        return " ".join(words)
