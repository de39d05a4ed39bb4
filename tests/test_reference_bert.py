"""The BERT reference against independent oracles: Hugging Face `tokenizers`' BERT template, torch's
cross-entropy, explicit loops, large-sample statistics and published parameter counts."""

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from gradelib.reference import bert as ref
from gradelib.reference import tokenization as tk

tokenizers = pytest.importorskip("tokenizers")


def test_pair_input_matches_the_bert_template_of_hugging_face():
    vocab = list(tk.SPECIAL_TOKENS) + ["the", "cat", "sat", "on", "mat", "##s", "."]
    ours = tk.WordPieceTokenizer(vocab)
    hf = tokenizers.Tokenizer(tokenizers.models.WordPiece(vocab={t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    hf.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", ref.CLS_ID), ("[SEP]", ref.SEP_ID)])
    a, b = "the cat sat", "on the mats."
    input_ids, segment_ids = ref.make_pair_input(ours.encode(a), ours.encode(b))
    expected = hf.encode(a, b)
    assert input_ids.tolist() == expected.ids
    assert segment_ids.tolist() == expected.type_ids
    single_ids, single_segments = ref.make_pair_input(ours.encode(a), None)
    assert single_ids.tolist() == hf.encode(a).ids and single_segments.tolist() == hf.encode(a).type_ids


def test_embed_input_is_the_sum_of_three_lookups():
    torch.manual_seed(0)
    token, segment, position = nn.Embedding(20, 6), nn.Embedding(2, 6), nn.Embedding(10, 6)
    ids = torch.randint(0, 20, (2, 7))
    segments = torch.tensor([[0, 0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1, 1]])
    out = ref.embed_input(ids, segments, token, segment, position)
    for b in range(2):
        for t in range(7):
            want = token.weight[ids[b, t]] + segment.weight[segments[b, t]] + position.weight[t]
            assert torch.allclose(out[b, t], want)


def test_mask_tokens_rates_on_a_large_sample():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(ref.NUM_SPECIAL, 500, (400, 256), generator=gen)
    ids[:, 0], ids[:, -1], ids[:, 100:110] = ref.CLS_ID, ref.SEP_ID, ref.PAD_ID
    corrupted, labels = ref.mask_tokens(ids, 500, gen)
    special = ids < ref.NUM_SPECIAL
    selected = labels != ref.IGNORE_INDEX
    assert not (selected & special).any() and torch.equal(corrupted[special], ids[special])
    assert torch.equal(labels[selected], ids[selected]) and torch.equal(corrupted[~selected], ids[~selected])
    n, k = int((~special).sum()), int(selected.sum())
    assert abs(k / n - 0.15) < 4 * math.sqrt(0.15 * 0.85 / n)
    masked = float((corrupted[selected] == ref.MASK_ID).float().mean())
    kept = float((corrupted[selected] == ids[selected]).float().mean())
    assert abs(masked - 0.8) < 4 * math.sqrt(0.16 / k)
    assert abs(kept - (0.1 + 0.1 / 495)) < 4 * math.sqrt(0.09 / k)
    random_tokens = corrupted[selected & (corrupted != ids) & (corrupted != ref.MASK_ID)]
    assert random_tokens.min() >= ref.NUM_SPECIAL and random_tokens.max() < 500


def test_mlm_loss_equals_cross_entropy_with_ignore_index():
    torch.manual_seed(1)
    logits = torch.randn(3, 9, 15)
    labels = torch.full((3, 9), ref.IGNORE_INDEX)
    labels[0, 2], labels[0, 5], labels[2, 1] = 4, 7, 11
    want = F.cross_entropy(logits.reshape(-1, 15), labels.reshape(-1), ignore_index=-100)
    assert torch.allclose(ref.mlm_loss(logits, labels), want)
    # The notes' formula for one sequence: -(1/|M|) sum over masked positions of log p.
    log_p = logits[0].log_softmax(-1)
    assert torch.allclose(ref.mlm_loss(logits[:1], labels[:1]), -(log_p[2, 4] + log_p[5, 7]) / 2)


def test_nsp_pairs_statistics():
    documents = [[f"{d}-{s}" for s in range(1 + (d * 7) % 9)] for d in range(400)]
    pairs = ref.nsp_pairs(documents, torch.Generator().manual_seed(0))
    assert len(pairs) == sum(len(d) - 1 for d in documents)
    for a, b, is_next in pairs:
        (da, sa), (db, sb) = (tuple(map(int, s.split("-"))) for s in (a, b))
        assert (db, sb) == (da, sa + 1) if is_next else db != da
    rate = sum(p[2] for p in pairs) / len(pairs)
    assert abs(rate - 0.5) < 4 * math.sqrt(0.25 / len(pairs))
    assert ref.nsp_loss(torch.zeros(4, 2), torch.tensor([0, 1, 1, 0])).item() == pytest.approx(math.log(2))


def test_parameter_count_matches_bert_base_and_the_module():
    # bert-base-uncased (BertModel, pooler included) has 109,482,240 parameters; BERT-large 335,141,888.
    assert ref.bert_parameter_count(30522, 768, 12, 3072) == 109_482_240
    assert ref.bert_parameter_count(30522, 1024, 24, 4096) == 335_141_888
    config = ref.BertConfig(vocab_size=100, d_model=32, num_heads=4, num_layers=2, d_ff=64, max_len=16)
    model = ref.TinyBert(config)
    encoder = [model.embeddings, model.blocks, model.pooler]
    assert sum(p.numel() for m in encoder for p in m.parameters()) == ref.bert_parameter_count(100, 32, 2, 64, max_len=16)


@pytest.mark.parametrize("norm_first", [False, True])
def test_tiny_bert_is_bidirectional_and_ignores_padding(norm_first):
    torch.manual_seed(0)
    model = ref.TinyBert(ref.BertConfig(vocab_size=50, d_model=32, num_heads=4, num_layers=2, d_ff=64, max_len=16,
                                        dropout=0.0, norm_first=norm_first)).eval()
    ids = torch.tensor([[ref.CLS_ID, 10, 11, 12, ref.SEP_ID, ref.PAD_ID, ref.PAD_ID]])
    with torch.no_grad():
        h = model(ids)
        later = ids.clone()
        later[0, 3] = 20
        assert not torch.allclose(model(later)[0, 1], h[0, 1])  # position 1 sees position 3: not causal
        short = model(ids[:, :5])
        assert torch.allclose(short, h[:, :5], atol=1e-5)  # padding changes nothing for the real tokens
        assert model.mlm_logits(h).shape == (1, 7, 50) and model.nsp_logits(h).shape == (1, 2)
        assert ref.BertClassifier(model, 3)(ids).shape == (1, 3)


def test_masked_accuracy_and_truncation():
    logits = torch.tensor([[[0.0, 5.0], [5.0, 0.0], [0.0, 5.0]]])
    labels = torch.tensor([[1, ref.IGNORE_INDEX, 0]])
    assert ref.masked_accuracy(logits, labels) == 0.5
    a, b = ref.truncate_pair(list(range(10)), list(range(3)), 8)
    assert (len(a), len(b)) == (5, 3)
    assert ref.perplexity_from_nll(math.log(7.0)) == pytest.approx(7.0)


def test_split_documents():
    text = "First sentence is here. Second one follows now!\n\nShort.\n\nA third paragraph with words."
    assert ref.split_documents(text) == [["First sentence is here.", "Second one follows now!"], ["A third paragraph with words."]]
    assert ref.split_documents(text, paragraphs_per_document=3) == [
        ["First sentence is here.", "Second one follows now!", "A third paragraph with words."]]
