"""The GAN reference against independent oracles: torch's BCE, closed forms, numerical integration."""

import math

import pytest
import torch
import torch.nn.functional as F

from gradelib.checks.gan import _one_thread
from gradelib.data import RING8_CENTERS, RING8_STD, toy2d
from gradelib.reference import gan as ref


@pytest.fixture(autouse=True)
def one_thread():
    """The networks here are tiny: on a shared 2-core machine one thread is much faster than two."""
    with _one_thread():
        yield


def logits(n, seed=0, scale=3.0):
    return scale * torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_discriminator_loss_is_bce_with_real_one_fake_zero_and_minus_v():
    real, fake = logits(7), logits(5, seed=1)
    bce = (F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
           + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake)))
    assert torch.allclose(ref.discriminator_loss(real, fake), bce)
    assert torch.allclose(ref.value_function(real, fake), -bce)
    d_real, d_fake = torch.sigmoid(real), torch.sigmoid(fake)
    assert torch.allclose(ref.value_function(real, fake), d_real.log().mean() + (1 - d_fake).log().mean())


def test_losses_stay_finite_for_confident_discriminators():
    big = torch.tensor([60.0, -60.0])
    assert torch.isfinite(ref.discriminator_loss(big, big)) and torch.isfinite(ref.generator_loss(big))
    assert ref.generator_loss(torch.tensor([-60.0])).item() == pytest.approx(60.0)


def test_generator_losses_and_their_gradients():
    fake = logits(9, seed=2).requires_grad_(True)
    d = torch.sigmoid(fake.detach())
    assert torch.allclose(ref.generator_loss(fake), -(d.log()).mean())
    assert torch.allclose(ref.generator_loss(fake, saturating=True), (1 - d).log().mean())
    for saturating in (False, True):
        (grad,) = torch.autograd.grad(ref.generator_loss(fake, saturating=saturating) * fake.numel(), fake)
        assert torch.allclose(grad, ref.generator_loss_gradient(fake.detach(), saturating=saturating))
    # Where D confidently rejects the fakes the saturating gradient vanishes, the other does not.
    rejected = torch.tensor([-8.0])
    assert abs(ref.generator_loss_gradient(rejected, saturating=True).item()) < 1e-3
    assert abs(ref.generator_loss_gradient(rejected).item()) > 0.999


def test_optimal_discriminator_maximises_the_pointwise_objective():
    # Brute force: argmax over D in (0, 1) of a log D + b log(1 - D).
    grid = torch.linspace(1e-4, 1 - 1e-4, 200_001, dtype=torch.float64)
    for a, b in [(0.3, 0.7), (2.0, 0.5), (1.0, 1.0)]:
        best = grid[(a * grid.log() + b * (1 - grid).log()).argmax()]
        assert ref.optimal_discriminator(torch.tensor(a), torch.tensor(b)).item() == pytest.approx(best.item(), abs=1e-4)
    assert ref.optimal_discriminator(torch.tensor([0.0, 0.0, 1.0]), torch.tensor([0.0, 2.0, 0.0])).tolist() == [0.5, 0.0, 1.0]


def test_jensen_shannon_against_scipy_style_definition_and_bounds():
    gen = torch.Generator().manual_seed(0)
    p = torch.rand(5, 7, generator=gen, dtype=torch.float64); p /= p.sum(-1, keepdim=True)
    q = torch.rand(5, 7, generator=gen, dtype=torch.float64); q /= q.sum(-1, keepdim=True)
    m = (p + q) / 2
    expected = 0.5 * (p * (p / m).log()).sum(-1) + 0.5 * (q * (q / m).log()).sum(-1)
    assert torch.allclose(ref.jensen_shannon_divergence(p, q), expected)
    assert torch.allclose(ref.jensen_shannon_divergence(p, p), torch.zeros(5, dtype=torch.float64), atol=1e-12)
    disjoint = ref.jensen_shannon_divergence(torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert disjoint.item() == pytest.approx(math.log(2))


def test_virtual_training_criterion_is_minus_log4_plus_two_jsd():
    gen = torch.Generator().manual_seed(1)
    p = torch.rand(4, 9, generator=gen, dtype=torch.float64); p /= p.sum(-1, keepdim=True)
    q = torch.rand(4, 9, generator=gen, dtype=torch.float64); q[:, 0] = 0; q /= q.sum(-1, keepdim=True)
    assert torch.allclose(ref.virtual_training_criterion(p, q), -ref.LOG4 + 2 * ref.jensen_shannon_divergence(p, q))
    assert torch.allclose(ref.virtual_training_criterion(p, p), torch.full((4,), -math.log(4), dtype=torch.float64))


def test_gaussian_mixture_pdf_integrates_to_one_and_matches_samples():
    mix = ref.GaussianMixture1D((0.3, 0.7), (-1.0, 2.0), (0.5, 0.8))
    x = torch.linspace(-8, 10, 20001, dtype=torch.float64)
    assert torch.trapezoid(mix.pdf(x), x).item() == pytest.approx(1.0, abs=1e-8)
    samples = mix.sample(200_000, torch.Generator().manual_seed(0))
    assert samples.shape == (200_000, 1)
    assert samples.mean().item() == pytest.approx(0.3 * -1 + 0.7 * 2, abs=0.02)


def test_train_discriminator_approaches_d_star():
    torch.manual_seed(0)
    p_data = ref.GaussianMixture1D((0.5, 0.5), (-1.0, 1.5), (0.5, 0.4))
    p_g = ref.GaussianMixture1D((1.0,), (0.0,), (1.0,))
    gen = torch.Generator().manual_seed(0)
    discriminator = ref.mlp([1, 32, 32, 1], activation=torch.nn.Tanh)
    grid = torch.linspace(-4, 4, 801).unsqueeze(1)
    before = ref.fit_error(discriminator, p_data.pdf, p_g.pdf, grid)
    losses = ref.train_discriminator(discriminator, lambda n: p_data.sample(n, gen), lambda n: p_g.sample(n, gen), steps=400)
    assert len(losses) == 400
    assert ref.fit_error(discriminator, p_data.pdf, p_g.pdf, grid) < 0.05 < before


def test_mode_coverage_definitions():
    true = toy2d("ring8", 4000, seed=0)
    coverage = ref.mode_coverage(true)
    assert coverage.modes_covered == 8
    # For a 2-D Gaussian, P(r <= 3 std) = 1 - exp(-9/2).
    assert coverage.high_quality_share == pytest.approx(1 - math.exp(-4.5), abs=0.005)
    collapsed = RING8_CENTERS[[2] * 50 + [6] * 50] + 0.01 * torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    result = ref.mode_coverage(collapsed)
    assert result.modes_covered == 2 and result.counts.tolist() == [0, 0, 50, 0, 0, 0, 50, 0]
    # Exactly at 3 std counts; just beyond does not. A mode needs 2.5% of all samples.
    at_edge = RING8_CENTERS[:1] + torch.tensor([[3 * RING8_STD - 1e-6, 0.0]])
    assert ref.mode_coverage(at_edge).high_quality_share == 1.0
    assert ref.mode_coverage(RING8_CENTERS[:1] + torch.tensor([[3 * RING8_STD + 1e-3, 0.0]])).high_quality_share == 0.0
    mixed = torch.cat([RING8_CENTERS[[0] * 39], RING8_CENTERS[[1]], torch.zeros(0, 2)])
    assert ref.mode_coverage(mixed).modes_covered == 2   # 1 of 40 = 2.5% still counts
    assert ref.mode_coverage(torch.cat([mixed, RING8_CENTERS[[0]]])).modes_covered == 1


def test_minibatch_similarity_against_a_loop():
    m = torch.randn(5, 3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = ref.minibatch_similarity(m)
    expected = torch.zeros(5, 3, dtype=torch.float64)
    for i in range(5):
        for b in range(3):
            expected[i, b] = sum(math.exp(-(m[i, b] - m[j, b]).abs().sum().item()) for j in range(5) if j != i)
    assert torch.allclose(out, expected)
    layer = ref.MinibatchDiscrimination(8, num_kernels=3, kernel_dim=2)
    assert layer(torch.randn(6, 8)).shape == (6, 11)


def test_frechet_distance_matches_closed_form_for_gaussians():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 2, generator=gen, dtype=torch.float64)
    b = torch.randn(20000, 2, generator=gen, dtype=torch.float64) * 2 + torch.tensor([1.0, 0.0], dtype=torch.float64)
    # N(0, I) vs N((1, 0), 4I): |mu|^2 + tr(I + 4I - 2*2I) = 1 + 2 = 3.
    assert ref.frechet_distance(a, b) == pytest.approx(3.0, abs=0.1)
    assert ref.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_mmd_is_small_for_same_distribution_and_large_otherwise():
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(500, 2, generator=gen), torch.randn(500, 2, generator=gen)
    assert abs(ref.gaussian_mmd2(x, y).item()) < 0.01
    assert ref.gaussian_mmd2(x, y + 2).item() > 0.3


def test_conditional_networks_concatenate_one_hot_labels():
    z, labels = torch.randn(4, 32), torch.tensor([0, 3, 9, 3])
    assert ref.conditional_input(z, labels).shape == (4, 42)
    assert ref.conditional_input(z, labels)[1, 32 + 3] == 1
    G, D = ref.ConditionalGenerator(), ref.ConditionalDiscriminator()
    x = G(z, labels)
    assert x.shape == (4, 64) and x.abs().max() <= 1 and D(x, labels).shape == (4,)
    aae = ref.AdversarialAutoencoder()
    assert aae.encode(torch.rand(3, 64)).shape == (3, 2) and aae.discriminate(torch.randn(3, 2)).shape == (3,)


def test_train_gan_draws_everything_from_its_seed_and_hands_it_to_the_real_sampler():
    """Noise, real batches (sample_real's rng) and fake labels all come from the seed: the global RNG does not matter."""
    digits = torch.rand(50, 6, generator=torch.Generator().manual_seed(0)) * 2 - 1
    classes = torch.arange(50) % 3

    def sample_real(n, rng):
        index = torch.randint(0, len(digits), (n,), generator=rng)
        return digits[index], classes[index]

    runs = []
    for seed, global_seed in ((1, 0), (1, 5), (2, 0)):
        torch.manual_seed(0)
        G, D = ref.ConditionalGenerator(4, 3, 6, 16), ref.ConditionalDiscriminator(6, 3, 16)
        torch.manual_seed(global_seed)
        history = ref.train_gan(G, D, sample_real, 6, batch_size=8, num_classes=3, seed=seed,
                                snapshot_every=2, snapshot=lambda step: (step, float(G(torch.zeros(1, 4), torch.zeros(1, dtype=torch.long)).sum())))
        assert list(history) == ["d_loss", "g_loss", "snapshots"] and len(history["d_loss"]) == 6
        assert [step for step, _ in history["snapshots"]] == [2, 4, 6]
        runs.append(history)
    assert runs[0] == runs[1] and runs[0]["d_loss"] != runs[2]["d_loss"]


def test_train_aae_records_its_three_losses_and_learns_to_reconstruct():
    torch.manual_seed(0)
    data = (torch.rand(200, 16, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    model = ref.AdversarialAutoencoder(data_dim=16, latent_dim=2, hidden_dim=32, disc_hidden=16)
    history = ref.train_aae(model, data, 150, batch_size=32, lr=3e-3, seed=0)
    assert list(history) == ["reconstruction_nll", "discriminator_loss", "encoder_adversarial_loss"]
    assert all(len(values) == 150 for values in history.values()) and not model.training
    assert sum(history["reconstruction_nll"][-20:]) < sum(history["reconstruction_nll"][:20])


def test_train_digit_classifier_learns_the_digits():
    from gradelib.data import load_digits_dataset

    images, labels = load_digits_dataset("train")
    digits = images.view(-1, 64) * 2 - 1
    torch.manual_seed(0)
    classifier = ref.DigitClassifier(hidden=64)
    losses = ref.train_digit_classifier(classifier, digits[:1000], labels[:1000], 300, seed=0)
    assert len(losses) == 300 and not classifier.training
    with torch.no_grad():
        accuracy = (classifier(digits[1000:]).argmax(1) == labels[1000:]).float().mean().item()
    assert accuracy > 0.85
