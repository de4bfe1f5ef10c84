"""Pictures the generation commands write: generated images, spectrogram headers, sheets of rows, strips.

PIL only. Every PNG is written under a temporary name in its folder and renamed when complete.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pipeline.manifests import tmp_name

WHITE = (255, 255, 255)
# A dark-to-bright colour ramp (black, purple, red, orange, pale yellow) for spectrograms.
_RAMP = np.array([[0, 0, 4], [80, 18, 123], [182, 54, 121], [251, 136, 97], [252, 253, 191]], np.float32)


def to_uint8(images: Tensor) -> np.ndarray:
    """``Tensor[N, 3, H, W]`` in [-1, 1] -> ``uint8 [N, H, W, 3]`` (values outside are clipped)."""
    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def spectrogram_picture(spec: Tensor | np.ndarray, height: int, width: int) -> np.ndarray:
    """A z-scored spectrogram ``[F, T]`` (low frequencies first) -> ``uint8 [height, width, 3]``, low
    frequencies at the bottom, -2.5..3.5 standard deviations over the colour ramp."""
    s = np.asarray(spec, np.float32)[::-1]
    u = np.clip((s + 2.5) / 6.0, 0.0, 1.0) * (len(_RAMP) - 1)
    lo = np.floor(u).astype(int).clip(0, len(_RAMP) - 2)
    rgb = _RAMP[lo] + (u - lo)[..., None] * (_RAMP[lo + 1] - _RAMP[lo])
    pic = Image.fromarray(rgb.round().astype(np.uint8)).resize((width, height), Image.BILINEAR)
    return np.asarray(pic)


def fit(image: Image.Image, size: int) -> np.ndarray:
    """A PIL image resized to ``size x size`` (bilinear): ``uint8 [size, size, 3]``."""
    return np.asarray(image.convert("RGB").resize((size, size), Image.BILINEAR))


def sheet(rows: Sequence[Sequence[np.ndarray]], pad: int = 2) -> Image.Image:
    """Rows of ``uint8 [h, w, 3]`` tiles (one height per row, any widths) on white, ``pad`` px apart."""
    widths = [sum(t.shape[1] for t in row) + pad * (len(row) + 1) for row in rows]
    heights = [max(t.shape[0] for t in row) for row in rows]
    img = Image.new("RGB", (max(widths), sum(heights) + pad * (len(rows) + 1)), WHITE)
    y = pad
    for row, h in zip(rows, heights):
        x = pad
        for tile in row:
            img.paste(Image.fromarray(np.ascontiguousarray(tile)), (x, y))
            x += tile.shape[1] + pad
        y += h + pad
    return img


def save_png(image: Image.Image | np.ndarray, path: Path) -> Path:
    """Write ``image`` as PNG at ``path`` through a temporary name; returns ``path``."""
    path = Path(path)
    tmp = tmp_name(path)
    try:
        (image if isinstance(image, Image.Image) else Image.fromarray(image)).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
