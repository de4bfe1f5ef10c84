"""Health figures on features: k-NN and nearest-centroid class accuracy (labels only for evaluation)."""
from __future__ import annotations

import torch
from torch import Tensor


def knn_predict(bank: Tensor, bank_labels: Tensor, query: Tensor, k: int, n_classes: int) -> Tensor:
    """Class ``Tensor[Q]`` of each unit-norm query ``[Q, D]`` by a similarity-weighted vote of its ``k``
    most cosine-similar bank rows ``[N, D]`` (labels ``[N]`` int64)."""
    sim = query @ bank.t()
    top, idx = sim.topk(min(k, bank.shape[0]), dim=1)
    votes = torch.zeros(query.shape[0], n_classes, dtype=sim.dtype)
    votes.scatter_add_(1, bank_labels[idx], torch.exp(top / 0.07))
    return votes.argmax(dim=1)


def centroids(features: Tensor, labels: Tensor, n_classes: int) -> Tensor:
    """Unit-norm class centroids ``Tensor[C, D]`` of unit-norm ``features [N, D]``; every class needs a row."""
    missing = [c for c in range(n_classes) if not bool((labels == c).any())]
    if missing:
        raise ValueError(f"classes {missing} have no labelled feature")
    sums = torch.zeros(n_classes, features.shape[1], dtype=features.dtype).index_add_(0, labels, features)
    return torch.nn.functional.normalize(sums, dim=1)


def nearest_centroid(features: Tensor, cents: Tensor) -> Tensor:
    """Class ``Tensor[N]`` of each feature ``[N, D]``: the most cosine-similar centroid ``[C, D]``."""
    return (features @ cents.t()).argmax(dim=1)


def accuracy(pred: Tensor, labels: Tensor) -> float:
    """Share of equal entries (0.0 for empty inputs)."""
    return float((pred == labels).float().mean()) if len(labels) else 0.0
