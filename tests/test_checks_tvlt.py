"""Every TVLT check accepts a correct answer and rejects plausible wrong ones, naming the fault."""

import math

import nbformat
import pytest
import sympy as sp
import torch
import torch.nn.functional as F

from gradelib.checks import tvlt as checks
from gradelib.grading import hidden
from gradelib.reference import tvlt as ref
from checking import assert_accepted, assert_rejected, own_copy, score_of
from conftest import ROOT


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
    assert_accepted(checks.check_log_mel_spectrogram, make_log_mel(), capsys, 2, seeds=(0, 3))


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
    assert_accepted(checks.check_patchify_video, patchify, capsys, 2, seeds=(0, 4))


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
    assert_accepted(checks.check_masked_patch_mse, make_mse(), capsys, 2, seeds=(0, 8))


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


# --- trivial cases earn little (issue #14 §6) ---------------------------------------------------


@pytest.mark.parametrize(("check", "wrong", "points"), [
    (checks.check_log_mel_spectrogram, make_log_mel(power=1), 2),     # passed the digital-silence case: 0.5 of 2
    (checks.check_log_mel_spectrogram, make_log_mel(window=None), 2),
    (checks.check_random_masking, make_masking(invert=True), 3),      # passed the reproducibility case: 0.6 of 3
    (checks.check_vam_pairs, make_pairs(swap=True), 2),               # passed the reproducibility case: 0.5 of 2
    (checks.check_vam_pairs, make_pairs(rule="randperm"), 2),
], ids=["log-mel-magnitude", "log-mel-no-window", "masking-inverted", "pairs-swapped", "pairs-randperm"])
def test_trivial_cases_earn_nothing_for_a_wrong_answer(check, wrong, points, capsys):
    """A silent clip, a batch of 2 and reproducibility pass for almost any wrong answer: they are merged into
    cases that also test the real thing, so such an answer earns nothing from them."""
    assert score_of(check, wrong, points) == 0


def test_partly_right_pairs_still_earn_partial_credit(capsys):
    # Always the neighbour as negative: valid pairs, but not random. 2 of 3 cases.
    assert score_of(checks.check_vam_pairs, make_pairs(rule="neighbour"), 2) == pytest.approx(1.33)


# --- derivations ---------------------------------------------------------------------------------

f, m, f_b = checks.derive_mel_scale.symbols_for_notebook()
T, H, W, t, p, L, M, p_t, p_f, r = checks.derive_token_counts.symbols_for_notebook()
MEL = 1000 * sp.log(1 + f / f_b, 10) / sp.log(1 + 1000 / f_b, 10)
HZ = f_b * ((1 + 1000 / f_b) ** (m / 1000) - 1)
A = 1000 / sp.log(1 + 1000 / f_b, 10)  # the constant a student solves for first
N_VIDEO, N_AUDIO = T * H * W / (t * p**2), L * M / (p_t * p_f)
COUNTS = {"n_video": N_VIDEO, "n_audio": N_AUDIO, "n_encoder": 1 + (1 - r) * (N_VIDEO + N_AUDIO)}


def test_mel_scale_formulas_are_the_reference_scale():
    """Solved independently: m = A log10(1 + f/f_b) with m(1000) = 1000 gives A; at f_b = 700 that is HTK's 2595
    (rounded), the reference's hz_to_mel and mel_to_hz agree to its rounding, and the two results are inverses."""
    a = sp.Symbol("a", positive=True)
    (solved,) = sp.solve(sp.Eq(a * sp.log(1 + sp.Integer(1000) / f_b, 10), 1000), a)
    assert sp.simplify(solved - A) == 0
    assert float(A.subs(f_b, 700)) == pytest.approx(2595.0375, abs=1e-4) and round(float(A.subs(f_b, 700))) == 2595
    assert sp.simplify(HZ.subs(m, MEL) - f) == 0
    (inverse,) = sp.solve(sp.Eq(m, MEL), f)
    assert sp.simplify(inverse - HZ) == 0
    for hz in (50.0, 440.0, 1000.0, 7000.0):
        assert float(MEL.subs({f: hz, f_b: 700})) == pytest.approx(float(ref.hz_to_mel(hz)), rel=2e-5)
    for mel in (100.0, 999.0, 2800.0):
        assert float(HZ.subs({m: mel, f_b: 700})) == pytest.approx(float(ref.mel_to_hz(mel)), rel=1e-4)
    # The expected strings of the check are these expressions.
    expected = {name: sp.sympify(text, locals={"f": f, "m": m, "f_b": f_b})
                for name, text in (("mel", "1000 * log(1 + f / f_b) / log(1 + 1000 / f_b)"), ("hz", "f_b * ((1 + 1000 / f_b)**(m / 1000) - 1)"))}
    assert sp.simplify(expected["mel"] - MEL) == 0 and sp.simplify(expected["hz"] - HZ) == 0


def test_token_counts_against_patchify():
    """The counts are the number of patches patchify_video and patchify_spectrogram make, and the encoder's
    sequence is [CLS] + the visible tokens random_masking keeps."""
    video, spec = torch.zeros(1, 8, 48, 32), torch.zeros(1, 24, 40)
    point = {T: 8, H: 48, W: 32, t: 2, p: 8, L: 24, M: 40, p_t: 4, p_f: 5}
    n_video, n_audio = ref.patchify_video(video, 2, 8).shape[1], ref.patchify_spectrogram(spec, 4, 5).shape[1]
    assert (COUNTS["n_video"].subs(point), COUNTS["n_audio"].subs(point)) == (n_video, n_audio) == (96, 48)
    kept = ref.num_kept(n_video, 0.75) + ref.num_kept(n_audio, 0.75)
    assert COUNTS["n_encoder"].subs({**point, r: sp.Rational(3, 4)}) == 1 + kept == 37


def run_derivation(check, answers, capsys, points=2, seed=0):
    score = score_of(check, answers, points, seed=seed)
    return score, capsys.readouterr().out


@pytest.mark.parametrize("answers", [
    {"mel": MEL, "hz": HZ},
    {"mel": A * sp.log(1 + f / f_b, 10), "hz": f_b * (10 ** (m / A) - 1)},               # through the constant A
    {"mel": 1000 * sp.log((f_b + f) / f_b) / sp.log((f_b + 1000) / f_b),                  # natural logs, one fraction
     "hz": f_b * sp.exp(m * sp.log(1 + 1000 / f_b) / 1000) - f_b},
], ids=["as-expected", "through-A", "natural-log"])
def test_mel_scale_derivation_accepts_equivalent_forms(answers, capsys):
    for seed in (0, 17):
        assert run_derivation(checks.derive_mel_scale, answers, capsys, seed=seed)[0] == 2


@pytest.mark.parametrize(("name", "wrong", "diagnosis"), [
    ("mel", 2595 * sp.log(1 + f / f_b, 10), "correct at f_b = 700 Hz but not in general"),   # HTK's rounded constant kept
    ("mel", 2595 * sp.log(1 + f / 700, 10), "misses a dependence on f_b"),                   # HTK's formula copied
    ("mel", 1000 * sp.log(1 + f / f_b, 10) / sp.log(1 + 1000 / f_b), "off by a constant factor (×1/ln 10)"),  # mixed bases
    ("mel", sp.log(1 + f / f_b) / sp.log(1 + 1000 / f_b), "off by a constant factor"),        # anchor 1000 Hz -> 1 mel
    ("hz", f_b * (10 ** (m / 2595) - 1), "correct at f_b = 700 Hz but not in general"),
    ("hz", f_b * (sp.exp(m / A) - 1), "correct at m = 0 but not in general"),                # e^x where 10^x
    ("hz", f_b * (1 - (1 + 1000 / f_b) ** (m / 1000)), "has the wrong sign"),
    ("hz", f_b * (1 + 1000 / f_b) ** (m / 1000), "not equivalent"),                           # the −1 dropped
    ("hz", HZ + f - f, "2 / 2 points"),  # a symbol that cancels is fine (sanity: the case below differs)
    ("hz", HZ * f / 1000, "depends on f, which it should not"),
], ids=["rounded-A", "htk-copied", "mixed-bases", "anchor", "hz-rounded-A", "hz-exp", "hz-sign", "hz-no-minus-1",
        "cancels", "hz-depends-on-f"])
def test_mel_scale_derivation_rejects_with_diagnosis(name, wrong, diagnosis, capsys):
    score, printed = run_derivation(checks.derive_mel_scale, {"mel": MEL, "hz": HZ, name: wrong}, capsys)
    assert diagnosis in printed, printed
    assert score == (2 if diagnosis == "2 / 2 points" else 1)  # the other result keeps its point
    assert "2595.0" not in printed and "log(1 + 1000" not in printed  # never the result


@pytest.mark.parametrize("answers", [
    COUNTS,
    {"n_video": (T / t) * (H / p) * (W / p), "n_audio": (L / p_t) * (M / p_f), "n_encoder": sp.expand(COUNTS["n_encoder"])},
    {"n_video": T * H * W / t / p / p, "n_audio": L * M / p_f / p_t,
     "n_encoder": 1 + N_VIDEO + N_AUDIO - r * (N_VIDEO + N_AUDIO)},
], ids=["as-expected", "per-axis-expanded", "subtracted"])
def test_token_counts_derivation_accepts_equivalent_forms(answers, capsys):
    for seed in (0, 5):
        assert run_derivation(checks.derive_token_counts, answers, capsys, points=3, seed=seed)[0] == 3


@pytest.mark.parametrize(("name", "wrong", "diagnosis"), [
    ("n_video", T * H * W / p**2, "misses a dependence on t"),                  # one frame per patch
    ("n_video", T * H * W / (t * p), "not equivalent"),                         # p, not p², per frame
    ("n_video", (T // t) * (H // p) * (W // p), ""),                            # SymPy's // is a floor
    ("n_audio", L * M / p_t, "misses a dependence on p_f"),
    ("n_encoder", (1 - r) * (N_VIDEO + N_AUDIO), "off by an additive constant"),  # [CLS] forgotten
    ("n_encoder", 1 + r * (N_VIDEO + N_AUDIO), "correct at r = 1/2 but not in general"),  # the masked ones counted
    ("n_encoder", 1 + (1 - r) * N_VIDEO + N_AUDIO, "not equivalent"),           # audio left unmasked
], ids=["no-tubelet", "p-not-p2", "floor", "no-p_f", "no-cls", "masked-counted", "audio-unmasked"])
def test_token_counts_derivation_rejects_with_diagnosis(name, wrong, diagnosis, capsys):
    score, printed = run_derivation(checks.derive_token_counts, {**COUNTS, name: wrong}, capsys, points=3)
    assert score == 2
    assert f"✗ {name}" in printed and diagnosis in printed, printed


def test_derivation_without_answers_says_no_answer_yet(capsys):
    score, printed = run_derivation(checks.derive_token_counts, {"n_video": None, "n_audio": None, "n_encoder": None},
                                    capsys, points=3)
    assert score == 0 and "no answer yet" in printed


# --- concept questions and the prediction: keys verified, named mistakes diagnosed -------------------


def notebook_keys():
    nb = nbformat.read(ROOT / "solutions" / "09_tvlt" / "09_tvlt.ipynb", as_version=4)
    return {cell.metadata.nbgrader.grade_id: key for cell in nb.cells if cell.metadata.get("nbgrader", {}).get("grade")
            for part in hidden.hidden_parts(cell.source) for key in hidden.answer_keys(part)}


def test_prediction_key_is_the_block_count_of_a_real_encoder_layer():
    """12 blocks of width 768, 12 heads, FFN 3072, with biases and LayerNorms: torch's own layer as the oracle."""
    layer = torch.nn.TransformerEncoderLayer(768, 12, 3072)
    blocks = 12 * sum(p.numel() for p in layer.parameters())
    assert notebook_keys()["predict_encoder_params"].expected == pytest.approx(blocks / 1e6, rel=1e-9)


def test_concept_keys_recomputed():
    keys = notebook_keys()
    assert keys["concept_speedup"].expected == pytest.approx((2890 + 103) / 103, rel=1e-6)
    values, probabilities = torch.tensor([2.0, -1.0]), torch.tensor([0.8, 0.2])
    best = (probabilities * values).sum()          # the mean minimises the expected squared error
    assert keys["concept_blur"].expected == pytest.approx(float((probabilities * (values - best) ** 2).sum()))
    v = torch.linspace(-2, 3, 5001)                # no constant does better
    assert float(((probabilities[:, None] * (values[:, None] - v) ** 2).sum(0)).min()) >= keys["concept_blur"].expected - 1e-9
    assert keys["concept_retrieval_cost"].expected == 700 * 2100 / (700 + 2100)
    assert {keys[name].expected for name in ("concept_time_embedding", "concept_transcript")} <= set("ABCD")


def test_prediction_mistakes_are_what_they_say():
    """Each named wrong count is the count with that one slip, so its diagnosis is the right one."""
    d, d_ff = 768, 3072
    mistakes = notebook_keys()["predict_encoder_params"].mistakes
    count = {
        "weights only": 12 * (4 * d * d + 2 * d * d_ff),
        "patch projections": 12 * (4 * (d * d + d) + 2 * d * d_ff + d_ff + d + 4 * d) + (16 * 16 * 3 * d + d) + (16 * 16 * d + d),
        "one feed-forward layer": 12 * (4 * (d * d + d) + d * d_ff + d_ff + 4 * d),
        "three attention projections": 12 * (3 * (d * d + d) + 2 * d * d_ff + d_ff + d + 4 * d),
        "that is one block": 4 * (d * d + d) + 2 * d * d_ff + d_ff + d + 4 * d,
    }
    for phrase, value in count.items():
        (diagnosis,) = [text for wrong, text in mistakes.items() if wrong == pytest.approx(value / 1e6, rel=1e-9)]
        assert phrase in diagnosis
