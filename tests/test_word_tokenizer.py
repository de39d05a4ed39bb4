"""tokenization.WordTokenizer, the one word-level tokenizer of notebooks 07 and 08: the ids each notebook
had before the two caption tokenizers were merged, round trips, padding and the errors."""

import pytest
import torch

from gradelib.data import ALL_COMBINATIONS, caption_for, captioned_shapes
from gradelib.reference import clip
from gradelib.reference import latent_diffusion as ld
from gradelib.reference.tokenization import BOS_ID, EOS_ID, PAD_ID, WordTokenizer


def test_notebook_07_keeps_its_ids():
    tokenizer = WordTokenizer(ld.CAPTION_WORDS)
    assert tokenizer.vocab == ["<pad>", "<bos>", "<eos>", "a", "at", "blue", "bottom", "circle", "green", "left", "red",
                               "right", "square", "the", "top", "triangle"]
    ids, mask = tokenizer(["a red circle at the top left", ""], length=9)
    assert ids.tolist() == [[1, 3, 10, 7, 4, 13, 14, 9, 2], [1, 2, 0, 0, 0, 0, 0, 0, 0]]
    assert mask.tolist() == [[True] * 9, [True, True] + [False] * 7]


def test_notebook_08_keeps_its_ids():
    tokenizer = WordTokenizer(clip.CAPTION_WORDS)
    assert tokenizer.vocab_size == 3 + 17 and tokenizer.vocab[3:8] == ["a", "at", "blue", "bottom", "circle"]
    ids, mask = tokenizer(["a photo of a green square at the bottom right", "a drawing of a triangle"])
    assert ids.tolist() == [[1, 3, 12, 11, 3, 9, 16, 4, 17, 6, 15, 2], [1, 3, 8, 11, 3, 19, 2, 0, 0, 0, 0, 0]]
    assert mask.sum(1).tolist() == [12, 7]


@pytest.mark.parametrize("words, captions", [
    (ld.CAPTION_WORDS, [caption_for(*combination) for combination in ALL_COMBINATIONS]),
    (clip.CAPTION_WORDS, clip.templated_captions(captioned_shapes(100, seed=0), torch.Generator().manual_seed(0))),
])
def test_every_caption_round_trips(words, captions):
    tokenizer = WordTokenizer(words)
    ids, mask = tokenizer(captions)
    assert [tokenizer.decode(row) for row in ids] == captions
    assert (ids[:, 0] == BOS_ID).all() and ((ids == EOS_ID).sum(1) == 1).all()
    assert torch.equal(mask, ids != PAD_ID) and [tokenizer.encode(c) for c in captions[:3]] == [row[m].tolist() for row, m in zip(ids[:3], mask[:3])]


def test_the_vocabulary_depends_only_on_the_set_of_words():
    assert WordTokenizer(["red", "a", "red", "circle"]).vocab == WordTokenizer(["a", "circle", "red"]).vocab


def test_decode_stops_at_eos_and_drops_specials():
    tokenizer = WordTokenizer(["a", "circle", "red"])
    assert tokenizer.encode("a red circle") == [1, 3, 5, 4, 2]
    assert tokenizer.decode([1, 3, 5, 2, 4, 4]) == "a red"  # greedy generation may go on after <eos>
    assert tokenizer.decode(torch.tensor([1, 4, 0, 2])) == "circle"


def test_too_long_and_unknown_captions_raise():
    tokenizer = WordTokenizer(["a", "circle", "red"])
    with pytest.raises(ValueError, match="more than length=4"):
        tokenizer(["a red circle"], length=4)
    with pytest.raises(KeyError):
        tokenizer.encode("a blue circle")
