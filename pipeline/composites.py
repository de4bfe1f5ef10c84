"""Two-source composites: one frame's foreground laid over another frame.

The mixing control asks for a scene with both sources of a mixed sound, and the world's corpus has few
(two-source frames are ~2% of it). A frame's foreground is where it differs from its clip's median scene
(:mod:`pipeline.foreground`, found without labels), so pasting it over another frame makes a plausible
two-source scene: the generator trains on them (``generator.composites``), and the evaluator learns to see
both classes in them (``evaluator.composites``, checked on real held-out two-source frames).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.foreground import THRESHOLD, clip_scenes, foreground, to_float


def frame_masks(images: np.ndarray, groups: np.ndarray, *, threshold: float = THRESHOLD, chunk: int = 512,
                scenes: np.ndarray | None = None) -> np.ndarray:
    """bool ``[N, H, W]``: where each frame (uint8 ``[N, H, W, 3]``, clips ``groups`` int ``[N]``)
    differs from its clip's median scene (``scenes`` uint8 ``[G, H, W, 3]``, indexed by ``groups``; computed
    when not given, which needs every frame of each clip, in contiguous runs) by more than ``threshold``,
    grown by a pixel (:func:`pipeline.foreground.foreground`); pass ``scenes`` to mask a subset of frames."""
    scenes01 = to_float(clip_scenes(images, groups) if scenes is None else scenes)
    out = np.empty(images.shape[:3], bool)
    for s in range(0, len(images), chunk):
        x = to_float(images[s:s + chunk])
        own = torch.from_numpy(np.asarray(groups[s:s + chunk], np.int64))
        out[s:s + len(x)] = foreground(x, scenes01[own], threshold)[:, 0].bool().numpy()
    return out


def paste(base: Tensor, top: Tensor, alpha: Tensor) -> Tensor:
    """``top``'s foreground (``alpha`` ``[B, 1, H, W]`` in [0, 1]) laid over ``base``; images ``[B, 3, H, W]``
    (any range) -> same."""
    return alpha * top + (1 - alpha) * base


def centroids(alpha: Tensor) -> Tensor:
    """The foreground's centre of mass ``[B, 2]`` (y, x in pixels) of masks ``alpha [B, 1, H, W]`` in [0, 1];
    the frame's centre where a mask is empty."""
    h, w = alpha.shape[-2:]
    a = alpha.float()[:, 0]
    mass = a.sum(dim=(1, 2))
    ys = torch.arange(h, dtype=torch.float32).to(a.device)
    xs = torch.arange(w, dtype=torch.float32).to(a.device)
    y = (a.sum(2) * ys).sum(1) / mass.clamp(min=1e-6)
    x = (a.sum(1) * xs).sum(1) / mass.clamp(min=1e-6)
    centre = torch.tensor([(h - 1) / 2, (w - 1) / 2], device=a.device)
    return torch.where((mass > 0)[:, None], torch.stack([y, x], 1), centre)


def apart(top: Tensor, alpha: Tensor, base_alpha: Tensor) -> tuple[Tensor, Tensor]:
    """``top [B, C, H, W]`` and its foreground ``alpha [B, 1, H, W]`` moved (whole pixels, emptied where
    they leave the frame) so that the foreground's centre lands on the centre of the quadrant farthest from
    the centre of ``base_alpha [B, 1, H, W]``, the foreground of the frame it will be pasted on: two sources
    side by side, as a two-source scene shows them, rather than one over the other."""
    h, w = alpha.shape[-2:]
    base, own = centroids(base_alpha), centroids(alpha)
    target = torch.stack([torch.where(base[:, 0] > (h - 1) / 2, h / 4 - 0.5, 3 * h / 4 - 0.5),
                          torch.where(base[:, 1] > (w - 1) / 2, w / 4 - 0.5, 3 * w / 4 - 0.5)], 1)
    d = (target - own).round()  # [B, 2] pixels
    theta = torch.zeros(len(top), 2, 3, device=top.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, 0, 2], theta[:, 1, 2] = -2 * d[:, 1] / w, -2 * d[:, 0] / h
    both = torch.cat([top.float(), alpha.float()], 1)
    grid = F.affine_grid(theta, list(both.shape), align_corners=False)
    moved = F.grid_sample(both, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return moved[:, :-1].to(top.dtype), moved[:, -1:].to(alpha.dtype)
