"""Retrieval metrics of audio features against their frames' image features."""
from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def recall_at(z_a: Tensor, z_v: Tensor, ks: tuple[int, ...] = (1, 5), chunk: int = 1024) -> dict[int, float]:
    """R@k of audio-to-image retrieval: the share of rows i whose own image ``z_v[i]`` is among the k
    nearest (cosine = L2 of unit vectors) of ``z_a[i]`` over all rows of ``z_v``.

    ``z_a, z_v: Tensor[N, D]``; ties count against the row (a strict rank). Rows are taken ``chunk``
    at a time so memory stays ``chunk x N``.
    """
    if z_a.shape[0] == 0:
        return {k: float("nan") for k in ks}
    a, v = F.normalize(z_a.float(), dim=1), F.normalize(z_v.float(), dim=1)
    hits = {k: 0 for k in ks}
    for s in range(0, a.shape[0], chunk):
        sim = a[s:s + chunk] @ v.t()  # [c, N]
        own = sim[torch.arange(sim.shape[0]), torch.arange(s, s + sim.shape[0])]
        rank = (sim >= own[:, None]).sum(dim=1) - 1  # rows at least as close, minus itself
        for k in ks:
            hits[k] += int((rank < k).sum())
    return {k: hits[k] / a.shape[0] for k in ks}


def centroid_accuracy(z_a: Tensor, labels: list[str], centroids: Tensor, names: list[str]) -> float:
    """Share of audio features whose nearest class centroid (cosine) is their own class.

    ``z_a: Tensor[N, D]``, ``centroids: Tensor[C, D]`` (image features of each class, averaged).
    """
    if z_a.shape[0] == 0:
        return float("nan")
    near = (F.normalize(z_a.float(), dim=1) @ F.normalize(centroids.float(), dim=1).t()).argmax(dim=1)
    return sum(names[i] == lab for i, lab in zip(near.tolist(), labels)) / len(labels)
