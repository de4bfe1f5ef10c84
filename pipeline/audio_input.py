"""The audio encoder's input: waveform batch -> spectrogram batch on the training device, plus masking."""
from __future__ import annotations

from typing import Callable

import torch
import torchaudio
from torch import Tensor

from pipeline.params import SpectrogramParams
from pipeline.spectrogram import PAPER_SAMPLES, logmel_spectrogram, paper_spectrogram

SpecFn = Callable[[Tensor], Tensor]


def n_samples(sp: SpectrogramParams) -> int:
    """Samples at 16 kHz a clip is tiled/cut to before its spectrogram."""
    if sp.kind == "paper":
        return PAPER_SAMPLES
    return sp.n_fft + sp.hop_length * (sp.n_frames - 1)


def spectrogram_fn(sp: SpectrogramParams) -> SpecFn:
    """``Tensor[B, n_samples(sp)]`` 16 kHz -> ``Tensor[B, 1, F, T]`` float32 (257 x 1004 for the paper)."""
    if sp.kind == "paper":
        dtype = torch.float64 if sp.float64 else torch.float32
        return lambda wave: paper_spectrogram(wave, compute_dtype=dtype)
    return lambda wave: logmel_spectrogram(wave, n_mels=sp.n_mels, n_frames=sp.n_frames, n_fft=sp.n_fft,
                                           hop_length=sp.hop_length)


def masker(sp: SpectrogramParams) -> Callable[[Tensor], Tensor] | None:
    """SpecAugment time and frequency masks, one draw per example (torch's global RNG); None if off."""
    layers = []
    if sp.freq_mask > 0:
        layers.append(torchaudio.transforms.FrequencyMasking(sp.freq_mask, iid_masks=True))
    if sp.time_mask > 0:
        layers.append(torchaudio.transforms.TimeMasking(sp.time_mask, iid_masks=True))
    if not layers:
        return None
    seq = torch.nn.Sequential(*layers)
    return lambda spec: seq(spec)
