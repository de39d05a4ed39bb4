"""Reference code for notebook 09: TVLT, the textless vision-language transformer (Tang et al., 2022).

Audio becomes an image: waveform -> short-time Fourier transform -> power -> mel filterbank -> log.
Video and spectrogram are cut into patches, embedded with modality, spatial/temporal and
temporal/frequency positions, and read by **one** encoder shared by both modalities. Pretraining is
masked autoencoding (MAE) on both modalities plus vision-audio matching (VAM) on the [CLS] token.

Shapes used throughout (the notebook's sizes in brackets):
    waveform (B, S) [S = 4096 samples at 8 kHz]; spectrogram (B, F, M) [F = 32 frames, M = 32 mel bands]
    video (B, T, H, W) [8 frames of 16 x 16]; patches (B, N, P); mask (B, N), 1 = hidden, 0 = visible.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from gradelib.reference.attention import TransformerBlock, causal_mask
from gradelib.reference.gpt import GPT, GPTConfig
from gradelib.reference.tokenization import BOS_ID, EOS_ID, PAD_ID

# --------------------------------------------------------------------------------------------------
# Audio -> 2-D: STFT, mel filterbank, log-mel spectrogram
# --------------------------------------------------------------------------------------------------


def hz_to_mel(f: Tensor | float) -> Tensor:
    """The HTK mel scale: m = 2595 log10(1 + f / 700). 1000 Hz -> 999.99 mel."""
    f = torch.as_tensor(f, dtype=torch.float64)
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def mel_to_hz(m: Tensor | float) -> Tensor:
    """Inverse of hz_to_mel: f = 700 (10^(m / 2595) - 1)."""
    m = torch.as_tensor(m, dtype=torch.float64)
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def fft_frequencies(n_fft: int, sample_rate: float) -> Tensor:
    """Centre frequency of each rfft bin: k * sample_rate / n_fft for k = 0 .. n_fft // 2; (n_fft // 2 + 1,) float64."""
    return torch.arange(n_fft // 2 + 1, dtype=torch.float64) * sample_rate / n_fft


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: float, f_min: float = 0.0, f_max: float | None = None) -> Tensor:
    """Triangular mel filters, area-normalised ("Slaney" normalisation) on the HTK mel scale.

    n_mels + 2 edge frequencies are equally spaced in mel between hz_to_mel(f_min) and
    hz_to_mel(f_max) (default sample_rate / 2), and mapped back to Hz: f_0 < f_1 < ... < f_{n_mels+1}.
    Filter m (0-based) rises linearly from 0 at f_m to 1 at f_{m+1} and falls back to 0 at f_{m+2},
    evaluated at each FFT bin's frequency k * sample_rate / n_fft; then it is scaled by
    2 / (f_{m+2} - f_m), so that every filter has (about) the same area and wide high-frequency
    filters do not collect more energy just because they are wide.

    Equals librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=f_min, fmax=f_max,
    htk=True, norm="slaney").

    Returns: (n_mels, n_fft // 2 + 1) float32.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2, dtype=torch.float64))
    freqs = fft_frequencies(n_fft, sample_rate)  # (K,)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (n_mels, 1) each
    rising = (freqs - lower) / (centre - lower)
    falling = (upper - freqs) / (upper - centre)
    triangles = torch.clamp(torch.minimum(rising, falling), min=0.0)
    return (triangles * 2.0 / (upper - lower)).float()


def power_spectrogram(wave: Tensor, n_fft: int = 256, hop: int = 128) -> Tensor:
    """|STFT|^2 with a periodic Hann window; frame j covers samples [j hop, j hop + n_fft).

    The waveform is padded on the right with n_fft - hop zeros, so a clip of S samples (a multiple of
    hop) gives exactly S / hop frames. wave: (..., S) -> (..., S // hop, n_fft // 2 + 1).
    """
    padded = F.pad(wave, (0, n_fft - hop))
    frames = padded.unfold(-1, n_fft, hop)  # (..., S // hop, n_fft)
    window = torch.hann_window(n_fft, periodic=True, dtype=wave.dtype, device=wave.device)
    return torch.fft.rfft(frames * window).abs() ** 2


def log_mel_spectrogram(wave: Tensor, filterbank: Tensor, n_fft: int = 256, hop: int = 128, eps: float = 1e-6) -> Tensor:
    """log(mel energies + eps): the power spectrogram through the filterbank, then the natural log.

    wave: (..., S); filterbank: (M, n_fft // 2 + 1). Returns (..., S // hop, M): time first, then
    mel band, as TVLT lays out its T x 128 spectrograms.
    """
    return torch.log(power_spectrogram(wave, n_fft, hop) @ filterbank.T.to(wave.dtype) + eps)


# --------------------------------------------------------------------------------------------------
# Patches
# --------------------------------------------------------------------------------------------------


def patchify_video(video: Tensor, t: int, p: int) -> Tensor:
    """Cut a video into spatio-temporal "tubelet" patches of t frames x p x p pixels.

    video: (B, T, H, W) with T % t == H % p == W % p == 0.
    Returns (B, N, t * p * p) with N = (T / t)(H / p)(W / p). Patches are ordered by time slot,
    then row, then column (patch n = (tau * H/p + row) * W/p + col); inside a patch the values are
    ordered frame, then pixel row, then pixel column, i.e. patch[n] = video[b, tau t:(tau+1) t,
    row p:(row+1) p, col p:(col+1) p].reshape(-1).
    """
    # Tensor.unfold(dim, size, step) cuts dim into windows and appends the window as a new last axis.
    tubelets = video.unfold(1, t, t).unfold(2, p, p).unfold(3, p, p)  # (B, T/t, H/p, W/p, t, p, p)
    return tubelets.flatten(start_dim=4).flatten(start_dim=1, end_dim=3)


def unpatchify_video(patches: Tensor, t: int, p: int, T: int, H: int, W: int) -> Tensor:
    """Inverse of patchify_video: (B, N, t p p) -> (B, T, H, W)."""
    B = patches.shape[0]
    x = patches.reshape(B, T // t, H // p, W // p, t, p, p).permute(0, 1, 4, 2, 5, 3, 6)
    return x.reshape(B, T, H, W)


def patchify_spectrogram(spec: Tensor, pt: int, pf: int) -> Tensor:
    """(B, F, M) spectrogram (time, mel) -> (B, (F/pt)(M/pf), pt * pf) patches, time slot major, then band."""
    B, Fr, M = spec.shape
    x = spec.reshape(B, Fr // pt, pt, M // pf, pf).permute(0, 1, 3, 2, 4)
    return x.reshape(B, (Fr // pt) * (M // pf), pt * pf)


def unpatchify_spectrogram(patches: Tensor, pt: int, pf: int, Fr: int, M: int) -> Tensor:
    """Inverse of patchify_spectrogram: (B, N, pt pf) -> (B, F, M)."""
    B = patches.shape[0]
    return patches.reshape(B, Fr // pt, M // pf, pt, pf).permute(0, 1, 3, 2, 4).reshape(B, Fr, M)


# --------------------------------------------------------------------------------------------------
# Masking and the masked-patch loss
# --------------------------------------------------------------------------------------------------


def num_kept(num_patches: int, mask_ratio: float) -> int:
    """How many patches stay visible: int(N (1 - mask_ratio)), as in MAE (rounded down, at least 1)."""
    return max(1, int(num_patches * (1 - mask_ratio)))


def random_masking(x: Tensor, mask_ratio: float, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """MAE's per-sample random masking by sorting noise.

    x: (B, N, D). Every sample draws its own uniform noise (B, N); the num_kept(N, mask_ratio)
    patches with the smallest noise stay visible.

    Returns:
        x_visible:   (B, K, D), the kept patches, in order of increasing noise
        mask:        (B, N) float, 0 = kept (visible), 1 = removed (masked), in the original order
        ids_restore: (B, N) int64, the inverse permutation: appending N - K mask tokens to the
                     encoded visible patches and gathering with ids_restore puts every patch back
                     in its original place.
    """
    B, N, D = x.shape
    keep = num_kept(N, mask_ratio)
    noise = torch.rand(B, N, generator=generator, device="cpu").to(x.device)
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :keep]
    x_visible = torch.gather(x, 1, ids_keep[:, :, None].expand(B, keep, D))
    mask = torch.ones(B, N, device=x.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return x_visible, mask, ids_restore


def unshuffle(tokens_visible: Tensor, mask_token: Tensor, ids_restore: Tensor) -> Tensor:
    """(B, K, D) visible tokens + a (D,) mask token -> (B, N, D) in the original patch order."""
    B, K, D = tokens_visible.shape
    N = ids_restore.shape[1]
    full = torch.cat([tokens_visible, mask_token.expand(B, N - K, D)], dim=1)
    return torch.gather(full, 1, ids_restore[:, :, None].expand(B, N, D))


def normalize_patches(target: Tensor, eps: float = 1e-6) -> Tensor:
    """Per-patch normalisation (MAE's norm_pix_loss): each patch minus its own mean, divided by
    sqrt(its own unbiased variance + eps). target: (B, N, P) -> (B, N, P)."""
    mean = target.mean(dim=-1, keepdim=True)
    var = target.var(dim=-1, keepdim=True)  # unbiased, as in MAE's code
    return (target - mean) / torch.sqrt(var + eps)


def masked_patch_mse(pred: Tensor, target: Tensor, mask: Tensor, normalize_target: bool = False) -> Tensor:
    """MAE's reconstruction loss: the mean squared error over the *masked* patches only.

    pred, target: (B, N, P); mask: (B, N), 1 = masked. With normalize_target the target patches are
    normalised per patch first (normalize_patches); the prediction is not. The error of a patch is
    the mean over its P values; the loss averages that over the masked patches of the whole batch:
    sum(err * mask) / sum(mask). Returns a scalar.
    """
    if normalize_target:
        target = normalize_patches(target)
    per_patch = ((pred - target) ** 2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


# --------------------------------------------------------------------------------------------------
# Vision-audio matching: pairs
# --------------------------------------------------------------------------------------------------


def vam_pairs(batch_size: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Positive and negative (video, audio) pairs for vision-audio matching.

    Every video i of the batch appears twice: with its own audio (label 1) and with the audio of
    another clip j != i drawn uniformly from the other batch_size - 1 clips (label 0).

    Returns video_index, audio_index, label: each (2 batch_size,) int64; the first batch_size rows
    are the positives (i, i, 1), the next the negatives (i, j_i, 0).
    """
    if batch_size < 2:
        raise ValueError("a negative needs another clip: batch_size must be at least 2")
    i = torch.arange(batch_size)
    shift = torch.randint(1, batch_size, (batch_size,), generator=generator)  # 1 .. B-1, never 0
    j = (i + shift) % batch_size
    video = torch.cat([i, i])
    audio = torch.cat([i, j])
    label = torch.cat([torch.ones(batch_size, dtype=torch.int64), torch.zeros(batch_size, dtype=torch.int64)])
    return video, audio, label


# --------------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------------


@dataclass
class TVLTConfig:
    """Sizes of a small TVLT. TVLT-base: d_model 768, 12 encoder layers, 12 heads; decoder 512 wide, 8 layers."""

    num_frames: int = 8
    image_size: int = 16
    tubelet: int = 2  # frames per video patch
    patch: int = 8  # pixels per video patch side
    spec_frames: int = 32
    n_mels: int = 32
    audio_patch_time: int = 8
    audio_patch_freq: int = 8
    d_model: int = 64
    num_heads: int = 4
    num_layers: int = 3
    d_ff: int = 256
    decoder_d_model: int = 64
    decoder_layers: int = 1
    # Initial scale of the learned position, modality and [CLS] embeddings. MAE adds fixed sin-cos
    # positions of unit scale; 0.02 (BERT's habit) makes every mask token nearly the same vector at
    # first, and the decoders then take most of a short run to learn where a hidden patch is.
    position_std: float = 0.5
    num_classes: int = 0  # > 0 adds a classification head on [CLS] (the spoken-question task)
    shared_time: bool = True  # one table of temporal embeddings for both modalities (needs equal time slots)

    @property
    def video_grid(self) -> tuple[int, int, int]:
        return self.num_frames // self.tubelet, self.image_size // self.patch, self.image_size // self.patch

    @property
    def audio_grid(self) -> tuple[int, int]:
        return self.spec_frames // self.audio_patch_time, self.n_mels // self.audio_patch_freq

    @property
    def video_patch_dim(self) -> int:
        return self.tubelet * self.patch * self.patch

    @property
    def audio_patch_dim(self) -> int:
        return self.audio_patch_time * self.audio_patch_freq


def _blocks(d_model: int, num_heads: int, d_ff: int, num_layers: int) -> nn.ModuleList:
    """A stack of pre-LN TransformerBlocks with GELU feed-forward networks, as in ViT and MAE."""
    return nn.ModuleList(TransformerBlock(d_model, num_heads, d_ff, norm_first=True, activation="gelu") for _ in range(num_layers))


class PatchDecoder(nn.Module):
    """One modality's MAE decoder: project, fill in mask tokens, add positions, a few blocks, predict pixels."""

    def __init__(self, d_model: int, d_dec: int, num_patches: int, patch_dim: int, num_layers: int, num_heads: int,
                 position_std: float):
        super().__init__()
        self.embed = nn.Linear(d_model, d_dec)
        self.mask_token = nn.Parameter(torch.zeros(d_dec))
        self.position = nn.Parameter(position_std * torch.randn(num_patches, d_dec))
        self.blocks = _blocks(d_dec, num_heads, 4 * d_dec, num_layers)
        self.norm = nn.LayerNorm(d_dec)
        self.head = nn.Linear(d_dec, patch_dim)

    def forward(self, visible: Tensor, ids_restore: Tensor) -> Tensor:
        """visible: (B, K, d_model) encoded visible patches -> (B, N, patch_dim) predictions for every patch."""
        x = unshuffle(self.embed(visible), self.mask_token, ids_restore) + self.position
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


class TVLT(nn.Module):
    """A small TVLT: patch embeddings for video and audio, ONE shared encoder, two MAE decoders, a VAM head.

    Embedding of a video patch at (time slot tau, row r, column c):
        W_v patch + e_video + pos_time_v[tau] + pos_space[r W' + c]
    of an audio patch at (time slot tau, band f):
        W_a patch + e_audio + pos_time_a[tau] + pos_freq[f]
    The encoder input is [CLS] + video tokens + audio tokens (either may be absent); nothing else
    tells the encoder which modality a token came from: the blocks are modality-agnostic.
    """

    def __init__(self, config: TVLTConfig):
        super().__init__()
        self.config = c = config
        d = c.d_model
        vt, vh, vw = c.video_grid
        at, af = c.audio_grid
        self.video_embed = nn.Linear(c.video_patch_dim, d)
        self.audio_embed = nn.Linear(c.audio_patch_dim, d)
        std = c.position_std
        self.modality = nn.Parameter(std * torch.randn(2, d))  # 0 = vision, 1 = audio
        self.video_time = nn.Parameter(std * torch.randn(vt, d))
        self.video_space = nn.Parameter(std * torch.randn(vh * vw, d))
        if c.shared_time:
            assert at == vt, f"shared_time needs as many audio time slots as video ones, got {at} and {vt}"
            self.audio_time = self.video_time  # the same clock: slot tau of either modality covers the same 128 ms
        else:
            self.audio_time = nn.Parameter(std * torch.randn(at, d))
        self.audio_freq = nn.Parameter(std * torch.randn(af, d))
        self.cls = nn.Parameter(std * torch.randn(d))
        self.encoder = _blocks(d, c.num_heads, c.d_ff, c.num_layers)
        self.norm = nn.LayerNorm(d)
        self.video_decoder = PatchDecoder(d, c.decoder_d_model, vt * vh * vw, c.video_patch_dim, c.decoder_layers, c.num_heads, std)
        self.audio_decoder = PatchDecoder(d, c.decoder_d_model, at * af, c.audio_patch_dim, c.decoder_layers, c.num_heads, std)
        self.vam_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, 1))
        self.class_head = nn.Linear(d, c.num_classes) if c.num_classes else None

    # positions of every patch, in patchify order: (N, d)
    def video_positions(self) -> Tensor:
        vt, vh, vw = self.config.video_grid
        return (self.video_time[:, None, :] + self.video_space[None, :, :]).reshape(vt * vh * vw, -1) + self.modality[0]

    def audio_positions(self) -> Tensor:
        at, af = self.config.audio_grid
        return (self.audio_time[:, None, :] + self.audio_freq[None, :, :]).reshape(at * af, -1) + self.modality[1]

    def encode(self, video_tokens: Tensor | None, audio_tokens: Tensor | None) -> Tensor:
        """Already embedded (B, N_v, d) and (B, N_a, d) tokens (either None) -> (B, 1 + N_v + N_a, d)."""
        parts = [t for t in (video_tokens, audio_tokens) if t is not None]
        B = parts[0].shape[0]
        x = torch.cat([self.cls.expand(B, 1, -1)] + parts, dim=1)
        for block in self.encoder:
            x = block(x)
        return self.norm(x)

    def embed_video(self, video_patches: Tensor) -> Tensor:
        return self.video_embed(video_patches) + self.video_positions()

    def embed_audio(self, audio_patches: Tensor) -> Tensor:
        return self.audio_embed(audio_patches) + self.audio_positions()

    def forward(self, video_patches: Tensor | None, audio_patches: Tensor | None) -> Tensor:
        """Full (unmasked) inputs -> encoder states (B, 1 + N_v + N_a, d); state 0 is [CLS]."""
        v = None if video_patches is None else self.embed_video(video_patches)
        a = None if audio_patches is None else self.embed_audio(audio_patches)
        return self.encode(v, a)

    def vam_logits(self, video_patches: Tensor, audio_patches: Tensor) -> Tensor:
        """Matching logit per pair: (B,). sigmoid(logit) = P(this audio belongs to this video)."""
        return self.vam_head(self(video_patches, audio_patches)[:, 0]).squeeze(-1)

    def mae(self, video_patches: Tensor, audio_patches: Tensor, video_ratio: float = 0.75, audio_ratio: float = 0.75,
            generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Masked autoencoding: mask each modality independently, encode the visible patches of BOTH
        together (the [CLS] too), decode each modality with its own decoder.

        Returns predictions (B, N, P) and masks (B, N) for "video" and "audio".
        """
        v, v_mask, v_restore = random_masking(self.embed_video(video_patches), video_ratio, generator)
        a, a_mask, a_restore = random_masking(self.embed_audio(audio_patches), audio_ratio, generator)
        states = self.encode(v, a)
        kv = v.shape[1]
        return {
            "video_pred": self.video_decoder(states[:, 1:1 + kv], v_restore), "video_mask": v_mask,
            "audio_pred": self.audio_decoder(states[:, 1 + kv:], a_restore), "audio_mask": a_mask,
        }

    def classify(self, video_patches: Tensor, audio_patches: Tensor) -> Tensor:
        """[CLS] -> class logits (B, num_classes), e.g. the answer to a spoken question."""
        return self.class_head(self(video_patches, audio_patches)[:, 0])


def pretraining_loss(model: TVLT, video_patches: Tensor, audio_patches: Tensor, video_targets: Tensor,
                     audio_targets: Tensor, lambda_vam: float = 1.0, lambda_mae: float = 0.3,
                     mask_ratio: float = 0.75, generator: torch.Generator | None = None,
                     vam_batch_size: int | None = None) -> dict[str, Tensor]:
    """TVLT's objective: lambda_vam * L_VAM + lambda_mae * L_MAE (the paper's weights are 1.0 and 0.3).

    L_MAE averages the video and audio masked-patch MSEs over the whole batch of B clips; L_VAM is
    binary cross-entropy on the [CLS] matching logit over vam_pairs(V) built from the first
    V = vam_batch_size clips (default B): V positives and V negatives. Matching reads *unmasked*
    inputs, 1 + N_v + N_a tokens per pair against MAE's 1 + N_v/4 + N_a/4 per clip at mask ratio 0.75,
    so a smaller V makes a step much cheaper.
    """
    batch_size = video_patches.shape[0]
    vam_batch_size = batch_size if vam_batch_size is None else vam_batch_size
    if vam_batch_size > batch_size:
        raise ValueError(f"vam_batch_size={vam_batch_size} is larger than the batch ({batch_size} clips)")
    out = model.mae(video_patches, audio_patches, mask_ratio, mask_ratio, generator)
    loss_video = masked_patch_mse(out["video_pred"], video_targets, out["video_mask"])
    loss_audio = masked_patch_mse(out["audio_pred"], audio_targets, out["audio_mask"])
    vi, ai, label = vam_pairs(vam_batch_size, generator)
    device = video_patches.device
    vi, ai, label = vi.to(device), ai.to(device), label.to(device)
    logits = model.vam_logits(video_patches[vi], audio_patches[ai])
    loss_vam = F.binary_cross_entropy_with_logits(logits, label.float())
    loss_mae = (loss_video + loss_audio) / 2
    return {"loss": lambda_vam * loss_vam + lambda_mae * loss_mae, "vam": loss_vam, "mae": loss_mae,
            "mae_video": loss_video, "mae_audio": loss_audio,
            "vam_accuracy": ((logits > 0).long() == label).float().mean()}


@torch.inference_mode()  # scores only: no autograd bookkeeping on 10,000 joint passes
def matching_scores(model: TVLT, video_patches: Tensor, audio_patches: Tensor, chunk: int = 1000) -> Tensor:
    """VAM logit of every (audio query q, video candidate c) pair: (Q, C). Row q ranks the videos for audio q."""
    Q, C = audio_patches.shape[0], video_patches.shape[0]
    qi = torch.arange(Q).repeat_interleave(C)
    ci = torch.arange(C).repeat(Q)
    scores = [model.vam_logits(video_patches[ci[s:s + chunk]], audio_patches[qi[s:s + chunk]]) for s in range(0, Q * C, chunk)]
    return torch.cat(scores).view(Q, C)


def retrieval_top_k(scores: Tensor, k: int = 1) -> float:
    """Share of queries whose own candidate (the diagonal) is among the k highest scores of its row."""
    target = scores.diagonal()[:, None]
    rank = (scores > target).sum(dim=1)  # how many candidates beat the right one
    return float((rank < k).float().mean())


def mean_patch_baseline_mse(train_patches: Tensor, test_patches: Tensor, mask: Tensor) -> Tensor:
    """The MSE on the masked test patches of predicting every patch as the mean training patch (P,)."""
    mean_patch = train_patches.reshape(-1, train_patches.shape[-1]).mean(dim=0)
    return masked_patch_mse(mean_patch.expand_as(test_patches), test_patches, mask)


# --------------------------------------------------------------------------------------------------
# The two-stage baseline: speech -> text tokens -> text(+vision) model
# --------------------------------------------------------------------------------------------------

# Transcripts use the course's word-level ids (tokenization): <pad> = 0, <bos> = 1, <eos> = 2, then
# word w of gradelib.data.AV_WORDS is token FIRST_WORD_ID + w.
FIRST_WORD_ID = max(PAD_ID, BOS_ID, EOS_ID) + 1


class TinyASR(nn.Module):
    """Spectrogram -> transcript, autoregressively: an encoder over spectrogram patches whose states
    are the prefix of notebook 03's GPT, which then generates the words one token at a time
    (a prefix-LM: the audio prefix is visible to every position, the tokens see only their past).

    The states enter the GPT through ``inputs_embeds``, as a Hugging Face multimodal model feeds its
    image or audio states to a language model: the GPT adds its positions over the whole sequence,
    audio prefix included, so its context (block_size) is num_audio_patches + max_tokens.
    """

    def __init__(self, audio_patch_dim: int, num_audio_patches: int, vocab_size: int, d_model: int = 96,
                 num_heads: int = 4, encoder_layers: int = 2, decoder_layers: int = 2, max_tokens: int = 8):
        super().__init__()
        self.audio_embed = nn.Linear(audio_patch_dim, d_model)
        self.audio_position = nn.Parameter(0.02 * torch.randn(num_audio_patches, d_model))
        self.encoder = _blocks(d_model, num_heads, 4 * d_model, encoder_layers)
        self.decoder = GPT(GPTConfig(vocab_size=vocab_size, block_size=num_audio_patches + max_tokens, d_model=d_model,
                                     num_heads=num_heads, num_layers=decoder_layers))
        self.max_tokens = max_tokens

    def encode(self, audio_patches: Tensor) -> Tensor:
        """(B, N_a, P) spectrogram patches -> (B, N_a, d) audio states, the decoder's prefix."""
        x = self.audio_embed(audio_patches) + self.audio_position
        for block in self.encoder:
            x = block(x)
        return x

    def logits(self, memory: Tensor, tokens: Tensor) -> Tensor:
        """memory (B, N_a, d), tokens (B, L) -> next-token logits (B, L, V) at the token positions."""
        N, L = memory.shape[1], tokens.shape[1]
        sequence = torch.cat([memory, self.decoder.token_embedding(tokens)], dim=1)  # (B, N_a + L, d)
        allowed = causal_mask(N + L, tokens.device)
        allowed[:, :N] = True  # everyone sees the whole audio prefix
        return self.decoder(inputs_embeds=sequence, mask=allowed)[:, N:]

    @torch.no_grad()
    def transcribe(self, audio_patches: Tensor, max_new_tokens: int = 4) -> Tensor:
        """Greedy decoding from <bos>: (B, N_a, P) -> (B, 1 + max_new_tokens) token ids."""
        memory = self.encode(audio_patches)
        tokens = torch.full((audio_patches.shape[0], 1), BOS_ID, dtype=torch.int64, device=audio_patches.device)
        for _ in range(max_new_tokens):
            next_token = self.logits(memory, tokens)[:, -1].argmax(dim=-1, keepdim=True)
            tokens = torch.cat([tokens, next_token], dim=1)
        return tokens


class TextVisionModel(nn.Module):
    """The text-based counterpart of TVLT: the same encoder, but the question enters as word tokens
    (embedding + position + a text modality vector) instead of spectrogram patches."""

    def __init__(self, config: TVLTConfig, vocab_size: int, max_tokens: int = 8):
        super().__init__()
        self.tvlt = TVLT(config)
        self.token_embed = nn.Embedding(vocab_size, config.d_model)
        self.token_position = nn.Parameter(0.02 * torch.randn(max_tokens, config.d_model))

    def classify(self, video_patches: Tensor, tokens: Tensor) -> Tensor:
        text = self.token_embed(tokens) + self.token_position[: tokens.shape[1]] + self.tvlt.modality[1]
        states = self.tvlt.encode(self.tvlt.embed_video(video_patches), text)
        return self.tvlt.class_head(states[:, 0])


def transcript_tokens(question_words: list[tuple[str, ...]], words: tuple[str, ...], length: int) -> Tensor:
    """<bos> w1 w2 ... <eos>, padded with <eos> to ``length``: (len(question_words), length) int64.

    Word w is token FIRST_WORD_ID + words.index(w). The padding is <eos>, not <pad>: the ASR is
    trained to predict every position, so after the transcript it learns to keep saying <eos>.
    """
    rows = []
    for q in question_words:
        ids = [BOS_ID] + [FIRST_WORD_ID + words.index(w) for w in q] + [EOS_ID]
        rows.append(ids + [EOS_ID] * (length - len(ids)))
    return torch.tensor(rows, dtype=torch.int64)
