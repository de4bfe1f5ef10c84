"""FID of generated images against real ones, on the image encoder's features (torchmetrics).

The paper measures FID with an Inception network trained on its own data; while the generator trains, the
frozen image encoder it is conditioned on plays that part (:class:`EncoderFeatures`: its ``32 * width``-d
average-pool feature, not normalised). :class:`FidCurve` fixes a few hundred real train images, their
instance features and one noise vector each; every call scores the generator's images for those features
and noises against those real images (the real statistics are computed once).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance

from models.biggan import Generator
from models.image_encoder import ImageEncoder
from pipeline import icgan, swav


class EncoderFeatures(nn.Module):
    """GAN images in [-1, 1] ``Tensor[B, 3, R, R]`` -> encoder feature ``Tensor[B, D]`` (bilinear resize to
    the encoder's input ``size``, ImageNet mean/std; the encoder runs in eval mode, without gradients)."""

    def __init__(self, encoder: ImageEncoder, size: int) -> None:
        super().__init__()
        self.encoder, self.size, self.num_features = encoder, size, encoder.out_dim

    @torch.no_grad()
    def forward(self, images: Tensor) -> Tensor:
        return encode(self.encoder, images.float(), self.size)


def encode(encoder: nn.Module, images: Tensor, size: int) -> Tensor:
    """GAN images in [-1, 1] ``[B, 3, R, R]`` -> the encoder's feature ``[B, D]`` (eval mode; bilinear resize to
    ``size``, ImageNet mean/std); differentiable in the images (see :class:`FeatureConsistency`)."""
    encoder.eval()
    x = F.interpolate((images + 1) / 2, size=(size, size), mode="bilinear", align_corners=False)
    return encoder(swav.normalise(x))


class FeatureConsistency(nn.Module):
    """The frozen image encoder as a differentiable input of G's loss (``generator.feature_weight``): images
    ``[B, 3, R, R]`` in [-1, 1] -> features ``[B, D]`` as :class:`EncoderFeatures` computes them; the
    encoder's weights get no gradient, the images do."""

    def __init__(self, encoder: nn.Module, size: int) -> None:
        super().__init__()
        self.encoder, self.size = encoder, size
        for p in encoder.parameters():
            p.requires_grad_(False)

    def forward(self, images: Tensor) -> Tensor:
        return encode(self.encoder, images, self.size)


class FidCurve:
    """FID of ``G(z_i, f_i)`` against real images ``x_i`` for up to ``n`` fixed corpus images ``i``.

    Args:
        features: the encoder as an :class:`EncoderFeatures`.
        frames: the corpus, uint8 ``[N, H, W, 3]`` (a memory map is fine: only the ``n`` picked are read).
        resolution: the generator's; real images are resized to it as for training.
        n: instances used (evenly spaced over the corpus); at least 2 are needed.
        dim_z: noise size; the noise is drawn once from ``seed``.
    """

    def __init__(self, features: EncoderFeatures, frames: np.ndarray, resolution: int, n: int, dim_z: int,
                 seed: int, batch: int = 128) -> None:
        pick = np.unique(np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(np.int64))
        chosen = np.asarray(frames[pick])
        self.feats = swav.embed(features.encoder, chosen, size=features.size)  # what G is conditioned on
        self.batch, self.ok = batch, len(pick) >= 2
        self.z = torch.randn(len(pick), dim_z, generator=torch.Generator().manual_seed(seed))
        self.device = next(features.encoder.parameters()).device  # the metric runs where the encoder is
        self.metric = FrechetInceptionDistance(feature=features, reset_real_features=False).to(self.device)
        real = icgan.to_unit(icgan.to_gan_images(chosen, resolution))
        for s in range(0, len(real), batch):
            self.metric.update(real[s:s + batch].to(self.device), real=True)

    def __len__(self) -> int:
        return len(self.z)

    def score(self, G: Generator) -> float | None:
        """FID of ``G``'s images for the fixed instances and noises (None with fewer than 2 instances)."""
        if not self.ok:
            return None
        self.metric.reset()  # forgets the fakes only (reset_real_features=False)
        fake = icgan.sample(G, self.feats, self.z, batch=self.batch)
        for s in range(0, len(fake), self.batch):
            self.metric.update(fake[s:s + self.batch].to(self.device), real=False)
        value = float(self.metric.compute())
        return round(value, 4) if np.isfinite(value) else None


def write_csv(path: Path, rows: list[dict]) -> None:
    """``step,fid`` rows to ``path`` (through a temporary name); an empty FID is written as an empty cell."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["step", "fid"], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
