"""Tests for gradelib.data: offline, deterministic datasets."""

import collections
import hashlib
import itertools
import re
import socket

import pytest
import torch

from gradelib import data

# -----------------------------------------------------------------------------
# Digits


@pytest.mark.parametrize("split, expected_size", [("train", 1437), ("test", 360), ("all", 1797)])
def test_digits_shapes_dtypes_and_ranges(split, expected_size):
    images, labels = data.load_digits_dataset(split)
    assert images.shape == (expected_size, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (expected_size,) and labels.dtype == torch.int64
    assert images.min() == 0.0 and images.max() == 1.0
    assert set(labels.tolist()) == set(range(10))


def test_digits_split_is_fixed_disjoint_and_stratified():
    train_images, train_labels = data.load_digits_dataset("train")
    test_images, test_labels = data.load_digits_dataset("test")
    all_images, all_labels = data.load_digits_dataset("all")

    again_images, again_labels = data.load_digits_dataset("train")
    assert torch.equal(train_images, again_images) and torch.equal(train_labels, again_labels)

    # train + test is exactly the full dataset (as a multiset of image/label rows).
    def rows(images, labels):
        return collections.Counter(
            (image.numpy().tobytes(), label) for image, label in zip(images, labels.tolist())
        )

    assert rows(train_images, train_labels) + rows(test_images, test_labels) == rows(all_images, all_labels)

    all_counts = torch.bincount(all_labels, minlength=10)
    test_counts = torch.bincount(test_labels, minlength=10)
    assert ((test_counts - data.DIGITS_TEST_FRACTION * all_counts).abs() <= 1).all()


def test_digits_binarize():
    images, _ = data.load_digits_dataset("test")
    binary, _ = data.load_digits_dataset("test", binarize=True)
    assert binary.dtype == torch.float32
    assert set(binary.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(binary, (images > 0.5).float())


def test_digits_callers_cannot_corrupt_the_cache():
    images, _ = data.load_digits_dataset("all")
    images.zero_()
    assert data.load_digits_dataset("all")[0].max() == 1.0


def test_digits_rejects_unknown_split():
    with pytest.raises(ValueError):
        data.load_digits_dataset("validation")


# -----------------------------------------------------------------------------
# 2-D toy distributions


@pytest.mark.parametrize("name", data.TOY2D_NAMES)
def test_toy2d_shape_scale_and_determinism(name):
    points = data.toy2d(name, 2000, seed=3)
    assert points.shape == (2000, 2) and points.dtype == torch.float32
    assert torch.isfinite(points).all()
    assert (points.mean(dim=0).abs() < 0.3).all()
    assert ((points.std(dim=0) > 0.5) & (points.std(dim=0) < 1.6)).all()
    assert torch.equal(points, data.toy2d(name, 2000, seed=3))
    assert not torch.equal(points, data.toy2d(name, 2000, seed=4))


def test_toy2d_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for name in data.TOY2D_NAMES:
        data.toy2d(name, 10)
    assert torch.equal(torch.rand(3), expected)


def test_ring8_modes_are_separated_and_all_covered():
    assert data.RING8_CENTERS.shape == (8, 2) and data.RING8_CENTERS.dtype == torch.float32
    assert torch.allclose(data.RING8_CENTERS.norm(dim=1), torch.full((8,), 2.0))
    centre_distances = torch.cdist(data.RING8_CENTERS, data.RING8_CENTERS) + 100 * torch.eye(8)
    assert centre_distances.min() > 20 * data.RING8_STD

    points = data.toy2d("ring8", 4000)
    distances = torch.cdist(points, data.RING8_CENTERS)
    assert (distances.min(dim=1).values < 6 * data.RING8_STD).all()
    assert torch.bincount(distances.argmin(dim=1), minlength=8).min() > 350


def test_toy2d_rejects_unknown_name():
    with pytest.raises(ValueError):
        data.toy2d("banana", 10)


# -----------------------------------------------------------------------------
# Captioned shapes


def test_held_out_combinations_allow_compositional_generalisation():
    held_out = set(data.HELD_OUT_COMBINATIONS)
    train = set(data.TRAIN_COMBINATIONS)
    assert len(held_out) == len(data.HELD_OUT_COMBINATIONS) == 6
    assert held_out <= set(itertools.product(data.SHAPES, data.COLOURS, data.POSITIONS))
    assert len(train) == 30 and not train & held_out

    # Every single attribute value appears in training ...
    for axis, values in enumerate((data.SHAPES, data.COLOURS, data.POSITIONS)):
        assert {combo[axis] for combo in train} == set(values)
    # ... and so does every pair of attribute values that a held-out triple contains.
    for first, second in itertools.combinations(range(3), 2):
        train_pairs = {(combo[first], combo[second]) for combo in train}
        for combo in held_out:
            assert (combo[first], combo[second]) in train_pairs, (combo, first, second)


def test_caption_for():
    assert data.caption_for("circle", "red", "top left") == "a red circle at the top left"
    with pytest.raises(ValueError):
        data.caption_for("hexagon", "red", "top left")


@pytest.mark.parametrize("image_size", [16, 32, 64])
def test_captioned_shapes_shapes_dtypes_and_ranges(image_size):
    batch = data.captioned_shapes(50, image_size=image_size, split="all", seed=1)
    assert len(batch) == 50 and len(batch.captions) == 50
    assert batch.images.shape == (50, 3, image_size, image_size) and batch.images.dtype == torch.float32
    assert batch.images.min() >= 0.0 and batch.images.max() <= 1.0
    for labels in (batch.shape, batch.colour, batch.position):
        assert labels.shape == (50,) and labels.dtype == torch.int64
    # Not all black: every image has a bright shape.
    assert (batch.images.amax(dim=(1, 2, 3)) >= 0.8).all()


def test_captioned_shapes_determinism():
    first = data.captioned_shapes(64, seed=7)
    second = data.captioned_shapes(64, seed=7)
    other = data.captioned_shapes(64, seed=8)
    assert torch.equal(first.images, second.images) and first.captions == second.captions
    assert not torch.equal(first.images, other.images)


def test_same_combination_with_different_seeds_differs():
    # The held-out split has only 6 combinations, so each appears in any 60-image batch.
    first = data.captioned_shapes(60, split="heldout", seed=0)
    second = data.captioned_shapes(60, split="heldout", seed=1)
    for caption in {data.caption_for(*combo) for combo in data.HELD_OUT_COMBINATIONS}:
        image_a = first.images[first.captions.index(caption)]
        image_b = second.images[second.captions.index(caption)]
        assert not torch.equal(image_a, image_b), caption


_CAPTION = re.compile(r"a (\w+) (\w+) at the (top left|top right|bottom left|bottom right)")


@pytest.mark.parametrize("split", ["train", "heldout", "all"])
def test_captions_and_labels_agree_with_split(split):
    batch = data.captioned_shapes(500, split=split, seed=2)
    allowed = {"train": data.TRAIN_COMBINATIONS, "heldout": data.HELD_OUT_COMBINATIONS,
               "all": data.ALL_COMBINATIONS}[split]
    seen = set()
    for caption, shape, colour, position in zip(batch.captions, batch.shape, batch.colour, batch.position):
        colour_name, shape_name, position_name = _CAPTION.fullmatch(caption).groups()
        combo = (shape_name, colour_name, position_name)
        assert combo == (data.SHAPES[shape], data.COLOURS[colour], data.POSITIONS[position])
        seen.add(combo)
    assert seen == set(allowed)  # uniform sampling hits every allowed combination in 500 draws


def test_images_match_their_labels():
    batch = data.captioned_shapes(300, split="all", seed=3, image_size=32)
    half = 16
    for image, colour, position in zip(batch.images, batch.colour.tolist(), batch.position.tolist()):
        # Only the labelled colour channel is lit ...
        other_channels = [c for c in range(3) if c != colour]
        assert image[other_channels].max() == 0.0 and image[colour].max() >= 0.8
        # ... and only inside the labelled quadrant.
        rows = slice(0, half) if position in (0, 1) else slice(half, None)
        cols = slice(0, half) if position in (0, 2) else slice(half, None)
        outside = image[colour].clone()
        outside[rows, cols] = 0.0
        assert outside.max() < 1e-4
    # Shapes differ in area the way they should: square > circle (pi/4) > triangle (1/2).
    ink = batch.images.sum(dim=(1, 2, 3))
    mean_ink = [ink[batch.shape == s].mean() for s in range(3)]
    assert mean_ink[1] > mean_ink[0] > mean_ink[2]


def test_captioned_shapes_rejects_unknown_split():
    with pytest.raises(ValueError):
        data.captioned_shapes(4, split="test")


# -----------------------------------------------------------------------------
# Text corpus and tokenizer


def test_text_corpus_is_large_ascii_english():
    text = data.text_corpus()
    assert len(text) >= 1_000_000
    assert text.isascii()
    letters = sum(ch.isalpha() for ch in text)
    assert letters / len(text) > 0.6
    words = collections.Counter(text.lower().split())
    assert words["the"] > 5000 and words["return"] > 500


def test_text_splits():
    train, val = data.text_splits()
    text = data.text_corpus()
    assert train + val == text
    assert abs(len(val) - 0.1 * len(text)) <= 1
    train, val = data.text_splits(val_fraction=0.25)
    assert abs(len(val) - 0.25 * len(text)) <= 1
    with pytest.raises(ValueError):
        data.text_splits(val_fraction=1.0)


def test_char_tokenizer_round_trip():
    text = data.text_corpus()
    tokenizer = data.CharTokenizer.from_text(text)
    assert tokenizer.chars == sorted(set(text))
    assert 60 <= tokenizer.vocab_size <= 100
    sample = text[10_000:12_000]
    ids = tokenizer.encode(sample)
    assert ids.shape == (len(sample),) and ids.dtype == torch.int64
    assert ids.min() >= 0 and ids.max() < tokenizer.vocab_size
    assert tokenizer.decode(ids) == sample
    assert tokenizer.decode(ids.tolist()) == sample
    assert data.CharTokenizer.from_text("hello").encode("hole").tolist() == [1, 3, 2, 0]  # vocab: e h l o
    with pytest.raises(KeyError):
        data.CharTokenizer.from_text("abc").encode("abd")


# -----------------------------------------------------------------------------
# Offline guarantee


def test_nothing_touches_the_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("gradelib.data tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # Clear caches so the files are really read while the network is blocked.
    data.text_corpus.cache_clear()
    data._digits_arrays.cache_clear()

    data.load_digits_dataset("train")
    for name in data.TOY2D_NAMES:
        data.toy2d(name, 10)
    data.captioned_shapes(10, split="all")
    data.text_splits()
    data.CharTokenizer.from_text(data.text_corpus())


# -----------------------------------------------------------------------------
# Audio-visual clips (notebook 09)


def test_av_clips_shapes_ranges_and_determinism():
    clips = data.av_clips(12, seed=4)
    assert clips.video.shape == (12, 8, 16, 16) and clips.video.dtype == torch.float32
    assert clips.audio.shape == (12, 8 * data.AV_FRAME_SAMPLES) == clips.question_audio.shape
    assert 0.0 <= clips.video.min() and clips.video.max() <= 1.0
    assert clips.audio.abs().max() < 1.0 and clips.question_audio.abs().max() < 1.0
    assert ((clips.hops.sum(1) >= 1) & (clips.hops.sum(1) <= data.AV_MAX_HOPS)).all()
    assert not clips.hops[:, 0].any()  # a hop is a change from the previous frame
    again = data.av_clips(12, seed=4)
    assert torch.equal(clips.video, again.video) and torch.equal(clips.audio, again.audio)
    assert not torch.equal(clips.audio, data.av_clips(12, seed=5).audio)


def test_av_clips_do_not_touch_global_rng():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    data.av_clips(4, seed=1)
    assert torch.equal(torch.rand(3), expected)


def test_av_sound_follows_the_picture():
    clips = data.av_clips(60, seed=0, noise=0.0)
    frames = clips.audio.view(60, 8, data.AV_FRAME_SAMPLES)
    energy = (frames ** 2).mean(-1)
    # Sound exactly on hop frames; silence elsewhere.
    assert torch.equal(energy > 1e-6, clips.hops)
    # Pitch from the shape: the strongest FFT bin of a hop frame is the shape's fundamental.
    for i in range(60):
        t = int(clips.hops[i].nonzero()[0])
        spectrum = torch.fft.rfft(frames[i, t].double()).abs()
        peak_hz = int(spectrum.argmax()) * data.AV_SAMPLE_RATE / data.AV_FRAME_SAMPLES
        assert abs(peak_hz - data.AV_PITCH_HZ[int(clips.shape[i])]) <= data.AV_SAMPLE_RATE / data.AV_FRAME_SAMPLES
    # Loudness from the size: the peak amplitude grows with the side.
    peak = clips.audio.abs().amax(1)
    order = torch.argsort(clips.side)
    assert torch.all(peak[order][1:] >= peak[order][:-1] - 1e-6) or torch.corrcoef(torch.stack([peak, clips.side]))[0, 1] > 0.99


def test_av_video_moves_and_flashes_on_hops():
    clips = data.av_clips(40, seed=1)
    mass = clips.video.sum(dim=(2, 3))
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    shape_only = clips.video * (clips.video > data.AV_FLASH_BACKGROUND + 0.01)
    cx = (shape_only * xs).sum((2, 3)) / shape_only.sum((2, 3))
    cy = (shape_only * ys).sum((2, 3)) / shape_only.sum((2, 3))
    moved = torch.stack([cx.diff(dim=1), cy.diff(dim=1)], -1).norm(dim=-1) > 0.5
    assert torch.equal(moved, clips.hops[:, 1:])
    assert (mass[clips.hops] > mass.mean()).all() or (mass[clips.hops].mean() > 2 * mass[~clips.hops].mean())
    net = torch.stack([cx[:, -1] - cx[:, 0], cy[:, -1] - cy[:, 0]], -1)
    direction = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])
    assert torch.equal((net @ direction.T).argmax(1), clips.direction)


def test_av_questions_and_answers_agree():
    clips = data.av_clips(90, seed=2)
    for i in range(90):
        answer = data.AV_ANSWERS[int(clips.answer[i])]
        question = clips.transcript(i)
        if question == ("which", "shape"):
            assert answer == data.AV_SHAPES[int(clips.shape[i])]
        elif question == ("which", "direction"):
            assert answer == data.AV_DIRECTIONS[int(clips.direction[i])]
        else:
            assert answer == str(int(clips.hops[i].sum()))
    energy = (clips.question_audio.view(90, -1, 64) ** 2).mean(-1) > 1e-3
    spoken = energy.float().sum(1) * 64 / data.AV_SAMPLE_RATE  # seconds of speech
    lengths = torch.tensor([len(clips.transcript(i)) for i in range(90)])
    assert spoken[lengths == 3].min() > spoken[lengths == 2].max()


# -----------------------------------------------------------------------------
# Pinned outputs: every notebook's data stays exactly what it was when its figures were recorded


def digest(*tensors: torch.Tensor) -> str:
    """The first 16 hex digits of a SHA-256 of the tensors' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for tensor in tensors:
        h.update(f"{tensor.dtype} {tuple(tensor.shape)}".encode())
        h.update(tensor.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def picture_moments(pictures: torch.Tensor) -> list[float]:
    """Sum, sum of squares and a position-weighted sum of the pixels, in float64: they move if any pixel moves
    by more than rounding, while the last bit of an anti-aliased edge may differ between CPUs (vectorised
    kernels fuse multiply-adds on some and not on others), so the pixels themselves are not hashed."""
    x = pictures.double()
    weight = torch.arange(x.numel(), dtype=torch.float64).reshape(x.shape) / x.numel()
    return [x.sum().item(), (x * x).sum().item(), (x * weight).sum().item()]


@pytest.mark.parametrize(("n", "kwargs", "moments", "labels"), [
    (64, dict(split="all", seed=7), [1829.016795, 1457.452335, 904.586813], "d7202b8aa6b6b56f"),
    (8, dict(split="heldout", seed=2, image_size=32), [994.697655, 842.972427, 489.475214], "32e659db0cdeb33f"),
])
def test_captioned_shapes_are_pinned(n, kwargs, moments, labels):
    batch = data.captioned_shapes(n, **kwargs)
    assert digest(batch.shape, batch.colour, batch.position) == labels
    assert picture_moments(batch.images) == pytest.approx(moments, rel=1e-7, abs=1e-5)


@pytest.mark.parametrize(("n", "kwargs", "moments", "labels"), [
    (12, dict(seed=4), [3380.436694, 1619.502538, 1603.90421], "a746a411ffdd0dab"),
    (6, dict(seed=3, num_frames=5, image_size=24), [2150.817676, 885.42226, 1305.791419], "ef8bda6e3d13b7b5"),
])
def test_av_clips_pictures_and_labels_are_pinned(n, kwargs, moments, labels):
    clips = data.av_clips(n, **kwargs)
    assert digest(clips.shape, clips.side, clips.direction, clips.hops, clips.question, clips.answer) == labels
    assert picture_moments(clips.video) == pytest.approx(moments, rel=1e-7, abs=1e-5)


def test_av_clips_sounds_are_pinned():
    # The waveforms go through sin and exp, whose last bit may differ between CPUs: a few samples, to 1e-6.
    clips = data.av_clips(12, seed=4)
    first_hop = 1536  # clip 0 hops first at frame 3
    assert int(clips.hops[0].nonzero()[0]) * data.AV_FRAME_SAMPLES == first_hop
    torch.testing.assert_close(clips.audio[0, first_hop + 40: first_hop + 400: 90],
                               torch.tensor([0.03451109677553177, 0.17102134227752686, 0.24166646599769592,
                                             0.15438465774059296]), rtol=1e-6, atol=1e-6)
    assert clips.transcript(0) == ("how", "many", "hops")
    torch.testing.assert_close(clips.question_audio[0, 400:2000:400],
                               torch.tensor([0.2831477224826813, -0.2423645704984665, 0.0026145006995648146,
                                             0.00943574495613575]), rtol=1e-6, atol=1e-6)

