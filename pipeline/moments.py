"""Frames and audio windows of one video for the localizer (shared by `train_localizer`, `score`, `pairs`).

Frame k of a video decoded at ``fps`` is the frame shown at ``t = k / fps``; its audio window is the
``window_s`` seconds centred on ``t``, shifted to stay inside the track near the ends (never padded with
silence, which the per-window z-score would turn into a loud pattern). The model's audio input is the
narrow log-mel of `pipeline.spectrogram` over that window (hop 10 ms).

Every decoding function returns its result or a one-line error string (as `pipeline.media` does):
no audio stream, a silent track, a video shorter than one window, or a failed decode.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch import Tensor

from pipeline import media
from pipeline.isolate import Isolated
from pipeline.spectrogram import log_zscore, logmel_spectrogram, psd_frames

SR, N_FFT, HOP = 16000, 512, 160  # 32 ms frames every 10 ms at 16 kHz
SILENT_PEAK = 1e-4  # a track whose peak |sample| is below this has nothing to correlate with


@dataclass(frozen=True)
class Clip:
    """One decoded video: frames ``(N, H, W, 3)`` uint8 at ``times`` ``(N,)`` and its mono audio ``(S,)``."""

    frames: np.ndarray
    times: np.ndarray
    audio: np.ndarray  # 16 kHz mono float32


def frame_times(duration_s: float, fps: float) -> np.ndarray:
    """Times ``k / fps`` of the frames of a ``duration_s`` video, ``(N,)`` float64."""
    n = int(np.floor(duration_s * fps + 1e-6))
    return np.arange(n, dtype=np.float64) / fps


def n_mel_frames(window_s: float) -> int:
    """Log-mel frames of a ``window_s`` window (hop 10 ms, 32 ms FFT)."""
    return (int(round(window_s * SR)) - N_FFT) // HOP + 1


def window_starts(times: np.ndarray, n_audio: int, window_s: float) -> np.ndarray:
    """First sample of each window centred on ``times`` (snapped to the 10 ms hop, clamped into the
    track): ``(N,)`` int64, multiples of ``HOP``."""
    length = int(round(window_s * SR))
    start = np.round((np.asarray(times, dtype=np.float64) - window_s / 2) * SR / HOP).astype(np.int64) * HOP
    return np.clip(start, 0, max(0, (n_audio - length) // HOP * HOP))


def audio_windows(audio: np.ndarray, times: np.ndarray, window_s: float) -> np.ndarray:
    """The window around each time: ``(S,) -> (N, window_s * 16000)`` float32 (``S`` >= the window)."""
    length = int(round(window_s * SR))
    starts = window_starts(times, len(audio), window_s)
    out = np.zeros((len(starts), length), np.float32)
    for i, s in enumerate(starts):
        out[i] = audio[s:s + length]
    return out


def logmel(windows: np.ndarray | Tensor, *, n_mels: int, window_s: float) -> Tensor:
    """The localizer's audio input: ``(N, L)`` 16 kHz windows -> ``(N, 1, n_mels, n_mel_frames)`` float32."""
    wave = torch.as_tensor(windows, dtype=torch.float32)
    return logmel_spectrogram(wave, sr=SR, n_mels=n_mels, n_frames=n_mel_frames(window_s),
                              n_fft=N_FFT, hop_length=HOP)


def window_logmels(audio: np.ndarray, times: np.ndarray, *, n_mels: int, window_s: float) -> Tensor:
    """``logmel(audio_windows(audio, times, window_s))`` computed once over the track: the mel power of
    every 10 ms frame of the whole track, sliced per window, then log and z-score per window.
    ``(S,), (N,) -> (N, 1, n_mels, n_mel_frames)`` float32; about 10x fewer FFTs at 10 fps, 1 s windows."""
    wave = torch.as_tensor(audio, dtype=torch.float32).clamp(-1.0, 1.0)[None]
    window = torch.hann_window(N_FFT, periodic=True, dtype=wave.dtype)
    power = psd_frames(wave, window, HOP, SR)[0]  # (N_FFT // 2 + 1, T)
    fbank = torchaudio.functional.melscale_fbanks(N_FFT // 2 + 1, 0.0, SR / 2, n_mels, SR)
    mel = fbank.t().to(power.dtype) @ power  # (n_mels, T)
    first = torch.as_tensor(window_starts(times, len(audio), window_s) // HOP)
    idx = first[:, None] + torch.arange(n_mel_frames(window_s))[None, :]  # (N, F)
    return log_zscore(mel[:, idx].permute(1, 0, 2)).unsqueeze(1)


def check_audio(audio: np.ndarray, window_s: float) -> str | None:
    """Why this track cannot be scored (silent, shorter than a window), or None when it can."""
    if len(audio) < int(round(window_s * SR)):
        return f"audio shorter than one window ({len(audio) / SR:.2f} s < {window_s:g} s)"
    if not np.all(np.isfinite(audio)):
        return "audio has non-finite samples"
    if float(np.abs(audio).max()) < SILENT_PEAK:
        return f"silent audio track (peak below {SILENT_PEAK:g})"
    return None


def decode_clip(path: str | Path, *, fps: float, window_s: float, backend: str = "torchcodec",
                timeout_s: float = 60.0, every: int = 1) -> Clip | str:
    """Decode every ``every``-th frame at ``fps`` and the whole audio track of ``path``; or why not."""
    info = media.probe(path, timeout_s=timeout_s)
    if media.is_error(info):
        return info
    if not info.has_audio:
        return "no audio stream"
    if info.duration_s < window_s:
        return f"video shorter than one window ({info.duration_s:.2f} s < {window_s:g} s)"
    times = frame_times(info.duration_s, fps)[::every]
    if len(times) == 0:
        return "no frames"
    frames = media.decode_frames(path, times, backend=backend, timeout_s=timeout_s, info=info)
    if media.is_error(frames):
        return f"frames: {frames}"
    audio = media.decode_audio(path, sr=SR, backend=backend, timeout_s=timeout_s, info=info)
    if media.is_error(audio):
        return f"audio: {audio}"
    if err := check_audio(audio, window_s):
        return err
    return Clip(frames=frames, times=times, audio=audio)


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 ``(N, H, W, 3)`` -> uint8 ``(N, size, size, 3)`` (bilinear, antialiased; unchanged when it fits)."""
    if frames.shape[1:3] == (size, size):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def worker_init() -> None:
    """Pool initializer: one torch thread, and a forked worker's own decoder process (never the parent's)."""
    torch.set_num_threads(1)
    media._WORKER = Isolated()  # noqa: SLF001 - media keeps one guarded worker per process


def mid_time(duration_s: float, fps: float) -> float:
    """The middle frame's time (frame ``N // 2`` of `frame_times`): the paper's baseline selection."""
    n = len(frame_times(duration_s, fps))
    return (n // 2) / fps


def random_time(duration_s: float, fps: float, seed: int, video_id: str) -> float:
    """A uniformly random frame's time, reproducible from (seed, video_id) and independent of the others."""
    n = len(frame_times(duration_s, fps))
    key = [seed, *video_id.encode()]
    return int(np.random.default_rng(key).integers(max(1, n))) / fps
