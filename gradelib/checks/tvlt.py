"""Checks for notebook 09 (TVLT, the textless vision-language transformer), one per graded exercise.

Each check runs the student's function on seeded cases, compares it with ``gradelib.reference.tvlt``
and, when they disagree, looks for the mistake it resembles (a mel scale that is not HTK's, edges
spaced linearly, triangles not area-normalised, magnitude instead of power, patches cut with a bare
reshape, an inverted mask, a loss over every patch, a negative that is the clip's own audio, ...),
so the feedback names the fault without printing the solution. ``seed`` selects the cases: visible
tests use the default, hidden tests other seeds.

Two derivations (``derive_*``, graded by :mod:`gradelib.checks.derive`): the mel scale from its anchor
(1000 Hz is 1000 mel) and its inverse, for any break frequency f_b; and the token counts of a clip
(video tubelets, spectrogram patches, and the encoder's sequence under MAE masking).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from gradelib.checks import _core
from gradelib.checks._core import Case, close, compare_case, exercise, generator, make_read_only, max_abs_diff, tensor_problem, within_sigmas
from gradelib.checks.derive import derivation, integer, interval, positive
from gradelib.reference import tvlt as ref

# Bound at import, before any student code runs.
_randn = _core.randn
_rand = _core.rand
_randint = _core.randint
_equal = _core.equal
_rfft = torch.fft.rfft
_hann = torch.hann_window
_argsort = torch.argsort
_gather = torch.gather
_log = torch.log
_log10 = torch.log10


def _relative_close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-4) -> bool:
    scale = float(b.detach().abs().max()) if b.numel() else 1.0
    return max_abs_diff(a, b) <= rtol * max(scale, 1e-12)


def _first_relative(candidate: torch.Tensor, variants, rtol: float = 1e-4) -> str | None:
    for diagnosis, variant in variants:
        if tuple(variant.shape) == tuple(candidate.shape) and _relative_close(candidate, variant, rtol):
            return diagnosis
    return None


# ----------------------------------------------------------------------------------------------
# Exercise: the mel filterbank


def _slaney_hz_to_mel(f: torch.Tensor) -> torch.Tensor:
    f = torch.as_tensor(f, dtype=torch.float64)
    linear = f / (200.0 / 3)
    log_part = 15.0 + torch.log(torch.clamp(f, min=1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return torch.where(f >= 1000.0, log_part, linear)


def _slaney_mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    m = torch.as_tensor(m, dtype=torch.float64)
    return torch.where(m >= 15.0, 1000.0 * torch.exp((math.log(6.4) / 27.0) * (m - 15.0)), (200.0 / 3) * m)


def _triangles(edges: torch.Tensor, freqs: torch.Tensor, normalise: str = "area") -> torch.Tensor:
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    tri = torch.clamp(torch.minimum((freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)), min=0.0)
    if normalise == "area":
        return tri * 2.0 / (upper - lower)
    if normalise == "sum":
        return tri / torch.clamp(tri.sum(dim=1, keepdim=True), min=1e-12)
    return tri


def _filterbank_variants(n_mels: int, n_fft: int, sr: float, f_min: float, f_max: float):
    freqs = ref.fft_frequencies(n_fft, sr)
    mel_edges = ref.mel_to_hz(torch.linspace(float(ref.hz_to_mel(f_min)), float(ref.hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64))
    slaney_edges = _slaney_mel_to_hz(torch.linspace(float(_slaney_hz_to_mel(torch.tensor(f_min))),
                                                    float(_slaney_hz_to_mel(torch.tensor(f_max))), n_mels + 2, dtype=torch.float64))
    ln_edges = 700.0 * (10.0 ** (torch.linspace(2595.0 * math.log1p(f_min / 700.0), 2595.0 * math.log1p(f_max / 700.0),
                                                n_mels + 2, dtype=torch.float64) / 2595.0) - 1.0)
    linear_edges = torch.linspace(f_min, f_max, n_mels + 2, dtype=torch.float64)
    snapped_bins = torch.floor((n_fft + 1) * mel_edges / sr)  # the popular "bin = floor((N + 1) f / sr)" recipe
    snapped_edges = snapped_bins * sr / n_fft
    shifted_freqs = torch.arange(1, n_fft // 2 + 2, dtype=torch.float64) * sr / n_fft
    over_n_plus_1 = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sr / (n_fft + 1)
    over_n_minus_1 = torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sr / (n_fft - 1)
    return [
        ("the triangles are not area-normalised: scale filter m by 2 / (f_{m+2} − f_m) (they peak at 1 here)",
         _triangles(mel_edges, freqs, "none")),
        ("each filter is divided by its sum over FFT bins; the asked normalisation is 2 / (f_{m+2} − f_m), the triangle's area in Hz",
         _triangles(mel_edges, freqs, "sum")),
        ("the edges are equally spaced in Hz: space them equally in mel, then convert back to Hz",
         _triangles(linear_edges, freqs)),
        ("the Hz↔mel conversion is not the HTK formula m = 2595 log10(1 + f/700) (this is the Slaney/auditory-toolbox mel scale)",
         _triangles(slaney_edges, freqs)),
        ("hz_to_mel and mel_to_hz are not inverses: one uses the natural log, the other powers of 10",
         _triangles(ln_edges, freqs)),
        ("the edges are snapped to FFT bins with floor((n_fft + 1) f / sr): evaluate the triangles at the bin frequencies k·sr/n_fft instead",
         _triangles(snapped_edges, freqs)),
        ("off by one FFT bin: bin k has frequency k·sr/n_fft for k = 0 … n_fft/2 (starting at 0 Hz)",
         _triangles(mel_edges, shifted_freqs)),
        ("the bin frequencies are k·sr/(n_fft + 1): bin k of an n_fft-point FFT is at k·sr/n_fft",
         _triangles(mel_edges, over_n_plus_1)),
        ("the bin frequencies are k·sr/(n_fft − 1): bin k of an n_fft-point FFT is at k·sr/n_fft",
         _triangles(mel_edges, over_n_minus_1)),
    ]


def _filterbank_case(fn, n_mels: int, n_fft: int, sr: float, f_min: float = 0.0, f_max: float | None = None,
                     pass_defaults: bool = False) -> str | None:
    if pass_defaults:
        fb = fn(n_mels, n_fft, sr)
    else:
        fb = fn(n_mels, n_fft, sr, f_min, f_max)
    top = sr / 2 if f_max is None else f_max
    want = ref.mel_filterbank(n_mels, n_fft, sr, f_min, top).double()
    bins = n_fft // 2 + 1
    if type(fb) is torch.Tensor and fb.dim() == 2:
        if tuple(fb.shape) == (bins, n_mels) and n_mels != bins:
            return f"the filterbank is transposed: shape should be (n_mels, n_fft // 2 + 1) = ({n_mels}, {bins})"
        if tuple(fb.shape) == (n_mels, bins - 1):
            return "one FFT bin short: the rfft of n_fft samples has n_fft // 2 + 1 bins (0 Hz to sr/2 inclusive)"
    problem = tensor_problem(fb, "the filterbank", (n_mels, bins))
    if problem:
        return problem
    fb = fb.double()
    if _relative_close(fb, want, 1e-4):
        return None
    diagnosis = _first_relative(fb, _filterbank_variants(n_mels, n_fft, sr, f_min, top), 1e-3)
    if diagnosis:
        return diagnosis
    if bool((fb.argmax(dim=1)[1:] < fb.argmax(dim=1)[:-1]).any()):
        return "the filters are not in increasing order of frequency"
    return f"differs from the mel filterbank (max relative error {max_abs_diff(fb, want) / float(want.abs().max()):.3g})"


@exercise("Mel filterbank", reference=ref.mel_filterbank)
def check_mel_filterbank(fn: Callable, points: float = 3, seed: int = 0) -> list[Case]:
    """Check ``fn(n_mels, n_fft, sample_rate, f_min=0.0, f_max=None) -> (n_mels, n_fft // 2 + 1)``:
    HTK mel scale, n_mels + 2 edges equally spaced in mel, triangles at k·sr/n_fft, area-normalised."""
    gen = generator(seed)
    n_mels = 8 + int(_randint(0, 5, (1,), generator=gen))
    f_min = float(50 + 100 * _rand(1, generator=gen))
    cases = [
        (f"{n_mels} mels, n_fft 256, 8 kHz, 0 Hz to sr/2 (the defaults)", lambda: _filterbank_case(fn, n_mels, 256, 8000.0, pass_defaults=True)),
        ("32 mels, n_fft 512, 16 kHz, 0 to 8000 Hz", lambda: _filterbank_case(fn, 32, 512, 16000.0, 0.0, 8000.0)),
        (f"16 mels, n_fft 400, 22.05 kHz, {f_min:.0f} to 6000 Hz", lambda: _filterbank_case(fn, 16, 400, 22050.0, f_min, 6000.0)),
        ("64 mels, n_fft 2048, 44.1 kHz (TVLT's rate; it uses 128 mels)", lambda: _filterbank_case(fn, 64, 2048, 44100.0, 0.0, 22050.0)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the log-mel spectrogram


def _log_mel_variants(wave: torch.Tensor, fb: torch.Tensor, n_fft: int, hop: int, eps: float):
    padded = F.pad(wave, (0, n_fft - hop))
    frames = padded.unfold(-1, n_fft, hop)
    periodic = _hann(n_fft, periodic=True, dtype=wave.dtype)
    symmetric = _hann(n_fft, periodic=False, dtype=wave.dtype)
    spec = _rfft(frames * periodic)
    power, magnitude = spec.abs() ** 2, spec.abs()
    raw_power = _rfft(frames).abs() ** 2
    sym_power = _rfft(frames * symmetric).abs() ** 2
    fbt = fb.T.to(wave.dtype)
    unpadded = wave.unfold(-1, n_fft, hop)
    short = _rfft(unpadded * periodic).abs() ** 2
    return [
        ("this is the log of the mel *magnitude*: the filterbank takes the power |X|², not |X|", _log(magnitude @ fbt + eps)),
        ("log10 instead of the natural log", _log10(power @ fbt + eps)),
        ("no window: multiply each frame by a periodic Hann window before the FFT", _log(raw_power @ fbt + eps)),
        ("the Hann window is the symmetric one (periodic=False); spectral analysis uses the periodic window",
         _log(sym_power @ fbt + eps)),
        ("eps is added after the log (or left out): log(mel + eps), not log(mel) + eps", _log(torch.clamp(power @ fbt, min=1e-300)) + eps),
        ("the power is divided by n_fft (or normalised some other way): use |rfft(frame · window)|² as it is",
         _log(power / n_fft @ fbt + eps)),
    ], short.shape[-2]


def _log_mel_case(fn, wave: torch.Tensor, fb: torch.Tensor, n_fft: int, hop: int, eps: float) -> str | None:
    out = fn(wave, fb, n_fft, hop, eps)
    want = ref.log_mel_spectrogram(wave, fb, n_fft, hop, eps)
    variants, unpadded_frames = _log_mel_variants(wave, fb, n_fft, hop, eps)
    expected_shape = tuple(want.shape)
    if type(out) is torch.Tensor and out.dim() == wave.dim() + 1:
        if tuple(out.shape[:-2]) == expected_shape[:-2] and tuple(out.shape[-2:]) == expected_shape[-2:][::-1] and expected_shape[-1] != expected_shape[-2]:
            return "the result is (mel, time); return time first: (..., S // hop, n_mels)"
        if out.shape[-2] == unpadded_frames and out.shape[-2] != expected_shape[-2]:
            return f"{unpadded_frames} frames instead of {expected_shape[-2]}: pad the right end with n_fft − hop zeros so that frame j starts at j·hop for j < S / hop"
        if out.shape[-2] == expected_shape[-2] + 1:
            return "one frame too many: this looks like a centred STFT (torch.stft's center=True); frame j covers samples [j·hop, j·hop + n_fft)"
    problem = tensor_problem(out, "the log-mel spectrogram", expected_shape)
    if problem:
        return problem
    return compare_case(out, want, 1e-4 * max(1.0, float(want.abs().max())), variants, "differs from log(mel power + eps)",
                        variant_atol=1e-3)


@exercise("Log-mel spectrogram", reference=(ref.log_mel_spectrogram, ref.power_spectrogram))
def check_log_mel_spectrogram(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(wave (..., S), filterbank (M, n_fft//2+1), n_fft, hop, eps) -> (..., S // hop, M)``."""
    gen = generator(seed)
    t = torch.arange(2048, dtype=torch.float64) / 8000.0
    freq = 300.0 + 1500.0 * float(_rand(1, generator=gen))
    tone = (0.5 * torch.sin(2 * math.pi * freq * t) + 0.01 * _randn(2048, generator=gen, dtype=torch.float64))
    batch = 0.3 * _randn(4, 1024, generator=gen, dtype=torch.float64)
    batch[2] = 0.0  # digital silence in one row: log(0 + eps), finite (alone it would pass most wrong spectrograms)
    fb8k = ref.mel_filterbank(20, 256, 8000.0).double()
    fb_small = ref.mel_filterbank(12, 128, 8000.0).double()
    cases = [
        (f"a {freq:.0f} Hz tone, n_fft 256, hop 128, 20 mels", lambda: _log_mel_case(fn, tone, fb8k, 256, 128, 1e-6)),
        ("a batch (4, 1024) of noise with one silent row, n_fft 128, hop 64, 12 mels, eps 1e-4",
         lambda: _log_mel_case(fn, batch, fb_small, 128, 64, 1e-4)),
        ("float32 input, eps 1e-3", lambda: _log_mel_case(fn, tone.float(), fb8k.float(), 256, 128, 1e-3)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: spatio-temporal patches


def _patchify_case(fn, video: torch.Tensor, t: int, p: int) -> str | None:
    B, T, H, W = video.shape
    out = fn(video, t, p)
    want = ref.patchify_video(video, t, p)
    problem = tensor_problem(out, "the patches", want.shape)
    if problem:
        if type(out) is torch.Tensor and out.dim() == 3 and out.shape[1] == B * 0 + T * (H // p) * (W // p):
            return "every frame was cut separately (tubelets of one frame): a patch spans t consecutive frames"
        return problem
    tp, hp, wp = T // t, H // p, W // p
    x = video.reshape(B, tp, t, hp, p, wp, p)
    return compare_case(out, want, 0.0, [
        ("cut with a bare reshape: move the patch-grid axes (time slot, row, column) before the within-patch axes (permute) and then reshape",
         video.reshape(B, tp * hp * wp, t * p * p)),
        ("patches are ordered row, column, then time slot: order them by time slot first, then row, then column",
         x.permute(0, 3, 5, 1, 2, 4, 6).reshape(B, -1, t * p * p)),
        ("patches are ordered column before row: row-major order is time slot, row, then column",
         x.permute(0, 1, 5, 3, 2, 4, 6).reshape(B, -1, t * p * p)),
        ("inside a patch the values are ordered pixel row, pixel column, then frame: flatten frame first, then row, then column",
         x.permute(0, 1, 3, 5, 4, 6, 2).reshape(B, -1, t * p * p)),
        ("inside a patch the pixel columns come before the pixel rows (transposed patch)",
         x.permute(0, 1, 3, 5, 2, 6, 4).reshape(B, -1, t * p * p)),
    ], lambda: "the patches differ from video[b, τt:(τ+1)t, rp:(r+1)p, cp:(c+1)p] flattened, in (τ, r, c) order")


@exercise("Spatio-temporal patchify", reference=ref.patchify_video)
def check_patchify_video(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(video (B, T, H, W), t, p) -> (B, (T/t)(H/p)(W/p), t p p)``."""
    gen = generator(seed)
    small = torch.arange(2 * 4 * 4 * 6, dtype=torch.float32).reshape(2, 4, 4, 6)
    rand_video = _rand(3, 8, 16, 16, generator=gen)
    cases = [
        ("a (2, 4, 4, 6) video of distinct values, tubelets 2 x 2 x 2", lambda: _patchify_case(fn, small, 2, 2)),
        ("a (3, 8, 16, 16) video, tubelets 2 x 8 x 8 (the notebook's)", lambda: _patchify_case(fn, rand_video, 2, 8)),
        ("non-square frames, tubelets 4 x 2 x 2", lambda: _patchify_case(fn, _rand(1, 8, 4, 6, generator=gen), 4, 2)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: random masking


def _unpack_masking(result: object) -> tuple[object, object, object]:
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise TypeError(f"random_masking should return (x_visible, mask, ids_restore), got {type(result).__name__}")
    return result[0], result[1], result[2]


def _masking_structure(fn, x: torch.Tensor, ratio: float, gen_seed: int) -> str | None:
    B, N, D = x.shape
    keep = ref.num_kept(N, ratio)
    visible, mask, restore = _unpack_masking(fn(x, ratio, generator(gen_seed)))
    problem = tensor_problem(mask, "mask", (B, N)) or tensor_problem(restore, "ids_restore", (B, N))
    if problem:
        return problem
    if type(visible) is torch.Tensor and visible.dim() == 3 and visible.shape[1] != keep:
        k = visible.shape[1]
        if k == N - keep:
            return f"kept {k} patches, the number to *mask*: keep int(N (1 − mask_ratio)) = {keep} of {N}"
        return f"kept {k} patches; keep int(N (1 − mask_ratio)) = {keep} of {N} (round down)"
    problem = tensor_problem(visible, "x_visible", (B, keep, D))
    if problem:
        return problem
    m = mask.detach().double()
    if not bool(((m == 0) | (m == 1)).all()):
        return "mask must hold only 0 (kept) and 1 (masked)"
    ones = m.sum(dim=1)
    if bool((ones == keep).all()) and keep != N - keep:
        return "the mask is inverted: 1 must mark the removed (masked) patches, 0 the visible ones"
    if not bool((ones == N - keep).all()):
        return f"each row of mask should have {N - keep} ones (masked patches), got {sorted(set(ones.long().tolist()))}"
    r = restore.detach()
    if r.dtype != torch.int64:
        return f"ids_restore should be int64 indices, got {r.dtype}"
    if not _equal(r.sort(dim=1).values, torch.arange(N).expand(B, N)):
        return "each row of ids_restore must be a permutation of 0 … N−1"
    # Put the visible patches (and zeros for the masked ones) back with ids_restore.
    full = torch.cat([visible.detach(), torch.zeros(B, N - keep, D, dtype=x.dtype)], dim=1)
    restored = _gather(full, 1, r[:, :, None].expand(B, N, D))
    kept = (m == 0)[:, :, None]
    if not close(torch.where(kept, restored, torch.zeros_like(restored)), torch.where(kept, x, torch.zeros_like(x)), 1e-6):
        inverse = _argsort(r, dim=1)
        restored_inv = _gather(full, 1, inverse[:, :, None].expand(B, N, D))
        if close(torch.where(kept, restored_inv, torch.zeros_like(restored_inv)), torch.where(kept, x, torch.zeros_like(x)), 1e-6):
            return "ids_restore is the shuffle itself, not its inverse: ids_restore = argsort(ids_shuffle)"
        hidden = (m == 1)[:, :, None]
        if close(torch.where(hidden, restored, torch.zeros_like(restored)), torch.where(hidden, x, torch.zeros_like(x)), 1e-6):
            return "the mask is inverted: 1 must mark the removed (masked) patches, 0 the visible ones"
        return "gathering [x_visible, mask tokens] with ids_restore does not put the visible patches back where mask is 0"
    return None


def _masking_random(fn, ratio: float) -> str | None:
    B, N, D = 64, 16, 3
    x = torch.arange(N, dtype=torch.float32)[None, :, None].expand(B, N, D).contiguous()
    _, mask, _ = _unpack_masking(fn(x, ratio, generator(7)))
    problem = tensor_problem(mask, "mask", (B, N))
    if problem:
        return problem
    rows = {tuple(row.tolist()) for row in mask.detach()}
    if len(rows) == 1:
        return "every sample has the same mask: draw the noise per sample, shape (B, N)"
    masks = [_unpack_masking(fn(x, ratio, generator(100 + k)))[1].detach().double() for k in range(8)]
    rate = torch.stack(masks).mean(dim=(0, 1))  # per position, over 512 samples
    if abs(float(rate.mean()) - (1 - ratio)) < 0.05 and abs(ratio - 0.5) > 0.1:
        return f"about {1 - ratio:.0%} of the patches are marked 1, not {ratio:.0%}: the mask is inverted (1 = masked)"
    share = 1 - ref.num_kept(N, ratio) / N                            # each row masks exactly this share
    sigma = math.sqrt(share * (1 - share) / (len(masks) * B))         # of one position's rate over 512 samples
    if not all(within_sigmas(float(r) - share, sigma) for r in rate):
        return "some positions are masked far more often than others: every patch should be equally likely to be masked"
    return None


def _masking_generator(fn) -> str | None:
    x = _randn(4, 12, 2, generator=generator(3))
    first = _unpack_masking(fn(x, 0.5, generator(11)))[1]
    again = _unpack_masking(fn(x, 0.5, generator(11)))[1]
    other = [_unpack_masking(fn(x, 0.5, generator(12 + k)))[1] for k in range(3)]
    if not _equal(first.detach(), again.detach()):
        return "the same generator seed gave different masks: draw the noise with torch.rand(..., generator=generator)"
    if all(_equal(first.detach(), o.detach()) for o in other):
        return "different generator seeds gave the same mask: use the generator argument"
    return None


@exercise("Random masking", reference=ref.random_masking)
def check_random_masking(fn: Callable, points: float = 3, seed: int = 0) -> list[Case]:
    """Check ``fn(x (B, N, D), mask_ratio, generator) -> (x_visible (B, K, D), mask (B, N), ids_restore (B, N))``."""
    gen = generator(seed)
    x = _randn(3, 16, 5, generator=gen)
    x_odd = _randn(2, 10, 4, generator=gen)
    cases = [
        ("shapes, keep count, 0/1 mask and restorable order (N = 16, ratio 0.75)", lambda: _masking_structure(fn, x, 0.75, seed)),
        ("N = 10, ratio 0.75: keep int(2.5) = 2", lambda: _masking_structure(fn, x_odd, 0.75, seed + 1)),
        ("ratio 0.5", lambda: _masking_structure(fn, x, 0.5, seed + 2)),
        ("a different random mask per sample, every position equally likely, reproducible with the generator passed in",
         lambda: _masking_random(fn, 0.75) or _masking_generator(fn)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: the masked-patch MSE


def _mse_variants(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, normalize: bool):
    def norm(t, unbiased=True, eps=1e-6, dims=(-1,)):
        mean = t.mean(dim=dims, keepdim=True)
        var = t.var(dim=dims, keepdim=True, unbiased=unbiased)
        return (t - mean) / torch.sqrt(var + eps)

    tgt = norm(target) if normalize else target
    err = ((pred - tgt) ** 2).mean(dim=-1)
    B, N = mask.shape
    variants = [
        ("the loss averages over every patch: only the masked patches (mask == 1) count", err.mean()),
        ("the mask is inverted: the loss is over the visible patches (mask == 0); MAE scores the masked ones",
         (err * (1 - mask)).sum() / (1 - mask).sum()),
        ("the masked errors are summed but divided by the number of all patches: divide by mask.sum()", (err * mask).sum() / (B * N)),
        ("per-patch squared errors are summed over the patch's values: take their mean over the P values",
         (((pred - tgt) ** 2).sum(dim=-1) * mask).sum() / mask.sum()),
        ("the masked errors are averaged per sample and then over the batch: divide the batch's sum by the batch's mask.sum()",
         ((err * mask).sum(dim=1) / mask.sum(dim=1)).mean()),
    ]
    if normalize:
        def loss_with(target_normed, prediction=pred):
            e = ((prediction - target_normed) ** 2).mean(dim=-1)
            return (e * mask).sum() / mask.sum()
        variants += [
            ("normalize_target is ignored: normalise each target patch by its own mean and variance", loss_with(target)),
            ("the variance is the biased one (÷P): MAE uses the unbiased variance (÷(P − 1), torch's default)",
             loss_with(norm(target, unbiased=False))),
            ("the targets are normalised with statistics over all patches of the batch: use each patch's own mean and variance",
             loss_with(norm(target, dims=(0, 1, 2)))),
            ("the targets are normalised across patches (per value position): normalise each patch over its own P values",
             loss_with(norm(target, dims=(1,)))),
            ("divides by the standard deviation without eps: (t − mean) / sqrt(var + 1e-6)",
             loss_with((target - target.mean(-1, keepdim=True)) / target.std(-1, keepdim=True))),
            ("the prediction was normalised too: only the target is normalised (the network learns to predict normalised patches)",
             loss_with(norm(target), norm(pred))),
        ]
    return variants


def _mse_case(fn, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, normalize: bool) -> str | None:
    loss = fn(pred, target, mask, normalize)
    want = ref.masked_patch_mse(pred, target, mask, normalize)
    problem = tensor_problem(loss, "the loss")
    if problem:
        if type(loss) is torch.Tensor and normalize and not bool(torch.isfinite(loss).all()):
            return "NaN or inf on a constant patch: normalise with (t − mean) / sqrt(var + 1e-6), eps inside the square root"
        return problem
    if loss.dim() != 0:
        return f"the loss should be a scalar (0-d tensor), got shape {tuple(loss.shape)}"
    return compare_case(loss, want, 1e-6 * max(1.0, abs(float(want))), lambda: _mse_variants(pred, target, mask, normalize),
                        lambda: f"differs from the masked-patch MSE (off by {max_abs_diff(loss, want):.3g})")


def _random_mask(gen: torch.Generator, B: int, N: int, masked_per_row) -> torch.Tensor:
    mask = torch.zeros(B, N, dtype=torch.float64)
    for b, k in enumerate(masked_per_row):
        idx = _argsort(_rand(N, generator=gen))[:k]
        mask[b, idx] = 1.0
    return mask


@exercise("Masked-patch MSE", reference=(ref.masked_patch_mse, ref.normalize_patches))
def check_masked_patch_mse(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(pred (B, N, P), target (B, N, P), mask (B, N), normalize_target) -> scalar``."""
    gen = generator(seed)
    B, N, P = 3, 10, 6
    pred = _randn(B, N, P, generator=gen, dtype=torch.float64)
    target = 2.0 + 3.0 * _randn(B, N, P, generator=gen, dtype=torch.float64)
    uneven = _random_mask(gen, B, N, [7, 3, 5])  # different masked counts per sample
    constant = target.clone()
    constant[0, 0] = 1.5  # a flat patch: its variance is 0
    mask_flat = uneven.clone()
    mask_flat[0, 0] = 1.0
    cases = [
        ("raw targets, 7 / 3 / 5 masked patches per sample", lambda: _mse_case(fn, pred, target, uneven, False)),
        ("normalize_target=True: per-patch normalised targets", lambda: _mse_case(fn, pred, target, uneven, True)),
        ("float32 inputs", lambda: _mse_case(fn, pred.float(), target.float(), uneven.float(), False)),
        ("normalize_target=True with a constant (zero-variance) masked patch", lambda: _mse_case(fn, pred, constant, mask_flat, True)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Exercise: vision-audio matching pairs


def _unpack_pairs(result: object, batch_size: int):
    if not isinstance(result, (tuple, list)) or len(result) != 3:
        raise TypeError(f"vam_pairs should return (video_index, audio_index, label), got {type(result).__name__}")
    for value, name in zip(result, ("video_index", "audio_index", "label")):
        problem = tensor_problem(value, name, (2 * batch_size,))
        if problem:
            raise TypeError(problem)
        if value.dtype != torch.int64:
            raise TypeError(f"{name} should be int64, got {value.dtype}")
    return result


def _pairs_structure(fn, batch_size: int, gen_seed: int, draws: int = 8) -> str | None:
    """The structure of ``draws`` batches (one draw may by chance avoid a mistake, e.g. a derangement from randperm)."""
    for k in range(draws):
        problem = _pairs_structure_once(fn, batch_size, 1000 * gen_seed + k)
        if problem:
            return problem
    return None


def _pairs_structure_once(fn, batch_size: int, gen_seed: int) -> str | None:
    video, audio, label = _unpack_pairs(fn(batch_size, generator(gen_seed)), batch_size)
    if not bool(((label == 0) | (label == 1)).all()):
        return "labels must be 0 (mismatched) or 1 (matched)"
    if not bool(((video >= 0) & (video < batch_size) & (audio >= 0) & (audio < batch_size)).all()):
        return f"indices must lie in 0 … {batch_size - 1}"
    same = video == audio
    if bool((same & (label == 0)).any()) and not bool((~same & (label == 1)).any()):
        return "a negative pairs a video with its own audio: draw j among the *other* clips (j ≠ i)"
    if bool((~same & (label == 1)).any()) and bool((same & (label == 0)).any()):
        return "the labels are swapped: a video with its own audio is a positive (label 1)"
    if int(label.sum()) != batch_size:
        return f"expected {batch_size} positives and {batch_size} negatives, got {int(label.sum())} positives"
    if not bool((same == (label == 1)).all()):
        return "a positive must pair video i with audio i, and a negative with a different clip's audio"
    for kind, wanted in (("positive", 1), ("negative", 0)):
        seen = video[label == wanted].sort().values
        if not _equal(seen, torch.arange(batch_size)):
            return f"every video should appear in exactly one {kind} pair"
    return None


def _pairs_distribution(fn) -> str | None:
    batch_size = 4
    counts = torch.zeros(batch_size, batch_size)
    shifts = set()
    for k in range(300):
        video, audio, label = _unpack_pairs(fn(batch_size, generator(1000 + k)), batch_size)
        neg = label == 0
        counts.index_put_((video[neg], audio[neg]), torch.ones(int(neg.sum())), accumulate=True)
        shifts.add(tuple(((audio[neg] - video[neg]) % batch_size).tolist()))
    if len(shifts) == 1:
        return "the negatives are always the same pairing (e.g. clip i with clip i + 1): draw the other clip at random"
    off = counts[~torch.eye(batch_size, dtype=torch.bool)] / 300
    if float(counts.diagonal().sum()) > 0:
        return "a negative pairs a video with its own audio: draw j among the *other* clips (j ≠ i)"
    # each of the batch_size − 1 others should come up 1/3 of the time, over 300 draws
    share, sigma = 1 / (batch_size - 1), math.sqrt((1 / (batch_size - 1)) * (1 - 1 / (batch_size - 1)) / 300)
    if not all(within_sigmas(float(o) - share, sigma) for o in off):
        return "the other clips are not equally likely as negatives: draw j uniformly among the batch_size − 1 others"
    return None


def _pairs_generator(fn) -> str | None:
    first = _unpack_pairs(fn(8, generator(5)), 8)
    again = _unpack_pairs(fn(8, generator(5)), 8)
    if not all(_equal(a, b) for a, b in zip(first, again)):
        return "the same generator seed gave different pairs: draw with the generator argument"
    return None


@exercise("Vision-audio matching pairs", reference=ref.vam_pairs)
def check_vam_pairs(fn: Callable, points: float = 2, seed: int = 0) -> list[Case]:
    """Check ``fn(batch_size, generator) -> (video_index, audio_index, label)``, each (2 batch_size,) int64."""
    cases = [
        ("batch of 6: one positive and one negative per video; batch of 2: the only negative is the other clip",
         lambda: _pairs_structure(fn, 6, seed) or _pairs_structure(fn, 2, seed + 1)),
        ("batch of 7, another generator", lambda: _pairs_structure(fn, 7, seed + 2)),
        ("negatives drawn uniformly from the other clips (300 batches of 4), reproducible with the generator passed in",
         lambda: _pairs_distribution(fn) or _pairs_generator(fn)),
    ]
    return cases


# ----------------------------------------------------------------------------------------------
# Derivations


MEL_SYMBOLS = {"f": positive(1, 20000), "m": positive(1, 4000), "f_b": positive(100, 3000)}

# m(f) = A log10(1 + f / f_b) with A fixed by m(1000 Hz) = 1000 mel, and its inverse. At f_b = 700 Hz,
# A = 1000 / log10(17 / 7) = 2595.04, which HTK rounds to 2595 (gradelib.reference.tvlt.hz_to_mel); the
# relative tolerance 1e-4 lets the "correct at f_b = 700 Hz" diagnosis recognise HTK's rounded constants.
derive_mel_scale = derivation(
    "The mel scale and its inverse",
    symbols=MEL_SYMBOLS,
    expected={"mel": "1000 * log(1 + f / f_b) / log(1 + 1000 / f_b)",
              "hz": "f_b * ((1 + 1000 / f_b)**(m / 1000) - 1)"},
    special={"f_b = 700 Hz": {"f_b": 700}, "m = 0": {"m": 0}},
    rel_tol=1e-4,
)

TOKEN_SYMBOLS = {"T": integer(2, 64), "H": integer(16, 512), "W": integer(16, 512), "t": integer(1, 8),
                 "p": integer(2, 32), "L": integer(16, 2048), "M": integer(16, 256), "p_t": integer(1, 32),
                 "p_f": integer(1, 32), "r": interval(0, 1)}

# Sizes are multiples of their patch sizes, so every count is an exact product; the expected forms use "/"
# (SymPy's "//" is a floor, which the random points, not multiples, tell apart).
derive_token_counts = derivation(
    "Token counts of a clip",
    symbols=TOKEN_SYMBOLS,
    expected={"n_video": "T * H * W / (t * p**2)",
              "n_audio": "L * M / (p_t * p_f)",
              "n_encoder": "1 + (1 - r) * (T * H * W / (t * p**2) + L * M / (p_t * p_f))"},
    special={"r = 1/2": {"r": 0.5}},
)


make_read_only(__name__)
