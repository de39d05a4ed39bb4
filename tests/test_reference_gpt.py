"""The GPT reference against independent oracles: loops, closed forms, torch's own modules."""

import math

import pytest
import torch

from gradelib.reference import gpt as G
from gradelib.reference.attention import GroupedQueryAttention, causal_mask


def small_gpt(block="classic", num_kv_heads=None, seed=0, **kwargs):
    torch.manual_seed(seed)
    config = G.GPTConfig(vocab_size=13, block_size=40, d_model=32, num_heads=4, num_layers=2, block=block,
                         num_kv_heads=num_kv_heads, **kwargs)
    model = G.GPT(config).eval()
    with torch.no_grad():  # larger weights than the init, so that any leak between positions shows
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


# --- causal LM loss and perplexity ----------------------------------------------------------------


def test_causal_lm_loss_equals_one_prefix_at_a_time():
    """One masked forward pass = T-1 separate predictions, each made by running the model on its own prefix."""
    model = small_gpt()
    tokens = torch.randint(0, 13, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        loss = G.causal_lm_loss(lambda x, m: model(x, mask=m), tokens)
        nll = []
        for t in range(tokens.shape[1] - 1):
            prefix = tokens[:, : t + 1]
            logits = model(prefix)[:, -1]  # the last position of the prefix predicts token t + 1
            nll.append(-logits.double().log_softmax(-1).gather(1, tokens[:, t + 1: t + 2]))
    assert float(loss) == pytest.approx(float(torch.cat(nll).mean()), abs=1e-5)


def test_causal_model_ignores_the_future():
    model = small_gpt("modern")
    tokens = torch.randint(0, 13, (2, 12))
    changed = tokens.clone()
    changed[:, 7:] = (changed[:, 7:] + 1) % 13
    with torch.no_grad():
        a, b = model(tokens), model(changed)
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:], atol=1e-3)


def test_perplexity_closed_forms():
    assert float(G.perplexity(torch.zeros(2, 5, 17), torch.randint(0, 17, (2, 5)))) == pytest.approx(17.0)
    logits = torch.randn(3, 6, 5, dtype=torch.float64)
    targets = torch.randint(0, 5, (3, 6))
    mask = torch.tensor([[1] * 6, [1] * 2 + [0] * 4, [1] * 4 + [0] * 2], dtype=torch.bool)
    probs = logits.softmax(-1)
    total, count = 0.0, 0
    for b in range(3):
        for t in range(6):
            if mask[b, t]:
                total -= math.log(float(probs[b, t, targets[b, t]]))
                count += 1
    assert float(G.perplexity(logits, targets, mask)) == pytest.approx(math.exp(total / count), rel=1e-10)


# --- decoding ---------------------------------------------------------------------------------------


def test_temperature_matches_categorical_and_greedy():
    logits = torch.randn(4, 9, dtype=torch.float64)
    for T in (0.3, 1.0, 2.0):
        assert torch.allclose(G.temperature_probs(logits, T), torch.distributions.Categorical(logits=logits / T).probs)
    greedy = G.temperature_probs(logits, 0.0)
    assert torch.equal(greedy.argmax(-1), logits.argmax(-1)) and torch.equal(greedy.sum(-1), torch.ones(4, dtype=torch.float64))
    assert torch.allclose(G.temperature_probs(logits, 1e-3), greedy, atol=1e-6)  # the limit T -> 0


def brute_force_top_k(row, k):
    order = sorted(range(len(row)), key=lambda i: -row[i])[:k]
    z = sum(math.exp(row[i]) for i in order)
    return [math.exp(row[i]) / z if i in order else 0.0 for i in range(len(row))]


def brute_force_top_p(row, p):
    probs = torch.tensor(row).softmax(0).tolist()
    kept, mass = [], 0.0
    for i in sorted(range(len(row)), key=lambda i: -probs[i]):
        if mass >= p:
            break
        kept.append(i)
        mass += probs[i]
    z = sum(probs[i] for i in kept)
    return [probs[i] / z if i in kept else 0.0 for i in range(len(row))]


def test_top_k_and_top_p_against_loops():
    logits = 2 * torch.randn(20, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    for k in (1, 4, 11):
        want = torch.tensor([brute_force_top_k(row, k) for row in logits.tolist()], dtype=torch.float64)
        assert torch.allclose(G.top_k_probs(logits, k), want)
    for p in (0.3, 0.75, 0.95, 1.0):
        want = torch.tensor([brute_force_top_p(row, p) for row in logits.tolist()], dtype=torch.float64)
        assert torch.allclose(G.top_p_probs(logits, p), want)


def test_top_p_keeps_the_token_that_crosses_p():
    logits = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64).log()
    assert torch.allclose(G.top_p_probs(logits, 0.6), torch.tensor([0.625, 0.375, 0.0], dtype=torch.float64))
    assert torch.allclose(G.top_p_probs(logits, 0.4), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))


def test_sampling_frequencies_follow_the_nucleus():
    logits = torch.tensor([[2.0, 1.5, 0.0, -1.0, -3.0]])
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([G.sample_next_token(logits.expand(4000, -1), 0.8, top_k=4, top_p=0.9, generator=gen)])
    freq = torch.bincount(draws.flatten(), minlength=5).double() / draws.numel()
    want = G.top_p_probs(torch.log(G.top_k_probs(logits / 0.8, 4)), 0.9)[0].double()
    assert torch.allclose(freq, want, atol=0.03)
    assert torch.equal(G.sample_next_token(logits, 0.0), torch.tensor([[0]]))


# --- alignment losses ------------------------------------------------------------------------------


def test_bradley_terry_closed_form_and_stability():
    chosen, rejected = torch.tensor([1.0, 0.0, -2.0]), torch.tensor([0.0, 0.0, 1.0])
    want = sum(-math.log(1 / (1 + math.exp(-(c - r)))) for c, r in zip(chosen.tolist(), rejected.tolist())) / 3
    assert float(G.reward_model_loss(chosen, rejected)) == pytest.approx(want, rel=1e-6)
    huge = G.reward_model_loss(torch.tensor([-300.0, 300.0]), torch.zeros(2))
    assert float(huge) == pytest.approx(150.0, rel=1e-6)


def test_dpo_is_bradley_terry_on_implicit_rewards():
    gen = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (-10 * torch.rand(5, generator=gen) for _ in range(4))
    beta = 0.3
    implicit = G.reward_model_loss(beta * (pc - rc), beta * (pr - rr))
    assert float(G.dpo_loss(pc, pr, rc, rr, beta)) == pytest.approx(float(implicit), rel=1e-6)
    assert float(G.dpo_loss(rc, rr, rc, rr, beta)) == pytest.approx(math.log(2), rel=1e-6)


def test_sequence_log_prob_is_a_sum_of_token_log_probs():
    model = small_gpt()
    prompts, answers = torch.randint(0, 13, (2, 4)), torch.randint(0, 13, (2, 3))
    with torch.no_grad():
        got = G.sequence_log_prob(model, prompts, answers)
        want = torch.zeros(2)
        for j in range(3):
            prefix = torch.cat([prompts, answers[:, :j]], 1)
            want += model(prefix)[:, -1].log_softmax(-1).gather(1, answers[:, j: j + 1]).squeeze(1)
    assert torch.allclose(got, want, atol=1e-5)


# --- blocks and model -------------------------------------------------------------------------------


def test_rmsnorm_matches_torch():
    x = torch.randn(3, 5, 16)
    ours = G.RMSNorm(16, eps=1e-6)
    with torch.no_grad():
        ours.weight.copy_(torch.randn(16))
    theirs = torch.nn.RMSNorm(16, eps=1e-6)
    theirs.load_state_dict(ours.state_dict())
    assert torch.allclose(ours(x), theirs(x), atol=1e-6)


def test_swiglu_has_the_parameters_of_a_4d_gelu_mlp():
    config = G.GPTConfig(vocab_size=5, d_model=192, block="modern")
    swiglu = G.SwiGLU(192, config.ffn_width)
    assert sum(p.numel() for p in swiglu.parameters()) == 3 * 192 * 512 == 2 * 192 * 4 * 192


@pytest.mark.parametrize("rope", [False, True])
@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_fast_causal_path_equals_the_reference_attention(rope, kv_heads):
    torch.manual_seed(0)
    attn = G.CausalSelfAttention(32, 4, kv_heads)
    x = torch.randn(2, 9, 32)
    fast, cache = attn(x, use_rope=rope)
    slow, slow_cache = GroupedQueryAttention.forward(attn, x, mask=causal_mask(9), use_rope=rope)
    assert torch.allclose(fast, slow, atol=1e-5)
    assert torch.allclose(cache.k, slow_cache.k) and cache.k.shape == (2, kv_heads, 9, 8)


@pytest.mark.parametrize(("block", "kv_heads"), [("classic", None), ("modern", None), ("modern", 1), ("classic", 2)])
def test_kv_cache_equals_recomputation(block, kv_heads):
    model = small_gpt(block, kv_heads)
    tokens = torch.randint(0, 13, (2, 30))
    with torch.no_grad():
        full = model(tokens)
        logits, caches = model.forward_cached(tokens[:, :5], [None] * 2)
        steps = [logits]
        logits, caches = model.forward_cached(tokens[:, 5:8], caches)  # a chunk of 3 after a cache
        steps.append(logits)
        for t in range(8, 30):
            logits, caches = model.forward_cached(tokens[:, t: t + 1], caches)
            steps.append(logits)
    assert (torch.cat(steps, 1) - full).abs().max() < 1e-5
    assert torch.equal(model.generate(tokens[:, :3], 25, use_kv_cache=True), model.generate(tokens[:, :3], 25, use_kv_cache=False))


def test_param_count_formula_matches_the_module_and_gpt2():
    config = G.GPTConfig(vocab_size=50, block_size=24, d_model=48, num_heads=4, num_layers=3, block="classic")
    assert G.GPT(config).num_parameters() == G.gpt_param_count(50, 24, 48, 3)
    assert G.gpt_param_count(50257, 1024, 768, 12) == 124_439_808  # GPT-2 small, as in the released checkpoint
    assert G.gpt_param_count(50257, 1024, 1600, 48) == 1_557_611_200  # GPT-2 XL ("1.5B")
    assert round(G.gpt_param_count(50257, 2048, 12288, 96) / 1e9) == 175  # GPT-3


# --- T5 span corruption and training utilities ------------------------------------------------------


def test_span_corruption_reproduces_the_t5_paper_example():
    words = "Thank you for inviting me to your party last week .".split()
    source, target = G.span_corruption(words, [(2, 4), (8, 9)])
    assert source == "Thank you <extra_id_0> me to your party <extra_id_1> week ."
    assert target == "<extra_id_0> for inviting <extra_id_1> last <extra_id_2>"


def test_random_spans_have_t5_statistics():
    gen = torch.Generator().manual_seed(0)
    for n in (20, 100, 500):
        spans = G.random_spans(n, generator=gen)
        covered = sum(e - s for s, e in spans)
        assert covered == max(1, round(0.15 * n))
        assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:])) and spans[-1][1] <= n
        assert len(spans) == max(1, round(covered / 3))


def test_timed_trainer_schedule_runs_on_its_own_seconds():
    model = small_gpt()
    trainer = G.TimedTrainer(model, torch.randint(0, 13, (500,)), seconds=10.0, block_size=16, batch_size=4,
                             lr=1e-3, final_lr=1e-4, warmup=0.1)
    # warm-up from 1e-3 / 0.1 of the peak, the peak at 10% of the budget, half-way down the cosine at 55%, final at 100%
    for elapsed, lr in [(0.0, 1e-3 * 1e-3 / 0.1), (1.0, 1e-3), (5.5, 1e-4 + 0.5 * (1e-3 - 1e-4)), (10.0, 1e-4)]:
        trainer.elapsed = elapsed
        before = [p.detach().clone() for p in model.parameters()]
        trainer.step()
        assert all(group["lr"] == pytest.approx(lr, rel=1e-9) for group in trainer.optimizer.param_groups)
        assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # it took a step


def test_timed_trainer_stops_at_its_budget():
    model = small_gpt()
    trainer = G.TimedTrainer(model, torch.randint(0, 13, (500,)), seconds=0.3, block_size=16, batch_size=4, lr=1e-3)
    while not trainer.done:
        trainer.step()
    assert trainer.elapsed >= 0.3 and trainer.steps == len(trainer.losses) > 0
    assert all(math.isfinite(v) for v in trainer.losses)


def test_inputs_embeds_replace_the_token_embeddings():
    from gradelib.reference.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    for block in ("classic", "modern"):
        model = GPT(GPTConfig(vocab_size=11, block_size=8, d_model=16, num_heads=2, num_layers=2, block=block)).eval()
        tokens = torch.randint(0, 11, (2, 6))
        embeds = model.token_embedding(tokens)
        torch.testing.assert_close(model(inputs_embeds=embeds), model(tokens), rtol=0, atol=0)
        # the embeddings are really used (a constant shift would not show: LayerNorm removes it)
        shifted = model(inputs_embeds=embeds + 0.1 * torch.randn_like(embeds))
        assert not torch.allclose(shifted, model(tokens))
        with pytest.raises(ValueError, match="exactly one"):
            model(tokens, inputs_embeds=embeds)
