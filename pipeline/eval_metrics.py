"""The `evaluate` stage's numbers: R@k of generated images' classes, FID and IS on the evaluator, the
controls' statistics (Spearman of drawn size against gain, the mixing top-2 share).

FID and IS come from torchmetrics (FrechetInceptionDistance / InceptionScore with the evaluator as a custom
feature extractor: no hand-written matrix square root). Class indices of -1 mark labels the evaluator does
not know (a test class without train frames): they count as misses.
"""
from __future__ import annotations

import warnings
from typing import Iterable

import numpy as np
import torch
from scipy.stats import spearmanr
from torch import Tensor, nn
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.inception import InceptionScore


def recall_at_k(logits: Tensor, labels: Tensor, ks: Iterable[int] = (1, 5)) -> dict[int, float]:
    """Share of rows whose label is among the k highest logits (``logits [N, C]``, ``labels [N]`` int,
    -1 = unknown class: a miss). k larger than C counts as C. NaN for no rows."""
    if len(labels) == 0:
        return {k: float("nan") for k in ks}
    order = logits.argsort(dim=1, descending=True)
    hit_rank = (order == labels[:, None]).float().argmax(dim=1)  # position of the label (0 when unknown)
    known = labels >= 0
    return {k: float(((hit_rank < k) & known).float().mean()) for k in ks}


def per_class_recall(logits: Tensor, labels: Tensor, n_classes: int) -> list[float]:
    """R@1 of the rows of each class ``0..n_classes-1`` (NaN for a class without rows)."""
    pred = logits.argmax(dim=1)
    return [float((pred[labels == c] == c).float().mean()) if bool((labels == c).any()) else float("nan")
            for c in range(n_classes)]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rank correlation of two equal-length vectors; 0.0 when one is constant (no ranking)."""
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


def volume_spearman(sizes: np.ndarray, gains: np.ndarray) -> float:
    """Mean over rows of Spearman(drawn size, gain): ``sizes [clips, n_gains]``, ``gains [n_gains]``."""
    if len(sizes) == 0:
        return float("nan")
    return float(np.mean([spearman(row, gains) for row in sizes]))


def mix_top2(logits: Tensor, a: Tensor, b: Tensor, exclude: int | None = None) -> float:
    """Share of rows whose two highest logits are classes ``a`` and ``b`` (``logits [N, C]``, ``a, b [N]``);
    ``exclude``: a class index left out of the ranking (``none``). NaN for no rows."""
    if len(a) == 0:
        return float("nan")
    x = logits.clone().float()
    if exclude is not None:
        x[:, exclude] = float("-inf")
    top2 = x.topk(2, dim=1).indices
    has = lambda c: (top2 == c[:, None]).any(dim=1)  # noqa: E731
    return float((has(a) & has(b)).float().mean())


def _batches(images: Tensor, batch: int) -> Iterable[Tensor]:
    for s in range(0, len(images), batch):
        yield images[s:s + batch]


class Fid:
    """FID against one fixed set of real images: ``Fid(features, real)(fake)``; images ``[N, 3, H, W]``
    in [-1, 1] (any size: the feature module resizes); ``features`` returns ``[N, D]``."""

    def __init__(self, features: nn.Module, real: Tensor, batch: int = 256):
        self.metric = FrechetInceptionDistance(feature=features, reset_real_features=False)
        self.batch = batch
        for x in _batches(real, batch):
            self.metric.update(x, real=True)

    def __call__(self, fake: Tensor) -> float:
        """FID of ``fake`` (at least two images) against the real set."""
        self.metric.reset()
        for x in _batches(fake, self.batch):
            self.metric.update(x, real=False)
        return float(self.metric.compute())


def inception_score(logits_module: nn.Module, images: Tensor, splits: int, seed: int = 0, batch: int = 256) -> float:
    """Mean Inception Score of ``images`` over ``splits`` splits (fewer, so that each holds at least 20 images),
    with ``logits_module`` as the classifier (torchmetrics shuffles with torch's RNG: seeded here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*will save all extracted features.*")
        metric = InceptionScore(feature=logits_module, splits=max(1, min(splits, len(images) // 20)))
    for x in _batches(images, batch):
        metric.update(x)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with warnings.catch_warnings():  # the std over one split is undefined; only the mean is used
            warnings.filterwarnings("ignore", message=".*degrees of freedom.*")
            return float(metric.compute()[0])
    finally:
        torch.random.set_rng_state(state)
