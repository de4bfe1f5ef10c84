"""Alignment losses between audio features z_A and image features z_V (paper Eq. 1-2 and ablations).

``make_loss(name, temperature)`` returns a module ``loss(z_a, z_v) -> scalar`` for paired rows
``z_a: Tensor[B, D]``, ``z_v: Tensor[B, D]`` (row i of one belongs to row i of the other):

* ``infonce`` (the paper, ``InfoNCE_with_L2`` of the published ``loss.py``): both sides L2-normalised,
  logits ``-||a_i - v_j||_2 / temperature``, cross-entropy with the diagonal as target, averaged over
  the audio->image and image->audio directions. Temperature 1 as published. With ``false_negative_cos``
  below 1, a pair (i, j) whose image features have a cosine above it is left out of each other's softmax:
  with few classes most of a batch's same-class rows are such false negatives (not in the paper).
* ``infonce_cos``: the same with cosine logits ``<a_i, v_j> / temperature``.
* ``l2``: mean squared error ``mean((a - v)^2)`` on the raw features, as published (``nn.MSELoss``).
* ``l1``: mean absolute error on the raw features (``nn.L1Loss``).

``make_loss(..., space=f)`` measures the loss after a fixed feature map ``f`` applied to both sides
(:class:`InSpace`): with ``audio_encoder.align_space: generator`` the stage passes the generator's own input
map (``models.biggan.FeatureCentre``: centring on the corpus' mean unit feature, whitening), so the audio
features are pulled together with their frames in the coordinates the generator reads.

The contrastive losses take the negatives from the whole batch they are given; under DDP the trainer
gathers every rank's rows first so the loss is that of the global batch.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F

LOSSES = ("infonce", "infonce_cos", "l2", "l1")


def _check_pair(z_a: Tensor, z_v: Tensor) -> None:
    if z_a.ndim != 2 or z_a.shape != z_v.shape:
        raise ValueError(f"expected two [B, D] feature batches of one shape, got "
                         f"{list(z_a.shape)} and {list(z_v.shape)}")


def _upcast(z: Tensor) -> Tensor:
    """float16/bfloat16 features (autocast) -> float32; float32/float64 unchanged."""
    return z.float() if z.dtype in (torch.float16, torch.bfloat16) else z


def l2_logits(z_a: Tensor, z_v: Tensor) -> Tensor:
    """``-cdist(normalize(z_a), normalize(z_v))``: ``Tensor[B, B]``, row i = audio i against every image."""
    a, v = F.normalize(z_a, dim=1), F.normalize(z_v, dim=1)
    # ||a - v||^2 = 2 - 2 <a, v> for unit vectors; clamp before sqrt keeps the gradient finite at 0.
    sq = (2.0 - 2.0 * a @ v.t()).clamp_min(1e-12)
    return -sq.sqrt()


def cos_logits(z_a: Tensor, z_v: Tensor) -> Tensor:
    """Cosine similarity of every audio row with every image row: ``Tensor[B, B]``."""
    return F.normalize(z_a, dim=1) @ F.normalize(z_v, dim=1).t()


class SymmetricInfoNCE(nn.Module):
    """Symmetric cross-entropy over ``logits(z_a, z_v) / temperature`` with diagonal targets."""

    def __init__(self, logits: Callable[[Tensor, Tensor], Tensor], temperature: float = 1.0,
                 false_negative_cos: float = 1.0):
        super().__init__()
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if not -1.0 <= false_negative_cos <= 1.0:
            raise ValueError(f"false_negative_cos must be a cosine in [-1, 1], got {false_negative_cos}")
        self.logits = logits
        self.temperature = float(temperature)
        self.false_negative_cos = float(false_negative_cos)

    def forward(self, z_a: Tensor, z_v: Tensor) -> Tensor:
        """``z_a, z_v: Tensor[B, D]`` -> scalar loss (mean of both directions)."""
        _check_pair(z_a, z_v)
        logits = self.logits(_upcast(z_a), _upcast(z_v)) / self.temperature
        if self.false_negative_cos < 1.0:  # symmetric mask, so both directions leave out the same pairs
            with torch.no_grad():
                v = F.normalize(_upcast(z_v), dim=1)
                near = (v @ v.t()) > self.false_negative_cos
                near.fill_diagonal_(False)
            logits = logits.masked_fill(near, float("-inf"))
        target = torch.arange(logits.shape[0], device=logits.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


class Regression(nn.Module):
    """Elementwise regression of z_a onto z_v: ``mse`` (l2) or ``l1``, mean over all elements."""

    def __init__(self, kind: str):
        super().__init__()
        self.fn = {"l2": F.mse_loss, "l1": F.l1_loss}[kind]

    def forward(self, z_a: Tensor, z_v: Tensor) -> Tensor:
        """``z_a, z_v: Tensor[B, D]`` -> scalar loss."""
        _check_pair(z_a, z_v)
        return self.fn(_upcast(z_a), _upcast(z_v))


class InSpace(nn.Module):
    """``loss(space(z_a), space(z_v))``: a loss measured after a fixed map ``space: Tensor[B, D] -> Tensor[B, D']``
    (its buffers frozen; gradients flow through it to ``z_a``)."""

    def __init__(self, loss: nn.Module, space: nn.Module):
        super().__init__()
        self.loss, self.space = loss, space.requires_grad_(False)

    def forward(self, z_a: Tensor, z_v: Tensor) -> Tensor:
        """``z_a, z_v: Tensor[B, D]`` -> scalar loss."""
        _check_pair(z_a, z_v)
        return self.loss(self.space(_upcast(z_a)), self.space(_upcast(z_v)))


def make_loss(name: str, temperature: float = 1.0, *, space: nn.Module | None = None,
              false_negative_cos: float = 1.0) -> nn.Module:
    """The loss called ``name`` (one of :data:`LOSSES`); ``temperature`` and ``false_negative_cos`` apply to
    the InfoNCE ones; ``space``, when given, maps both sides before the loss (:class:`InSpace`)."""
    if name == "infonce":
        loss: nn.Module = SymmetricInfoNCE(l2_logits, temperature, false_negative_cos)
    elif name == "infonce_cos":
        loss = SymmetricInfoNCE(cos_logits, temperature, false_negative_cos)
    elif name in ("l2", "l1"):
        loss = Regression(name)
    else:
        raise ValueError(f"unknown loss {name!r} (choose from {', '.join(LOSSES)})")
    return loss if space is None else InSpace(loss, space)
