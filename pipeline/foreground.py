"""What moved into a video frame, found without labels: a clip's static scene is the per-pixel temporal
median of its frames, and a frame's foreground is where it differs from that scene.

Used to train the generator on frames that show something besides their clip's static scene
(``generator.min_foreground``), and the image encoder on such frames with their background swapped for
another clip's scene (``image_encoder.min_foreground``, ``image_encoder.bg_swap``). On footage from a moving
camera the median scene is blurred and most of the frame counts as foreground, so the filter then keeps
nearly everything.
"""
from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline.image_store import clip_runs

log = logging.getLogger(__name__)

THRESHOLD = 0.1  # a pixel is foreground where it differs from its clip's scene by more than this


def to_float(images: np.ndarray | Tensor) -> Tensor:
    """uint8 ``[B, H, W, 3]`` -> float ``Tensor[B, 3, H, W]`` in [0, 1]."""
    t = torch.from_numpy(np.array(images)) if not isinstance(images, Tensor) else images
    return t.permute(0, 3, 1, 2).float() / 255.0


def clip_scenes(images: np.ndarray, groups: np.ndarray, max_frames: int = 32) -> np.ndarray:
    """The static scene of each clip, uint8 ``[G, H, W, 3]``: the per-pixel median of (up to ``max_frames``
    evenly spaced of) its frames. ``images`` uint8 ``[N, H, W, 3]``; ``groups`` int ``[N]``: clip index
    0..G-1 of each image, in contiguous runs."""
    starts, ends = clip_runs(groups)
    out = np.empty((int(groups.max()) + 1, *images.shape[1:]), np.uint8)
    for s, e in zip(starts, ends):
        pick = np.unique(np.linspace(s, e - 1, min(max_frames, e - s)).round().astype(int))
        out[groups[s]] = np.median(np.asarray(images[pick]), axis=0).round().astype(np.uint8)
    return out


def foreground(x01: Tensor, scene01: Tensor, threshold: float, grow: int = 1) -> Tensor:
    """Where frames ``x01`` differ from their clip's scene ``scene01`` (both ``Tensor[B, 3, H, W]`` in
    [0, 1]) by more than ``threshold`` in some channel, grown by ``grow`` pixels: ``Tensor[B, 1, H, W]``
    in {0, 1}."""
    mask = ((x01 - scene01).abs().amax(dim=1, keepdim=True) > threshold).to(x01.dtype)
    if grow > 0:
        mask = F.max_pool2d(mask, 2 * grow + 1, stride=1, padding=grow)
    return mask


def foreground_share(images: np.ndarray, groups: np.ndarray, threshold: float = THRESHOLD,
                     chunk: int = 512, scenes: np.ndarray | None = None) -> np.ndarray:
    """float32 ``[N]``: the share of each frame (uint8 ``[N, H, W, 3]``, clips ``groups`` in contiguous
    runs) that differs from its clip's median scene (``scenes``: :func:`clip_scenes`, computed when not
    given) by more than ``threshold``."""
    scenes = to_float(clip_scenes(images, groups) if scenes is None else scenes)
    out = np.empty(len(images), np.float32)
    for s in range(0, len(images), chunk):
        x = to_float(images[s:s + chunk])
        own = torch.from_numpy(np.asarray(groups[s:s + chunk], np.int64))
        out[s:s + len(x)] = foreground(x, scenes[own], threshold).mean(dim=(1, 2, 3)).numpy()
    return out



def keep_foreground(images: np.ndarray, groups: np.ndarray, share: float, *, param: str,
                    scenes: np.ndarray | None = None) -> np.ndarray:
    """bool ``[N]``: the frames (uint8 ``[N, H, W, 3]``, clips ``groups`` in contiguous runs) whose foreground
    covers at least ``share`` of the frame (:func:`foreground_share`); logs the count, and raises ValueError
    naming the params key ``param`` when no frame qualifies."""
    keep = foreground_share(images, groups, scenes=scenes) >= share
    log.info("%s: %d of %d frames have a foreground of at least %.0f%%", param, keep.sum(), len(keep), 100 * share)
    if not keep.any():
        raise ValueError(f"no frame has a foreground of at least {share:g} of its area: lower {param}")
    return keep

def swap_background(x01: Tensor, mask: Tensor, scenes01: Tensor, own: Tensor, p: float,
                    gen: torch.Generator) -> Tensor:
    """Background augmentation (as in Ryali et al. 2021, with the foreground found without labels): with
    probability ``p`` per frame, paste the frame's ``mask`` (``Tensor[B, 1, H, W]``, from
    :func:`foreground`) onto another clip's static scene, drawn from ``scenes01`` ``Tensor[G, 3, H, W]``
    (never the frame's own clip ``own`` int ``Tensor[B]``) and flipped at random. Two views of one frame
    swapped this way share only what moved into it. ``x01`` ``Tensor[B, 3, H, W]`` in [0, 1] -> same."""
    b, g = x01.shape[0], scenes01.shape[0]
    if g < 2 or p <= 0:
        return x01
    other = (own.cpu() + torch.randint(1, g, (b,), generator=gen)) % g  # any clip but its own
    back = scenes01[other.to(scenes01.device)]
    flip = (torch.rand(b, generator=gen) < 0.5).view(b, 1, 1, 1).to(back.device)
    back = torch.where(flip, back.flip(-1), back)
    use = (torch.rand(b, generator=gen) < p).view(b, 1, 1, 1).to(x01)
    m = mask * use
    return m * x01 + (1 - m) * back


def shuffle_foreground(x01: Tensor, mask: Tensor, gen: torch.Generator,
                       changed: float = 0.25) -> tuple[Tensor, Tensor]:
    """A texture negative of each frame: its foreground pixels (``mask`` ``Tensor[B, 1, H, W]`` in {0, 1})
    permuted at random among themselves, so the colours, the outline, the size and the place stay and the
    texture does not. ``x01`` ``Tensor[B, 3, H, W]`` in [0, 1] -> (the shuffled frames, same shape; bool
    ``Tensor[B]``: the frames where at least ``changed`` of the foreground pixels moved to a value more
    than :data:`THRESHOLD` away, i.e. that had a texture to lose; a solid source shuffles into itself)."""
    b, c, h, w = x01.shape
    flat = x01.reshape(b, c, h * w)
    out = flat.clone()
    keep = mask.reshape(b, h * w) > 0.5
    ok = torch.zeros(b, dtype=torch.bool)
    for i in range(b):
        idx = keep[i].nonzero().squeeze(1)
        if len(idx) < 2:
            continue
        perm = idx[torch.randperm(len(idx), generator=gen).to(idx.device)]
        out[i][:, idx] = flat[i][:, perm]
        moved = (out[i][:, idx] - flat[i][:, idx]).abs().amax(dim=0) > THRESHOLD
        ok[i] = bool(moved.float().mean() >= changed)
    return out.reshape(b, c, h, w), ok.to(x01.device)
