"""BERT from the pieces of notebook 01: an encoder-only, bidirectional Transformer pretrained with
masked language modelling (MLM) and next-sentence prediction (NSP), then fine-tuned on [CLS].

Devlin et al. (2019), *BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding*. The token ids follow gradelib.reference.tokenization: ids 0..4 are
[PAD], [UNK], [CLS], [SEP], [MASK]; ordinary tokens start at NUM_SPECIAL.

Input:    [CLS] A1 A2 … [SEP] B1 B2 … [SEP]      segments 0 0 … 0 1 1 … 1, positions 0 1 2 …
Embedding: token(id) + segment(seg) + position(pos), then LayerNorm and dropout.
Encoder:  a stack of TransformerBlocks with no causal mask (each token sees both sides); only
          [PAD] keys are masked.
Heads:    MLM: hidden -> dense + GELU + LayerNorm -> logits over the vocabulary (decoder tied to
          the token embedding); NSP and classification: the [CLS] hidden state -> pooler
          (dense + tanh) -> linear.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from gradelib.reference.attention import TransformerBlock
from gradelib.reference.tokenization import IGNORE_INDEX, SPECIAL_TOKENS  # IGNORE_INDEX: the label the MLM loss skips

# The WordPiece vocabulary's special tokens [PAD], [UNK], [CLS], [SEP], [MASK] are its first ids.
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = range(len(SPECIAL_TOKENS))
NUM_SPECIAL = len(SPECIAL_TOKENS)  # ids below this are special tokens: never selected for masking, never a random replacement


# --------------------------------------------------------------------------------------------------
# Text -> documents of sentences
# --------------------------------------------------------------------------------------------------

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def split_documents(text: str, paragraphs_per_document: int = 1, min_words: int = 4) -> list[list[str]]:
    """Split text into documents, each a list of sentences (whitespace collapsed to single spaces).

    Paragraphs are separated by blank lines; a document is a run of paragraphs_per_document
    consecutive paragraphs. Sentences end at ".", "!" or "?" followed by a space and a capital
    letter; sentences with fewer than min_words words (headings, code fragments) are dropped, and
    so are documents left empty.
    """
    paragraphs = []
    for paragraph in text.split("\n\n"):
        flat = " ".join(paragraph.split())
        paragraphs.append([s for s in _SENTENCE_END.split(flat) if len(s.split()) >= min_words])
    documents = []
    for start in range(0, len(paragraphs), paragraphs_per_document):
        sentences = [s for p in paragraphs[start:start + paragraphs_per_document] for s in p]
        if sentences:
            documents.append(sentences)
    return documents


# --------------------------------------------------------------------------------------------------
# Input construction and embeddings
# --------------------------------------------------------------------------------------------------


def make_pair_input(ids_a: Sequence[int], ids_b: Sequence[int] | None, cls_id: int = CLS_ID,
                    sep_id: int = SEP_ID) -> tuple[Tensor, Tensor]:
    """[CLS] A [SEP] B [SEP] and its segment ids (0 up to and including the first [SEP], 1 after).

    With ids_b None, a single segment: [CLS] A [SEP], all segment ids 0.

    Returns:
        input_ids: (len(A) + len(B) + 3,) int64.
        segment_ids: (same,) int64 of 0s and 1s.
    """
    ids_a = [int(i) for i in ids_a]
    first = [cls_id] + ids_a + [sep_id]
    second = [] if ids_b is None else [int(i) for i in ids_b] + [sep_id]
    input_ids = torch.tensor(first + second, dtype=torch.int64)
    segment_ids = torch.tensor([0] * len(first) + [1] * len(second), dtype=torch.int64)
    return input_ids, segment_ids


def embed_input(input_ids: Tensor, segment_ids: Tensor, token_embedding: nn.Embedding,
                segment_embedding: nn.Embedding, position_embedding: nn.Embedding) -> Tensor:
    """BERT's input representation: the sum of three learned embeddings.

    Args:
        input_ids, segment_ids: (B, T) int64.
        token_embedding: nn.Embedding(vocab_size, D); segment_embedding: nn.Embedding(2, D);
        position_embedding: nn.Embedding(max_len, D), looked up at positions 0 .. T-1.

    Returns:
        (B, T, D) token(input_ids) + segment(segment_ids) + position(0..T-1).
    """
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    return token_embedding(input_ids) + segment_embedding(segment_ids) + position_embedding(positions)[None]


class BertEmbeddings(nn.Module):
    """embed_input(), then LayerNorm and dropout, as in BERT."""

    def __init__(self, vocab_size: int, d_model: int, max_len: int, num_segments: int = 2, dropout: float = 0.1):
        super().__init__()
        self.token = nn.Embedding(vocab_size, d_model, padding_idx=PAD_ID)
        self.segment = nn.Embedding(num_segments, d_model)
        self.position = nn.Embedding(max_len, d_model)
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: Tensor, segment_ids: Tensor) -> Tensor:
        """(B, T), (B, T) -> (B, T, d_model)."""
        return self.dropout(self.norm(embed_input(input_ids, segment_ids, self.token, self.segment, self.position)))


# --------------------------------------------------------------------------------------------------
# Masked language modelling
# --------------------------------------------------------------------------------------------------


def mask_tokens(input_ids: Tensor, vocab_size: int, generator: torch.Generator | None = None,
                mask_prob: float = 0.15) -> tuple[Tensor, Tensor]:
    """BERT's MLM corruption.

    Each non-special position (id >= NUM_SPECIAL) is selected independently with probability
    mask_prob. Of the selected positions, 80% become [MASK], 10% a token drawn uniformly from the
    ordinary tokens NUM_SPECIAL .. vocab_size-1, and 10% keep their token. Special tokens ([PAD],
    [CLS], [SEP], …) are never selected.

    Args:
        input_ids: (B, T) int64.
        generator: a torch.Generator on input_ids' device, for reproducible masks (optional).

    Returns:
        corrupted: (B, T) int64, the model's input.
        labels: (B, T) int64, the original id at selected positions and IGNORE_INDEX (-100) elsewhere.
    """
    def uniform() -> Tensor:
        return torch.rand(input_ids.shape, generator=generator, device=input_ids.device)

    selected = (uniform() < mask_prob) & (input_ids >= NUM_SPECIAL)
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = uniform()  # < 0.8: [MASK]; 0.8 .. 0.9: random token; >= 0.9: unchanged
    random_tokens = torch.randint(NUM_SPECIAL, vocab_size, input_ids.shape, generator=generator, device=input_ids.device)
    corrupted = torch.where(selected & (action < 0.8), torch.full_like(input_ids, MASK_ID), input_ids)
    corrupted = torch.where(selected & (action >= 0.8) & (action < 0.9), random_tokens, corrupted)
    return corrupted, labels


def mlm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """The notes' L_MLM: mean negative log-likelihood over the masked positions only.

        L = -(1/|M|) Σ_{i ∈ M} log p(x_i | x_corrupted),   M = {positions with labels != -100}

    over all masked positions of the batch (each masked token counts once). For a single sequence
    this is exactly the notes' formula.

    Args:
        logits: (B, T, V); labels: (B, T) with IGNORE_INDEX at unmasked positions.

    Returns:
        scalar tensor.
    """
    log_probs = F.log_softmax(logits.float(), dim=-1)
    masked = labels != IGNORE_INDEX
    nll = -log_probs[masked].gather(-1, labels[masked][:, None]).squeeze(-1)
    return nll.mean()


# --------------------------------------------------------------------------------------------------
# Next-sentence prediction
# --------------------------------------------------------------------------------------------------


def nsp_pairs(documents: Sequence[Sequence[object]], generator: torch.Generator | None = None) -> list[tuple[object, object, int]]:
    """BERT's NSP examples: one pair (A, B, is_next) for every sentence A that has a successor.

    Walks the documents in order; for sentence i of a document (i < len - 1), with probability 1/2
    B is sentence i + 1 of the same document and is_next = 1; otherwise B is a random sentence of a
    random *other* document and is_next = 0. Needs at least two documents.

    Returns:
        list of (sentence_a, sentence_b, is_next) with is_next in {0, 1}.
    """
    assert len(documents) >= 2, "random next sentences must come from another document"
    pairs = []
    for d, document in enumerate(documents):
        for i in range(len(document) - 1):
            if torch.rand((), generator=generator).item() < 0.5:
                pairs.append((document[i], document[i + 1], 1))
                continue
            other = int(torch.randint(len(documents) - 1, (), generator=generator))
            other += other >= d  # any document but this one
            sentences = documents[other]
            j = int(torch.randint(len(sentences), (), generator=generator))
            pairs.append((document[i], sentences[j], 0))
    return pairs


def nsp_loss(logits: Tensor, is_next: Tensor) -> Tensor:
    """The notes' L_NSP = -log P(d | x, y), averaged over the batch: cross-entropy of (B, 2) logits."""
    return F.cross_entropy(logits, is_next)


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BertConfig:
    vocab_size: int
    d_model: int = 128
    num_heads: int = 4
    num_layers: int = 2
    d_ff: int = 512
    max_len: int = 64
    dropout: float = 0.1
    norm_first: bool = False  # BERT is post-LN; pre-LN trains faster and more stably when small and short


class TinyBert(nn.Module):
    """A small BERT: BertEmbeddings, TransformerBlocks (post-LN as in BERT, or pre-LN), MLM and NSP heads.

    With pre-LN blocks the embeddings are not normalised twice: a final LayerNorm follows the last block.
    """

    def __init__(self, config: BertConfig, attention_cls: type[nn.Module] | None = None):
        super().__init__()
        self.config = config
        extra = {} if attention_cls is None else {"attention_cls": attention_cls}
        self.embeddings = BertEmbeddings(config.vocab_size, config.d_model, config.max_len, dropout=config.dropout)
        self.blocks = nn.ModuleList(  # BERT's feed-forward uses GELU
            TransformerBlock(config.d_model, config.num_heads, config.d_ff, config.dropout, norm_first=config.norm_first,
                             activation="gelu", **extra)
            for _ in range(config.num_layers)
        )
        self.final_norm = nn.LayerNorm(config.d_model) if config.norm_first else nn.Identity()
        self.mlm_transform = nn.Sequential(nn.Linear(config.d_model, config.d_model), nn.GELU(), nn.LayerNorm(config.d_model))
        self.mlm_bias = nn.Parameter(torch.zeros(config.vocab_size))
        self.pooler = nn.Sequential(nn.Linear(config.d_model, config.d_model), nn.Tanh())
        self.nsp_head = nn.Linear(config.d_model, 2)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """BERT's initialisation: N(0, 0.02) weights, zero biases."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, input_ids: Tensor, segment_ids: Tensor | None = None) -> Tensor:
        """(B, T) ids (and segments, default all 0) -> hidden states (B, T, d_model).

        Bidirectional: no causal mask; queries never attend to [PAD] keys.
        """
        if segment_ids is None:
            segment_ids = torch.zeros_like(input_ids)
        mask = (input_ids != PAD_ID)[:, None, None, :]  # (B, 1, 1, T) True = may attend
        x = self.embeddings(input_ids, segment_ids)
        for block in self.blocks:
            x = block(x, mask=mask)
        return self.final_norm(x)

    def mlm_logits(self, hidden: Tensor) -> Tensor:
        """(..., d_model) -> (..., vocab_size); the output matrix is the token embedding (weight tying)."""
        return self.mlm_transform(hidden) @ self.embeddings.token.weight.T + self.mlm_bias

    def pooled(self, hidden: Tensor) -> Tensor:
        """The [CLS] summary: pooler(hidden[:, 0]) -> (B, d_model)."""
        return self.pooler(hidden[:, 0])

    def nsp_logits(self, hidden: Tensor) -> Tensor:
        """(B, T, d_model) -> (B, 2) logits for [not next, is next]."""
        return self.nsp_head(self.pooled(hidden))

    def attention_maps(self) -> list[Tensor]:
        """Self-attention weights of the last forward(), one (B, H, T, T) tensor per layer."""
        return [block.last_attention_weights for block in self.blocks]


class BertClassifier(nn.Module):
    """Fine-tuning: a TinyBert and a fresh linear layer on its pooled [CLS] state."""

    def __init__(self, bert: TinyBert, num_classes: int, dropout: float = 0.1):
        super().__init__()
        self.bert = bert
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(bert.config.d_model, num_classes)

    def forward(self, input_ids: Tensor, segment_ids: Tensor | None = None) -> Tensor:
        """(B, T) -> (B, num_classes) logits."""
        return self.classifier(self.dropout(self.bert.pooled(self.bert(input_ids, segment_ids))))


def pad_batch(sequences: Sequence[Tensor], pad_value: int = PAD_ID) -> Tensor:
    """Right-pad 1-D int64 tensors to (B, max length)."""
    return nn.utils.rnn.pad_sequence(list(sequences), batch_first=True, padding_value=pad_value)


def truncate_pair(ids_a: list[int], ids_b: list[int], max_tokens: int) -> tuple[list[int], list[int]]:
    """Trim the longer of A and B from the end until len(A) + len(B) <= max_tokens (BERT's rule)."""
    ids_a, ids_b = list(ids_a), list(ids_b)
    while len(ids_a) + len(ids_b) > max_tokens:
        if len(ids_a) >= len(ids_b):
            ids_a.pop()
        else:
            ids_b.pop()
    return ids_a, ids_b


def bert_parameter_count(vocab_size: int, d_model: int, num_layers: int, d_ff: int, max_len: int = 512,
                         num_segments: int = 2, pooler: bool = True) -> int:
    """Parameters of BERT's encoder (embeddings, layers, pooler; without the pretraining heads).

    Embeddings: (V + max_len + segments) × D, plus a LayerNorm (2D).
    Each layer: attention 4(D² + D), LayerNorm 2D, FFN D·d_ff + d_ff + d_ff·D + D, LayerNorm 2D.
    Pooler: D² + D.
    """
    embeddings = (vocab_size + max_len + num_segments) * d_model + 2 * d_model
    layer = 4 * (d_model * d_model + d_model) + 2 * d_model + (2 * d_model * d_ff + d_ff + d_model) + 2 * d_model
    return embeddings + num_layers * layer + (d_model * d_model + d_model if pooler else 0)


def masked_accuracy(logits: Tensor, labels: Tensor) -> float:
    """Fraction of masked positions (labels != -100) whose argmax prediction is the original token."""
    masked = labels != IGNORE_INDEX
    return float((logits[masked].argmax(-1) == labels[masked]).float().mean())


def perplexity_from_nll(mean_nll: float) -> float:
    """exp(mean negative log-likelihood in nats). (gpt.perplexity computes it from logits and targets.)"""
    return math.exp(mean_nll)
