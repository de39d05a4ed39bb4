"""Every notebook through nbgrader: generate_assignment -> autograde -> generate_feedback -> export.

One RoundTrip per notebook: the solution earns the total and the untouched student version 0 (its items say
"no answer yet"), and each Planted submission, the solution with plausible mistakes, loses exactly the points of
its cells, with feedback that names each mistake. A notebook's round trip is selected by its name:
`pytest tests -k "roundtrip and 06"`. The machinery is in tests/roundtrip.py.
"""

import pytest
from roundtrip import (Planted, RoundTrip, assert_planted_mistakes_graded, assert_solution_full_and_untouched_zero,
                       grade_round_trip)

ROUND_TRIPS = [
    RoundTrip("01_attention", total=29.0, planted={  # code 17, derive 4, predict 3, concept 5
        # An unstable softmax (exp without subtracting the row maximum) in exercise 1, a wrong concept answer, a
        # derivation that forgets to divide by √d_k (one of its two results wrong), and the notes' own value as the
        # prediction.
        "buggy": Planted(
            edits={
                "sdpa": ("weights = torch.softmax(scores, dim=-1)",
                         "weights = scores.exp() / scores.exp().sum(dim=-1, keepdim=True)"),
                "cross_attention": ('answer_cross_attention = "B"', 'answer_cross_attention = "C"'),
                "scaling": ("std_scaled = sympy.sqrt(var_qk / d_k)", "std_scaled = sympy.sqrt(var_qk)"),
                "example_2_score": ("predicted_top_left_score = 9 / math.sqrt(2)", "predicted_top_left_score = 1.636"),
            },
            scores={"code_sdpa": 2.4, "concept_cross_attention": 0,  # 4 of 5 cases
                    "derive_scaling": 1.0, "predict_example_2_score": 0},
            points_lost=0.6 + 1 + 1 + 1,
            feedback=("Scaled dot-product attention: 2.4 / 3 points", "large scores stay finite", "NaN or inf",
                      "Why √d_k: the variance of q·k: 1 / 2 points", "depends on d_k, which it should not",
                      "recompute K = X W_K for this X", "the queries come from the caption being generated")),
        # One slip in exercise 1 (no 1/√d_k), on which exercises 4, 6 and 7 build: it costs exercise 1 only.
        "no_scale": Planted(
            edits={"sdpa": ("scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)", "scores = q @ k.transpose(-2, -1)")},
            scores={"code_sdpa": 0},
            points_lost=3,
            feedback=("1/√d_k scaling missing",),
            repeated={"fix exercise 1 (scaled_dot_product_attention)": 3}),  # in exercises 4, 6 and 7
    }),
    RoundTrip("02_bert", total=28.0, planted={  # code 17, derive 4, predict 1, concept 6
        # Each costing only its own cell: MLM masking that may select special tokens ([CLS], [SEP], [PAD]) in
        # exercise 6 (every case checks that first), a wrong concept answer, the 12 d² + 13 d shortcut for a layer
        # with an FFN of any width (derivation 1: one of its two results), and a prediction that takes
        # BERT-base's real FFN instead of the notes' one.
        "buggy": Planted(
            edits={
                "mask": ("selected = (torch.rand(input_ids.shape, generator=generator) < 0.15) & (input_ids >= NUM_SPECIAL)",
                         "selected = torch.rand(input_ids.shape, generator=generator) < 0.15"),
                "why_80_10_10": ('answer_why_80_10_10 = "B"\n', 'answer_why_80_10_10 = "A"\n'),
                "bert_size": ("layer_params = attention + ffn + layer_norms", "layer_params = 12 * d**2 + 13 * d"),
                "notes_bert_base": ("predicted_bert_base_millions = float(",
                                    "predicted_bert_base_millions = 109.48 + 0 * float("),
            },
            scores={"code_mask": 0, "concept_why_80_10_10": 0, "derive_bert_size": 1, "predict_notes_bert_base": 0},
            points_lost=3 + 1 + 1 + 1,
            feedback=("MLM masking: 0 / 3 points", "they must never be masked",
                      "Parameters of BERT's layer and embeddings: 1 / 2 points", "misses a dependence on d_ff",
                      "the question takes the notes")),
    }),
    RoundTrip("03_gpt", total=28.0, planted={  # code 16, derive 5, predict 1, concept 6
        # Each costing only its own cell: a causal-LM loss whose mask also lets each position see the next token
        # (a look-ahead mask), a perplexity that reads a loss in bits as nats, "temperature 0 is greedy, so the top
        # token gets probability 1" in derivation 2 (one of its two results), and a prediction that takes the
        # arithmetic mean of 1/p.
        "buggy": Planted(
            edits={
                "lm_loss": ("logits = model(inputs, causal_mask(inputs.shape[1], inputs.device))",
                            "logits = model(inputs, torch.ones(inputs.shape[1], inputs.shape[1], dtype=torch.bool).tril(1))"),
                "ppl_bits": ("answer_perplexity = 2 ** 2.5", "answer_perplexity = math.exp(2.5)"),
                "temperature_limits": ("p_cold = 1 / k", "p_cold = k / k"),
                "nll_example": ("predicted_perplexity = (2 * 4 * 8 * 2) ** (1 / 4)",
                                "predicted_perplexity = (2 + 4 + 8 + 2) / 4"),
            },
            scores={"code_lm_loss": 0, "concept_ppl_bits": 0, "derive_temperature_limits": 1, "predict_nll_example": 0},
            points_lost=3 + 1 + 1 + 1,
            feedback=("Causal language-modelling loss: 0 / 3 points", "look-ahead mask", "Temperature limits: 1 / 2 points",
                      "misses a dependence on k", "that reads the loss as nats", "that is the arithmetic mean of 1/p")),
    }),
    RoundTrip("04_vae", total=23.0, planted={  # code 13, derive 4, predict 1, concept 5
        # The KL term of the negative ELBO without its ½ (written out by hand instead of calling the reference), a
        # wrong concept answer (exp(logvar) as the standard deviation), a derivation without its ½, a gap computed
        # against the prior instead of the posterior (one of the derivation's two results), and a prediction that
        # forgets to divide by the evidence.
        "buggy": Planted(
            edits={
                "neg_elbo": ("return reconstruction + reference.gaussian_kl_standard_normal(mu, logvar)",
                             "return reconstruction + (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=-1)"),
                "reparam_trick": ('answer_reparameterization = "C"', 'answer_reparameterization = "A"'),
                "kl_1d": ("kl_1d = (mu**2 + sigma**2 - sympy.log(sigma**2) - 1) / 2",
                          "kl_1d = mu**2 + sigma**2 - sympy.log(sigma**2) - 1"),
                "elbo_gap": ("gap = log_px - elbo", "gap = (v + m**2 - 1 - sympy.log(v)) / 2"),
                "bayes_banana": ("predicted_p_banana = 0.38 * 0.2 / (0.24 * 0.3 + 0.15 * 0.4 + 0.38 * 0.2)",
                                 "predicted_p_banana = 0.38 * 0.2"),
            },
            scores={"code_neg_elbo": 0, "concept_reparam_trick": 0, "derive_kl_1d": 0, "derive_elbo_gap": 1,
                    "predict_bayes_banana": 0},  # every ELBO case has a non-zero KL
            points_lost=2 + 1 + 2 + 1 + 1,
            feedback=("Negative ELBO, Bernoulli decoder: 0 / 2 points", "missing its factor ½",
                      "off by a constant factor (×2)", "misses a dependence on x, s2",
                      "divide it by the evidence p(x)", "exp(l) is the variance σ²")),
        # One that costs part of an exercise: a log-mean-exp without the max trick, which only fails on the case with
        # very negative log-weights; with it, a correct negative ELBO through torch.distributions' Bernoulli, which
        # torch validates against grey-level targets (issue #14 §6: it must earn full marks).
        "unstable": Planted(
            edits={
                "iwae": ("return torch.logsumexp(log_w, dim=0) - math.log(z.shape[0])",
                         "return torch.log(torch.exp(log_w).mean(dim=0))"),
                "neg_elbo": ("return reconstruction + reference.gaussian_kl_standard_normal(mu, logvar)",
                             "return -torch.distributions.Bernoulli(logits=logits).log_prob(x).sum(-1) + reference.gaussian_kl_standard_normal(mu, logvar)"),
            },
            scores={"code_iwae": 2.25},  # 3 of 4 cases pass
            points_lost=0.75,
            feedback=("IWAE estimate of log p(x): 2.25 / 3 points", "use logsumexp",
                      "Negative ELBO, Bernoulli decoder: 2 / 2 points")),
        # The shortcut of calling the reference for the exercise itself: it must earn nothing.
        "calls_reference": Planted(
            edits={"kl": ("return 0.5 * (mu.pow(2) + logvar.exp() - logvar - 1).sum(dim=-1)",
                          "return reference.gaussian_kl_standard_normal(mu, logvar)")},
            scores={"code_kl": 0},
            points_lost=2,
            feedback=("calls gradelib.reference's gaussian_kl_standard_normal",)),
    }),
    RoundTrip("05_gan", total=23.0, planted={  # code 13, derive 4, predict 1, concept 5
        # log(sigmoid(.)) instead of logsigmoid in the discriminator loss (fine until the discriminator is
        # confident, then -inf), a wrong concept answer (each code matched to the prior, as in a VAE), real and fake
        # swapped in D*, the notes' extra −log 4 in C(G) (one of the derivation's two results), and the notes' claim
        # (≥ 0) in place of the value of their expression.
        "buggy": Planted(
            edits={
                "d_loss": ("return -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()",
                           "return -torch.log(torch.sigmoid(real_logits)).mean() - torch.log(1 - torch.sigmoid(fake_logits)).mean()"),
                "aae": ('answer_aae = "B"', 'answer_aae = "A"'),
                "optimal_discriminator": ("d_star = a / (a + b)", "d_star = b / (a + b)"),
                "value_at_optimum": ("c_of_g = -sympy.log(4) + 2 * jsd", "c_of_g = -2 * sympy.log(4) + 2 * jsd"),
                "notes_c_of_g": ("predicted_notes_at_equilibrium = -2 * math.log(4)",
                                 "predicted_notes_at_equilibrium = 0.0"),
            },
            scores={"code_d_loss": 1.5, "concept_aae": 0, "derive_optimal_discriminator": 0,
                    "derive_value_at_optimum": 1, "predict_notes_c_of_g": 0},  # 3 of 4 d_loss cases pass
            points_lost=0.5 + 1 + 2 + 1 + 1,
            feedback=("Discriminator loss: 1.5 / 2 points", "a confident, wrong D", "NaN or inf",
                      "correct at p_data = p_g (a = b) but not in general", "off by an additive constant",
                      "that is the notes' claim (≥ 0), not the value of their expression", "pooled over all images")),
        # The shortcut of calling the reference for the exercise itself: it must earn nothing.
        "calls_reference": Planted(
            edits={"d_loss": ("return -F.logsigmoid(real_logits).mean() - F.logsigmoid(-fake_logits).mean()",
                              "return reference.discriminator_loss(real_logits, fake_logits)")},
            scores={"code_d_loss": 0},
            points_lost=2,
            feedback=("calls gradelib.reference's discriminator_loss",)),
    }),
    RoundTrip("06_ddpm", total=25.0, planted={  # code 12, derive 7, predict 2, concept 4
        # Each costing only its own cell: the posterior takes ᾱ_(t−1) as alpha_bars[t − 1], right except at t = 0
        # where it wraps round to the last entry (4 of 5 cases pass); a wrong concept answer the question diagnoses;
        # derivation 2 with √ᾱ_t where √α_t belongs in the x_t coefficient (right at t = 1 only: one of its three
        # results); derivation 3 without the ½ of the KL in the weight (one of its two results); and prediction 2
        # made with the notes' rule x_t − ε.
        "buggy": Planted(
            edits={
                "posterior_mean_variance": ("alpha_bars_prev[t].view(shape)", "alpha_bars[t - 1].view(shape)"),
                "short_chain": ('answer_short_chain = "B"\n', 'answer_short_chain = "C"\n'),
                "posterior": ("coef_xt = beta_tilde * sympy.sqrt(alpha_t) / beta_t",
                              "coef_xt = beta_tilde * sympy.sqrt(abar_t) / beta_t"),
                "elbo_term": ("weight = beta_t**2 / (2 * beta_t * alpha_t * (1 - abar_t))",
                              "weight = beta_t**2 / (beta_t * alpha_t * (1 - abar_t))"),
                "backward_example": ("predicted_reverse_mean = (2.0 - 0.5 / math.sqrt(1 - 0.5) * 0.9) / math.sqrt(0.5)",
                                     "predicted_reverse_mean = 2.0 - 0.9"),
            },
            scores={"code_posterior_mean_variance": 2.4, "concept_short_chain": 0, "derive_posterior": 2,
                    "derive_elbo_term": 1, "predict_backward_example": 0},
            points_lost=0.6 + 1 + 1 + 1 + 1,
            feedback=("posterior_mean_variance: 2.4 / 3 points", "wraps round to alpha_bars[−1] at t = 0",
                      "The posterior q(x_(t−1) | x_t, x_0): 2 / 3 points", "correct at t = 1 (ᾱ_0 = 1) but not in general",
                      "One ELBO term L_(t−1) for 1-D data, σ_t² = β_t: 1 / 2 points", "off by a constant factor (×2)",
                      "that is the notes' rule x_t - eps", "no trainable parameters: no loss can reduce it")),
        # A second student forgets the square root on q_sample's noise coefficient (every case fails).
        "no_sqrt": Planted(
            edits={"q_sample": ("noise_scale = (1 - alpha_bars[t]).sqrt().view(shape)",
                                "noise_scale = (1 - alpha_bars[t]).view(shape)")},
            scores={"code_q_sample": 0},
            points_lost=2,
            feedback=("q_sample: 0 / 2 points", "the noise coefficient lacks its square root")),
    }),
    RoundTrip("07_stable_diffusion", total=21.0, planted={  # code 11, derivations 4, prediction 1, concept questions 5
        # The guidance difference with its sign flipped, in the code (right only at w = 0, which no longer earns
        # points on its own) and in the derivation; the image-to-image start step one too late (right only at
        # strength 1, where it is clamped to T - 1); the ratio of positions predicted for self-attention's saving
        # instead of its square; and the forward process taken to be absent from training.
        "buggy": Planted(
            edits={
                "guidance": ("return eps_uncond + guidance_scale * (eps_cond - eps_uncond)",
                             "return eps_uncond + guidance_scale * (eps_uncond - eps_cond)"),
                "sdedit": ("t = max(int(round(strength * len(alpha_bars))) - 1, 0)",
                           "t = min(int(round(strength * len(alpha_bars))), len(alpha_bars) - 1)"),
                "guidance_score": ("eps_guided = eps_u + w * (eps_c - eps_u)", "eps_guided = eps_u + w * (eps_u - eps_c)"),
                "attention_saving": ("predicted_attention_saving = ((512 * 512) // (64 * 64)) ** 2",
                                     "predicted_attention_saving = (512 * 512) // (64 * 64)"),
                "training_step": ('answer_training_step = "C"', 'answer_training_step = "B"'),
            },
            scores={"code_guidance": 0, "code_sdedit": 0, "derive_guidance_score": 1, "predict_attention_saving": 0,
                    "concept_training_step": 0},
            points_lost=2 + 2 + 1 + 1 + 1,
            feedback=("Classifier-free guidance: 0 / 2 points", "points away from the caption",
                      "SDEdit noising: 0 / 2 points", "one step too late",
                      "Guidance as the score of p(z_t) p(y|z_t)^w: 1 / 2 points", "correct at w = 0 but not in general",
                      "the ratio of positions", "in one jump from z_0")),
    }),
    RoundTrip("08_clip", total=21.0, planted={  # code 11, derivations 4, prediction 1, concept questions 5
        # The logit scale left unclamped (right until log_scale passes log 100), padding kept as a caption target,
        # the −1 of the target forgotten in the gradient of InfoNCE, the softmax of the raw cosines predicted (the
        # temperature forgotten), and more varied few-shot examples taken to be always better.
        "buggy": Planted(
            edits={
                "infonce": ("logits = log_scale.clamp(max=math.log(100)).exp() * image @ text.T",
                            "logits = log_scale.exp() * image @ text.T"),
                "targets": ("next_tokens.masked_fill(next_tokens == pad_id, -100)", "next_tokens"),
                "infonce_gradient": ("grad_positive = sympy.exp(l1) / partition - 1",
                                     "grad_positive = sympy.exp(l1) / partition"),
                "initial_softmax": ("predicted_best_probability = 0.578", "predicted_best_probability = 0.350"),
                "few_shot": ('answer_few_shot = "B"', 'answer_few_shot = "C"'),
            },
            scores={"code_infonce": 2.25, "code_targets": 0, "derive_infonce_gradient": 1,
                    "predict_initial_softmax": 0, "concept_few_shot": 0},
            points_lost=0.75 + 2 + 1 + 1 + 1,
            feedback=("Symmetric InfoNCE: 2.25 / 3 points", "not clamped", "Caption targets: 0 / 2 points",
                      "padding is a target", "The gradient of InfoNCE: 1 / 2 points", "off by an additive constant",
                      "softmax of the raw cosines", "varied examples help only when")),
    }),
    RoundTrip("09_tvlt", total=25.0, planted={  # code 14, derive 5, predict 1, concept 5
        # One per kind of item: rounding the kept count up; the inverse mel scale with e^x where 10^x belongs; the
        # encoder's sequence without [CLS]; the prediction counting weights but no biases; the speed-up of ASR
        # alone (the notes' figure) instead of the whole pipeline.
        "buggy": Planted(
            edits={
                "masking": ("keep = int(N * (1 - mask_ratio))", "keep = math.ceil(N * (1 - mask_ratio))"),
                "mel_scale": ("hz = f_b * (10**(m / A) - 1)", "hz = f_b * (sympy.exp(m / A) - 1)"),
                "token_counts": ("n_encoder = 1 + (1 - r)", "n_encoder = (1 - r)"),
                "encoder_params": ("predicted_encoder_params = 12 * (4 * (768 * 768 + 768) + 2 * 768 * 3072 + 3072 + 768 + 2 * 2 * 768) / 1e6",
                                   "predicted_encoder_params = 12 * (4 * 768 * 768 + 2 * 768 * 3072) / 1e6"),
                "speedup": ("answer_speedup = (2890 + 103) / 103", "answer_speedup = 2890 / 103"),
            },
            scores={
                "code_masking": 2.25,           # 3 of 4 cases: only N = 10 (K = int(2.5) = 2) tells ceil from int
                "derive_mel_scale": 1,          # mel right, hz wrong: 1 of 2
                "derive_token_counts": 2,       # n_video and n_audio right, n_encoder wrong: 2 of 3
                "predict_encoder_params": 0,
                "concept_speedup": 0,
            },
            points_lost=0.75 + 1 + 1 + 1 + 1,
            feedback=("Random masking: 2.25 / 3 points", "(round down)",
                      "The mel scale and its inverse: 1 / 2 points", "correct at m = 0 but not in general",
                      "Token counts of a clip: 2 / 3 points", "off by an additive constant",
                      "weights only: every linear layer also has a bias",
                      "that is ASR alone against TVLT: the pipeline also runs its second stage")),
    }),
]
PLANTED = [(trip, student) for trip in ROUND_TRIPS for student in trip.planted]


@pytest.fixture(scope="module")
def graded(released_course):
    """graded(trip): the trip's submissions autograded, once per notebook whatever order the tests run in
    (a failure too is kept, so the notebook's other tests report it without grading again)."""
    results = {}

    def graded_trip(trip: RoundTrip):
        if trip.assignment not in results:
            try:
                results[trip.assignment] = grade_round_trip(released_course, trip)
            except BaseException as failure:
                results[trip.assignment] = failure
        result = results[trip.assignment]
        if isinstance(result, BaseException):
            raise result
        return result

    return graded_trip


@pytest.mark.parametrize("trip", ROUND_TRIPS, ids=[trip.assignment for trip in ROUND_TRIPS])
def test_solution_scores_full_marks_and_the_untouched_notebook_zero(graded, trip):
    assert_solution_full_and_untouched_zero(graded(trip), trip.total)


@pytest.mark.parametrize(("trip", "student"), PLANTED, ids=[f"{trip.assignment}-{student}" for trip, student in PLANTED])
def test_planted_mistakes_cost_their_own_cells_and_are_named_in_the_feedback(graded, trip, student):
    assert_planted_mistakes_graded(graded(trip), student, trip.planted[student], trip.total)
