"""Synthesise the world's sounds: one timbre per class, varied per event (pitch, rate, harmonics).

``render_audio(clip)`` gives float32 (N,) at ``clip.sr``: every event's sound (peak 0.5 x loudness, 10 ms
fades) over the clip's background noise, clipped to [-1, 1].
"""
from __future__ import annotations

import numpy as np

from pipeline.world import CLASSES, Clip, Event

FADE_S = 0.01


def _harmonics(t: np.ndarray, f0: np.ndarray | float, ks: np.ndarray, amps: np.ndarray, sr: int) -> np.ndarray:
    """Sum of harmonics k*f0 with amplitudes ``amps``, dropping those above Nyquist. f0 may vary in time."""
    phase = 2 * np.pi * np.cumsum(np.broadcast_to(f0, t.shape)) / sr
    out = np.zeros_like(t)
    top = float(np.max(f0))
    for k, a in zip(ks, amps):
        if k * top < sr / 2 - 200:
            out += a * np.sin(k * phase)
    return out


def _band_noise(rng: np.random.Generator, n: int, centre: float, width: float, sr: int) -> np.ndarray:
    spec = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / sr)
    spec *= np.exp(-0.5 * ((freqs - centre) / width) ** 2)
    return np.fft.irfft(spec, n)


def _pulses(t: np.ndarray, rate: float, decay: float) -> np.ndarray:
    """Exponentially decaying envelope restarting ``rate`` times a second."""
    return np.exp(-np.mod(t, 1.0 / rate) / decay)


def synth(e: Event, n: int, sr: int) -> np.ndarray:
    """The sound of one event, float (n,), peak 1 (before loudness)."""
    rng = np.random.default_rng(e.seed)
    t = np.arange(n) / sr
    timbre = CLASSES[e.cls].timbre if e.cls >= 0 else "ambient"
    roll = rng.uniform(0.5, 1.5)  # per-event spectral tilt: the same class, another instrument
    if timbre == "sine":
        x = _harmonics(t, e.pitch * (1 + 0.004 * np.sin(2 * np.pi * 5 * t)), np.arange(1, 4),
                       np.array([1.0, 0.3, 0.1]) ** roll, sr)
    elif timbre == "square":
        ks = np.arange(1, 24, 2)
        x = _harmonics(t, e.pitch, ks, (1.0 / ks) ** roll, sr)
    elif timbre == "saw":
        ks = np.arange(1, 40)
        x = _harmonics(t, e.pitch, ks, (1.0 / ks) ** roll, sr) * (1 + 0.3 * np.sin(2 * np.pi * 9 * t))
    elif timbre == "noise":
        x = _band_noise(rng, n, e.pitch, e.pitch * 0.25 * roll, sr)
        if e.rate > 0:
            x *= _pulses(t, e.rate, 0.06)
    elif timbre == "fm":
        f = e.pitch * (1 + 0.25 * np.sin(2 * np.pi * e.rate * t))
        x = np.sin(2 * np.pi * np.cumsum(f) / sr + 2.0 * roll * np.sin(2 * np.pi * 1.5 * np.cumsum(f) / sr))
    elif timbre == "pluck":
        ks = np.arange(1, 10)
        x = _harmonics(t, e.pitch, ks, (1.0 / ks) ** (1.5 * roll), sr) * _pulses(t, e.rate, 0.12)
    elif timbre == "chirp":
        phase_t = np.mod(t, 1.0 / e.rate)
        f = e.pitch * (1 + 0.6 * phase_t * e.rate)
        x = np.sin(2 * np.pi * np.cumsum(f) / sr) * (phase_t < 0.6 / e.rate)
    elif timbre == "clicks":
        x = _band_noise(rng, n, e.pitch, 300.0 * roll, sr) * _pulses(t, e.rate * 2, 0.015)
    else:  # ambient: broadband burst
        x = rng.normal(size=n) * np.hanning(n) ** 0.3
    peak = float(np.max(np.abs(x))) or 1.0
    fade = np.minimum(1.0, np.minimum(np.arange(n), np.arange(n)[::-1]) / max(1, FADE_S * sr))
    return x / peak * fade


def render_audio(clip: Clip) -> np.ndarray:
    """The clip's waveform, float32 (N,), N = n_frames / fps * sr."""
    spf = clip.sr // clip.fps
    total = clip.n_frames * spf
    rng = np.random.default_rng([clip.seed, 1])
    wave = rng.normal(0, clip.noise_level, size=total)
    for e in clip.events:
        a, b = e.f0 * spf, e.f1 * spf
        wave[a:b] += 0.5 * e.loudness * synth(e, b - a, clip.sr)
    return np.clip(wave, -1, 1).astype(np.float32)
