"""One sample grid of the `evaluate` stage: [spectrogram | true frame | generated images] in one row."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import save_image


def spectrogram_tile(spec: Tensor, tile: int) -> Tensor:
    """``[1, F, T]`` spectrogram -> grey ``[3, tile, tile]`` in [0, 1], low frequencies at the bottom. Each bin's
    grey level is its rank among the bins (histogram equalisation): the world's tones stand 10 or more
    standard deviations above a flat noise floor, so any linear scale showed white lines on black."""
    x = spec.float().flip(-2)
    flat = x.flatten()
    ranks = torch.empty_like(flat)
    ranks[flat.argsort()] = torch.arange(flat.numel(), dtype=flat.dtype)
    x = (ranks / max(flat.numel() - 1, 1)).view_as(x)
    return F.interpolate(x[None], size=(tile, tile), mode="bilinear", align_corners=False)[0].expand(3, -1, -1)


def sample_grid(path: Path, spec: Tensor, frame: np.ndarray, generated: Tensor, tile: int) -> None:
    """Save ``[spectrogram | frame (uint8 [S, S, 3]) | generated ([K, 3, R, R] in [-1, 1])]`` as one PNG row."""
    real = torch.from_numpy(np.ascontiguousarray(frame)).permute(2, 0, 1).float() / 255.0
    fake = (generated.float() + 1) / 2
    tiles = [spectrogram_tile(spec, tile), F.interpolate(real[None], size=(tile, tile), mode="bilinear")[0],
             *F.interpolate(fake, size=(tile, tile), mode="nearest")]
    save_image(torch.stack(tiles).clamp(0, 1), path, nrow=len(tiles), padding=2, pad_value=1.0)
