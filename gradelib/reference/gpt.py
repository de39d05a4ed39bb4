"""GPT from first principles: a decoder-only, causal Transformer language model.

Built from notebook 01's pieces (``gradelib.reference.attention``): its grouped-query attention with
RoPE and a KV cache, its feed-forward network, its causal mask and its scaled dot-product attention.
This file adds what makes a GPT:

* the causal language-modelling loss (next-token prediction with shifted targets) and perplexity;
* pre-LN decoder blocks in two flavours, the *classic* GPT-2 block (LayerNorm, GELU MLP, learned
  absolute positions) and the *modern* LLaMA-style block (RMSNorm, SwiGLU MLP, rotary positions);
* generation with and without a KV cache, and the decoding rules (greedy, temperature, top-k, top-p);
* the losses of alignment: the Bradley-Terry reward-model loss (RLHF step 2) and DPO;
* T5's span corruption, for the BERT / GPT / T5 comparison;
* parameter counts of GPT-1/2/3 from their published shapes, and small training utilities.

Shape letters: B batch, T sequence length, V vocabulary size, D = d_model, H heads, H_kv key/value heads.

References:
    Radford et al. (2018), Improving Language Understanding by Generative Pre-Training (GPT-1).
    Radford et al. (2019), Language Models are Unsupervised Multitask Learners (GPT-2).
    Brown et al. (2020), Language Models are Few-Shot Learners (GPT-3).
    Holtzman et al. (2020), The Curious Case of Neural Text Degeneration (top-p / nucleus sampling).
    Zhang & Sennrich (2019), Root Mean Square Layer Normalization.
    Shazeer (2020), GLU Variants Improve Transformer (SwiGLU).
    Raffel et al. (2020), Exploring the Limits of Transfer Learning with a Unified Text-to-Text Transformer (T5).
    Ouyang et al. (2022), Training language models to follow instructions with human feedback (InstructGPT).
    Rafailov et al. (2023), Direct Preference Optimization.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from gradelib.reference.attention import FeedForward, GroupedQueryAttention, KVCache, apply_rope, causal_mask, merge_heads, split_heads
from gradelib.training import count_parameters, update, warmup_cosine

__all__ = [
    "causal_lm_loss",
    "perplexity",
    "temperature_probs",
    "top_k_probs",
    "top_p_probs",
    "sample_next_token",
    "reward_model_loss",
    "dpo_loss",
    "sequence_log_prob",
    "RMSNorm",
    "SwiGLU",
    "CausalSelfAttention",
    "GPTConfig",
    "GPTBlock",
    "GPT",
    "gpt_param_count",
    "span_corruption",
    "get_batch",
    "estimate_loss",
    "TimedTrainer",
]


# --------------------------------------------------------------------------------------------------
# The causal language-modelling loss and perplexity
# --------------------------------------------------------------------------------------------------


def causal_lm_loss(model, tokens: Tensor) -> Tensor:
    """Mean next-token negative log-likelihood (nats per token) of ``tokens`` under ``model``.

    Position t sees tokens 0..t and predicts token t + 1, so the inputs are tokens[:, :-1] and the
    targets are the same sequence shifted left by one, tokens[:, 1:]. The causal mask makes all T - 1
    predictions independent of their futures, so one forward pass trains all of them at once.

    Args:
        model: callable model(inputs (B, T-1) int64, mask (T-1, T-1) bool, True = may attend)
            -> logits (B, T-1, V).
        tokens: (B, T) int64 token ids, T >= 2.

    Returns:
        scalar tensor, the mean over the B * (T - 1) predictions of -log p(target | prefix).
    """
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model(inputs, causal_mask(inputs.shape[1], inputs.device))  # (B, T-1, V)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def perplexity(logits: Tensor, targets: Tensor, mask: Tensor | None = None) -> Tensor:
    """exp(mean NLL per token): the effective number of equally likely choices per token.

    Args:
        logits: (B, T, V) next-token logits.
        targets: (B, T) int64, the tokens that actually came next.
        mask: optional (B, T) bool, True = a real token that counts (False = padding).

    Returns:
        scalar tensor. All real tokens of all sequences are pooled: total NLL / number of tokens,
        then exp. (Averaging per-sequence perplexities would weight short sequences too much.)
        A model that is uniform over V tokens has perplexity exactly V.
    """
    nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).double(), targets.reshape(-1), reduction="none")
    if mask is not None:
        nll = nll[mask.reshape(-1)]
    return nll.mean().exp().to(logits.dtype)


# --------------------------------------------------------------------------------------------------
# Decoding rules: each returns the distribution the next token is drawn from
# --------------------------------------------------------------------------------------------------


def temperature_probs(logits: Tensor, temperature: float) -> Tensor:
    """softmax(logits / temperature) over the last axis; temperature 0 means greedy decoding.

    temperature < 1 sharpens the distribution, > 1 flattens it, 1 leaves the model's own
    distribution. As temperature -> 0 it tends to a one-hot vector on the argmax (greedy), which is
    returned directly for temperature == 0 (ties go to the lowest index, as torch.argmax does).

    Args:
        logits: (..., V).
        temperature: float >= 0.

    Returns:
        (..., V) probabilities, each row summing to 1.
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return F.one_hot(logits.argmax(dim=-1), logits.shape[-1]).to(logits.dtype)
    return torch.softmax(logits / temperature, dim=-1)


def top_k_probs(logits: Tensor, k: int) -> Tensor:
    """Keep the k most likely tokens, renormalise: softmax over the top k logits, 0 elsewhere.

    Args:
        logits: (..., V); k: 1 <= k <= V.

    Returns:
        (..., V) probabilities with exactly k non-zero entries per row (without ties).
    """
    kth_largest = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1)
    return torch.softmax(logits.masked_fill(logits < kth_largest, float("-inf")), dim=-1)


def top_p_probs(logits: Tensor, p: float) -> Tensor:
    """Nucleus sampling: the smallest set of most likely tokens whose total probability is >= p.

    Sort the probabilities in decreasing order and keep tokens until the running total reaches p.
    The token that *crosses* p is kept: a token is kept when the probability of the tokens before it
    is still below p. Then renormalise over the kept set.

    Args:
        logits: (..., V); p in (0, 1].

    Returns:
        (..., V) probabilities (zero outside each row's nucleus), each row summing to 1.
    """
    probs = torch.softmax(logits, dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability of the tokens ranked above
    keep_sorted = mass_before < p  # the first token is always kept
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    kept = probs.masked_fill(~keep, 0.0)
    return kept / kept.sum(dim=-1, keepdim=True)


def sample_next_token(logits: Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                      generator: torch.Generator | None = None) -> Tensor:
    """Draw the next token (B, 1) from logits (B, V): temperature, then top-k, then top-p.

    temperature == 0 is greedy decoding (argmax), whatever top_k and top_p say.
    """
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        logits = torch.log(top_k_probs(logits, min(top_k, logits.shape[-1])))
    probs = top_p_probs(logits, top_p) if top_p is not None else torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


# --------------------------------------------------------------------------------------------------
# Alignment: the reward-model loss (RLHF step 2) and DPO
# --------------------------------------------------------------------------------------------------


def reward_model_loss(reward_chosen: Tensor, reward_rejected: Tensor) -> Tensor:
    """Bradley-Terry loss of a reward model on preference pairs (InstructGPT, eq. 1).

    The Bradley-Terry model says a labeller prefers the chosen answer with probability
    sigma(r_chosen - r_rejected). The loss is that probability's mean negative log:
        -mean log sigma(r_chosen - r_rejected),
    computed with logsigmoid so that it stays finite for any margin.

    Args:
        reward_chosen, reward_rejected: (N,) scalar rewards of the preferred and the other answer.

    Returns:
        scalar tensor.
    """
    return -F.logsigmoid(reward_chosen - reward_rejected).mean()


def dpo_loss(policy_chosen_logps: Tensor, policy_rejected_logps: Tensor,
             reference_chosen_logps: Tensor, reference_rejected_logps: Tensor, beta: float) -> Tensor:
    """Direct Preference Optimization (Rafailov et al. 2023, eq. 7).

    The policy's implicit reward of an answer y is beta * log(pi(y|x) / pi_ref(y|x)); plugging it into
    the Bradley-Terry loss gives
        -mean log sigma(beta * [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))]).
    beta plays the role of the KL penalty of RLHF: a small beta lets the policy drift far from the
    reference model.

    Args:
        *_logps: (N,) summed log-probabilities of each whole answer given its prompt, under the policy
            being trained and under the frozen reference (usually the SFT model).
        beta: > 0.

    Returns:
        scalar tensor.
    """
    chosen_log_ratio = policy_chosen_logps - reference_chosen_logps
    rejected_log_ratio = policy_rejected_logps - reference_rejected_logps
    return -F.logsigmoid(beta * (chosen_log_ratio - rejected_log_ratio)).mean()


def sequence_log_prob(model, prompts: Tensor, answers: Tensor) -> Tensor:
    """log p(answer | prompt) under a causal LM, summed over the answer's tokens.

    Args:
        model: callable model(tokens (B, T)) -> logits (B, T, V), causal.
        prompts: (B, T_p) int64; answers: (B, T_a) int64 (all prompts, and all answers, of equal length).

    Returns:
        (B,) summed log-probabilities.
    """
    tokens = torch.cat([prompts, answers], dim=1)
    logits = model(tokens[:, :-1])  # position t predicts token t + 1
    log_probs = logits[:, prompts.shape[1] - 1:].log_softmax(dim=-1)  # the positions that predict the answer
    return log_probs.gather(-1, answers[..., None]).squeeze(-1).sum(dim=-1)


# --------------------------------------------------------------------------------------------------
# Blocks: classic (GPT-2) and modern (LLaMA-style)
# --------------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich 2019): x / rms(x) * weight.

    LayerNorm without the mean subtraction and without the bias: rms(x) = sqrt(mean(x^2) + eps)
    over the features of each token. Fewer reductions, same effect in practice.
    """

    def __init__(self, d_model: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., D) -> (..., D)."""
        return x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    """Gated feed-forward network (Shazeer 2020): W_2 (SiLU(x W_gate) * (x W_up)).

    Three matrices instead of two; with d_ff = 8/3 * D it has the parameters of a 4 * D GELU MLP.
    No biases, as in LLaMA.
    """

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.w_gate = nn.Linear(d_model, d_ff, bias=False)
        self.w_up = nn.Linear(d_model, d_ff, bias=False)
        self.w_down = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """x: (..., D) -> (..., D)."""
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class CausalSelfAttention(GroupedQueryAttention):
    """Notebook 01's grouped-query attention, with a fast path for full causal sequences.

    With an explicit mask or a KV cache it *is* GroupedQueryAttention.forward (the readable reference).
    Without them (training, or the prompt at the start of generation) it computes the same function
    with torch's fused causal kernel, F.scaled_dot_product_attention(is_causal=True), which never
    materialises the T x T weights. tests/test_reference_gpt.py checks that both paths agree.
    """

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None,
                use_rope: bool = False) -> tuple[Tensor, KVCache]:
        """x: (B, T, D) -> (y (B, T, D), KVCache of this call's keys and values, after RoPE)."""
        if mask is not None or cache is not None:
            return super().forward(x, mask=mask, cache=cache, use_rope=use_rope)
        q = split_heads(self.w_q(x), self.num_heads)  # (B, H, T, head_dim)
        k = split_heads(self.w_k(x), self.num_kv_heads)  # (B, H_kv, T, head_dim)
        v = split_heads(self.w_v(x), self.num_kv_heads)
        if use_rope:
            q, k = apply_rope(q, None), apply_rope(k, None)
        group_size = self.num_heads // self.num_kv_heads
        out = F.scaled_dot_product_attention(q, k.repeat_interleave(group_size, dim=1),
                                             v.repeat_interleave(group_size, dim=1), is_causal=True)
        return self.w_o(merge_heads(out)), KVCache(k, v)


@dataclass(frozen=True)
class GPTConfig:
    """Shape of a GPT.

    block: "classic" = GPT-2 (LayerNorm, GELU MLP of width 4 D, learned absolute positions, biases);
           "modern"  = LLaMA-style (RMSNorm, SwiGLU of width d_ff, rotary positions, no biases).
    d_ff: MLP width; default 4 D for classic, and for modern the multiple of 8 nearest 8/3 D,
          which gives both blocks (about) the same number of parameters.
    num_kv_heads: None for ordinary multi-head attention; 1 for multi-query; in between for GQA.
    block_size: the context length trained on (and the size of the classic position table).
    """

    vocab_size: int
    block_size: int = 64
    d_model: int = 128
    num_heads: int = 4
    num_layers: int = 4
    block: str = "classic"
    num_kv_heads: int | None = None
    d_ff: int | None = None
    dropout: float = 0.0
    tie_weights: bool = True

    def __post_init__(self):
        assert self.block in ("classic", "modern"), f"block must be 'classic' or 'modern', got {self.block!r}"

    @property
    def ffn_width(self) -> int:
        if self.d_ff is not None:
            return self.d_ff
        return 4 * self.d_model if self.block == "classic" else 8 * round(8 * self.d_model / 3 / 8)

    @property
    def kv_heads(self) -> int:
        return self.num_heads if self.num_kv_heads is None else self.num_kv_heads


class GPTBlock(nn.Module):
    """A pre-LN decoder block: x + Attn(Norm(x)), then x + MLP(Norm(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        modern = config.block == "modern"
        norm = (lambda: RMSNorm(config.d_model)) if modern else (lambda: nn.LayerNorm(config.d_model))
        self.use_rope = modern
        self.attn_norm = norm()
        self.attn = CausalSelfAttention(config.d_model, config.num_heads, config.kv_heads, bias=not modern)
        self.mlp_norm = norm()
        self.mlp = SwiGLU(config.d_model, config.ffn_width) if modern else FeedForward(
            config.d_model, config.ffn_width, activation="gelu")
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None, cache: KVCache | None = None) -> tuple[Tensor, KVCache]:
        """x: (B, T, D) new positions -> (B, T, D), and this block's KVCache including them.

        mask None and cache None: full causal attention over x. With a cache, x holds the positions
        after the cached ones (mask None is right for one new token at a time).
        """
        attended, cache = self.attn(self.attn_norm(x), mask=mask, cache=cache, use_rope=self.use_rope)
        x = x + self.dropout(attended)
        return x + self.dropout(self.mlp(self.mlp_norm(x))), cache


class GPT(nn.Module):
    """Decoder-only Transformer LM: embeddings -> pre-LN blocks -> final norm -> logits.

    forward(tokens) applies the causal mask; logits at position t are the model's prediction for
    token t + 1. Pass an explicit boolean ``mask`` (True = may attend) to replace it, e.g. in the
    causal-LM exercise.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(config.vocab_size, config.d_model)
        # Classic: a learned vector per absolute position. Modern: none here, RoPE rotates q and k.
        self.position_embedding = nn.Embedding(config.block_size, config.d_model) if config.block == "classic" else None
        self.dropout = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(GPTBlock(config) for _ in range(config.num_layers))
        self.final_norm = RMSNorm(config.d_model) if config.block == "modern" else nn.LayerNorm(config.d_model)
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.apply(self._init_weights)
        if config.tie_weights:
            self.head.weight = self.token_embedding.weight  # GPT-2 shares the input and output embeddings
        # GPT-2's scaled init: each residual branch's output projection gets std 0.02 / sqrt(2 * layers).
        for name, parameter in self.named_parameters():
            if name.endswith(("attn.w_o.weight", "mlp.w_2.weight", "mlp.w_down.weight")):
                nn.init.normal_(parameter, mean=0.0, std=0.02 / math.sqrt(2 * config.num_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def num_parameters(self) -> int:
        """Parameters, counting the tied embedding once."""
        return count_parameters(self)

    def _embed(self, tokens: Tensor | None, start: int, inputs_embeds: Tensor | None = None) -> Tensor:
        """Token embeddings (or the given ``inputs_embeds``) plus the positions start .. start + T - 1."""
        if (tokens is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of tokens (B, T) and inputs_embeds (B, T, D)")
        x = self.token_embedding(tokens) if inputs_embeds is None else inputs_embeds
        if self.position_embedding is not None:
            end = start + x.shape[1]
            assert end <= self.config.block_size, f"position {end - 1} is beyond the learned table (block_size={self.config.block_size})"
            x = x + self.position_embedding(torch.arange(start, end, device=x.device))
        return self.dropout(x)

    def hidden_states(self, tokens: Tensor | None = None, mask: Tensor | None = None, *,
                      inputs_embeds: Tensor | None = None) -> Tensor:
        """tokens (B, T) int64 -> the final normalised hidden states (B, T, D), before the output layer.

        A reward model is this backbone with a scalar head instead of the vocabulary head.
        ``inputs_embeds`` (B, T, D) replaces the token embeddings, as in Hugging Face's models: a
        multimodal model feeds image or audio states through it (the positions are still added).
        """
        x = self._embed(tokens, 0, inputs_embeds)
        for block in self.blocks:
            x, _ = block(x, mask=mask)
        return self.final_norm(x)

    def forward(self, tokens: Tensor | None = None, mask: Tensor | None = None, *,
                inputs_embeds: Tensor | None = None) -> Tensor:
        """tokens (B, T) int64, or inputs_embeds (B, T, D) -> logits (B, T, V).

        mask: optional bool (T, T) replacing the causal mask (True = may attend).
        """
        return self.head(self.hidden_states(tokens, mask, inputs_embeds=inputs_embeds))

    def forward_cached(self, tokens_new: Tensor, caches: list[KVCache | None]) -> tuple[Tensor, list[KVCache]]:
        """Logits (B, T_new, V) for the tokens after the cached ones, and the updated caches (one per block).

        The first call (caches all None) may feed a whole prompt; later calls feed one token each.
        """
        start = 0 if caches[0] is None else caches[0].length
        x = self._embed(tokens_new, start)
        new_caches = []
        for block, cache in zip(self.blocks, caches):
            mask = None if cache is None or tokens_new.shape[1] == 1 else causal_mask(tokens_new.shape[1], x.device, num_past=cache.length)
            x, cache = block(x, mask=mask, cache=cache)
            new_caches.append(cache)
        return self.head(self.final_norm(x)), new_caches

    @torch.no_grad()
    def generate(self, prompt: Tensor, max_new_tokens: int, use_kv_cache: bool = True, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Continue prompt (B, T_p) by max_new_tokens tokens -> (B, T_p + max_new_tokens).

        use_kv_cache=False recomputes the whole prefix at every step; True feeds each token once.
        Both give the same tokens. (A classic model cannot go past block_size positions; a RoPE model
        can, though it was only trained on block_size.) Call model.eval() first.
        """
        tokens, new_tokens = prompt, prompt
        caches: list[KVCache | None] = [None] * len(self.blocks)
        for _ in range(max_new_tokens):
            if use_kv_cache:
                logits, caches = self.forward_cached(new_tokens, caches)
            else:
                logits = self(tokens)
            new_tokens = sample_next_token(logits[:, -1], temperature, top_k, top_p, generator)
            tokens = torch.cat([tokens, new_tokens], dim=1)
        return tokens


def gpt_param_count(vocab_size: int, block_size: int, d_model: int, num_layers: int, d_ff: int | None = None,
                    tied: bool = True) -> int:
    """Parameters of a GPT-1/2/3-shaped model (classic block with biases, learned positions).

    Per layer: attention 4 D^2 + 4 D, MLP 2 D d_ff + d_ff + D, two LayerNorms 4 D.
    Plus token (V D) and position (block D) embeddings, the final LayerNorm (2 D; GPT-1 has none, a
    1.5 K difference) and, untied, an output matrix V D.
    """
    d_ff = 4 * d_model if d_ff is None else d_ff
    per_layer = 4 * d_model * d_model + 4 * d_model + 2 * d_model * d_ff + d_ff + d_model + 4 * d_model
    total = num_layers * per_layer + vocab_size * d_model + block_size * d_model + 2 * d_model
    return total if tied else total + vocab_size * d_model


# --------------------------------------------------------------------------------------------------
# T5's span corruption
# --------------------------------------------------------------------------------------------------


def span_corruption(words: list[str], spans: list[tuple[int, int]]) -> tuple[str, str]:
    """T5's pre-training example: replace each span by one sentinel; the target lists the spans.

    Args:
        words: the input, already split into tokens (words here; T5 uses SentencePiece pieces).
        spans: sorted, non-overlapping (start, end) index ranges of ``words`` to drop, end exclusive.

    Returns:
        (input_text, target_text), e.g. for "Thank you for inviting me to your party last week ." and
        spans [(2, 4), (8, 9)]:
        ("Thank you <X> me to your party <Y> week .", "<X> for inviting <Y> last <Z>"),
        with sentinels written <extra_id_0>, <extra_id_1>, ... as in T5's vocabulary.
    """
    sentinels = [f"<extra_id_{i}>" for i in range(len(spans) + 1)]
    source, target, position = [], [], 0
    for i, (start, end) in enumerate(spans):
        assert position <= start < end <= len(words), f"spans must be sorted, non-empty and inside the text: {spans}"
        source += words[position:start] + [sentinels[i]]
        target += [sentinels[i]] + words[start:end]
        position = end
    source += words[position:]
    target.append(sentinels[len(spans)])  # a final sentinel marks the end of the target
    return " ".join(source), " ".join(target)


def random_spans(num_words: int, noise_density: float = 0.15, mean_span_length: float = 3.0,
                 generator: torch.Generator | None = None) -> list[tuple[int, int]]:
    """Pick spans covering about noise_density of num_words, with mean length mean_span_length (T5's defaults).

    As in T5: round(num_words * noise_density) noise words split into round(noise / mean_span_length)
    spans of random lengths, placed at random among the kept words.
    """
    num_noise = max(1, round(num_words * noise_density))
    num_spans = max(1, round(num_noise / mean_span_length))
    num_keep = num_words - num_noise

    def split(total: int, parts: int) -> list[int]:  # random composition of total into parts >= 1
        cuts = sorted(torch.randperm(total - 1, generator=generator)[: parts - 1].add(1).tolist())
        return [b - a for a, b in zip([0] + cuts, cuts + [total])]

    noise_lengths, keep_lengths = split(num_noise, num_spans), split(num_keep, num_spans)
    spans, position = [], 0
    for keep, noise in zip(keep_lengths, noise_lengths):
        position += keep
        spans.append((position, position + noise))
        position += noise
    return spans


# --------------------------------------------------------------------------------------------------
# Training utilities
# --------------------------------------------------------------------------------------------------


def get_batch(data: Tensor, block_size: int, batch_size: int, generator: torch.Generator | None = None,
              device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """Random windows of a 1-D token tensor: inputs x (B, block_size) and targets y = x shifted by one."""
    starts = torch.randint(0, len(data) - block_size - 1, (batch_size,), generator=generator)
    windows = torch.stack([data[s: s + block_size + 1] for s in starts.tolist()])  # (B, block_size + 1)
    windows = windows.to(device) if device is not None else windows
    return windows[:, :-1], windows[:, 1:]


@torch.no_grad()
def estimate_loss(model: nn.Module, batches: list[tuple[Tensor, Tensor]]) -> float:
    """Mean cross-entropy (nats per token) of model over fixed (x, y) batches, in eval mode."""
    was_training = model.training
    model.eval()
    losses = [F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item() for x, y in batches]
    model.train(was_training)
    return sum(losses) / len(losses)


class TimedTrainer:
    """Train a GPT for a fixed wall-clock budget; the learning-rate schedule runs on time, not steps.

    Each step() draws a batch, takes one AdamW step and charges its own duration to this trainer,
    so several trainers can be interleaved step by step on a busy machine and each still gets
    exactly its budget of seconds. The schedule is the course's warm-up + cosine
    (gradelib.training.warmup_cosine, from ``lr`` down to ``final_lr``) read at the fraction of the
    *budget* used rather than of the steps, so it ends when the time does; the update is
    gradelib.training.update with the gradients clipped to norm 1.
    """

    def __init__(self, model: nn.Module, train_data: Tensor, *, seconds: float, block_size: int, batch_size: int,
                 lr: float, final_lr: float | None = None, warmup: float = 0.05, weight_decay: float = 0.1,
                 betas: tuple[float, float] = (0.9, 0.99), seed: int = 0, device: torch.device | str | None = None):
        self.model, self.data, self.seconds = model, train_data, seconds
        self.block_size, self.batch_size, self.device = block_size, batch_size, device
        self.lr, self.final_lr = lr, lr / 10 if final_lr is None else final_lr
        self.schedule = warmup_cosine(warmup=warmup, final=self.final_lr / lr)  # a factor on lr
        decay = [p for p in model.parameters() if p.dim() >= 2]
        no_decay = [p for p in model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)
        self.generator = torch.Generator().manual_seed(seed)
        self.elapsed, self.steps, self.losses, self.times = 0.0, 0, [], []

    @property
    def done(self) -> bool:
        return self.elapsed >= self.seconds

    def step(self) -> float:
        """One optimizer step on a fresh batch; returns its loss (nats per token)."""
        start = time.perf_counter()
        lr = self.lr * self.schedule(min(1.0, self.elapsed / self.seconds))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = get_batch(self.data, self.block_size, self.batch_size, self.generator, self.device)
        self.model.train()
        loss = F.cross_entropy(self.model(x).flatten(0, 1), y.flatten())
        update(self.optimizer, loss, clip_grad_norm=1.0)
        value = loss.item()  # also waits for an accelerator to finish, so the clock is honest
        self.elapsed += time.perf_counter() - start
        self.steps += 1
        self.losses.append(value)
        self.times.append(self.elapsed)
        return value
