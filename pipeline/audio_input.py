"""The audio encoder's input: waveform batch -> spectrogram batch on the training device, plus masking."""
from __future__ import annotations

from dataclasses import dataclass
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


@dataclass(frozen=True)
class Spectrogram:
    """``Tensor[B, n_samples(sp)]`` 16 kHz -> ``Tensor[B, 1, F, T]`` float32 (257 x 1004 for the paper).

    A plain picklable callable, so DataLoader workers can run it too (``spectrogram.on: workers``).
    """

    sp: SpectrogramParams

    def __call__(self, wave: Tensor) -> Tensor:
        sp = self.sp
        if sp.kind == "paper":
            return paper_spectrogram(wave, compute_dtype=torch.float64 if sp.float64 else torch.float32,
                                     norm=sp.norm, log_eps=sp.log_eps)
        return logmel_spectrogram(wave, n_mels=sp.n_mels, n_frames=sp.n_frames, n_fft=sp.n_fft,
                                  hop_length=sp.hop_length, norm=sp.norm, log_eps=sp.log_eps)


def spectrogram_fn(sp: SpectrogramParams) -> SpecFn:
    """The spectrogram of ``sp`` as a callable (see :class:`Spectrogram`)."""
    return Spectrogram(sp)


def in_workers(sp: SpectrogramParams, device: torch.device) -> bool:
    """Whether spectrograms are computed in the DataLoader workers (``on: auto``: on CPU) rather than
    on the training device: on a CPU-only machine the workers overlap them with the training step."""
    return sp.on == "workers" or (sp.on == "auto" and device.type != "cuda")


def masker(sp: SpectrogramParams) -> Callable[[Tensor], Tensor] | None:
    """SpecAugment time and frequency masks, one draw per example (torch's global RNG); None if off."""
    layers = []
    if sp.freq_mask > 0:
        layers.append(torchaudio.transforms.FrequencyMasking(sp.freq_mask, iid_masks=True))
    if sp.time_mask > 0:
        layers.append(torchaudio.transforms.TimeMasking(sp.time_mask, iid_masks=True))
    if not layers:
        return None
    return torch.nn.Sequential(*layers)
