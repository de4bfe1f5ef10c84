"""Spectrograms: the published values, scipy itself, batching, and the edge-case rules."""

from __future__ import annotations


import numpy as np
import math
import pytest
from conftest import compat_file
import scipy.signal
import torch

from pipeline.spectrogram import (
    PAPER_SAMPLES,
    logmel_spectrogram,
    paper_spectrogram,
    tukey_window,
)

TOL = 1e-4


def published(samples: np.ndarray) -> np.ndarray:
    """The published recipe (test.py / a2s_dataloader.py), numpy + scipy, float64."""
    x = np.tile(samples, 10)[:PAPER_SAMPLES]
    x = np.clip(x, -1.0, 1.0)
    _, _, spec = scipy.signal.spectrogram(x, 16000, nperseg=512, noverlap=353)
    spec = np.log(spec + 1e-7)
    return (spec - spec.mean()) / (spec.std() + 1e-9)


@pytest.fixture(scope="module")
def golden() -> dict[str, np.ndarray]:
    with np.load(compat_file("golden_dev.npz")) as z:
        return {k: z[k] for k in z.files}


def spec_of(samples: np.ndarray, **kw) -> np.ndarray:
    return paper_spectrogram(torch.from_numpy(samples)[None], **kw)[0, 0].numpy()


@pytest.mark.parametrize("audio,spec", [("audio_a", "spec_a"), ("audio_b", "spec_b")])
def test_matches_published_golden(golden, audio, spec):
    out = spec_of(golden[audio])
    assert out.shape == (257, 1004) and out.dtype == np.float32
    assert np.abs(out - golden[spec]).max() <= TOL
    assert np.abs(out - golden[spec]).max() <= 1e-6  # float64 path: equal up to float32 rounding


def test_padded_batch_with_lengths_matches_golden(golden):
    a, b = golden["audio_a"], golden["audio_b"]
    wave = torch.zeros(2, len(b), dtype=torch.float64)
    wave[0, : len(a)] = torch.from_numpy(a)
    wave[1] = torch.from_numpy(b)
    out = paper_spectrogram(wave, lengths=torch.tensor([len(a), len(b)]))
    assert out.shape == (2, 1, 257, 1004)
    assert np.abs(out[0, 0].numpy() - golden["spec_a"]).max() <= TOL
    assert np.abs(out[1, 0].numpy() - golden["spec_b"]).max() <= TOL


@pytest.mark.parametrize("n,amp", [(16000, 0.5), (23456, 2.0), (170000, 0.05), (40000, 1e-3)])
def test_matches_scipy_on_random_audio(n, amp):
    rng = np.random.default_rng(n)
    t = np.arange(n) / 16000
    x = amp * (rng.standard_normal(n) * np.sin(7 * t) ** 2 + np.sin(2 * np.pi * 440 * t))
    assert np.abs(spec_of(x) - published(x)).max() <= TOL


def test_tukey_window_is_scipys():
    for n in (512, 511, 64):
        ref = scipy.signal.get_window(("tukey", 0.25), n)
        assert np.abs(tukey_window(n).numpy() - ref).max() < 1e-12


def test_batched_equals_one_by_one():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-1.2, 1.2, size=(3, 20000)))
    batched = paper_spectrogram(x)
    for i in range(3):
        assert torch.equal(batched[i], paper_spectrogram(x[i : i + 1])[0])


def test_float32_input_and_compute():
    x = np.random.default_rng(1).uniform(-1, 1, 30000)
    out = paper_spectrogram(torch.from_numpy(x).float()[None], compute_dtype=torch.float32)
    assert np.abs(out[0, 0].numpy() - published(x.astype(np.float32))).max() <= 1e-3


def test_short_clip_is_repeated_to_full_width():
    x = np.random.default_rng(2).uniform(-0.5, 0.5, 5000)  # 0.31 s: np.tile(x, 10) is too short
    periodic = np.resize(x, PAPER_SAMPLES)  # repeats x end to end
    assert np.abs(spec_of(x) - published(periodic)).max() <= TOL


@pytest.mark.parametrize("fill", [0.0, 0.3])
def test_digital_silence_gives_zeros(fill):
    wave = torch.full((1, 48000), fill, dtype=torch.float64)
    assert torch.equal(paper_spectrogram(wave), torch.zeros(1, 1, 257, 1004))


def test_silent_row_does_not_touch_others():
    x = np.random.default_rng(3).uniform(-1, 1, 32000)
    wave = torch.stack([torch.zeros(32000, dtype=torch.float64), torch.from_numpy(x)])
    out = paper_spectrogram(wave)
    assert not out[0].any()
    assert np.abs(out[1, 0].numpy() - published(x)).max() <= TOL


def test_silence_threshold_is_documented_level():
    rng = np.random.default_rng(4)
    quiet = rng.standard_normal(32000) * 1e-3  # -60 dBFS noise is not silence
    assert spec_of(quiet).std() == pytest.approx(1.0, abs=1e-3)
    dither = rng.standard_normal(32000) * 1e-5  # below one 16-bit step: silence
    assert not spec_of(dither).any()
    assert np.abs(spec_of(dither, silence_std=0.0) - published(dither)).max() <= TOL  # published rule


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_samples_raise_naming_the_row(bad):
    wave = torch.zeros(3, 20000)
    wave[2, 100] = bad
    with pytest.raises(ValueError, match=r"rows \[2\]"):
        paper_spectrogram(wave)


def test_non_finite_padding_beyond_length_is_ignored():
    wave = torch.rand(1, 20000) - 0.5
    wave[0, 18000:] = float("nan")
    out = paper_spectrogram(wave, lengths=torch.tensor([18000]))
    assert torch.equal(out, paper_spectrogram(wave[:, :18000]))


@pytest.mark.parametrize("wave", [torch.zeros(100), torch.zeros(2, 0), torch.zeros(2, 10, dtype=torch.int16)])
def test_bad_shapes_raise(wave):
    with pytest.raises(ValueError):
        paper_spectrogram(wave)


def test_other_sample_rate_is_resampled_to_16k():
    t48 = torch.arange(48000 * 2, dtype=torch.float64) / 48000
    t16 = torch.arange(16000 * 2, dtype=torch.float64) / 16000
    tone = lambda t: 0.5 * torch.sin(2 * torch.pi * 1000 * t)  # noqa: E731
    at48 = paper_spectrogram(tone(t48)[None], sr=48000)[0, 0]
    at16 = paper_spectrogram(tone(t16)[None])[0, 0]
    assert int(at48.mean(1).argmax()) == int(at16.mean(1).argmax()) == 32  # 1000 Hz / 31.25 Hz
    assert (at48 - at16).abs().mean() < 0.05


def test_logmel_shape_batching_and_pitch():
    t = torch.arange(3 * 16000) / 16000
    tones = torch.stack([0.5 * torch.sin(2 * torch.pi * f * t) for f in (300.0, 1200.0, 4000.0)])
    out = logmel_spectrogram(tones)
    assert out.shape == (3, 1, 64, 128) and out.dtype == torch.float32
    peaks = [int(out[i, 0].mean(1).argmax()) for i in range(3)]
    assert peaks[0] < peaks[1] < peaks[2]
    assert torch.allclose(out[1], logmel_spectrogram(tones[1:2])[0], atol=1e-5)
    assert out[0].mean().abs() < 1e-4 and abs(float(out[0].std(correction=0)) - 1) < 1e-3


def test_logmel_options_and_silence():
    out = logmel_spectrogram(torch.rand(2, 8000) - 0.5, n_mels=32, n_frames=50, hop_length=160)
    assert out.shape == (2, 1, 32, 50)
    assert not logmel_spectrogram(torch.zeros(1, 8000)).any()


def test_norm_none_keeps_the_level_that_the_clip_zscore_removes() -> None:
    from pipeline.spectrogram import logmel_spectrogram
    t = torch.arange(16000) / 16000
    noise = torch.rand(16000, generator=torch.Generator().manual_seed(0)) * 0.2 - 0.1  # every bin well above 1e-7
    wave = (0.1 * torch.sin(2 * torch.pi * 440 * t) + noise)[None]  # x4 stays within [-1, 1]: no clipping
    kw = dict(n_mels=32, n_frames=20, n_fft=512, hop_length=320)
    quiet, loud = logmel_spectrogram(wave, **kw, norm="none"), logmel_spectrogram(4 * wave, **kw, norm="none")
    heard = quiet > math.log(3e-6)  # bins well above the 1e-7 floor (PSD densities of audio are small)
    assert heard.float().mean() > 0.4
    torch.testing.assert_close((loud - quiet)[heard], torch.full_like(quiet[heard], 2 * math.log(4)), atol=0.05, rtol=0)
    z_quiet, z_loud = logmel_spectrogram(wave, **kw), logmel_spectrogram(4 * wave, **kw)
    for z in (z_loud, z_quiet):  # the paper's z-score takes the level out (the 1e-7 floor leaves some shape change)
        assert abs(float(z.mean())) < 1e-4 and abs(float(z.std(correction=0)) - 1) < 1e-3
    silent = logmel_spectrogram(torch.zeros(1, 16000), **kw, norm="none")
    assert torch.isfinite(silent).all() and torch.allclose(silent, torch.full_like(silent, math.log(1e-7)))
    with pytest.raises(ValueError, match="unknown spectrogram norm"):
        logmel_spectrogram(wave, **kw, norm="global")


def test_a_small_log_eps_keeps_a_quiet_clips_gain_as_a_shift() -> None:
    """A clip as quiet as the world's (median mel bin 8e-9, the world's 1.4e-8): with the paper's eps a gain of 1/4
    mostly lands on the floor; with log_eps 1e-12 every bin moves by 2 log g."""
    from pipeline.spectrogram import logmel_spectrogram
    t = torch.arange(16000) / 16000
    noise = torch.rand(16000, generator=torch.Generator().manual_seed(1)) * 1e-2 - 5e-3
    wave = (0.05 * torch.sin(2 * torch.pi * 440 * t) + noise)[None]
    kw = dict(n_mels=32, n_frames=20, n_fft=512, hop_length=320, norm="none")
    paper, fine = logmel_spectrogram(wave, **kw), logmel_spectrogram(wave, **kw, log_eps=1e-12)
    assert (paper < math.log(1e-7) + 0.1).float().mean() > 0.5  # floored
    shift = logmel_spectrogram(wave / 4, **kw, log_eps=1e-12) - fine
    heard = fine > math.log(1e-12) + 5  # all but the narrowest low mel bands, which hold almost nothing
    assert heard.float().mean() > 0.9
    error = (shift[heard] + 2 * math.log(4)).abs()
    assert float(error.max()) < 0.1 and float(error.mean()) < 0.01
    paper_shift = logmel_spectrogram(wave / 4, **kw) - paper
    assert float(paper_shift.abs().mean()) < 0.5 * 2 * math.log(4)  # squashed by the floor
