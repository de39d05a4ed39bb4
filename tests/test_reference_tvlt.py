"""gradelib.reference.tvlt against independent oracles: librosa's mel filters and mel spectrogram,
scipy's STFT, explicit loops for patches, and the defining properties of masking and matching."""

import math
import warnings

import numpy as np
import pytest
import torch

from gradelib.data import AV_SAMPLE_RATE, av_clips
from gradelib.reference import tvlt as ref
from gradelib.reference.tokenization import BOS_ID, EOS_ID

with warnings.catch_warnings():  # librosa pulls in numba, which may warn on import
    warnings.simplefilter("ignore")
    import librosa
import scipy.signal


def test_htk_mel_scale():
    assert float(ref.hz_to_mel(1000.0)) == pytest.approx(1000.0, abs=0.02)
    assert float(ref.hz_to_mel(0.0)) == 0.0
    f = torch.tensor([0.0, 100.0, 700.0, 4000.0, 22050.0], dtype=torch.float64)
    assert torch.allclose(ref.mel_to_hz(ref.hz_to_mel(f)), f)
    assert np.allclose(ref.hz_to_mel(f).numpy(), librosa.hz_to_mel(f.numpy(), htk=True))


@pytest.mark.parametrize("n_mels, n_fft, sr, fmin, fmax", [
    (32, 256, 8000, 0.0, None), (128, 2048, 44100, 0.0, None), (16, 400, 22050, 80.0, 6000.0), (10, 512, 16000, 0.0, 8000.0),
])
def test_mel_filterbank_matches_librosa(n_mels, n_fft, sr, fmin, fmax):
    ours = ref.mel_filterbank(n_mels, n_fft, sr, fmin, fmax)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax, htk=True, norm="slaney")
    assert ours.shape == (n_mels, n_fft // 2 + 1)
    assert np.allclose(ours.numpy(), theirs, rtol=1e-4, atol=1e-7 * theirs.max())


def test_filters_have_equal_area_in_hz():
    fb = ref.mel_filterbank(24, 4096, 16000).double()
    area = fb.sum(dim=1) * 16000 / 4096  # Riemann sum over the bins, in Hz
    assert torch.allclose(area, torch.ones_like(area), atol=0.05)


def test_power_spectrogram_matches_scipy_stft():
    rng = np.random.default_rng(0)
    wave = rng.standard_normal(2048)
    n_fft, hop = 256, 128
    ours = ref.power_spectrogram(torch.tensor(wave), n_fft, hop)
    padded = np.pad(wave, (0, n_fft - hop))
    window = scipy.signal.get_window("hann", n_fft)  # periodic by default
    _, _, z = scipy.signal.stft(padded, window=window, nperseg=n_fft, noverlap=n_fft - hop, boundary=None,
                                padded=False, detrend=False, return_onesided=True)
    theirs = (np.abs(z * window.sum()) ** 2).T  # scipy scales by 1 / sum(window); (frames, bins)
    assert ours.shape == (2048 // hop, n_fft // 2 + 1) == theirs.shape
    assert np.allclose(ours.numpy(), theirs, rtol=1e-8, atol=1e-8)


def test_log_mel_matches_librosa_melspectrogram():
    wave = av_clips(1, seed=3).audio[0].double()
    fb = ref.mel_filterbank(32, 256, AV_SAMPLE_RATE)
    ours = ref.log_mel_spectrogram(wave, fb.double(), 256, 128, eps=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mel = librosa.feature.melspectrogram(y=np.pad(wave.numpy(), (0, 128)), sr=AV_SAMPLE_RATE, n_fft=256, hop_length=128,
                                             center=False, power=2.0, n_mels=32, htk=True, norm="slaney", window="hann")
    assert ours.shape == (32, 32)
    assert np.allclose(ours.numpy(), np.log(mel.T + 1e-6), atol=1e-4)


def test_a_tone_lands_in_the_mel_band_of_its_pitch():
    t = torch.arange(4096, dtype=torch.float64) / AV_SAMPLE_RATE
    fb = ref.mel_filterbank(32, 256, AV_SAMPLE_RATE).double()
    centres = ref.mel_to_hz(torch.linspace(0, float(ref.hz_to_mel(4000.0)), 34, dtype=torch.float64))[1:-1]
    for f in (440.0, 880.0, 1760.0):
        spec = ref.log_mel_spectrogram(torch.sin(2 * math.pi * f * t), fb)
        band = int(spec[5:-5].mean(0).argmax())
        assert abs(float(centres[band]) - f) < 0.15 * f


def test_patchify_video_against_explicit_slicing_and_inverse():
    video = torch.randn(2, 8, 16, 12)
    t, p = 2, 4
    patches = ref.patchify_video(video, t, p)
    assert patches.shape == (2, 4 * 4 * 3, t * p * p)
    for b, tau, r, c in [(0, 0, 0, 0), (1, 3, 2, 1), (0, 2, 3, 2)]:
        n = (tau * 4 + r) * 3 + c
        expected = video[b, tau * t:(tau + 1) * t, r * p:(r + 1) * p, c * p:(c + 1) * p].reshape(-1)
        assert torch.equal(patches[b, n], expected)
    assert torch.equal(ref.unpatchify_video(patches, t, p, 8, 16, 12), video)


def test_patchify_spectrogram_and_inverse():
    spec = torch.randn(3, 32, 32)
    patches = ref.patchify_spectrogram(spec, 8, 8)
    assert patches.shape == (3, 16, 64)
    assert torch.equal(patches[1, 4 * 2 + 3], spec[1, 16:24, 24:32].reshape(-1))
    assert torch.equal(ref.unpatchify_spectrogram(patches, 8, 8, 32, 32), spec)


def test_random_masking_properties():
    x = torch.randn(50, 16, 3)
    visible, mask, restore = ref.random_masking(x, 0.75, torch.Generator().manual_seed(0))
    assert visible.shape == (50, 4, 3) and mask.shape == (50, 16) and restore.shape == (50, 16)
    assert torch.equal(mask.sum(1), torch.full((50,), 12.0))
    restored = ref.unshuffle(visible, torch.zeros(3), restore)
    kept = mask == 0
    assert torch.equal(restored[kept], x[kept]) and (restored[~kept] == 0).all()
    assert len({tuple(row.tolist()) for row in mask}) > 40  # per-sample masks
    assert ref.num_kept(10, 0.75) == 2 and ref.num_kept(16, 0.75) == 4 and ref.num_kept(3, 0.9) == 1


def test_masked_patch_mse_by_hand():
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [3.0, 3.0]]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    # masked patches 0 and 2: per-patch errors 1 and 9 -> mean 5
    assert float(ref.masked_patch_mse(pred, target, mask)) == pytest.approx(5.0)
    normed = ref.normalize_patches(target)
    assert torch.allclose(normed[0, 1], torch.tensor([1.0, -1.0]) / math.sqrt(2.0 + 1e-6))
    assert torch.equal(normed[0, 0], torch.zeros(2))  # a flat patch becomes 0, not NaN


def test_mean_patch_baseline_is_the_variance_around_the_training_mean():
    train = torch.randn(100, 5, 4) + 2
    test = torch.randn(10, 5, 4) + 2
    mask = torch.ones(10, 5)
    mean = train.reshape(-1, 4).mean(0)
    assert float(ref.mean_patch_baseline_mse(train, test, mask)) == pytest.approx(float(((test - mean) ** 2).mean()), rel=1e-5)


def test_vam_pairs_properties():
    for seed in range(20):
        video, audio, label = ref.vam_pairs(5, torch.Generator().manual_seed(seed))
        assert torch.equal(label, torch.tensor([1] * 5 + [0] * 5))
        assert torch.equal(video[:5], audio[:5]) and (video[5:] != audio[5:]).all()
    with pytest.raises(ValueError):
        ref.vam_pairs(1)


def test_retrieval_top_k():
    scores = torch.tensor([[3.0, 1.0, 0.0], [5.0, 4.0, 0.0], [0.0, 2.0, 1.0]])
    assert ref.retrieval_top_k(scores, 1) == pytest.approx(1 / 3)
    assert ref.retrieval_top_k(scores, 2) == pytest.approx(1.0)


def test_tvlt_shapes_one_shared_encoder_and_a_differentiable_loss():
    config = ref.TVLTConfig(d_model=32, num_layers=2, d_ff=64, decoder_d_model=32, num_classes=5)
    model = ref.TVLT(config)
    video = torch.rand(4, 16, config.video_patch_dim)
    audio = torch.randn(4, 16, config.audio_patch_dim)
    assert model(video, audio).shape == (4, 1 + 16 + 16, 32)
    assert model(video, None).shape == (4, 17, 32) and model(None, audio).shape == (4, 17, 32)
    out = model.mae(video, audio, generator=torch.Generator().manual_seed(0))
    assert out["video_pred"].shape == video.shape and out["audio_pred"].shape == audio.shape
    assert torch.equal(out["video_mask"].sum(1), torch.full((4,), 12.0))
    losses = ref.pretraining_loss(model, video, audio, video, audio, generator=torch.Generator().manual_seed(0))
    assert torch.isclose(losses["loss"], losses["vam"] + 0.3 * losses["mae"])
    losses["loss"].backward()
    assert model.encoder[0].self_attn.w_q.weight.grad is not None
    assert model.audio_time is model.video_time  # one clock for both modalities
    assert model.classify(video, audio).shape == (4, 5)
    assert ref.matching_scores(model, video, audio, chunk=5).shape == (4, 4)


def test_matching_can_use_part_of_the_batch_while_mae_uses_all_of_it():
    config = ref.TVLTConfig(d_model=16, num_layers=1, d_ff=32, decoder_d_model=16, num_heads=2)
    model = ref.TVLT(config)
    video = torch.rand(6, 16, config.video_patch_dim)
    audio = torch.randn(6, 16, config.audio_patch_dim)
    calls = []
    original = model.vam_logits
    model.vam_logits = lambda v, a: calls.append((v.shape[0], a.shape[0])) or original(v, a)
    full = ref.pretraining_loss(model, video, audio, video, audio, generator=torch.Generator().manual_seed(0))
    part = ref.pretraining_loss(model, video, audio, video, audio, generator=torch.Generator().manual_seed(0),
                                vam_batch_size=2)
    assert calls == [(12, 12), (4, 4)]  # V positives + V negatives
    # the same masks (drawn first from the same generator), so the same MAE loss over all six clips
    assert torch.equal(full["mae"], part["mae"])
    for too_few_or_too_many in (1, 7):
        with pytest.raises(ValueError):
            ref.pretraining_loss(model, video, audio, video, audio, vam_batch_size=too_few_or_too_many)


def test_positions_start_at_the_configured_scale():
    for std in (0.02, 0.5):
        model = ref.TVLT(ref.TVLTConfig(d_model=64, position_std=std))
        for table in (model.video_space, model.video_time, model.audio_freq, model.video_decoder.position):
            assert float(table.detach().std()) == pytest.approx(std, rel=0.35)


def test_asr_prefix_lm_is_causal_over_tokens_and_transcribes():
    asr = ref.TinyASR(audio_patch_dim=8, num_audio_patches=6, vocab_size=9, d_model=16, num_heads=2)
    audio = torch.randn(2, 6, 8)
    memory = asr.encode(audio)
    tokens = torch.tensor([[BOS_ID, 3, 4, 5], [BOS_ID, 2, 6, 1]])
    changed = tokens.clone()
    changed[:, 3] = 7
    a, b = asr.logits(memory, tokens), asr.logits(memory, changed)
    assert a.shape == (2, 4, 9)
    assert torch.allclose(a[:, :3], b[:, :3]) and not torch.allclose(a[:, 3], b[:, 3])
    later_audio = memory.clone()
    later_audio[:, -1] = torch.randn(2, 16)  # the last audio state: every token position sees the whole prefix
    assert not torch.allclose(asr.logits(later_audio, tokens)[:, 0], a[:, 0])
    transcripts = asr.transcribe(audio, max_new_tokens=4)
    assert transcripts.shape == (2, 5) and (transcripts[:, 0] == BOS_ID).all()


def test_asr_feeds_the_gpt_through_inputs_embeds_with_positions_over_the_whole_sequence():
    torch.manual_seed(0)
    asr = ref.TinyASR(audio_patch_dim=8, num_audio_patches=6, vocab_size=9, d_model=16, num_heads=2, max_tokens=5)
    assert asr.decoder.config.block_size == 6 + 5  # the audio prefix takes positions too
    memory, tokens = torch.randn(2, 6, 16), torch.randint(0, 9, (2, 5))
    gpt = asr.decoder
    # the prefix-LM written out: audio states then token embeddings, positions 0 .. N + L - 1 on both
    x = torch.cat([memory, gpt.token_embedding(tokens)], dim=1) + gpt.position_embedding(torch.arange(11))
    allowed = torch.ones(11, 11, dtype=torch.bool).tril()
    allowed[:, :6] = True
    for block in gpt.blocks:
        x, _ = block(x, mask=allowed)
    assert torch.allclose(asr.logits(memory, tokens), gpt.head(gpt.final_norm(x))[:, 6:], atol=1e-6)


def test_transcript_tokens():
    words = ("which", "shape", "direction")
    tokens = ref.transcript_tokens([("which", "shape"), ("which", "direction")], words, 5)
    # the course's word-level ids: <bos> = 1, <eos> = 2, the words from 3; padded with <eos>
    assert (BOS_ID, EOS_ID, ref.FIRST_WORD_ID) == (1, 2, 3)
    assert tokens.tolist() == [[BOS_ID, 3, 4, EOS_ID, EOS_ID], [BOS_ID, 3, 5, EOS_ID, EOS_ID]]
