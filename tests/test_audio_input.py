"""The training input: clip length per spectrogram kind, row-major output, masks."""
from __future__ import annotations

import torch

from pipeline import audio_input
from pipeline.params import SpectrogramParams


def test_lengths_shapes_and_layout() -> None:
    paper, mel = SpectrogramParams(kind="paper"), SpectrogramParams(n_mels=32, n_frames=50)
    assert audio_input.n_samples(paper) == 160_000 and audio_input.n_samples(mel) == 512 + 320 * 49
    x = torch.randn(3, audio_input.n_samples(mel)) * 0.1
    spec = audio_input.spectrogram_fn(mel)(x)
    assert spec.shape == (3, 1, 32, 50) and spec.is_contiguous()  # strided inputs slow convolutions down
    spec = audio_input.spectrogram_fn(paper)(torch.randn(2, 160_000) * 0.1)
    assert spec.shape == (2, 1, 257, 1004) and spec.is_contiguous() and spec.dtype == torch.float32


def test_masks_zero_bands_per_example() -> None:
    assert audio_input.masker(SpectrogramParams()) is None
    mask = audio_input.masker(SpectrogramParams(time_mask=10, freq_mask=8))
    torch.manual_seed(0)
    spec = torch.randn(16, 1, 64, 128) + 5.0
    out = mask(spec)
    zero_t = (out == 0).all(dim=2).squeeze(1).sum(dim=1)  # masked frames per example
    zero_f = (out == 0).all(dim=3).squeeze(1).sum(dim=1)  # masked bins per example
    assert out.shape == spec.shape and (zero_t <= 10).all() and (zero_f <= 8).all()
    assert (zero_t + zero_f > 0).any() and len(set(zero_t.tolist())) > 1  # drawn per example
