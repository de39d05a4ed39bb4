"""
Offline, deterministic datasets for the course.

Nothing here touches the network: the digits ship with scikit-learn, the 2-D toy
distributions and the captioned shapes are generated on the fly, and the text
corpus (docstrings of Python's standard library, PSF licence) ships inside this
package under gradelib/_data/.

Every random function takes an explicit ``seed`` and uses a local generator
(torch.Generator or a NumPy RandomState), so calling it never disturbs, and is
never disturbed by, the global RNG state that notebooks seed themselves.
"""

from __future__ import annotations

import functools
import importlib.resources
import lzma
import math
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.datasets import load_digits, make_circles, make_moons, make_swiss_roll
from sklearn.model_selection import train_test_split

__all__ = [
    "load_digits_dataset",
    "DIGITS_SPLIT_SEED",
    "DIGITS_TEST_FRACTION",
    "TOY2D_NAMES",
    "RING8_RADIUS",
    "RING8_CENTERS",
    "RING8_STD",
    "toy2d",
    "SHAPES",
    "COLOURS",
    "POSITIONS",
    "HELD_OUT_COMBINATIONS",
    "TRAIN_COMBINATIONS",
    "ALL_COMBINATIONS",
    "caption_for",
    "ShapesBatch",
    "captioned_shapes",
    "text_corpus",
    "text_splits",
    "CharTokenizer",
]

# -----------------------------------------------------------------------------
# Digits: scikit-learn's bundled 8x8 handwritten digits (1797 images, no download)

# Fixed so that every notebook, reference solution and autograder check sees the
# same train/test split; changing either value changes every reported test score.
DIGITS_SPLIT_SEED = 0
DIGITS_TEST_FRACTION = 0.2


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    digits = load_digits()
    all_indices = np.arange(len(digits.target))
    train_indices, test_indices = train_test_split(
        all_indices, test_size=DIGITS_TEST_FRACTION, stratify=digits.target, random_state=DIGITS_SPLIT_SEED
    )
    # Sorted so that the order within a split does not depend on train_test_split's shuffling.
    split_indices = {"train": np.sort(train_indices), "test": np.sort(test_indices), "all": all_indices}
    return digits.images, digits.target, split_indices


def load_digits_dataset(split: str = "train", *, binarize: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Load scikit-learn's 8x8 digits as tensors.

    split: "train" (1437 images), "test" (360) or "all" (1797). The train/test split
    is a fixed stratified 80/20 split (random_state=DIGITS_SPLIT_SEED=0), identical
    for every caller; within a split images keep the original dataset order.
    binarize: if True, pixels are thresholded at 0.5 and become exactly 0.0 or 1.0.

    Returns:
        images: (N, 1, 8, 8) float32 in [0, 1] (scikit-learn's 0..16 divided by 16)
        labels: (N,) int64 in 0..9
    """
    all_images, all_labels, split_indices = _digits_arrays()
    if split not in split_indices:
        raise ValueError(f"split must be one of {sorted(split_indices)}, got {split!r}")
    indices = split_indices[split]
    # torch.tensor copies, so callers can modify the result without touching the cache.
    images = torch.tensor(all_images[indices] / 16.0, dtype=torch.float32).unsqueeze(1)
    labels = torch.tensor(all_labels[indices], dtype=torch.int64)
    if binarize:
        images = (images > 0.5).float()
    return images, labels


# -----------------------------------------------------------------------------
# 2-D toy distributions, for density models, GANs, flows and diffusion on the plane

TOY2D_NAMES = ("moons", "circles", "swiss_roll", "ring8", "checkerboard", "spiral", "gaussian")

# The GAN notebook counts how many of these modes a generator covers; std is small
# enough that neighbouring modes (1.53 apart) never overlap.
RING8_RADIUS = 2.0
RING8_STD = 0.05
RING8_CENTERS = torch.tensor(
    [[RING8_RADIUS * math.cos(2 * math.pi * k / 8), RING8_RADIUS * math.sin(2 * math.pi * k / 8)] for k in range(8)]
)


def toy2d(name: str, n: int, *, seed: int = 0) -> torch.Tensor:
    """Sample n points from a named 2-D toy distribution.

    name: one of TOY2D_NAMES. All are roughly zero-mean with per-axis std between
    about 0.7 and 1.4, via fixed (not data-dependent) shifts and scales:
        moons        two interleaved half circles (sklearn, noise 0.05)
        circles      two concentric circles, radii 1.75 and 0.875 (sklearn, noise 0.05)
        swiss_roll   the x/z plane of sklearn's 3-D swiss roll (noise 0.5), a 2-D spiral band
        ring8        mixture of 8 Gaussians (std RING8_STD) centred at RING8_CENTERS, radius 2
        checkerboard uniform on the 8 dark squares of a 4x4 board covering [-2, 2]^2
        spiral       two intertwined spiral arms
        gaussian     standard normal, a sanity baseline
    seed: the same (name, n, seed) always gives the same points.

    Returns:
        points: (n, 2) float32
    """
    if name not in TOY2D_NAMES:
        raise ValueError(f"unknown toy distribution {name!r}; choose from {TOY2D_NAMES}")
    generator = torch.Generator().manual_seed(seed)

    if name == "moons":
        points, _ = make_moons(n, noise=0.05, random_state=seed)
        points = (points - [0.5, 0.25]) / 0.7
    elif name == "circles":
        points, _ = make_circles(n, noise=0.05, factor=0.5, random_state=seed)
        points = points * 1.75
    elif name == "swiss_roll":
        points, _ = make_swiss_roll(n, noise=0.5, random_state=seed)
        points = (points[:, [0, 2]] - [2.0, 0.2]) / 7.0
    elif name == "ring8":
        mode = torch.randint(0, 8, (n,), generator=generator)
        points = RING8_CENTERS[mode] + RING8_STD * torch.randn(n, 2, generator=generator)
    elif name == "checkerboard":
        x = 4 * torch.rand(n, generator=generator) - 2
        # y lands in a random one of the two squares of its column that have the right colour.
        y = torch.rand(n, generator=generator) - 2 * torch.randint(0, 2, (n,), generator=generator)
        y = y + torch.floor(x) % 2
        points = torch.stack([x, y], dim=1)
    elif name == "spiral":
        # sqrt makes the density along the arm uniform per unit length, not per turn.
        angle = torch.sqrt(torch.rand(n, generator=generator)) * 3 * math.pi
        arm = 2 * torch.randint(0, 2, (n,), generator=generator) - 1
        points = arm[:, None] * torch.stack([-angle.cos() * angle, angle.sin() * angle], dim=1)
        points = (points + 0.3 * torch.randn(n, 2, generator=generator)) / 5.0
    else:  # gaussian
        points = torch.randn(n, 2, generator=generator)

    return torch.as_tensor(points, dtype=torch.float32)


# -----------------------------------------------------------------------------
# Captioned shapes: tiny text-to-image data with held-out combinations

SHAPES = ("circle", "square", "triangle")
COLOURS = ("red", "green", "blue")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")

_COLOUR_RGB = torch.eye(3)  # red, green, blue, in the order of COLOURS
# Quadrant centres as (x, y) in units of the image side, y pointing down like image rows.
_POSITION_CENTRES = torch.tensor([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])

# Never seen in training, so a text-to-image model that draws them correctly has
# composed attributes rather than memorised combinations. Chosen so that no two
# held-out triples share a (shape, colour), (colour, position) or (shape, position)
# pair; since every such pair occurs in 3 or 4 of the 36 triples, each one still
# occurs in training (tests/test_data.py checks this).
HELD_OUT_COMBINATIONS = (
    ("circle", "red", "top left"),
    ("circle", "blue", "bottom right"),
    ("square", "green", "top right"),
    ("square", "red", "bottom left"),
    ("triangle", "blue", "top right"),
    ("triangle", "green", "bottom left"),
)
ALL_COMBINATIONS = tuple((s, c, p) for s in SHAPES for c in COLOURS for p in POSITIONS)
TRAIN_COMBINATIONS = tuple(combo for combo in ALL_COMBINATIONS if combo not in HELD_OUT_COMBINATIONS)
_COMBINATIONS_BY_SPLIT = {"train": TRAIN_COMBINATIONS, "heldout": HELD_OUT_COMBINATIONS, "all": ALL_COMBINATIONS}


def caption_for(shape: str, colour: str, position: str) -> str:
    """Caption for one shape image, e.g. caption_for("circle", "red", "top left") -> "a red circle at the top left"."""
    if shape not in SHAPES or colour not in COLOURS or position not in POSITIONS:
        raise ValueError(f"unknown shape/colour/position: {shape!r}, {colour!r}, {position!r}")
    return f"a {colour} {shape} at the {position}"


@dataclass
class ShapesBatch:
    """A batch of captioned shape images.

    images:   (n, 3, H, W) float32 in [0, 1], one coloured shape on black
    captions: list of n str, e.g. "a red circle at the top left"
    shape:    (n,) int64 index into SHAPES
    colour:   (n,) int64 index into COLOURS
    position: (n,) int64 index into POSITIONS
    """

    images: torch.Tensor
    captions: list[str]
    shape: torch.Tensor
    colour: torch.Tensor
    position: torch.Tensor

    def __len__(self) -> int:
        return len(self.captions)


# Signed distance functions in units of the image side. dx: (n, 1, W) and dy: (n, H, 1)
# are offsets from the shape's centre, half: (n, 1, 1) half its side; they broadcast to (n, H, W).
def _circle_sdf(dx: torch.Tensor, dy: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(dx**2 + dy**2) - half


def _square_sdf(dx: torch.Tensor, dy: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    return torch.maximum(dx.abs(), dy.abs()) - half


def _triangle_sdf(dx: torch.Tensor, dy: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    # Upward triangle filling the square's bounding box: apex at the top centre, base
    # at the bottom; its slanted sides have outward normals (+-2, -1)/sqrt(5). The max
    # of the distances to the three edge lines is exact near the edges, which is all
    # the anti-aliasing uses, but too small just beyond the corners; also taking the
    # bounding box's distance stops the corners bleeding out of the shape's quadrant.
    below_apex = dy + half
    edges = torch.maximum(dy - half, (2 * dx.abs() - below_apex) / math.sqrt(5))
    return torch.maximum(edges, _square_sdf(dx, dy, half))


_SHAPE_SDFS = (_circle_sdf, _square_sdf, _triangle_sdf)  # in the order of SHAPES


def _shape_coverage(shape: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor, half: torch.Tensor,
                    image_size: int) -> torch.Tensor:
    """How much of each pixel the shape covers: the one renderer of captioned_shapes and av_clips.

    shape: (n,) int64 index into SHAPES. dx: (n, ..., 1, W) and dy: (n, ..., H, 1) are the pixel centres'
    offsets from the shape's centre and half: (n, ..., 1, 1) half its side, all in units of the image side.

    Returns:
        coverage: (n, ..., H, W) float32 in [0, 1]
    """
    # Signed distance from each pixel centre to the shape's outline, negative inside.
    sdf = torch.empty(torch.broadcast_shapes(dx.shape, dy.shape))
    for shape_index, shape_sdf in enumerate(_SHAPE_SDFS):
        selected = (shape == shape_index).nonzero().squeeze(1)
        sdf[selected] = shape_sdf(dx[selected], dy[selected], half[selected])
    # Coverage of a pixel by the shape, linear across a one-pixel-wide edge: cheap
    # anti-aliasing that keeps small triangles recognisable at 16x16.
    return (0.5 - sdf * image_size).clamp(0.0, 1.0)


def captioned_shapes(n: int, *, split: str = "train", seed: int = 0, image_size: int = 16) -> ShapesBatch:
    """Render n images of a coloured circle, square or triangle in one quadrant, with captions.

    split: "train" draws uniformly from the 30 TRAIN_COMBINATIONS, "heldout" from the
        6 HELD_OUT_COMBINATIONS, "all" from all 36 (shape, colour, position) triples.
    seed: the same (n, split, seed, image_size) always gives the same batch.
    image_size: H = W; 16, 32 and 64 all work (shapes are anti-aliased).

    Each shape's size is 35-45% of the image side, it is jittered randomly but stays
    inside its quadrant, and its colour is the pure RGB primary at brightness 0.8-1.0.

    Returns:
        ShapesBatch with images (n, 3, image_size, image_size) float32 in [0, 1],
        captions list[str], and shape/colour/position (n,) int64 label tensors.
    """
    if split not in _COMBINATIONS_BY_SPLIT:
        raise ValueError(f"split must be one of {sorted(_COMBINATIONS_BY_SPLIT)}, got {split!r}")
    combinations = _COMBINATIONS_BY_SPLIT[split]
    combination_labels = torch.tensor(
        [[SHAPES.index(s), COLOURS.index(c), POSITIONS.index(p)] for s, c, p in combinations]
    )
    generator = torch.Generator().manual_seed(seed)
    labels = combination_labels[torch.randint(0, len(combinations), (n,), generator=generator)]
    shape, colour, position = labels.unbind(dim=1)

    # Geometry in units of the image side; sizes and offsets are per image, shape (n, 1, 1).
    side = 0.35 + 0.10 * torch.rand(n, 1, 1, generator=generator)
    max_jitter = (0.5 - side) / 2  # keeps the shape's bounding box inside its quadrant
    jitter = (2 * torch.rand(n, 2, 1, 1, generator=generator) - 1) * max_jitter.unsqueeze(1)
    centre = _POSITION_CENTRES[position].view(n, 2, 1, 1) + jitter
    brightness = 0.8 + 0.2 * torch.rand(n, 1, 1, 1, generator=generator)

    pixel_centres = (torch.arange(image_size, dtype=torch.float32) + 0.5) / image_size
    dx = pixel_centres.view(1, 1, -1) - centre[:, 0]  # (n, 1, W)
    dy = pixel_centres.view(1, -1, 1) - centre[:, 1]  # (n, H, 1)
    coverage = _shape_coverage(shape, dx, dy, side / 2, image_size)  # (n, H, W)
    images = coverage.unsqueeze(1) * _COLOUR_RGB[colour].view(n, 3, 1, 1) * brightness

    captions = [caption_for(SHAPES[s], COLOURS[c], POSITIONS[p]) for s, c, p in labels.tolist()]
    return ShapesBatch(images=images, captions=captions, shape=shape.clone(), colour=colour.clone(),
                       position=position.clone())


# -----------------------------------------------------------------------------
# Text: ~1.1 MB of English prose, the docstrings of Python's standard library
# (PSF licence, see gradelib/_data/LICENSE-PSF.txt; rebuilt by tools/build_corpus.py)

_CORPUS_FILE = "stdlib_docstrings.txt.xz"


@functools.lru_cache(maxsize=1)
def text_corpus() -> str:
    """The course's text corpus: ~1.1 million ASCII characters of standard-library docstrings.

    Read from the package (importlib.resources, so it also works from an installed
    wheel) and cached after the first call.

    Returns:
        text: str of printable ASCII plus newlines; documents are separated by blank lines
    """
    compressed = (importlib.resources.files("gradelib") / "_data" / _CORPUS_FILE).read_bytes()
    return lzma.decompress(compressed).decode("ascii")


def text_splits(val_fraction: float = 0.1) -> tuple[str, str]:
    """Split text_corpus() into (train, val) at a fixed character offset.

    The last val_fraction of the characters is validation. A contiguous split, not
    a random one, so that validation text is genuinely unseen (no overlap of the
    context windows of neighbouring samples).

    Returns:
        train_text, val_text: str, with len(train_text) + len(val_text) == len(text_corpus())
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    text = text_corpus()
    split_at = int(len(text) * (1.0 - val_fraction))
    return text[:split_at], text[split_at:]


class CharTokenizer:
    """Character-level tokenizer: one token per distinct character, ids in sorted character order.

    >>> tokenizer = CharTokenizer.from_text("hello")
    >>> tokenizer.vocab_size
    4
    >>> tokenizer.decode(tokenizer.encode("hole"))
    'hole'
    """

    def __init__(self, chars: list[str] | tuple[str, ...] | str):
        self.chars = sorted(set(chars))
        self.char_to_id = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        """Build a tokenizer whose vocabulary is every distinct character of text."""
        return cls(text)

    @property
    def vocab_size(self) -> int:
        """Number of distinct characters (token ids are 0 .. vocab_size - 1)."""
        return len(self.chars)

    def encode(self, text: str) -> torch.Tensor:
        """Encode a string. Returns ids: (len(text),) int64. Raises KeyError on an unknown character."""
        try:
            ids = [self.char_to_id[ch] for ch in text]
        except KeyError as error:
            raise KeyError(f"character {error.args[0]!r} is not in the tokenizer's vocabulary") from None
        return torch.tensor(ids, dtype=torch.int64)

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """Decode ids, a 1-D int tensor or list of ints, back to a string."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


# -----------------------------------------------------------------------------
# Audio-visual clips: moving shapes whose sound is tied to what is seen (notebook 09, TVLT)
#
# A clip is num_frames grey frames of one shape and a waveform of the same duration. What you
# hear is a function of what you see: the shape sets the pitch, its size the loudness, and every
# time the shape hops one step in its direction a tone starts, at the first sample of that frame.
# A separate "spoken question" per clip asks, as a sequence of tone words, which shape, which
# direction, or how many hops; its answer is read from the video alone.

AV_SHAPES = SHAPES  # ("circle", "square", "triangle")
AV_DIRECTIONS = ("left", "right", "up", "down")
AV_PITCH_HZ = (440.0, 880.0, 1760.0)  # fundamental per shape, in the order of AV_SHAPES
AV_SAMPLE_RATE = 8000
AV_FRAME_SAMPLES = 512  # 64 ms of audio per video frame
AV_MAX_HOPS = 4
AV_STEP_PIXELS = 1.5  # how far the shape moves on a hop
AV_SIDE_RANGE = (5.0, 8.0)  # shape side in pixels; loudness grows linearly with it
AV_AMPLITUDE_RANGE = (0.15, 0.6)
AV_REST_BRIGHTNESS = 0.5  # the shape is at full brightness on a hop frame (it "flashes") and dimmer between hops
AV_FLASH_BACKGROUND = 0.2  # ... and so is the background, like a strobe light on the beat
# The question "words": each is two simultaneous tones (a crude formant pair), 110 ms long.
AV_WORDS = ("which", "shape", "direction", "how", "many", "hops")
AV_WORD_TONES_HZ = ((300.0, 2300.0), (600.0, 1300.0), (1000.0, 3000.0), (350.0, 1700.0), (750.0, 2600.0), (1200.0, 2000.0))
AV_QUESTIONS = (("which", "shape"), ("which", "direction"), ("how", "many", "hops"))
# One answer vocabulary for all three questions: shapes, then directions, then hop counts.
AV_ANSWERS = AV_SHAPES + AV_DIRECTIONS + tuple(str(k) for k in range(1, AV_MAX_HOPS + 1))
_AV_DIRECTION_VECTORS = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, -1.0], [0.0, 1.0]])  # (x, y), y down

# How av_clips makes the clips. The picture:
_AV_MARGIN_PIXELS = 0.5  # the shape's edge stays this far inside the frame along its whole trajectory
_AV_HOP_BRIGHTNESS = 1.0  # the shape's brightness on a hop frame (AV_REST_BRIGHTNESS between hops)
# The sound of a hop:
_AV_ATTACK_SECONDS = 0.004  # every tone rises linearly over its first 4 ms, then decays exponentially
_AV_HOP_DECAY_SECONDS = 0.040
_AV_HOP_HARMONICS = (1.0, 1.0, 2.0)  # multiples of the fundamental, averaged: the octave at half amplitude
# The spoken question: word w starts at a random offset (under _AV_LATEST_START_SECONDS) + w * _AV_WORD_GAP_SECONDS.
_AV_LATEST_START_SECONDS = 0.040
_AV_WORD_SECONDS = 0.110
_AV_WORD_GAP_SECONDS = 0.128
_AV_WORD_DECAY_SECONDS = 0.5
_AV_SPEAKER_JITTER = 0.02  # each word's two tones are off by up to ±2% in pitch, like different speakers
_AV_WORD_GAIN, _AV_WORD_GAIN_SPREAD = 0.4, 0.2  # each word's loudness, uniform in [0.4, 0.6)
_AV_MAX_WORDS = max(len(question) for question in AV_QUESTIONS)
# Each question's words as indices into AV_WORDS, padded with -1: (len(AV_QUESTIONS), _AV_MAX_WORDS).
_AV_QUESTION_WORDS = torch.tensor([[AV_WORDS.index(word) for word in question] + [-1] * (_AV_MAX_WORDS - len(question))
                                   for question in AV_QUESTIONS])


@dataclass
class AVClips:
    """A batch of audio-visual clips and their spoken questions.

    video:          (n, T, H, W) float32 in [0, 1], one grey shape on black per frame; on hop frames the
                    shape is white and the background AV_FLASH_BACKGROUND
    audio:          (n, T * AV_FRAME_SAMPLES) float32 waveform at AV_SAMPLE_RATE, roughly in [-1, 1]
    shape:          (n,) int64 index into AV_SHAPES (sets the pitch, AV_PITCH_HZ)
    side:           (n,) float32 shape side in pixels, in AV_SIDE_RANGE (sets the loudness)
    direction:      (n,) int64 index into AV_DIRECTIONS
    hops:           (n, T) bool, True where the shape moves one step at that frame (and a tone starts)
    question:       (n,) int64 index into AV_QUESTIONS
    question_audio: (n, T * AV_FRAME_SAMPLES) float32, the question "spoken" as tone words
    answer:         (n,) int64 index into AV_ANSWERS, the answer to question[i] about clip i
    """

    video: torch.Tensor
    audio: torch.Tensor
    shape: torch.Tensor
    side: torch.Tensor
    direction: torch.Tensor
    hops: torch.Tensor
    question: torch.Tensor
    question_audio: torch.Tensor
    answer: torch.Tensor

    def __len__(self) -> int:
        return self.video.shape[0]

    def transcript(self, i: int) -> tuple[str, ...]:
        """The words of clip i's question, e.g. ("how", "many", "hops")."""
        return AV_QUESTIONS[int(self.question[i])]


def _tone_burst(length: int, frequencies: torch.Tensor, amplitude: torch.Tensor, sample_rate: int,
                decay_s: float) -> torch.Tensor:
    """Tones with a 4 ms linear attack and an exponential decay, one per row.

    frequencies: (n, k) Hz, summed and divided by k; amplitude: (n, 1). Returns (n, length) float64.
    """
    t = torch.arange(length, dtype=torch.float64) / sample_rate
    wave = torch.sin(2 * math.pi * frequencies[:, :, None] * t).mean(dim=1)
    envelope = torch.clamp(t / _AV_ATTACK_SECONDS, max=1.0) * torch.exp(-t / decay_s)
    return amplitude * envelope * wave


def _draw_stories(n: int, num_frames: int, generator: torch.Generator) -> tuple[torch.Tensor, ...]:
    """What happens in each clip: its shape, side, direction and hop frames (the first random draws).

    Returns shape (n,) int64, side (n,) float32 pixels, direction (n,) int64, num_hops (n,) int64 in
    1..min(AV_MAX_HOPS, T - 1), and hops (n, T) bool: num_hops frames among 1..T-1, uniformly.
    """
    shape = torch.randint(0, len(AV_SHAPES), (n,), generator=generator)
    side = AV_SIDE_RANGE[0] + (AV_SIDE_RANGE[1] - AV_SIDE_RANGE[0]) * torch.rand(n, generator=generator)
    direction = torch.randint(0, len(AV_DIRECTIONS), (n,), generator=generator)
    num_hops = torch.randint(1, min(AV_MAX_HOPS, num_frames - 1) + 1, (n,), generator=generator)
    hops = torch.zeros(n, num_frames, dtype=torch.bool)
    order = torch.argsort(torch.rand(n, num_frames - 1, generator=generator), dim=1)
    for i in range(n):
        hops[i, 1 + order[i, : int(num_hops[i])]] = True
    return shape, side, direction, num_hops, hops


def _trajectories(side: torch.Tensor, direction: torch.Tensor, num_hops: torch.Tensor, hops: torch.Tensor,
                  image_size: int, generator: torch.Generator) -> torch.Tensor:
    """The shape's centre in every frame, (n, T, 2) pixels as (x, y): a random start from which the whole
    trajectory stays inside the frame, then AV_STEP_PIXELS in the clip's direction at every hop."""
    half = side / 2
    travel = AV_STEP_PIXELS * num_hops.float()
    vec = _AV_DIRECTION_VECTORS[direction]  # (n, 2)
    # Moving left/up needs room on that side, moving right/down on the other.
    low = half[:, None] + _AV_MARGIN_PIXELS - torch.clamp(vec, max=0) * travel[:, None]
    high = image_size - half[:, None] - _AV_MARGIN_PIXELS - torch.clamp(vec, min=0) * travel[:, None]
    start = low + (high - low) * torch.rand(hops.shape[0], 2, generator=generator)
    steps_taken = torch.cumsum(hops.float(), dim=1)  # (n, T) hops up to and including frame t
    return start[:, None, :] + steps_taken[:, :, None] * AV_STEP_PIXELS * vec[:, None, :]


def _render_video(shape: torch.Tensor, side: torch.Tensor, centres: torch.Tensor, hops: torch.Tensor,
                  image_size: int) -> torch.Tensor:
    """The frames, (n, T, H, W) float32 in [0, 1]: the shape at its centres, flashing on hop frames (the shape
    at _AV_HOP_BRIGHTNESS on a background of AV_FLASH_BACKGROUND; AV_REST_BRIGHTNESS on black otherwise)."""
    pixel = torch.arange(image_size, dtype=torch.float32) + 0.5
    dx = (pixel.view(1, 1, 1, -1) - centres[..., 0, None, None]) / image_size  # (n, T, 1, W)
    dy = (pixel.view(1, 1, -1, 1) - centres[..., 1, None, None]) / image_size  # (n, T, H, 1)
    half_units = (side / 2 / image_size).view(-1, 1, 1, 1)
    brightness = torch.where(hops, _AV_HOP_BRIGHTNESS, AV_REST_BRIGHTNESS)  # (n, T)
    video = _shape_coverage(shape, dx, dy, half_units, image_size) * brightness[:, :, None, None]
    return torch.maximum(video, AV_FLASH_BACKGROUND * hops.float()[:, :, None, None])


def _hop_sound(shape: torch.Tensor, side: torch.Tensor, hops: torch.Tensor) -> torch.Tensor:
    """The clip's sound, (n, T * AV_FRAME_SAMPLES) float64: every hop frame's audio is a tone burst, pitched
    by the shape (AV_PITCH_HZ) and as loud as the shape is large (AV_AMPLITUDE_RANGE over AV_SIDE_RANGE);
    every other frame is silent."""
    n, num_frames = hops.shape
    fraction = (side - AV_SIDE_RANGE[0]) / (AV_SIDE_RANGE[1] - AV_SIDE_RANGE[0])
    amplitude = AV_AMPLITUDE_RANGE[0] + (AV_AMPLITUDE_RANGE[1] - AV_AMPLITUDE_RANGE[0]) * fraction
    pitch = torch.tensor(AV_PITCH_HZ, dtype=torch.float64)[shape]  # (n,)
    burst = _tone_burst(AV_FRAME_SAMPLES, pitch[:, None] * torch.tensor(_AV_HOP_HARMONICS, dtype=torch.float64),
                        amplitude.double()[:, None], AV_SAMPLE_RATE, decay_s=_AV_HOP_DECAY_SECONDS)  # (n, frame)
    return (hops[:, :, None].double() * burst[:, None, :]).reshape(n, num_frames * AV_FRAME_SAMPLES)


def _spoken_questions(n: int, length: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw each clip's question and "speak" it: question (n,) int64 index into AV_QUESTIONS, and its audio
    (n, length) float64, word w from a random start + w * _AV_WORD_GAP_SECONDS, each word two tones."""
    sr = AV_SAMPLE_RATE
    question = torch.randint(0, len(AV_QUESTIONS), (n,), generator=generator)
    offsets = torch.randint(0, int(_AV_LATEST_START_SECONDS * sr), (n,), generator=generator)
    jitter = 1 + _AV_SPEAKER_JITTER * (2 * torch.rand(n, _AV_MAX_WORDS, 2, generator=generator, dtype=torch.float64) - 1)
    word_gain = _AV_WORD_GAIN + _AV_WORD_GAIN_SPREAD * torch.rand(n, _AV_MAX_WORDS, generator=generator, dtype=torch.float64)
    word_len, word_gap = int(_AV_WORD_SECONDS * sr), int(_AV_WORD_GAP_SECONDS * sr)
    word_tones = torch.tensor(AV_WORD_TONES_HZ, dtype=torch.float64)
    word_ids = _AV_QUESTION_WORDS[question]  # (n, _AV_MAX_WORDS), -1 past the question's last word
    question_audio = torch.zeros(n, length, dtype=torch.float64)
    sample = torch.arange(length)
    for w in range(_AV_MAX_WORDS):
        spoken = word_ids[:, w] >= 0
        tones = word_tones[word_ids[:, w].clamp(min=0)] * jitter[:, w]  # (n, 2)
        words = _tone_burst(word_len, tones, (word_gain[:, w] * spoken)[:, None], sr,
                            decay_s=_AV_WORD_DECAY_SECONDS)  # (n, word_len)
        begin = offsets + w * word_gap  # (n,)
        index = sample[None, :] - begin[:, None]  # (n, length): position inside the word
        inside = (index >= 0) & (index < word_len)
        question_audio += torch.where(inside, words.gather(1, index.clamp(0, word_len - 1)), 0.0)
    return question, question_audio


def _answers(question: torch.Tensor, shape: torch.Tensor, direction: torch.Tensor, num_hops: torch.Tensor) -> torch.Tensor:
    """Each question's answer, read from the video alone: (n,) int64 index into AV_ANSWERS."""
    return torch.where(question == 0, shape,
                       torch.where(question == 1, len(AV_SHAPES) + direction,
                                   len(AV_SHAPES) + len(AV_DIRECTIONS) + num_hops - 1))


def av_clips(n: int, *, seed: int = 0, num_frames: int = 8, image_size: int = 16, noise: float = 0.003) -> AVClips:
    """Generate n audio-visual clips of a moving shape, deterministically from seed.

    Per clip: a shape (circle/square/triangle), a side in AV_SIDE_RANGE pixels, a direction, and
    1..AV_MAX_HOPS hop frames chosen among frames 1..T-1 (uniform count, then uniform positions).
    On a hop frame the shape moves AV_STEP_PIXELS in its direction, is drawn at brightness 1 (else
    AV_REST_BRIGHTNESS), the black background lights up to AV_FLASH_BACKGROUND, and a tone starts at
    that frame's first sample: fundamental AV_PITCH_HZ[shape] plus a half-amplitude octave, amplitude rising
    linearly with the side over AV_AMPLITUDE_RANGE, 4 ms attack, 40 ms decay. Frames without a hop
    are silent. Gaussian noise of std ``noise`` is added to both waveforms.

    The question asks about the shape, the direction or the number of hops (uniformly); its audio
    is its words, one every 128 ms from a random start in 0-40 ms, each word two tones
    (AV_WORD_TONES_HZ) jittered by up to ±2% in pitch, like different speakers.

    Returns AVClips; the same (n, seed, num_frames, image_size, noise) always gives the same clips.
    """
    if num_frames < 2:
        raise ValueError(f"num_frames must be at least 2, got {num_frames}")
    # One generator, drawn from in this order: the stories, the starting points, the questions, the noise.
    generator = torch.Generator().manual_seed(seed)
    shape, side, direction, num_hops, hops = _draw_stories(n, num_frames, generator)
    centres = _trajectories(side, direction, num_hops, hops, image_size, generator)
    video = _render_video(shape, side, centres, hops, image_size)
    audio = _hop_sound(shape, side, hops)
    question, question_audio = _spoken_questions(n, audio.shape[1], generator)
    answer = _answers(question, shape, direction, num_hops)

    audio = audio + noise * torch.randn(audio.shape, generator=generator, dtype=torch.float64)
    question_audio = question_audio + noise * torch.randn(audio.shape, generator=generator, dtype=torch.float64)
    return AVClips(video=video, audio=audio.float(), shape=shape, side=side, direction=direction, hops=hops,
                   question=question, question_audio=question_audio.float(), answer=answer)


__all__ += ["AV_SHAPES", "AV_DIRECTIONS", "AV_PITCH_HZ", "AV_SAMPLE_RATE", "AV_FRAME_SAMPLES", "AV_MAX_HOPS",
            "AV_STEP_PIXELS", "AV_SIDE_RANGE", "AV_AMPLITUDE_RANGE", "AV_REST_BRIGHTNESS", "AV_FLASH_BACKGROUND", "AV_WORDS", "AV_QUESTIONS", "AV_ANSWERS", "AVClips", "av_clips"]
