"""Sound mixing for the audio encoder (``audio_encoder.mix_p``): the mixing control, taught.

A 50/50 mix of two clips' waveforms should call up a scene with both sources. The generator learns such
scenes from two-source composites conditioned on the unit sum of the two images' unit features
(``generator.composites``, :mod:`pipeline.icgan`); here a share of the training rows is replaced by the
50/50 waveform mix of the row and a random partner of the batch, and its target by the same unit sum
(scaled to the row's own norm, as the l2 / l1 losses regress raw features). Draws come from torch's global
RNG (seeded per epoch by the trainer, as the SpecAugment masks and the gain augmentation).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class SoundMix:
    """With chance ``p`` per valid row, the row's waveform and target become a mix with a partner's."""

    p: float

    def __call__(self, wave: Tensor, features: Tensor, valid: Tensor) -> tuple[Tensor, Tensor]:
        """``wave [B, n]``, image features ``[B, D]``, ``valid`` bool ``[B]`` (only valid rows mix, and only
        with valid partners) -> (waveforms ``[B, n]``: mixed rows ``0.5 (w_i + w_j)``, targets ``[B, D]``:
        mixed rows ``unit(unit(h_i) + unit(h_j)) |h_i|``)."""
        b = len(wave)
        partner = torch.randperm(b)
        use = (torch.rand(b) < self.p) & (partner != torch.arange(b))
        use = use.to(valid.device) & valid.bool() & valid.bool()[partner.to(valid.device)]
        if not bool(use.any()):
            return wave, features
        j = partner.to(wave.device)
        mixed = 0.5 * (wave + wave[j])
        norm = features.norm(dim=1, keepdim=True)
        unit = F.normalize(features, dim=1)
        both = F.normalize(unit + unit[j.to(features.device)], dim=1) * norm
        return (torch.where(use.to(wave.device)[:, None], mixed, wave),
                torch.where(use.to(features.device)[:, None], both, features))
