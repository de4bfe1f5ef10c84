"""Batched image augmentations in torch (no per-image Python loop): random resized crops with flips (and
optional turns) for SwAV's multi-crop, zooms onto a mask's box, mild colour jitter, and DiffAugment (Zhao
et al. 2020) for the GAN discriminator.

All functions take and return float images ``Tensor[B, 3, H, W]``; crops resample with ``grid_sample``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def random_resized_crop(x: Tensor, size: int, scale: tuple[float, float], gen: torch.Generator,
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), rotate: float = 0.0) -> Tensor:
    """A random crop of area ``scale`` x the image (aspect ``ratio``), flipped with p = 0.5, turned by a
    uniform angle in [-rotate, rotate] degrees (0: no turn and no extra random draw), resampled bilinearly
    to ``size`` (reflection outside the image): ``Tensor[B, 3, H, W]`` -> ``Tensor[B, 3, size, size]``."""
    b = x.shape[0]
    area = torch.empty(b).uniform_(*scale, generator=gen)
    log_r = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=gen)
    w = torch.sqrt(area * torch.exp(log_r)).clamp(max=1.0)
    h = torch.sqrt(area / torch.exp(log_r)).clamp(max=1.0)
    cx = (torch.rand(b, generator=gen) * 2 - 1) * (1 - w)
    cy = (torch.rand(b, generator=gen) * 2 - 1) * (1 - h)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = w * flip, cx
    theta[:, 1, 1], theta[:, 1, 2] = h, cy
    if rotate > 0:
        a = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(rotate)
        turn = torch.stack([torch.stack([a.cos(), -a.sin()], 1), torch.stack([a.sin(), a.cos()], 1)], 1)
        theta[:, :, :2] = turn @ theta[:, :, :2]  # output coords scaled into the crop, then turned about its centre
    return _resample(x, theta, size)


def _resample(x: Tensor, theta: Tensor, size: int) -> Tensor:
    """``x`` ``Tensor[B, 3, H, W]`` sampled bilinearly through the affine maps ``theta`` ``[B, 2, 3]`` (output
    coordinates to input, both in [-1, 1]; reflection outside the image) -> ``Tensor[B, 3, size, size]``."""
    grid = F.affine_grid(theta.to(x), [x.shape[0], 3, size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def mask_boxes(mask: Tensor) -> Tensor:
    """Bounding box of each mask's nonzero pixels as (centre x, centre y, half width, half height) in
    ``affine_grid`` coordinates ([-1, 1]): ``Tensor[B, 1, H, W]`` -> ``Tensor[B, 4]``; an empty mask gives
    the whole image (0, 0, 1, 1)."""
    b, _, h, w = mask.shape
    cols, rows = mask.amax(dim=(1, 2)) > 0, mask.amax(dim=(1, 3)) > 0  # [B, W], [B, H]

    def extent(on: Tensor, n: int) -> tuple[Tensor, Tensor]:
        idx = torch.arange(n, device=on.device).expand_as(on)
        lo = torch.where(on, idx, n).amin(1).float()
        hi = torch.where(on, idx, -1).amax(1).float() + 1
        empty = ~on.any(1)
        lo, hi = torch.where(empty, 0.0, lo), torch.where(empty, float(n), hi)
        return (lo + hi) / n - 1, (hi - lo) / n  # centre, half extent in [-1, 1] units

    cx, hw = extent(cols, w)
    cy, hh = extent(rows, h)
    return torch.stack([cx, cy, hw, hh], 1).cpu()


def box_crop(x: Tensor, boxes: Tensor, size: int, gen: torch.Generator,
             margin: tuple[float, float] = (1.2, 1.8)) -> Tensor:
    """A square crop around each box (``Tensor[B, 4]`` from :func:`mask_boxes`) of side ``margin`` x the
    box's longer side (uniform in the range, at most the whole image), flipped with p = 0.5, resampled to
    ``size``: a zoom onto the frame's foreground. ``Tensor[B, 3, H, W]`` -> ``Tensor[B, 3, size, size]``."""
    b = x.shape[0]
    half = (boxes[:, 2:].amax(1) * torch.empty(b).uniform_(*margin, generator=gen)).clamp(max=1.0)
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2] = half * flip, boxes[:, 0].clamp(-1 + half, 1 - half)
    theta[:, 1, 1], theta[:, 1, 2] = half, boxes[:, 1].clamp(-1 + half, 1 - half)
    return _resample(x, theta, size)


def colour_jitter(x: Tensor, strength: float, gen: torch.Generator) -> Tensor:
    """Random brightness, contrast and saturation factors in [1 - s, 1 + s] per image; x in [0, 1]."""
    b = x.shape[0]

    def factor() -> Tensor:
        return (1 + (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1) * strength).to(x)

    x = x * factor()
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = (x - mean) * factor() + mean
    grey = x.mean(dim=1, keepdim=True)
    x = (x - grey) * factor() + grey
    return x.clamp(0.0, 1.0)


def hue_shuffle(x: Tensor, p_perm: float, p_grey: float, gen: torch.Generator) -> Tensor:
    """With probability ``p_perm`` per image a random permutation of its RGB channels (a coarse hue
    change), then with probability ``p_grey`` grey scale; x ``Tensor[B, 3, H, W]``."""
    b = x.shape[0]
    perms = torch.stack([torch.randperm(3, generator=gen) for _ in range(b)])
    keep = torch.rand(b, generator=gen) >= p_perm
    perms[keep] = torch.arange(3)
    x = x.gather(1, perms.view(b, 3, 1, 1).expand_as(x).to(x.device))
    grey = (torch.rand(b, 1, 1, 1, generator=gen) < p_grey).to(x)
    return grey * x.mean(dim=1, keepdim=True).expand_as(x) + (1 - grey) * x


def diff_augment(x: Tensor, policy: str, gen: torch.Generator | None = None) -> Tensor:
    """DiffAugment: differentiable ``translation`` (by up to 1/8 of the size, zero padded), ``color``
    (brightness, saturation, contrast) and ``cutout`` (a square of half the size), comma-separated in
    ``policy``; x in [-1, 1], ``Tensor[B, 3, H, W]`` -> same shape."""
    for name in [p for p in policy.split(",") if p]:
        if name not in _POLICIES:
            raise ValueError(f"unknown DiffAugment policy {name!r} (choose from {sorted(_POLICIES)})")
        x = _POLICIES[name](x, gen)
    return x


def _rand(shape: tuple[int, ...], x: Tensor, gen: torch.Generator | None) -> Tensor:
    return torch.rand(shape, generator=gen).to(x)


def _colour(x: Tensor, gen: torch.Generator | None) -> Tensor:
    b = x.shape[0]
    x = x + (_rand((b, 1, 1, 1), x, gen) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand((b, 1, 1, 1), x, gen) * 2) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand((b, 1, 1, 1), x, gen) + 0.5) + mean


def _grid(h: int, w: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Row and column index ``Tensor[h, w]`` each, on ``device`` (the random draws stay on the CPU)."""
    return torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")


def _translation(x: Tensor, gen: torch.Generator | None, ratio: float = 0.125) -> Tensor:
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (b, 1, 1), generator=gen).to(x.device)
    dx = torch.randint(-sw, sw + 1, (b, 1, 1), generator=gen).to(x.device)
    gy, gx = _grid(h, w, x.device)
    gy = torch.clamp(gy[None] + dy + 1, 0, h + 1)
    gx = torch.clamp(gx[None] + dx + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    idx = (gy * (w + 2) + gx).view(b, 1, h * w).expand(-1, x.shape[1], -1)
    return padded.flatten(2).gather(2, idx).view_as(x)


def _cutout(x: Tensor, gen: torch.Generator | None, ratio: float = 0.5) -> Tensor:
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=gen).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=gen).to(x.device)
    gy, gx = _grid(h, w, x.device)
    inside = ((gy[None] - oy + ch // 2).abs() < ch / 2) & ((gx[None] - ox + cw // 2).abs() < cw / 2)
    return x * (~inside).unsqueeze(1).to(x)


_POLICIES = {"color": _colour, "translation": _translation, "cutout": _cutout}
