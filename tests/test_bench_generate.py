"""bench/generate.py's "published way" must compute the encoder's own input, or its image diff means nothing."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bench_module import load
from pipeline.audio_input import spectrogram_fn
from pipeline.params import SpectrogramParams


@pytest.mark.parametrize("norm", ["none", "clip"])
def test_published_way_spectrogram_equals_the_encoder_input(norm: str) -> None:
    """The world's log-mel without the per-clip z-score (norm none, its default) and with it (the paper's)."""
    bench = load("generate")
    sp = dataclasses.replace(SpectrogramParams(kind="logmel", n_mels=64, n_frames=128, n_fft=512, hop_length=320),
                             norm=norm)
    wave = np.random.default_rng(0).uniform(-0.5, 0.5, 512 + 320 * 127)
    ours = spectrogram_fn(sp)(torch.from_numpy(wave).float()[None])[0, 0].double().numpy()
    theirs = bench.numpy_spectrogram(sp)(wave)
    assert ours.shape == theirs.shape == (64, 128)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-3 if norm == "clip" else 1e-3)
