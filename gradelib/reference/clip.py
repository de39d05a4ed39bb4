"""CLIP from first principles, and a LLaVA-style captioner on top of it.

CLIP (Radford et al. 2021) trains two encoders, one for images and one for text, so that an image and
its caption land close together in a shared embedding space and mismatched pairs land far apart. The
pieces here, small enough to train on a laptop CPU on ``gradelib.data.captioned_shapes``:

* data: templated captions ("a photo of a red circle", "a square at the top left", ...) and their
  vocabulary (for the course's ``tokenization.WordTokenizer``), a spurious-correlation split (colour
  tied to shape) and its counterfactuals;
* the model: a Vision Transformer (patches -> transformer -> projection), a causal text transformer
  pooled at its end-of-text token (as in CLIP), L2-normalised embeddings, and a learnable temperature
  stored as a log scale and clamped at 100;
* the loss: symmetric InfoNCE (cross-entropy over the image->text rows and the text->image columns);
* evaluation: zero-shot classification with prompt ensembling, Recall@K retrieval, linear probes;
* a LLaVA-style captioner: frozen ViT patch features -> a projection -> prefix tokens of the tiny GPT
  of notebook 03 (``gradelib.reference.gpt.GPT``), trained with the loss only on caption tokens.

Shape letters: B batch, N pairs in a contrastive batch, C classes, M prompt templates, D embedding
width, P patches (or prefix tokens), T tokens, V vocabulary.

References:
    Radford et al. (2021), Learning Transferable Visual Models From Natural Language Supervision (CLIP).
    Dosovitskiy et al. (2021), An Image is Worth 16x16 Words (ViT).
    van den Oord et al. (2018), Representation Learning with Contrastive Predictive Coding (InfoNCE).
    Liu et al. (2023), Visual Instruction Tuning (LLaVA).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from gradelib.data import COLOURS, POSITIONS, SHAPES, ShapesBatch, captioned_shapes
from gradelib.reference.attention import TransformerBlock, causal_mask
from gradelib.reference.gpt import GPT, GPTConfig
from gradelib.reference.tokenization import BOS_ID, EOS_ID, IGNORE_INDEX, PAD_ID, WordTokenizer
from gradelib.training import fit, warmup_cosine

__all__ = [
    "TRAIN_TEMPLATES",
    "PROMPT_TEMPLATES",
    "CAPTION_WORDS",
    "templated_caption",
    "templated_captions",
    "BIASED_COLOUR_OF_SHAPE",
    "spurious_shapes",
    "counterfactual_shapes",
    "patchify",
    "clip_logits",
    "symmetric_infonce",
    "zero_shot_weights",
    "recall_at_k",
    "caption_targets",
    "MAX_LOG_SCALE",
    "INIT_LOG_SCALE",
    "text_transformer_params",
    "ViTEncoder",
    "TextTransformer",
    "CLIP",
    "train_clip",
    "shapes_caption_fn",
    "zero_shot_classifier",
    "class_labels",
    "encode_texts",
    "encode_images",
    "class_prompts",
    "zero_shot_accuracy",
    "fit_linear_probe",
    "PrefixCaptioner",
    "train_captioner",
    "caption_accuracy",
]

# --------------------------------------------------------------------------------------------------
# Text: templates and their vocabulary
# --------------------------------------------------------------------------------------------------

# The wrappers a caption can come in during training ("{}" is the description, e.g. "red circle").
TRAIN_TEMPLATES = ("a {}", "a photo of a {}", "a picture of a {}", "a drawing of a {}")
# Zero-shot prompts: the same wrappers (CLIP's prompts, "a photo of a {label}.", also echo the web
# captions it was trained on). Prompt ensembling averages the class embeddings over all of them.
PROMPT_TEMPLATES = TRAIN_TEMPLATES

# Every word of every templated caption: the vocabulary of WordTokenizer(CAPTION_WORDS) (17 words).
CAPTION_WORDS = tuple(sorted({w for t in TRAIN_TEMPLATES for w in t.replace("{}", "").split()}
                             | set(SHAPES) | set(COLOURS) | {w for p in POSITIONS for w in p.split()} | {"at", "the"}))


def templated_caption(shape: str, colour: str | None, position: str | None, template: str = "a {}") -> str:
    """E.g. ("circle", "red", None, "a photo of a {}") -> "a photo of a red circle". None leaves an attribute out."""
    description = shape if colour is None else f"{colour} {shape}"
    if position is not None:
        description += f" at the {position}"
    return template.format(description)


def templated_captions(batch: ShapesBatch, generator: torch.Generator, p_full: float = 0.5,
                       p_drop: float = 0.5) -> list[str]:
    """Web-like captions for a batch: a random template, and some attributes left out.

    With probability p_full the caption names colour, shape and position; otherwise colour and position
    are each dropped with probability p_drop (the shape is always named). Like alt-text on the web, a
    caption then describes its image truthfully but incompletely.
    """
    n = len(batch.shape)
    template = torch.randint(0, len(TRAIN_TEMPLATES), (n,), generator=generator).tolist()
    full = (torch.rand(n, generator=generator) < p_full).tolist()
    drop = (torch.rand(n, 2, generator=generator) < p_drop).tolist()
    captions = []
    for i in range(n):
        colour = None if (not full[i] and drop[i][0]) else COLOURS[batch.colour[i]]
        position = None if (not full[i] and drop[i][1]) else POSITIONS[batch.position[i]]
        captions.append(templated_caption(SHAPES[batch.shape[i]], colour, position, TRAIN_TEMPLATES[template[i]]))
    return captions


# --------------------------------------------------------------------------------------------------
# Bias, made measurable: a training set where colour gives the shape away, and its counterfactuals
# --------------------------------------------------------------------------------------------------

# In the spurious split every circle is red, every square green, every triangle blue.
BIASED_COLOUR_OF_SHAPE = {"circle": "red", "square": "green", "triangle": "blue"}


def _select(batch: ShapesBatch, keep: Tensor, n: int) -> ShapesBatch:
    index = keep.nonzero().squeeze(1)[:n]
    assert len(index) == n, "not enough images drawn; raise the oversampling factor"
    return ShapesBatch(images=batch.images[index], captions=[batch.captions[i] for i in index.tolist()],
                       shape=batch.shape[index], colour=batch.colour[index], position=batch.position[index])


def _tied(batch: ShapesBatch) -> Tensor:
    tied_colour = torch.tensor([COLOURS.index(BIASED_COLOUR_OF_SHAPE[s]) for s in SHAPES])
    return batch.colour == tied_colour[batch.shape]


def spurious_shapes(n: int, *, seed: int = 0, image_size: int = 16) -> ShapesBatch:
    """n captioned shapes in which colour is tied to shape (BIASED_COLOUR_OF_SHAPE), any position.

    Drawn from captioned_shapes(split="all") and filtered, so each image is rendered exactly as usual.
    """
    batch = captioned_shapes(5 * n + 50, split="all", seed=seed, image_size=image_size)
    return _select(batch, _tied(batch), n)


def counterfactual_shapes(n: int, *, seed: int = 0, image_size: int = 16) -> ShapesBatch:
    """n captioned shapes whose colour is *not* the one spurious_shapes ties to their shape (a blue circle...)."""
    batch = captioned_shapes(2 * n + 50, split="all", seed=seed, image_size=image_size)
    return _select(batch, ~_tied(batch), n)


# --------------------------------------------------------------------------------------------------
# The pieces graded in the notebook
# --------------------------------------------------------------------------------------------------

# CLIP initialises the temperature to 0.07, i.e. the logit scale to 1/0.07, and clips the scale at 100
# so that training stays stable (Radford et al. 2021, section 2.5).
INIT_LOG_SCALE = math.log(1 / 0.07)
MAX_LOG_SCALE = math.log(100.0)


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """Cut images into non-overlapping square patches, as a ViT's first step.

    Args:
        images: (B, C, H, W), H and W multiples of patch_size.
        patch_size: p.

    Returns:
        (B, P, C * p * p) with P = (H / p) * (W / p): patches in row-major order (left to right, then
        top to bottom), each flattened channel by channel, then row by row within the patch, i.e. in
        the order of F.unfold(images, p, stride=p).transpose(1, 2). A linear layer on these vectors is
        the same as a Conv2d with kernel_size = stride = p.
    """
    B, C, H, W = images.shape
    p = patch_size
    x = images.reshape(B, C, H // p, p, W // p, p)  # (B, C, rows, p, cols, p)
    x = x.permute(0, 2, 4, 1, 3, 5)  # (B, rows, cols, C, p, p)
    return x.reshape(B, (H // p) * (W // p), C * p * p)


def clip_logits(image_embeddings: Tensor, text_embeddings: Tensor, log_scale: Tensor) -> Tensor:
    """Scaled cosine similarities: exp(min(log_scale, log 100)) * normalise(I) normalise(T)^T.

    Args:
        image_embeddings: (N_i, D); text_embeddings: (N_t, D), not necessarily normalised.
        log_scale: scalar tensor, the learnable log of the logit scale (1 / temperature).

    Returns:
        logits_per_image: (N_i, N_t); row i scores image i against every text.
    """
    image = F.normalize(image_embeddings, dim=-1)
    text = F.normalize(text_embeddings, dim=-1)
    scale = log_scale.clamp(max=MAX_LOG_SCALE).exp()
    return scale * image @ text.T


def symmetric_infonce(image_embeddings: Tensor, text_embeddings: Tensor, log_scale: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """CLIP's loss (the paper's Figure 3): the mean of two cross-entropies over the logits.

    With L = clip_logits(I, T, log_scale) (N, N), pair i is the positive of row i and of column i:
        loss_image_to_text = mean_i -log softmax(L[i, :])[i]   (each image picks its caption)
        loss_text_to_image = mean_j -log softmax(L[:, j])[j]   (each caption picks its image)
        loss = (loss_image_to_text + loss_text_to_image) / 2

    Args:
        image_embeddings, text_embeddings: (N, D), row i of each is a matching pair.
        log_scale: scalar tensor.

    Returns:
        (loss, loss_image_to_text, loss_text_to_image), three scalars.
    """
    logits = clip_logits(image_embeddings, text_embeddings, log_scale)
    targets = torch.arange(logits.shape[0], device=logits.device)
    image_to_text = F.cross_entropy(logits, targets)
    text_to_image = F.cross_entropy(logits.T, targets)
    return (image_to_text + text_to_image) / 2, image_to_text, text_to_image


def zero_shot_weights(prompt_embeddings: Tensor) -> Tensor:
    """Prompt ensembling: one classifier vector per class from M prompts per class.

    Normalise every prompt embedding, average the M of each class, normalise the average again
    (CLIP's prompt ensembling, section 3.1.4, averages in embedding space).

    Args:
        prompt_embeddings: (C, M, D) text embeddings, class c's m-th template.

    Returns:
        (C, D), unit-norm rows; zero-shot logits are normalise(image) @ weights.T.
    """
    mean = F.normalize(prompt_embeddings, dim=-1).mean(dim=1)
    return F.normalize(mean, dim=-1)


def recall_at_k(similarity: Tensor, k: int) -> Tensor:
    """Share of queries whose match is among their k highest-scoring candidates.

    Args:
        similarity: (N_q, N_c), similarity[i, j] scores query i against candidate j; the match of query i
            is candidate i (N_q <= N_c).
        k: 1 <= k <= N_c.

    Returns:
        scalar float tensor in [0, 1]. A candidate tied with the match counts as ranked above it (a
        pessimistic rank): a constant similarity matrix gets recall 0 for every k < N_c, not a lucky 1.
    """
    matched = similarity.gather(1, torch.arange(similarity.shape[0], device=similarity.device)[:, None])  # (N_q, 1)
    rank = (similarity >= matched).sum(dim=1) - 1  # candidates scoring at least as high, other than the match itself
    return (rank < k).float().mean()


def caption_targets(tokens: Tensor, num_prefix: int, pad_id: int = PAD_ID) -> Tensor:
    """Targets for a prefix captioner: next caption token, and IGNORE_INDEX (-100) everywhere else.

    The decoder's input is P prefix embeddings (the image) followed by the T caption tokens
    (<bos> w_1 ... <eos> <pad>...). Position j predicts the token at position j + 1, so:
        targets[:, j] = tokens[:, j - P + 1]  for P <= j <= P + T - 2 (the caption's own positions),
    and -100 at the P prefix positions (nothing to predict about the image, and <bos> is given), at
    the last position (nothing follows it), and wherever the target would be <pad>.

    Args:
        tokens: (B, T) int64 caption tokens. num_prefix: P. pad_id: the padding id.

    Returns:
        (B, P + T) int64; F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        is then the mean negative log-likelihood of the caption tokens only.
    """
    B, T = tokens.shape
    targets = torch.full((B, num_prefix + T), IGNORE_INDEX, dtype=torch.int64, device=tokens.device)
    next_tokens = tokens[:, 1:]
    targets[:, num_prefix:num_prefix + T - 1] = next_tokens.masked_fill(next_tokens == pad_id, IGNORE_INDEX)
    return targets


def text_transformer_params(vocab_size: int, context_length: int, width: int, layers: int, embed_dim: int) -> int:
    """Parameters of CLIP's text encoder (a GPT-2-style pre-LN transformer with biases, 4x MLP).

    Per layer: attention 4 (width^2 + width), MLP 8 width^2 + 5 width, two LayerNorms 4 width, i.e.
    12 width^2 + 13 width. Plus token embeddings (vocab x width), positions (context x width), the
    final LayerNorm (2 width) and the projection to the joint space (width x embed_dim, no bias).
    """
    per_layer = 12 * width * width + 13 * width
    return layers * per_layer + vocab_size * width + context_length * width + 2 * width + width * embed_dim


# --------------------------------------------------------------------------------------------------
# The dual encoder
# --------------------------------------------------------------------------------------------------


class ViTEncoder(nn.Module):
    """A small Vision Transformer: patches -> linear embedding + [CLS] + positions -> pre-LN blocks.

    forward(images) returns all final (normalised) token states; the image embedding is the [CLS]
    state passed through CLIP's projection, and a captioner uses the P patch states.
    """

    def __init__(self, image_size: int = 16, patch_size: int = 4, channels: int = 3, d_model: int = 64,
                 num_heads: int = 4, num_layers: int = 2, d_ff: int = 128):
        super().__init__()
        self.patch_size = patch_size
        self.num_patches = (image_size // patch_size) ** 2
        self.patch_embedding = nn.Linear(channels * patch_size * patch_size, d_model)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d_model))
        self.position_embedding = nn.Parameter(0.02 * torch.randn(1, self.num_patches + 1, d_model))
        self.blocks = nn.ModuleList(TransformerBlock(d_model, num_heads, d_ff) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model)

    def forward(self, images: Tensor) -> Tensor:
        """images (B, C, H, W) -> token states (B, 1 + P, d_model); position 0 is [CLS]."""
        x = self.patch_embedding(patchify(images, self.patch_size))
        x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1) + self.position_embedding
        for block in self.blocks:
            x = block(x)
        return self.final_norm(x)


class TextTransformer(nn.Module):
    """CLIP's text tower: a causal text transformer pooled at the <eos> token, one vector per caption.

    With a causal mask no token before <eos> sees the padding after it, so the <eos> state summarises
    exactly the caption, whatever the padding (CLIP, section 2.4). ``max_len`` is its context length,
    the length captions are padded to (CLIP's 77). Compare notebook 07's
    ``latent_diffusion.ConditioningTextEncoder``, which keeps one vector per token for cross-attention.
    """

    def __init__(self, vocab_size: int, max_len: int = 12, d_model: int = 64, num_heads: int = 4,
                 num_layers: int = 2, d_ff: int = 128, eos_id: int = EOS_ID):
        super().__init__()
        self.eos_id = eos_id
        self.max_len = max_len
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.position_embedding = nn.Parameter(0.02 * torch.randn(1, max_len, d_model))
        self.blocks = nn.ModuleList(TransformerBlock(d_model, num_heads, d_ff) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model)

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens (B, T) with one <eos> per row -> the <eos> states (B, d_model)."""
        T = tokens.shape[1]
        x = self.token_embedding(tokens) + self.position_embedding[:, :T]
        mask = causal_mask(T, tokens.device)
        for block in self.blocks:
            x = block(x, mask=mask)
        x = self.final_norm(x)
        eos_position = (tokens == self.eos_id).int().argmax(dim=1)  # (B,)
        return x[torch.arange(len(x), device=x.device), eos_position]


class CLIP(nn.Module):
    """Dual encoder: image_projection(ViT[CLS]) and text_projection(text[<eos>]), and a learnable log scale."""

    def __init__(self, vocab_size: int, embed_dim: int = 32, image_size: int = 16, patch_size: int = 4,
                 d_model: int = 64, num_heads: int = 4, num_layers: int = 2, max_len: int = 12, channels: int = 3):
        super().__init__()
        self.visual = ViTEncoder(image_size, patch_size, channels, d_model, num_heads, num_layers, 2 * d_model)
        self.text = TextTransformer(vocab_size, max_len, d_model, num_heads, num_layers, 2 * d_model)
        self.image_projection = nn.Linear(d_model, embed_dim, bias=False)
        self.text_projection = nn.Linear(d_model, embed_dim, bias=False)
        self.log_scale = nn.Parameter(torch.tensor(INIT_LOG_SCALE))

    def encode_image(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, embed_dim) unit-norm image embeddings."""
        return F.normalize(self.image_projection(self.visual(images)[:, 0]), dim=-1)

    def encode_text(self, tokens: Tensor) -> Tensor:
        """(B, T) -> (B, embed_dim) unit-norm text embeddings."""
        return F.normalize(self.text_projection(self.text(tokens)), dim=-1)

    def forward(self, images: Tensor, tokens: Tensor) -> Tensor:
        """The contrastive loss of a batch of N matching (image, caption) pairs."""
        return symmetric_infonce(self.encode_image(images), self.encode_text(tokens), self.log_scale)[0]


def train_clip(model: CLIP, tokenizer: WordTokenizer, images: Tensor, caption_fn, *, steps: int,
               batch_size: int = 128, lr: float = 2e-3, seed: int = 0, loss_fn=None, progress: bool = False,
               label: str = "CLIP") -> list[float]:
    """Train with AdamW on random batches of ``images``, with fresh captions every step.

    caption_fn(index (B,) int64, generator) -> list of B captions for images[index], e.g. templated
    captions, so the same image comes with different wordings. loss_fn(image_embeddings,
    text_embeddings, log_scale) -> (loss, ...) is symmetric_infonce by default (a notebook passes the
    student's). Warm-up then cosine decay of the learning rate. Returns the losses.
    """
    loss_fn = symmetric_infonce if loss_fn is None else loss_fn
    device = model.log_scale.device
    images = images.to(device)

    def step(_, generator: torch.Generator) -> Tensor:
        index = torch.randint(0, len(images), (batch_size,), generator=generator)
        tokens, _ = tokenizer(caption_fn(index, generator), length=model.text.max_len)
        return loss_fn(model.encode_image(images[index.to(device)]), model.encode_text(tokens.to(device)), model.log_scale)[0]

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    return fit(step, steps, optimizer=optimizer, seed=seed, schedule=warmup_cosine(warmup=0.05), modules=[model],
               label=label, progress=progress)["loss"]


def shapes_caption_fn(data: ShapesBatch, p_full: float = 0.5):
    """caption_fn for train_clip: templated_captions of the selected images of ``data``."""
    def caption_fn(index: Tensor, generator: torch.Generator) -> list[str]:
        sub = ShapesBatch(images=data.images[:0], captions=[], shape=data.shape[index], colour=data.colour[index],
                          position=data.position[index])
        return templated_captions(sub, generator, p_full=p_full)
    return caption_fn


# --------------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------------


@torch.no_grad()
def encode_texts(model: CLIP, tokenizer: WordTokenizer, texts: list[str]) -> Tensor:
    """(len(texts), embed_dim) unit-norm text embeddings."""
    device = model.log_scale.device
    tokens, _ = tokenizer(texts, length=model.text.max_len)
    return model.encode_text(tokens.to(device))


@torch.no_grad()
def encode_images(model: CLIP, images: Tensor, batch_size: int = 512) -> Tensor:
    """(B, embed_dim) unit-norm image embeddings, computed in chunks."""
    device = model.log_scale.device
    return torch.cat([model.encode_image(images[i:i + batch_size].to(device)) for i in range(0, len(images), batch_size)])


def class_prompts(task: str, templates: tuple[str, ...] | None = None) -> tuple[list[str], list[list[str]]]:
    """Class names and their prompts for a zero-shot task.

    task "shape": 3 classes ("a photo of a circle", ...); "caption": the 36 (shape, colour, position)
    combinations, class index = shape * 12 + colour * 4 + position ("a photo of a red circle at the
    top left"). templates default to PROMPT_TEMPLATES.

    Returns:
        (class names, prompts[c][m] for class c and template m).
    """
    templates = PROMPT_TEMPLATES if templates is None else templates
    if task == "shape":
        descriptions = [(s, None, None) for s in SHAPES]
    elif task == "caption":
        descriptions = [(s, c, p) for s in SHAPES for c in COLOURS for p in POSITIONS]
    else:
        raise ValueError(f"task must be 'shape' or 'caption', got {task!r}")
    names = [templated_caption(*d) for d in descriptions]
    return names, [[templated_caption(*d, template=t) for t in templates] for d in descriptions]


def class_labels(batch: ShapesBatch, task: str) -> Tensor:
    """The class index of each image of ``batch`` for class_prompts(task) ("shape" or "caption")."""
    if task == "shape":
        return batch.shape.clone()
    return batch.shape * 12 + batch.colour * 4 + batch.position


@torch.no_grad()
def zero_shot_classifier(model: CLIP, tokenizer: WordTokenizer, prompts: list[list[str]], weights_fn=zero_shot_weights) -> Tensor:
    """(C, embed_dim) zero-shot weights from prompts[c][m] (every class has the same number M of prompts)."""
    embedded = encode_texts(model, tokenizer, [p for ps in prompts for p in ps])
    return weights_fn(embedded.view(len(prompts), len(prompts[0]), -1))


@torch.no_grad()
def zero_shot_accuracy(model: CLIP, tokenizer: WordTokenizer, images: Tensor, labels: Tensor,
                       prompts: list[list[str]]) -> tuple[float, Tensor]:
    """Zero-shot accuracy of ``images`` against ``labels`` with the prompt ensemble ``prompts``; also the predictions."""
    weights = zero_shot_classifier(model, tokenizer, prompts)
    predictions = (encode_images(model, images) @ weights.T).argmax(dim=1).cpu()
    return (predictions == labels.cpu()).float().mean().item(), predictions


def fit_linear_probe(features: Tensor, labels: Tensor, num_classes: int, *, steps: int = 300, weight_decay: float = 1e-3,
                     init: Tensor | None = None, lr: float = 0.1) -> nn.Linear:
    """A logistic-regression probe on frozen features: full-batch Adam on cross-entropy + weight_decay * |W|^2.

    Starts from zero weights (deterministic), or from init: optional (num_classes, D) weights, e.g. the
    zero-shot classifier times its logit scale. Returns the fitted nn.Linear.
    """
    probe = nn.Linear(features.shape[1], num_classes).to(features.device)
    with torch.no_grad():
        probe.bias.zero_()
        if init is not None:
            probe.weight.copy_(init)
        else:
            probe.weight.zero_()

    def step(_, __) -> Tensor:
        return F.cross_entropy(probe(features), labels) + weight_decay * probe.weight.pow(2).sum()

    fit(step, steps, optimizer=torch.optim.Adam(probe.parameters(), lr=lr), label="linear probe")
    return probe


# --------------------------------------------------------------------------------------------------
# A LLaVA-style captioner: image features as prefix tokens of a tiny GPT
# --------------------------------------------------------------------------------------------------


class PrefixCaptioner(nn.Module):
    """Frozen CLIP ViT -> projection -> P prefix embeddings, then notebook 03's GPT writes the caption.

    LLaVA feeds the patch features of a frozen CLIP ViT, through a learnt projection, into an LLM as if
    they were word embeddings. Here: the ViT's P patch states (not [CLS]), a two-layer MLP projection
    (LLaVA-1.5's), and a GPT (classic block, learned positions) whose block_size covers P + T.
    """

    def __init__(self, visual: ViTEncoder, gpt_config: GPTConfig):
        super().__init__()
        self.visual = visual
        for parameter in self.visual.parameters():
            parameter.requires_grad_(False)
        d_vis = visual.patch_embedding.out_features
        self.num_prefix = visual.num_patches
        self.projection = nn.Sequential(nn.Linear(d_vis, gpt_config.d_model), nn.GELU(),
                                        nn.Linear(gpt_config.d_model, gpt_config.d_model))
        self.gpt = GPT(gpt_config)

    def prefix(self, images: Tensor) -> Tensor:
        """images (B, 3, H, W) -> prefix embeddings (B, P, d_model) from the frozen ViT's patch states."""
        with torch.no_grad():
            self.visual.eval()
            patches = self.visual(images)[:, 1:]
        return self.projection(patches)

    def forward(self, images: Tensor, tokens: Tensor) -> Tensor:
        """images (B, 3, H, W), tokens (B, T) -> logits (B, P + T, V) (position j predicts position j + 1)."""
        return self.decode(self.prefix(images), tokens)

    def decode(self, prefix: Tensor, tokens: Tensor) -> Tensor:
        """The GPT on [prefix embeddings (B, P, D); caption token embeddings (B, T, D)] -> logits (B, P + T, V).

        The prefix goes in as ``inputs_embeds``, as LLaVA feeds an LLM: positions 0 .. P + T - 1 are added
        to the whole sequence and attention is causal over it, prefix included.
        """
        return self.gpt(inputs_embeds=torch.cat([prefix, self.gpt.token_embedding(tokens)], dim=1))

    @torch.no_grad()
    def generate(self, images: Tensor, max_tokens: int, bos_id: int = BOS_ID) -> Tensor:
        """Greedy captions: (B, max_tokens) token ids after <bos>."""
        prefix = self.prefix(images)
        tokens = torch.full((len(images), 1), bos_id, dtype=torch.int64, device=images.device)
        for _ in range(max_tokens):
            logits = self.decode(prefix, tokens)
            tokens = torch.cat([tokens, logits[:, -1].argmax(dim=-1, keepdim=True)], dim=1)
        return tokens[:, 1:]


def train_captioner(captioner: PrefixCaptioner, tokenizer: WordTokenizer, data: ShapesBatch, *, steps: int,
                    batch_size: int = 64, lr: float = 3e-3, seed: int = 0, targets_fn=caption_targets,
                    progress: bool = False) -> list[float]:
    """Train the projection and the GPT (the ViT stays frozen) on the canonical captions of ``data``.

    AdamW with a cosine decay of the learning rate (no warm-up); the loss is the captions' next-token
    cross-entropy, with targets_fn(tokens, P, PAD_ID) (caption_targets, or a notebook's). Returns the losses.
    """
    device = next(captioner.gpt.parameters()).device
    tokens_all = tokenizer(data.captions)[0].to(device)
    images_all = data.images.to(device)

    def step(_, generator: torch.Generator) -> Tensor:
        index = torch.randint(0, len(data), (batch_size,), generator=generator).to(device)
        tokens = tokens_all[index]
        logits = captioner(images_all[index], tokens)
        targets = targets_fn(tokens, captioner.num_prefix, PAD_ID)
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)

    trainable = [p for p in captioner.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=0.01)
    return fit(step, steps, optimizer=optimizer, seed=seed, schedule=warmup_cosine(warmup=0.0), modules=[captioner],
               label="captioner", progress=progress)["loss"]


@torch.no_grad()
def caption_accuracy(captioner: PrefixCaptioner, tokenizer: WordTokenizer, batch: ShapesBatch) -> tuple[float, list[str]]:
    """Exact-match accuracy of greedy captions against batch.captions, and the captions."""
    device = next(captioner.gpt.parameters()).device
    length = max(len(c.split()) for c in batch.captions) + 1
    generated = captioner.generate(batch.images.to(device), length)
    texts = [tokenizer.decode(row) for row in generated.cpu()]
    return sum(t == c for t, c in zip(texts, batch.captions)) / len(texts), texts
