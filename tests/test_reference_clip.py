"""gradelib.reference.clip against independent oracles: F.unfold / Conv2d, explicit loops, invariances."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from gradelib.data import ALL_COMBINATIONS, COLOURS, SHAPES, caption_for, captioned_shapes
from gradelib.reference import clip as ref
from gradelib.reference.gpt import GPTConfig
from gradelib.reference.tokenization import WordTokenizer


def test_patchify_matches_unfold_and_a_strided_conv():
    x = torch.rand(2, 3, 8, 12)
    patches = ref.patchify(x, 4)
    assert torch.equal(patches, F.unfold(x, 4, stride=4).transpose(1, 2))
    conv = nn.Conv2d(3, 5, kernel_size=4, stride=4)
    linear = nn.Linear(48, 5)
    with torch.no_grad():
        linear.weight.copy_(conv.weight.reshape(5, -1))
        linear.bias.copy_(conv.bias)
    assert torch.allclose(linear(patches), conv(x).flatten(2).transpose(1, 2), atol=1e-6)


def test_clip_logits_are_scaled_cosines_with_a_clamped_scale():
    i, t = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    cos = torch.tensor([[float(a @ b / a.norm() / b.norm()) for b in t] for a in i], dtype=torch.float64)
    assert torch.allclose(ref.clip_logits(i, t, torch.tensor(math.log(7.0))), 7 * cos)
    assert torch.allclose(ref.clip_logits(i, t, torch.tensor(math.log(1e4))), 100 * cos)
    assert math.isclose(math.exp(ref.INIT_LOG_SCALE), 1 / 0.07)


def test_symmetric_infonce_matches_an_explicit_loop_and_is_invariant_to_swapping_the_modalities():
    i, t = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    s = torch.tensor(2.0, dtype=torch.float64)
    logits = math.exp(2.0) * F.normalize(i, dim=1) @ F.normalize(t, dim=1).T
    p_rows, p_cols = logits.softmax(dim=1), logits.softmax(dim=0)
    i2t = -sum(math.log(p_rows[k, k]) for k in range(6)) / 6
    t2i = -sum(math.log(p_cols[k, k]) for k in range(6)) / 6
    loss, a, b = ref.symmetric_infonce(i, t, s)
    assert math.isclose(a, i2t, rel_tol=1e-9) and math.isclose(b, t2i, rel_tol=1e-9)
    assert math.isclose(loss, (i2t + t2i) / 2, rel_tol=1e-9)
    swapped, a2, b2 = ref.symmetric_infonce(t, i, s)  # swapping the modalities swaps the directions
    assert math.isclose(swapped, loss, rel_tol=1e-12) and math.isclose(a2, t2i, rel_tol=1e-9)


def test_infonce_of_random_embeddings_is_near_log_n_at_scale_zero():
    """With log_scale -> -inf the logits are all equal, and each cross-entropy is exactly log N."""
    i, t = torch.randn(8, 4), torch.randn(8, 4)
    loss = ref.symmetric_infonce(i, t, torch.tensor(-30.0))[0]
    assert math.isclose(loss, math.log(8), rel_tol=1e-5)


def test_zero_shot_weights_are_unit_and_ignore_prompt_norms():
    e = torch.randn(4, 3, 5)
    w = ref.zero_shot_weights(e)
    assert torch.allclose(w.norm(dim=1), torch.ones(4))
    assert torch.allclose(ref.zero_shot_weights(e * torch.rand(4, 3, 1) * 10), w, atol=1e-6)
    assert torch.allclose(ref.zero_shot_weights(e[:, :1]), F.normalize(e[:, 0], dim=1))


def test_recall_at_k_matches_a_count_and_is_pessimistic_about_ties():
    s = torch.randn(20, 30)
    for k in (1, 3, 10):
        hits = sum(int(torch.argsort(s[i], descending=True)[:k].eq(i).any()) for i in range(20))
        assert math.isclose(ref.recall_at_k(s, k), hits / 20, rel_tol=1e-6)
    assert ref.recall_at_k(torch.zeros(5, 5), 4) == 0 and ref.recall_at_k(torch.zeros(5, 5), 5) == 1


def test_caption_targets_make_cross_entropy_the_caption_nll():
    tokens = torch.tensor([[1, 5, 6, 2, 0], [1, 7, 8, 9, 2]])
    P, V = 3, 12
    logits = torch.randn(2, P + 5, V)
    targets = ref.caption_targets(tokens, P)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
    log_p = logits.log_softmax(-1)
    terms = [log_p[b, P + t, tokens[b, t + 1]] for b in range(2) for t in range(4) if tokens[b, t + 1] != 0]
    assert len(terms) == 7 and math.isclose(loss, -sum(terms) / 7, rel_tol=1e-5)
    assert (targets[:, :P] == -100).all()


def test_a_full_templated_caption_is_the_datasets_caption():
    assert all(ref.templated_caption(*combo) == caption_for(*combo) for combo in ALL_COMBINATIONS)
    assert ref.templated_caption("circle", None, "top left", "a photo of a {}") == "a photo of a circle at the top left"


def test_templated_captions_tokenise_and_fit_the_text_encoder():
    tok = WordTokenizer(ref.CAPTION_WORDS)
    batch = captioned_shapes(200, seed=0)
    captions = ref.templated_captions(batch, torch.Generator().manual_seed(0))
    ids, _ = tok(captions)
    assert ids.shape[1] <= 12
    assert all(tok.decode(row) == c for row, c in zip(ids, captions))
    assert all(SHAPES[s] in c for s, c in zip(batch.shape.tolist(), captions))
    assert any(c == batch.captions[i] for i, c in enumerate(captions))  # some captions are the full, canonical ones


def test_text_encoder_ignores_padding_thanks_to_causal_attention():
    tok = WordTokenizer(ref.CAPTION_WORDS)
    encoder = ref.TextTransformer(tok.vocab_size).eval()
    short, _ = tok(["a red circle"], length=5)
    padded, _ = tok(["a red circle"], length=encoder.max_len)
    assert encoder.max_len == 12 and torch.allclose(encoder(short), encoder(padded), atol=1e-5)


def test_spurious_split_ties_colour_to_shape_and_counterfactuals_never_do():
    tied = ref.spurious_shapes(100, seed=0)
    counter = ref.counterfactual_shapes(100, seed=0)
    colour_of = torch.tensor([COLOURS.index(ref.BIASED_COLOUR_OF_SHAPE[s]) for s in SHAPES])
    assert (tied.colour == colour_of[tied.shape]).all() and (counter.colour != colour_of[counter.shape]).all()
    assert len(tied) == len(counter) == 100 and len(set(counter.captions)) > 20


def test_a_few_steps_of_training_lower_the_loss_and_the_captioner_runs():
    torch.manual_seed(0)
    tok = WordTokenizer(ref.CAPTION_WORDS)
    data = captioned_shapes(256, seed=0)
    model = ref.CLIP(tok.vocab_size, d_model=32, num_layers=1)
    losses = ref.train_clip(model, tok, data.images, ref.shapes_caption_fn(data), steps=40, batch_size=64, lr=3e-3)
    assert sum(losses[-5:]) / 5 < losses[0] - 0.3
    captioner = ref.PrefixCaptioner(model.visual, GPTConfig(vocab_size=tok.vocab_size, block_size=25, d_model=32,
                                                            num_heads=2, num_layers=1))
    tokens, _ = tok(data.captions[:4])
    assert captioner(data.images[:4], tokens).shape == (4, 16 + tokens.shape[1], tok.vocab_size)
    frozen = [p.clone() for p in model.visual.parameters()]
    ref.train_captioner(captioner, tok, data, steps=3, batch_size=8)
    assert all(torch.equal(a, b) for a, b in zip(frozen, model.visual.parameters()))  # the ViT stays frozen
    accuracy, texts = ref.caption_accuracy(captioner, tok, captioned_shapes(4, seed=1))
    assert 0 <= accuracy <= 1 and len(texts) == 4


def test_the_captioner_feeds_its_prefix_to_the_gpt_as_inputs_embeds():
    """Same logits as running the GPT's blocks by hand on [prefix; token embeddings] + positions 0 .. P + T - 1."""
    torch.manual_seed(0)
    model = ref.CLIP(20, d_model=32, num_layers=1)
    captioner = ref.PrefixCaptioner(model.visual, GPTConfig(vocab_size=20, block_size=25, d_model=32, num_heads=2,
                                                            num_layers=2)).eval()
    images, tokens = torch.rand(3, 3, 16, 16), torch.randint(0, 20, (3, 6))
    with torch.no_grad():
        gpt = captioner.gpt
        x = torch.cat([captioner.prefix(images), gpt.token_embedding(tokens)], dim=1)
        x = x + gpt.position_embedding(torch.arange(x.shape[1]))
        for block in gpt.blocks:
            x, _ = block(x)  # causal over the whole sequence, prefix included
        want = gpt.head(gpt.final_norm(x))
        assert torch.allclose(captioner(images, tokens), want, atol=1e-6)
        generated = captioner.generate(images, 3)
        first = captioner(images, tokens[:, :1].fill_(1))[:, -1].argmax(-1)  # the step after <bos>
    assert generated.shape == (3, 3) and torch.equal(generated[:, 0], first)


def test_text_transformer_params_counts_a_real_stack_and_gives_clips_63m():
    from gradelib.reference.attention import TransformerBlock
    vocab, ctx, width, layers, embed = 50, 7, 16, 3, 8
    modules = nn.ModuleList([nn.Embedding(vocab, width), *[TransformerBlock(width, 4, 4 * width) for _ in range(layers)],
                             nn.LayerNorm(width), nn.Linear(width, embed, bias=False)])
    counted = sum(p.numel() for p in modules.parameters()) + ctx * width
    assert ref.text_transformer_params(vocab, ctx, width, layers, embed) == counted
    assert round(ref.text_transformer_params(49408, 77, 512, 12, 512) / 1e6) == 63
