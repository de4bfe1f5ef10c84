"""Drawing images from instance features with a trained or published IC-GAN generator (``s2s generate``).

Same features + same noise + same generator file = the same images on any machine: the generator runs in
eval mode in float32 on its device (the CLI's ``--device``, CPU by default), and noise comes from a file or
from a seeded torch generator (drawn on the CPU).
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import save_image

from models.biggan import Generator
from pipeline.inputs import InputError  # noqa: F401  (re-exported: callers catch generate.InputError)


def truncated_noise(n: int, dim_z: int, truncation: float | None, seed: int) -> Tensor:
    """``Tensor[n, dim_z]`` standard normal; with ``truncation`` t, every value outside [-t, t] is redrawn
    (BigGAN's truncation trick), deterministically from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, dim_z, generator=gen)
    if truncation is None:
        return z
    if truncation <= 0:
        raise InputError(f"truncation must be positive, got {truncation}")
    for _ in range(1000):
        bad = z.abs() > truncation
        if not bad.any():
            break
        z[bad] = torch.randn(int(bad.sum()), generator=gen)
    return z.clamp(-truncation, truncation)


def check_inputs(G: Generator, features: np.ndarray, noise: np.ndarray | None) -> None:
    """Raise :class:`InputError` unless features are [N, feat_dim] and noise (if given) is [N, dim_z]."""
    if features.ndim != 2 or features.shape[1] != G.cfg.feat_dim:
        raise InputError(f"features must be [N, {G.cfg.feat_dim}], got {list(features.shape)}")
    if not np.isfinite(features).all():
        raise InputError("features hold NaN or infinite values")
    if noise is not None and (noise.ndim != 2 or noise.shape != (features.shape[0], G.dim_z)):
        raise InputError(f"noise must be [{features.shape[0]}, {G.dim_z}] (one row per feature row),"
                         f" got {list(noise.shape)}")


@torch.no_grad()
def generate(G: Generator, features: np.ndarray, noise: np.ndarray | None = None, *, truncation: float | None = None,
             seed: int = 0, batch: int = 16) -> Tensor:
    """Images ``Tensor[N, 3, R, R]`` (CPU) in [-1, 1] for ``features`` [N, feat_dim] (L2-normalised here) and
    ``noise`` [N, dim_z] (default: :func:`truncated_noise` of ``seed``)."""
    check_inputs(G, features, noise)
    h = F.normalize(torch.as_tensor(np.asarray(features, np.float32)), dim=1)
    z = (torch.as_tensor(np.asarray(noise, np.float32)) if noise is not None
         else truncated_noise(len(h), G.dim_z, truncation, seed))
    G.eval()
    if not len(h):
        return torch.zeros(0, 3, G.cfg.resolution, G.cfg.resolution)
    dev = next(G.parameters()).device
    return torch.cat([G(z[s:s + batch].to(dev), feature=h[s:s + batch].to(dev)).cpu() for s in range(0, len(h), batch)])


def write(images: Tensor, out: Path) -> list[Path]:
    """``out`` ending ``.npy``: float32 NCHW in [-1, 1]; otherwise a folder of ``%06d.png`` and ``grid.png``."""
    out = Path(out)
    if out.suffix == ".npy":
        out.parent.mkdir(parents=True, exist_ok=True)
        np.save(out, images.numpy().astype(np.float32))
        return [out]
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, im in enumerate(images):
        paths.append(out / f"{i:06d}.png")
        save_image((im + 1) / 2, paths[-1])
    if len(images):
        save_image((images + 1) / 2, out / "grid.png", nrow=max(1, int(math.sqrt(len(images)))), padding=2)
        paths.append(out / "grid.png")
    return paths


def load_array(path: Path, what: str) -> np.ndarray:
    """A float32 array from a ``.npy`` file; a missing or unreadable file is an :class:`InputError`."""
    try:
        return np.load(path, allow_pickle=False).astype(np.float32)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the {what} file {path}: {str(exc).splitlines()[0]}") from None

