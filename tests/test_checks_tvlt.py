"""Every TVLT check accepts a correct answer and rejects plausible wrong ones, naming the fault."""

import math

import pytest
import torch
import torch.nn.functional as F

from gradelib.checks import tvlt as checks
from gradelib.reference import tvlt as ref
from checking import assert_rejected, own_copy


def assert_accepted(check, candidate, capsys, points, **kwargs):
    assert check(candidate, points=points, **kwargs) == points
    assert "✗" not in capsys.readouterr().out


# --- mel filterbank --------------------------------------------------------------------------


def make_filterbank(scale="htk", spacing="mel", norm="area", bins="right", edges_count=2):
    """A student's filterbank, correct by default; each keyword swaps in one plausible mistake."""

    def to_mel(f):
        if scale == "slaney":
            return f / (200 / 3) if f < 1000 else 15 + math.log(f / 1000) / (math.log(6.4) / 27)
        if scale == "ln":
            return 2595 * math.log(1 + f / 700)
        return 2595 * math.log10(1 + f / 700)

    def to_hz(m):
        if scale == "slaney":
            return torch.where(m >= 15, 1000 * torch.exp((math.log(6.4) / 27) * (m - 15)), (200 / 3) * m)
        return 700 * (10 ** (m / 2595) - 1)  # with scale="ln" this is not the inverse

    def filterbank(n_mels, n_fft, sample_rate, f_min=0.0, f_max=None):
        f_max = sample_rate / 2 if f_max is None else f_max
        if spacing == "linear":
            edges = torch.linspace(f_min, f_max, n_mels + edges_count, dtype=torch.float64)
        else:
            edges = to_hz(torch.linspace(to_mel(f_min), to_mel(f_max), n_mels + edges_count, dtype=torch.float64))
        k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
        freqs = {"right": k * sample_rate / n_fft, "plus1": k * sample_rate / (n_fft + 1),
                 "shifted": (k + 1) * sample_rate / n_fft, "short": k[:-1] * sample_rate / n_fft}[bins]
        fb = torch.zeros(n_mels, len(freqs), dtype=torch.float64)
        for m in range(n_mels):
            lo, c, hi = edges[m], edges[m + 1], edges[m + 2]
            tri = torch.clamp(torch.minimum((freqs - lo) / (c - lo), (hi - freqs) / (hi - c)), min=0)
            fb[m] = tri * 2 / (hi - lo) if norm == "area" else (tri if norm == "peak" else tri / tri.sum())
        return fb.float()

    return filterbank


def test_mel_filterbank_accepts(capsys):
    assert_accepted(checks.check_mel_filterbank, make_filterbank(), capsys, 3)
    assert_accepted(checks.check_mel_filterbank, own_copy(ref.mel_filterbank), capsys, 3, seed=7)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (make_filterbank(scale="slaney"), "not the HTK formula"),
    (make_filterbank(scale="ln"), "not inverses"),
    (make_filterbank(spacing="linear"), "equally spaced in Hz"),
    (make_filterbank(norm="peak"), "not area-normalised"),
    (make_filterbank(norm="sum"), "divided by its sum"),
    (make_filterbank(bins="plus1"), "k·sr/(n_fft + 1)"),
    (make_filterbank(bins="shifted"), "off by one FFT bin"),
    (make_filterbank(bins="short"), "one FFT bin short"),
    (lambda *a, **k: make_filterbank()(*a, **k).T, "transposed"),
    (own_copy(ref.mel_filterbank).__globals__["mel_filterbank"], "must be your own code"),
], ids=["slaney", "ln", "linear", "peak", "sum", "n+1", "shifted", "short", "transposed", "reference"])
def test_mel_filterbank_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_mel_filterbank, wrong, capsys, diagnosis)


# --- log-mel spectrogram ---------------------------------------------------------------------


def make_log_mel(power=2, log=torch.log, window="periodic", pad=True, eps_inside=True, transpose=False, centred=False):
    def log_mel(wave, filterbank, n_fft, hop, eps=1e-6):
        if centred:
            spec = torch.stft(wave, n_fft, hop, window=torch.hann_window(n_fft, dtype=wave.dtype), return_complex=True).transpose(-1, -2)
        else:
            padded = F.pad(wave, (0, n_fft - hop)) if pad else wave
            frames = padded.unfold(-1, n_fft, hop)
            if window == "periodic":
                frames = frames * torch.hann_window(n_fft, dtype=wave.dtype)
            elif window == "symmetric":
                frames = frames * torch.hann_window(n_fft, periodic=False, dtype=wave.dtype)
            spec = torch.fft.rfft(frames)
        mel = spec.abs() ** power @ filterbank.T.to(wave.dtype)
        out = log(mel + eps) if eps_inside else log(mel)
        return out.transpose(-1, -2) if transpose else out

    return log_mel


def test_log_mel_accepts(capsys):
    assert_accepted(checks.check_log_mel_spectrogram, make_log_mel(), capsys, 2)
    assert_accepted(checks.check_log_mel_spectrogram, make_log_mel(), capsys, 2, seed=3)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (make_log_mel(power=1), "*magnitude*"),
    (make_log_mel(log=torch.log10), "log10"),
    (make_log_mel(window=None), "no window"),
    (make_log_mel(window="symmetric"), "symmetric"),
    (make_log_mel(eps_inside=False), "NaN or inf"),
    (make_log_mel(transpose=True), "(mel, time)"),
    (make_log_mel(pad=False), "pad the right end"),
    (make_log_mel(centred=True), "centred STFT"),
], ids=["magnitude", "log10", "no-window", "symmetric", "no-eps", "transposed", "no-pad", "centred"])
def test_log_mel_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_log_mel_spectrogram, wrong, capsys, diagnosis)


# --- patchify --------------------------------------------------------------------------------


def patchify(video, t, p):
    B, T, H, W = video.shape
    x = video.reshape(B, T // t, t, H // p, p, W // p, p).permute(0, 1, 3, 5, 2, 4, 6)
    return x.reshape(B, -1, t * p * p)


def test_patchify_accepts(capsys):
    assert_accepted(checks.check_patchify_video, patchify, capsys, 2)
    assert_accepted(checks.check_patchify_video, patchify, capsys, 2, seed=4)


def _permuted(order):
    def fn(video, t, p):
        B, T, H, W = video.shape
        return video.reshape(B, T // t, t, H // p, p, W // p, p).permute(*order).reshape(B, -1, t * p * p)
    return fn


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda v, t, p: v.reshape(v.shape[0], -1, t * p * p), "bare reshape"),
    (_permuted((0, 3, 5, 1, 2, 4, 6)), "ordered row, column, then time slot"),
    (_permuted((0, 1, 3, 5, 4, 6, 2)), "pixel row, pixel column, then frame"),
    (_permuted((0, 1, 3, 5, 2, 6, 4)), "transposed patch"),
    (lambda v, t, p: patchify(v, 1, p), "tubelets of one frame"),
], ids=["reshape", "space-major", "frame-last", "transposed", "no-tubelet"])
def test_patchify_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_patchify_video, wrong, capsys, diagnosis)


# --- random masking --------------------------------------------------------------------------


def make_masking(invert=False, keep_rule="int", shared=False, restore="inverse", use_generator=True):
    def random_masking(x, mask_ratio, generator=None):
        B, N, D = x.shape
        keep = {"int": int(N * (1 - mask_ratio)), "ceil": math.ceil(N * (1 - mask_ratio)), "ratio": int(N * mask_ratio)}[keep_rule]
        shape = (1, N) if shared else (B, N)
        noise = torch.rand(*shape, generator=generator if use_generator else None).expand(B, N)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1) if restore == "inverse" else ids_shuffle
        ids_keep = ids_shuffle[:, :keep]
        visible = torch.gather(x, 1, ids_keep[:, :, None].expand(B, keep, D))
        mask = torch.ones(B, N)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, torch.argsort(ids_shuffle, dim=1))
        return visible, (1 - mask if invert else mask), ids_restore

    return random_masking


def test_random_masking_accepts(capsys):
    assert_accepted(checks.check_random_masking, make_masking(), capsys, 3)
    assert_accepted(checks.check_random_masking, own_copy(ref.random_masking), capsys, 3, seed=2)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (make_masking(invert=True), "the mask is inverted"),
    (make_masking(keep_rule="ceil"), "round down"),
    (make_masking(keep_rule="ratio"), "the number to *mask*"),
    (make_masking(shared=True), "every sample has the same mask"),
    (make_masking(restore="shuffle"), "not its inverse"),
    (make_masking(use_generator=False), "same generator seed gave different masks"),
], ids=["inverted", "ceil", "ratio", "shared", "restore", "no-generator"])
def test_random_masking_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_random_masking, wrong, capsys, diagnosis)


# --- masked-patch MSE ------------------------------------------------------------------------


def make_mse(where="masked", denominator="masked", unbiased=True, eps=1e-6, norm_dims=(-1,), norm_pred=False, reduce="mean"):
    def masked_patch_mse(pred, target, mask, normalize_target=False):
        if normalize_target:
            mean = target.mean(dim=norm_dims, keepdim=True)
            var = target.var(dim=norm_dims, keepdim=True, unbiased=unbiased)
            target = (target - mean) / (var + eps) ** 0.5 if eps else (target - mean) / var ** 0.5
            if norm_pred:
                pred = (pred - pred.mean(-1, keepdim=True)) / (pred.var(-1, keepdim=True) + 1e-6) ** 0.5
        err = (pred - target) ** 2
        err = err.mean(-1) if reduce == "mean" else err.sum(-1)
        weights = {"masked": mask, "visible": 1 - mask, "all": torch.ones_like(mask)}[where]
        total = (err * weights).sum()
        return total / (weights.sum() if denominator == "masked" else mask.numel())

    return masked_patch_mse


def test_masked_patch_mse_accepts(capsys):
    assert_accepted(checks.check_masked_patch_mse, make_mse(), capsys, 2)
    assert_accepted(checks.check_masked_patch_mse, make_mse(), capsys, 2, seed=8)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (make_mse(where="all"), "averages over every patch"),
    (make_mse(where="visible"), "the mask is inverted"),
    (make_mse(denominator="all"), "divide by mask.sum()"),
    (make_mse(reduce="sum"), "summed over the patch's values"),
    (make_mse(unbiased=False), "biased"),
    (make_mse(eps=0), "NaN or inf on a constant patch"),
    (make_mse(norm_dims=(0, 1, 2)), "statistics over all patches"),
    (make_mse(norm_pred=True), "prediction was normalised too"),
], ids=["all", "inverted", "denominator", "sum", "biased", "no-eps", "batch-norm", "norm-pred"])
def test_masked_patch_mse_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_masked_patch_mse, wrong, capsys, diagnosis)


# --- VAM pairs -------------------------------------------------------------------------------


def make_pairs(rule="shift", swap=False):
    def vam_pairs(batch_size, generator=None):
        i = torch.arange(batch_size)
        if rule == "shift":
            j = (i + torch.randint(1, batch_size, (batch_size,), generator=generator)) % batch_size
        elif rule == "randperm":  # may pair a clip with itself
            j = torch.randperm(batch_size, generator=generator)
        elif rule == "neighbour":
            j = (i + 1) % batch_size
        elif rule == "narrow":  # never picks shift batch_size - 1
            j = (i + torch.randint(1, max(batch_size - 1, 2), (batch_size,), generator=generator)) % batch_size
        else:  # global RNG
            j = (i + torch.randint(1, batch_size, (batch_size,))) % batch_size
        ones, zeros = torch.ones(batch_size, dtype=torch.int64), torch.zeros(batch_size, dtype=torch.int64)
        label = torch.cat([zeros, ones]) if swap else torch.cat([ones, zeros])
        return torch.cat([i, i]), torch.cat([i, j]), label

    return vam_pairs


def test_vam_pairs_accepts(capsys):
    assert_accepted(checks.check_vam_pairs, make_pairs(), capsys, 2)
    assert_accepted(checks.check_vam_pairs, own_copy(ref.vam_pairs), capsys, 2, seed=3)


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (make_pairs(rule="randperm"), "its own audio"),
    (make_pairs(swap=True), "the labels are swapped"),
    (make_pairs(rule="neighbour"), "always the same pairing"),
    (make_pairs(rule="narrow"), "not equally likely"),
    (make_pairs(rule="global"), "same generator seed gave different pairs"),
], ids=["self", "swapped", "neighbour", "narrow", "no-generator"])
def test_vam_pairs_rejects(wrong, diagnosis, capsys):
    assert_rejected(checks.check_vam_pairs, wrong, capsys, diagnosis)
