"""Gain augmentation of the audio encoder's training pairs: the same sound louder or quieter, with its target
moved the way the frames of louder sounds differ from those of quieter ones in the training pairs.

Why: the volume control (``evaluate``: one clip at gains 0.25-4) asks the audio feature to move with the
absolute level of the whole mix. In training data a louder source also stands further above the background,
so an encoder can read loudness from that ratio alone, which a gain does not change; on the built-in world a
front end that keeps the background (``log_eps: 1e-12``) made the audio feature carry the size across clips
better (probe Spearman 0.24 -> 0.42) but answer a gain less (per-clip 0.67 -> 0.29). Training on gains,
each with its own target, teaches the level itself.

The target's move comes from the pairs, without labels: ``direction`` is the slope of the unit image
feature on the clip's level (log power of its loudest spectrogram frame) within clusters of similar image
features (k-means), so that what tells sound types apart (one type louder than another) does not enter it. A gain
``g`` then shifts a pair's level by ``2 log g`` and its target by ``2 log g x scale x direction``
(re-normalised, then scaled back to the target's own norm, which the regression losses see).

The fitted slope is attenuated: the level is a noisy reading of the source's loudness (background, other
sounds) and the feature a noisy reading of its size, so on the world the slope moves a size probe on the
image features by 0.4 px per unit of level where the world's own pairs show 4.3 px (regression of size on
level within a class; 9.1 the other way round): ``gain_scale`` (params) makes up for it.

With ``gain_on: waveform`` the waveform is multiplied and the spectrogram made from it, so loud rows clip at
full scale exactly as in the evaluation's volume control (at gain 4, 79% of the world's test clips clip, 13%
of their samples on average) and the target moves by the measured level change (the world's default, with
``gain_saturate`` and ``gain_scale: 3``: docs/align.md); ``gain_on: spectrogram`` rescales a ready
spectrogram's power (``power * g^2``, then the log with the same ``eps``), exact but for that clipping. Both need the un-normalised front end (``spectrogram.norm: none``),
as the paper's per-clip z-score removes any gain.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

log = logging.getLogger(__name__)


def power(spec: Tensor, eps: float) -> Tensor:
    """The power behind ``spec = log(power + eps)``, float64, same shape."""
    return (spec.double().exp() - eps).clamp_min(0.0)


def clip_level(spec: Tensor, eps: float) -> Tensor:
    """``log`` of the power of each clip's loudest frame: ``spec [B, 1, F, T]`` (``log(power + eps)``) -> ``[B]``.
    The loudest frame follows the source more than the mean does, which background and other sounds fill
    (world train pairs, Spearman with the drawn size: 0.50 against 0.35); a gain moves both by ``2 log g``."""
    return torch.log(power(spec, eps).sum(dim=(1, 2)).amax(dim=1) + 1e-30).float()


def scale_power(spec: Tensor, log_g2: Tensor, eps: float) -> Tensor:
    """The spectrogram of the waveform times ``g`` (``log_g2 = 2 log g``, ``[B]``): ``[B, 1, F, T]``."""
    return torch.log(power(spec, eps) * log_g2.double().exp().view(-1, 1, 1, 1) + eps).to(spec.dtype)


def kmeans(x: Tensor, k: int, *, iters: int = 25, seed: int = 0) -> Tensor:
    """Cluster index ``[N]`` of each row of ``x [N, D]`` (Lloyd's algorithm from ``k`` distinct seeded rows)."""
    k = min(k, len(x))
    gen = torch.Generator().manual_seed(seed)
    centres = x[torch.randperm(len(x), generator=gen)[:k]].clone()
    assign = torch.zeros(len(x), dtype=torch.long)
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)
        for c in range(k):
            members = x[assign == c]
            if len(members):
                centres[c] = members.mean(0)
    return assign


def level_direction(levels: Tensor, features: Tensor, *, clusters: int, seed: int = 0) -> tuple[Tensor, float]:
    """(the within-cluster slope ``[D]`` of unit ``features [N, D]`` on ``levels [N]``, the share of the
    level variance that lies within the clusters). At most one cluster per 10 pairs, so each has spread."""
    f = F.normalize(features.double(), dim=1)
    lv = levels.double()
    assign = kmeans(f.float(), max(1, min(clusters, len(f) // 10)), seed=seed)
    df, dl = torch.zeros_like(f), torch.zeros_like(lv)
    for c in assign.unique():
        m = assign == c
        df[m], dl[m] = f[m] - f[m].mean(0), lv[m] - lv[m].mean()
    denom = float((dl ** 2).sum())
    if denom <= 1e-12:
        raise ValueError("gain augmentation: the training clips' levels do not vary within any cluster of "
                         "image features, so there is no level direction to learn (set gain_p: 0)")
    share = denom / max(float(((lv - lv.mean()) ** 2).sum()), 1e-12)
    return (df * dl[:, None]).sum(0).div(denom).float(), share


@dataclass
class GainShift:
    """Per training row, with chance ``p``: a gain ``g`` log-uniform in ``[low, high]`` applied to its
    sound and a move of its target along ``direction`` by the level change. Draws come from torch's global
    RNG (seeded per epoch by the trainer, as the SpecAugment masks).

    Two ways to play the gain: :meth:`__call__` rescales a ready spectrogram's power (exact without
    clipping; the level moves by ``2 log g``); :meth:`waveform` multiplies the waveform and makes the
    spectrogram from it, so the front end clips loud rows to [-1, 1] as it does at test time and in
    ``s2s generate --gain``; the level change is then measured (loudest-frame level after minus before),
    and a clipped row's target moves less, as its spectrogram does."""

    direction: Tensor  # [D]
    p: float
    low: float
    high: float
    eps: float  # the spectrogram's log_eps
    levels: tuple[float, float] | None = None  # (quietest, loudest) level a target may move to; None: no bound

    def draw(self, b: int) -> tuple[Tensor, Tensor]:
        """(rows played at a gain ``[b]`` bool, their ``2 log g`` ``[b]``, 0 elsewhere)."""
        on = torch.rand(b) < self.p
        log_g = math.log(self.low) + torch.rand(b) * (math.log(self.high) - math.log(self.low))
        return on, 2 * log_g * on

    def move(self, features: Tensor, shift: Tensor, on: Tensor) -> Tensor:
        """``features [B, D]`` with rows ``on`` moved by ``shift [B]`` (level units) x direction; each
        target keeps its norm (l2 / l1 regress the raw features; world: norm ~19)."""
        norm = features.norm(dim=1, keepdim=True)
        moved = F.normalize(features, dim=1) + shift[:, None].to(features) * self.direction.to(features)
        return torch.where(on.to(features.device)[:, None], F.normalize(moved, dim=1) * norm, features)

    def bounded(self, before: Tensor, after: Tensor) -> Tensor:
        """The target's level change ``[B]`` for rows at level ``before [B]`` played to ``after [B]``: with
        ``levels``, a target moves no further than the quietest / loudest training pair's level (a row already
        beyond it is not moved back), so a gain past what the pairs show keeps the target on their range."""
        if self.levels is None:
            return after - before
        lo, hi = self.levels
        return torch.minimum(torch.maximum(after, before.clamp(max=lo)), before.clamp(min=hi)) - before

    def __call__(self, spec: Tensor, features: Tensor) -> tuple[Tensor, Tensor]:
        """``spec [B, 1, F, T]``, image features ``[B, D]`` -> both, shifted rows changed."""
        on, s = self.draw(len(spec))
        if not bool(on.any()):
            return spec, features
        s = s.to(spec.device)
        shift = s
        if self.levels is not None:
            before = clip_level(spec, self.eps).to(s)
            shift = self.bounded(before, before + s)
        return scale_power(spec, s, self.eps), self.move(features, shift, on)

    def waveform(self, wave: Tensor, features: Tensor, spec_fn: Callable[[Tensor], Tensor]) -> tuple[Tensor, Tensor]:
        """``wave [B, n]``, image features ``[B, D]`` -> (``spec_fn`` of the played waveforms
        ``[B, 1, F, T]``, the features with the shifted rows moved by their measured level change)."""
        on, s = self.draw(len(wave))
        gain = (s / 2).exp().to(wave)
        spec = spec_fn(wave * gain[:, None])
        if not bool(on.any()):
            return spec, features
        idx = torch.nonzero(on).flatten().to(wave.device)
        change = torch.zeros(len(wave), device=features.device)
        before = clip_level(spec_fn(wave[idx]), self.eps)
        change[idx.to(features.device)] = self.bounded(before, clip_level(spec[idx], self.eps)).to(features.device)
        return spec, self.move(features, change, on)
