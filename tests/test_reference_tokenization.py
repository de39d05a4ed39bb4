"""The tokenization reference against independent oracles: Hugging Face `tokenizers`, a naive BPE, hand-worked examples."""

import random

import pytest

from gradelib.data import text_splits
from gradelib.reference import tokenization as tk

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def corpus():
    train, val = text_splits()
    return train[:300_000], val[:40_000]


def test_textbook_bpe_merges():
    # Sennrich et al. (2016)'s example, counted by hand: es (9), est (9), lo (7), low (7), ...
    merges = tk.learn_bpe_naive({"low": 5, "lower": 2, "newest": 6, "widest": 3}, 4)
    assert merges == [("e", "s"), ("es", "t"), ("l", "o"), ("lo", "w")]
    assert tk.bpe_encode_word("lowest", merges) == ["low", "est"]


def test_merge_pair_does_not_overlap():
    assert tk.merge_pair(["a", "a", "a"], ("a", "a")) == ["aa", "a"]
    assert tk.merge_pair(list("abab"), ("a", "b")) == ["ab", "ab"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fast_bpe_equals_naive_bpe(seed):
    rng = random.Random(seed)
    counts = {"".join(rng.choice("abcd") for _ in range(rng.randint(1, 8))): rng.randint(1, 20) for _ in range(80)}
    assert tk.learn_bpe(counts, 60) == tk.learn_bpe_naive(counts, 60)
    assert tk.learn_bpe(counts, 60, "##") == tk.learn_bpe_naive(counts, 60, "##")


def test_fast_bpe_equals_naive_bpe_on_the_corpus(corpus):
    counts = dict(tk.word_counts(corpus[0][:60_000]).most_common(400))
    assert tk.learn_bpe(counts, 80) == tk.learn_bpe_naive(counts, 80)


def test_encoding_by_rank_equals_applying_merges_in_order():
    rng = random.Random(3)
    counts = {"".join(rng.choice("abc") for _ in range(rng.randint(2, 9))): rng.randint(1, 9) for _ in range(50)}
    merges = tk.learn_bpe(counts, 25)
    for _ in range(200):
        word = "".join(rng.choice("abc") for _ in range(rng.randint(1, 12)))
        symbols = list(word)
        for pair in merges:
            symbols = tk.merge_pair(symbols, pair)
        assert tk.bpe_encode_word(word, merges) == symbols


def test_pretokenizers_partition_the_text(corpus):
    _, val = corpus
    assert "".join(tk.pretokenize(val)) == val
    bert_words = [w for w, _ in tokenizers.pre_tokenizers.BertPreTokenizer().pre_tokenize_str(val)]
    assert tk.bert_pretokenize(val) == bert_words


def test_bpe_round_trip_and_agreement_with_hugging_face(corpus):
    train, val = corpus
    alphabet = sorted(set(train) | set(val))
    ours = tk.BPETokenizer(tk.learn_bpe(tk.word_counts(train), 200), alphabet)
    assert ours.decode(ours.encode(val)) == val
    hf = tokenizers.Tokenizer(tokenizers.models.BPE())
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Split(tokenizers.Regex(tk.PRETOKENIZE_PATTERN), behavior="isolated")
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=len(alphabet) + 200, initial_alphabet=alphabet,
                                             limit_alphabet=len(alphabet), show_progress=False)
    hf.train_from_iterator([train], trainer)
    overlap = len(set(hf.get_vocab()) & set(ours.vocab)) / len(ours.vocab)
    assert overlap > 0.95  # the same algorithm; only tie-breaking between equal counts may differ
    assert abs(len(hf.encode(val).tokens) / len(ours.encode(val)) - 1) < 0.02


def test_wordpiece_matches_hugging_face_on_the_same_vocabulary(corpus):
    train, val = corpus
    vocab = tk.wordpiece_vocab(tk.word_counts(train, bert_style=True), 300)
    assert vocab[:5] == list(tk.SPECIAL_TOKENS) and len(set(vocab)) == len(vocab)
    ours = tk.WordPieceTokenizer(vocab)
    hf = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab={t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                                          max_input_chars_per_word=100))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    assert ours.tokenize(val) == hf.encode(val).tokens
    # Without the pieces that continue a word with "q", "Iraqi" has no tokenization: one [UNK] for both.
    no_q = [t for t in vocab if not (t.startswith("##") and "q" in t)]
    ours, hf = tk.WordPieceTokenizer(no_q), tokenizers.Tokenizer(tokenizers.models.WordPiece(
        vocab={t: i for i, t in enumerate(no_q)}, unk_token="[UNK]"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    assert ours.tokenize("in Iraqi text") == hf.encode("in Iraqi text").tokens  and ours.tokenize("in Iraqi text")[1] == "[UNK]"


def test_wordpiece_by_hand():
    vocab = {"un", "##aff", "##able", "##a", "[UNK]"}
    assert tk.wordpiece_encode_word("unaffable", vocab) == ["un", "##aff", "##able"]
    assert tk.wordpiece_encode_word("unaffablex", vocab) == ["[UNK]"]
    assert tk.wordpiece_encode_word("a" * 101, vocab | {"a"}) == ["[UNK]"]
    wp = tk.WordPieceTokenizer(list(tk.SPECIAL_TOKENS) + ["f", "(", "x", ")", "un", "##able"])
    assert wp.decode(wp.encode("f(x) unable")) == "f ( x ) unable"


def test_tokens_per_word():
    assert tk.tokens_per_word(list, "ab cd") == 2.5
