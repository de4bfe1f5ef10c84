"""Spectrograms in torch, batched, on the waveform's device.

``paper_spectrogram`` reproduces the published Sound2Scene input (``test.py: audio2spectrogra`` and
``a2s_dataloader.py``)::

    x = np.tile(samples, 10)[:160000]; x = clip(x, -1, 1)
    _, _, s = scipy.signal.spectrogram(x, 16000, nperseg=512, noverlap=353)
    s = np.log(s + 1e-7); s = (s - s.mean()) / (s.std() + 1e-9)          # 257 x 1004

with scipy's defaults spelled out: periodic Tukey window (alpha 0.25), each segment's mean removed
(``detrend='constant'``), one-sided PSD density (``|rfft|^2 / (fs * sum(window^2))``, every bin but DC
and Nyquist doubled). It is computed in float64 by default and returned as float32; the result
matches scipy to about 1e-6. float32 arithmetic is not enough: near the 1e-7 floor its FFT rounding
shows through the log, up to ~3e-4 off for a -60 dBFS clip (``compute_dtype`` allows it anyway).

Rules where the published code has none:

* Length: a clip is repeated end to end and cut to 160000 samples. For clips of at least 1 s this
  is exactly ``np.tile(x, 10)[:160000]``; the published code gives a narrower spectrogram for
  shorter clips, here they are repeated as often as needed so every output is 257 x 1004.
* Silence: when a clip's log-spectrogram has a standard deviation below ``silence_std`` (default
  1e-6: white noise quieter than about one 16-bit step, 3e-5 RMS, or digital silence), the z-score
  would only magnify rounding noise (``~0 / 1e-9``), so that clip's output is all zeros.
  ``silence_std=0`` gives the published formula unchanged.
* Non-finite samples (NaN, +-inf): ``ValueError`` naming the batch rows. They mean a broken
  decode; the caller marks that clip failed (the published code turns NaN into an all-NaN input).
* Sample rate: ``sr != 16000`` is resampled to 16 kHz first (``torchaudio.functional.resample``).
"""

from __future__ import annotations

import math

import torch
import torchaudio
from torch import Tensor

PAPER_SR = 16_000
PAPER_SAMPLES = 160_000
PAPER_NPERSEG = 512
PAPER_NOVERLAP = 353
TUKEY_ALPHA = 0.25
LOG_EPS = 1e-7
STD_EPS = 1e-9
SILENCE_STD = 1e-6


def check_wave(wave: Tensor, lengths: Tensor | None = None) -> Tensor:
    """Validate ``wave: Tensor[B, N]`` (floating, finite where valid); return ``lengths: Tensor[B]``.

    ``lengths[b]`` is the number of valid leading samples of row ``b`` (default: all ``N``).
    Raises ``ValueError`` for a wrong shape or dtype, lengths outside ``1..N``, or NaN/inf samples.
    """
    if wave.ndim != 2 or not wave.is_floating_point():
        raise ValueError(f"expected a float waveform batch [B, N], got {wave.dtype} {list(wave.shape)}")
    batch, n = wave.shape
    if n == 0:
        raise ValueError("empty waveforms (N = 0)")
    if lengths is None:
        lengths = torch.full((batch,), n, dtype=torch.long, device=wave.device)
    lengths = torch.as_tensor(lengths, device=wave.device).long()
    if lengths.shape != (batch,) or bool(((lengths < 1) | (lengths > n)).any()):
        raise ValueError(f"lengths must be {batch} integers in 1..{n}, got {lengths.tolist()}")
    if bool(torch.isfinite(wave).all()):
        return lengths
    valid = torch.arange(n, device=wave.device) < lengths[:, None]
    bad = (~torch.isfinite(wave) & valid).any(dim=1).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"non-finite audio samples (NaN or inf) in batch rows {bad}")
    return lengths


def fit_length(wave: Tensor, n_samples: int, lengths: Tensor) -> Tensor:
    """Repeat each row's first ``lengths[b]`` samples end to end and cut: ``[B, N] -> [B, n_samples]``."""
    if wave.shape[1] == n_samples and bool((lengths == n_samples).all()):
        return wave  # nothing to repeat or cut
    idx = torch.arange(n_samples, device=wave.device)[None, :] % lengths[:, None]
    return torch.gather(wave, 1, idx)


def resample(wave: Tensor, lengths: Tensor, sr: int, target_sr: int) -> tuple[Tensor, Tensor]:
    """Resample ``[B, N]`` from ``sr`` to ``target_sr``; returns the new batch and its lengths."""
    if sr == target_sr:
        return wave, lengths
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    wave = torchaudio.functional.resample(torch.where(
        torch.arange(wave.shape[1], device=wave.device) < lengths[:, None], wave, 0.0), sr, target_sr)
    new_len = torch.clamp(torch.ceil(lengths * (target_sr / sr)).long(), 1, wave.shape[1])
    return wave, new_len


def tukey_window(n: int, alpha: float = TUKEY_ALPHA, *, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None) -> Tensor:
    """Periodic Tukey window ``Tensor[n]``, equal to ``scipy.signal.get_window(('tukey', alpha), n)``.

    Cosine tapers of width ``alpha * n / 2`` samples on each side of a flat top; it is the first ``n``
    samples of the symmetric window of length ``n + 1`` (scipy's ``fftbins=True``).
    """
    if not 0.0 < alpha <= 1.0:
        raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    k = torch.arange(n, dtype=dtype, device=device)
    edge = torch.minimum(k, n - k)  # distance to the nearer end of the length-(n + 1) window
    taper = alpha * n / 2.0
    return torch.where(edge < taper, 0.5 * (1.0 - torch.cos(math.pi * edge / taper)),
                       torch.ones_like(k))


def psd_frames(x: Tensor, window: Tensor, hop: int, fs: float) -> Tensor:
    """One-sided PSD density per segment, as scipy's ``spectrogram`` (detrend 'constant', nfft = len(window)).

    Args:
        x: ``Tensor[B, N]``.
        window: ``Tensor[L]``; segments of ``L`` samples every ``hop`` samples, no padding.
    Returns:
        ``Tensor[B, L // 2 + 1, T]`` with ``T = (N - L) // hop + 1``, in the dtype of ``x``.
    """
    nperseg = window.shape[0]
    frames = x.unfold(-1, nperseg, hop)  # [B, T, L]
    frames = (frames - frames.mean(dim=-1, keepdim=True)) * window
    power = torch.view_as_real(torch.fft.rfft(frames, dim=-1)).square().sum(-1) / (fs * window.square().sum())
    last = power.shape[-1] if nperseg % 2 else power.shape[-1] - 1  # Nyquist bin is not doubled
    power[..., 1:last] *= 2.0
    return power.transpose(-1, -2)


def log_zscore(power: Tensor, *, silence_std: float = SILENCE_STD, eps: float = LOG_EPS) -> Tensor:
    """``log(power + eps)`` (the paper: 1e-7) then z-score over all but the batch dim (std + 1e-9); silent rows -> 0.

    ``power: Tensor[B, ...]`` -> same shape and dtype (the statistics are taken in float64). A row
    whose log-spectrogram std is below ``silence_std`` is returned as zeros (see the module docstring).
    """
    spec = torch.log(power.double() + eps)  # float64: float32 sums of a constant drift ~6e-6
    flat = spec.flatten(1)
    mean = flat.mean(dim=1)
    std = flat.std(dim=1, correction=0)
    view = (-1,) + (1,) * (spec.ndim - 1)
    out = (spec - mean.view(view)) / (std.view(view) + STD_EPS)
    out = torch.where((std < silence_std).view(view), torch.zeros_like(out), out)
    return out.to(power.dtype).contiguous()  # [B, F, T] row-major: convolutions on it are faster


def log_norm(power: Tensor, norm: str, *, silence_std: float = SILENCE_STD, eps: float = LOG_EPS) -> Tensor:
    """``norm="clip"``: :func:`log_zscore` (the paper); ``"none"``: ``log(power + eps)`` only, so the level
    of the sound stays in the input: a waveform gain g shifts every bin well above ``eps`` by ``2 log g``.
    With the PSD density's scale, the paper's eps of 1e-7 sits above the median mel bin of the world's clips
    (1.4e-8), so there a gain mostly moves bins into or out of the floor; 1e-12 keeps the shift."""
    if norm == "clip":
        return log_zscore(power, silence_std=silence_std, eps=eps)
    if norm == "none":
        return torch.log(power + eps).contiguous()
    raise ValueError(f"unknown spectrogram norm {norm!r} (clip | none)")


def _prepare(wave: Tensor, sr: int, n_samples: int, lengths: Tensor | None,
             dtype: torch.dtype) -> Tensor:
    """Check, resample to 16 kHz, tile/cut to ``n_samples`` and clip to [-1, 1]: ``[B, n_samples]``."""
    lengths = check_wave(wave, lengths)
    wave, lengths = resample(wave.to(dtype), lengths, sr, PAPER_SR)
    return fit_length(wave, n_samples, lengths).clamp(-1.0, 1.0)


def paper_spectrogram(wave: Tensor, *, sr: int = PAPER_SR, lengths: Tensor | None = None,
                      silence_std: float = SILENCE_STD,
                      compute_dtype: torch.dtype = torch.float64, norm: str = "clip",
                      log_eps: float = LOG_EPS) -> Tensor:
    """The published 257 x 1004 log-PSD input of the audio encoder (``norm="none"``: not z-scored).

    Args:
        wave: ``Tensor[B, N]`` mono audio in [-1, 1] (louder samples are clipped), any device.
        sr: sample rate of ``wave``; other than 16000 it is resampled to 16 kHz first.
        lengths: optional ``Tensor[B]`` of valid samples per row (rows of a zero-padded batch).
        silence_std: rows whose log-spectrogram std is below this come out as zeros.
        compute_dtype: float64 (default) matches scipy to ~1e-6; float32 is faster on GPUs but
            drifts up to ~3e-4 from scipy on quiet clips.
    Returns:
        ``Tensor[B, 1, 257, 1004]`` float32, each clip z-scored.
    """
    x = _prepare(wave, sr, PAPER_SAMPLES, lengths, compute_dtype)
    window = tukey_window(PAPER_NPERSEG, TUKEY_ALPHA, dtype=compute_dtype, device=x.device)
    power = psd_frames(x, window, PAPER_NPERSEG - PAPER_NOVERLAP, PAPER_SR)
    return log_norm(power, norm, silence_std=silence_std, eps=log_eps).unsqueeze(1).float()


def logmel_spectrogram(wave: Tensor, *, sr: int = PAPER_SR, n_mels: int = 64, n_frames: int = 128,
                       n_fft: int = 512, hop_length: int = 320, f_min: float = 0.0,
                       f_max: float | None = None, lengths: Tensor | None = None,
                       silence_std: float = SILENCE_STD, norm: str = "clip", log_eps: float = LOG_EPS) -> Tensor:
    """A narrow log-mel input: ``Tensor[B, N] -> Tensor[B, 1, n_mels, n_frames]`` float32.

    Same recipe as :func:`paper_spectrogram` with a periodic Hann window of ``n_fft`` samples every
    ``hop_length`` samples and an HTK mel filterbank (``f_min``..``f_max``, default sr / 2) on the PSD
    density. The clip is repeated/cut to ``n_fft + hop_length * (n_frames - 1)`` samples at 16 kHz
    (defaults: 64 x 128 from 2.57 s), clipped, then ``log(mel + log_eps)`` and z-scored per clip
    (``norm="none"``: not z-scored, see :func:`log_norm`).
    """
    n_samples = n_fft + hop_length * (n_frames - 1)
    x = _prepare(wave, sr, n_samples, lengths, torch.float32)
    window = torch.hann_window(n_fft, periodic=True, dtype=x.dtype, device=x.device)
    power = psd_frames(x, window, hop_length, PAPER_SR)  # [B, n_fft // 2 + 1, n_frames]
    fbank = torchaudio.functional.melscale_fbanks(
        n_fft // 2 + 1, f_min, f_max if f_max is not None else PAPER_SR / 2, n_mels, PAPER_SR)
    mel = torch.einsum("bft,fm->bmt", power, fbank.to(device=x.device, dtype=x.dtype))
    return log_norm(mel, norm, silence_std=silence_std, eps=log_eps).unsqueeze(1)
