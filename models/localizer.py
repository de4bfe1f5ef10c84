"""Self-supervised sound-source localizer (in the spirit of LVS / EZ-VSL; DESIGN section 5).

A conv visual encoder gives a unit-norm map ``(B, D, h, w)`` per frame, an audio encoder gives a unit-norm
embedding ``(B, D)`` per log-mel window; the similarity of a frame and a window is the maximum over space
of their cosine (multiple-instance: the source is somewhere in the frame). Training is InfoNCE over these
max-pooled similarities, both directions; a batch holds two times of each video, so the negatives of a
frame are the other videos' audio and the same video's audio at another time.

An ensemble (``LocalizerConfig.members`` > 1, :class:`LocalizerEnsemble`) holds several localizers trained
alone from different seeds; a frame's score is the mean of theirs (stages/score.py). Trained from other seeds,
they miss the moment in different clips, so the mean misses fewer.

Torch only (importable without ``pipeline``/``stages``). Checkpoints: ``{"model", "config", "step"}``; an
ensemble's keys are its members' with the prefix ``members.<i>.``.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.checkpoint import FromCheckpoint, read_checkpoint, save_checkpoint


@dataclass(frozen=True)
class LocalizerConfig:
    """Architecture of the localizer (the world's defaults: 64 px frames, 40 x 96 log-mel windows)."""

    dim: int = 64  # embedding size D
    width: int = 32  # channels of the first conv; doubled at each downsampling
    image_size: int = 64  # frames are resized to this before the visual encoder
    visual_stride: int = 8  # 64 px -> 8 x 8 map
    n_mels: int = 40
    n_frames: int = 96  # log-mel frames per window (hop 10 ms: 0.96 s + n_fft)
    temperature: float = 0.07
    members: int = 1  # > 1: an ensemble of this many localizers of this architecture (LocalizerEnsemble)


def _conv_block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class VisualEncoder(nn.Module):
    """``(B, 3, S, S)`` float frames in [0, 1] -> unit-norm map ``(B, D, S / stride, S / stride)``."""

    def __init__(self, cfg: LocalizerConfig) -> None:
        super().__init__()
        layers, c = [], 3
        n_down = max(1, int(cfg.visual_stride).bit_length() - 1)
        for k in range(n_down):
            out = cfg.width * 2**k
            layers += [_conv_block(c, out, 2), _conv_block(out, out, 1)]
            c = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, cfg.dim, 1)
        self.register_buffer("mean", torch.tensor([0.45, 0.45, 0.45]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.25, 0.25, 0.25]).view(1, 3, 1, 1), persistent=False)

    def forward(self, frames: Tensor) -> Tensor:
        x = (frames - self.mean) / self.std
        return F.normalize(self.head(self.body(x)), dim=1)


class AudioEncoder(nn.Module):
    """``(B, 1, n_mels, n_frames)`` log-mel -> unit-norm embedding ``(B, D)``."""

    def __init__(self, cfg: LocalizerConfig) -> None:
        super().__init__()
        w = cfg.width
        self.body = nn.Sequential(_conv_block(1, w, 2), _conv_block(w, w, 1), _conv_block(w, 2 * w, 2),
                                  _conv_block(2 * w, 2 * w, 1), _conv_block(2 * w, 4 * w, 2))
        self.head = nn.Sequential(nn.Linear(8 * w, 4 * w), nn.ReLU(inplace=True), nn.Linear(4 * w, cfg.dim))

    def forward(self, mel: Tensor) -> Tensor:
        x = self.body(mel)
        x = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # (B, 8w)
        return F.normalize(self.head(x), dim=1)


class Localizer(nn.Module, FromCheckpoint):
    """Audio-visual correspondence: visual maps, audio embeddings, and their max-over-space cosine."""

    config_cls = LocalizerConfig
    official_prefix = ""  # no published localizer: own-format checkpoints only

    def __init__(self, cfg: LocalizerConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or LocalizerConfig()
        self.visual = VisualEncoder(self.cfg)
        self.audio = AudioEncoder(self.cfg)

    def embed_frames(self, frames: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] (or uint8 ``(B, H, W, 3)``) -> ``(B, D, h, w)`` unit-norm."""
        if frames.dtype == torch.uint8:
            frames = frames.permute(0, 3, 1, 2).float() / 255.0
        s = self.cfg.image_size
        if frames.shape[-2:] != (s, s):
            frames = F.interpolate(frames, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return self.visual(frames)

    def embed_audio(self, mel: Tensor) -> Tensor:
        """``(B, 1, n_mels, n_frames)`` -> ``(B, D)`` unit-norm."""
        return self.audio(mel)

    @staticmethod
    def similarity_maps(vmap: Tensor, aemb: Tensor) -> Tensor:
        """Cosine of every frame location with every audio: ``(B, D, h, w), (A, D) -> (B, A, h, w)``."""
        return torch.einsum("bdhw,ad->bahw", vmap, aemb)

    @staticmethod
    def paired_scores(vmap: Tensor, aemb: Tensor) -> Tensor:
        """Score of frame i with audio i: max over space of the cosine, ``(B, D, h, w), (B, D) -> (B,)``."""
        return torch.einsum("bdhw,bd->bhw", vmap, aemb).flatten(1).amax(dim=1)

    def forward(self, frames: Tensor, mel: Tensor) -> Tensor:
        """Paired scores C = max_xy cos(q_V(x, y), q_A), ``(B,)``."""
        return self.paired_scores(self.embed_frames(frames), self.embed_audio(mel))


class LocalizerEnsemble(nn.Module, FromCheckpoint):
    """``cfg.members`` localizers of one architecture, trained alone (stages/train_localizer.py) and scored
    together: `members` lists them, each a :class:`Localizer` of ``cfg`` with ``members=1``."""

    config_cls = LocalizerConfig
    official_prefix = ""

    def __init__(self, cfg: LocalizerConfig) -> None:
        super().__init__()
        if cfg.members < 2:
            raise ValueError(f"an ensemble needs members >= 2, got {cfg.members}")
        self.cfg = cfg
        self.members = nn.ModuleList(Localizer(replace(cfg, members=1)) for _ in range(cfg.members))

    @classmethod
    def of(cls, models: list[Localizer]) -> "LocalizerEnsemble":
        """The ensemble of trained single localizers of one config (their weights are copied in)."""
        cfgs = {m.cfg for m in models}
        if len(cfgs) != 1 or models[0].cfg.members != 1:
            raise ValueError(f"ensemble members must be single localizers of one config, got {cfgs}")
        ens = cls(replace(models[0].cfg, members=len(models)))
        for dst, src in zip(ens.members, models):
            dst.load_state_dict(src.state_dict())
        return ens.train(models[0].training)


AnyLocalizer = Localizer | LocalizerEnsemble  # what `load` returns and `score` takes


def members_of(model: AnyLocalizer) -> list[Localizer]:
    """The single localizers whose scores are averaged: the ensemble's members, or ``[model]``."""
    return list(model.members) if isinstance(model, LocalizerEnsemble) else [model]


def infonce_loss(vmap: Tensor, aemb: Tensor, temperature: float, groups: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE over max-pooled similarities; frame i and audio i are the positive pair.

    ``vmap`` ``(B, D, h, w)``, ``aemb`` ``(B, D)``. Every other audio of the batch is a negative of a frame
    (other videos, and the same video at other times) and vice versa. ``groups`` ``(B,)``, optional:
    pairs that share a group id but are not the diagonal are dropped from the softmax (e.g. nearby times
    of one video, which are not true negatives). Returns a scalar.
    """
    logits = Localizer.similarity_maps(vmap, aemb).flatten(2).amax(dim=2) / temperature  # (B, A)
    if groups is not None:
        same = groups[:, None] == groups[None, :]
        eye = torch.eye(len(groups), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(same & ~eye, float("-inf"))
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def save(model: AnyLocalizer, path: str | Path, *, step: int, **extra: Any) -> None:
    """Write ``{"model", "config", "step", **extra}`` to ``path`` atomically."""
    save_checkpoint(path, model, model.cfg, step=step, **extra)


def load(src: str | Path | Mapping[str, Any], *, map_location: str | torch.device = "cpu") -> AnyLocalizer:
    """Load an own-format checkpoint strictly (``weights_only=True``); the model comes back in eval mode, a
    :class:`LocalizerEnsemble` when its config has ``members`` > 1."""
    obj = read_checkpoint(src, map_location=map_location)
    config = obj.get("config") if isinstance(obj, Mapping) else None
    cls = LocalizerEnsemble if isinstance(config, Mapping) and int(config.get("members", 1)) > 1 else Localizer
    return cls.from_checkpoint(src, map_location=map_location).eval()  # reads a path again: errors name it
