"""The evaluator's labelled frames and their augmentation (the `train_evaluator` stage).

Train frames are the `images` stage's unlabeled corpus (``train.npy`` / ``.parquet``), labelled here:

* built-in world (a non-empty events.parquet): a frame where exactly one class is drawn gets that class
  and its drawn size (the event's ``size`` / the frame width; the largest when the class is drawn twice);
  a frame with no source drawn gets the class ``none`` (size 0) when ``none_class`` is on, and is left out
  otherwise; frames where two classes are drawn are left out. ``none`` frames are subsampled to the
  mean count of the source classes so they do not swamp them.
* real data (no events): every frame of a train clip gets the clip's label from videos.parquet; the size
  is unknown (NaN: the size head is not trained, and the volume control is not measured).

Accuracy frames: the `images` stage's labelled eval frames (``eval.*``, val and test clips); without them,
every tenth train clip is held out for val and test instead.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline import events as gt
from pipeline import manifests
from pipeline.image_store import read_images

log = logging.getLogger(__name__)
NONE = "none"
HOLD_OUT_EVERY = 10


@dataclass
class Frames:
    """Labelled frames: ``images`` uint8 [N, H, W, 3], ``labels`` int64 [N], ``sizes`` float32 [N] (NaN: unknown)."""

    images: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> "Frames":
        """The rows ``idx`` (sorted), as a new :class:`Frames` in memory."""
        idx = np.sort(idx)
        return Frames(np.asarray(self.images[idx]), self.labels[idx], self.sizes[idx])


@dataclass
class LabelledData:
    """Everything the stage trains and reports on; ``source`` says where the labels came from."""

    classes: list[str]
    train: Frames
    val: Frames
    test: Frames
    source: str


def _frame_truth(clip_events: list[dict], t: float, width: float, none_class: bool) -> tuple[str, float] | None:
    """(label, size fraction) of one world frame, or None when it is left out."""
    drawn = gt.drawn_at(clip_events, t)
    if len(drawn) == 1:
        (label, px), = drawn.items()
        return label, px / width
    return (NONE, 0.0) if not drawn and none_class else None


def _world_rows(table_rows: list[dict], ev: dict[str, list[dict]], widths: dict[str, float],
                none_class: bool) -> tuple[list[int], list[str], list[float]]:
    rows, labels, sizes = [], [], []
    for i, r in enumerate(table_rows):
        truth = _frame_truth(ev.get(r["video_id"], []), r["t_s"], widths.get(r["video_id"], 1.0), none_class)
        if truth is not None:
            rows.append(i)
            labels.append(truth[0])
            sizes.append(truth[1])
    return rows, labels, sizes


def _balance_none(labels: list[str], seed: int) -> np.ndarray:
    """Row positions to keep: every source frame and at most the mean source-class count of ``none`` frames."""
    arr = np.array(labels, dtype=object)
    none = np.flatnonzero(arr == NONE)
    sources = np.flatnonzero(arr != NONE)
    n_cls = len(set(arr[sources].tolist()))
    keep_none = min(len(none), int(round(len(sources) / max(n_cls, 1))))
    picked = np.random.default_rng(seed).choice(none, size=keep_none, replace=False) if keep_none else none[:0]
    return np.sort(np.concatenate([sources, picked]))


def _encode(labels: list[str], classes: list[str]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(v, -1) for v in labels], np.int64)


def _eval_frames(images: Path, split: str, classes: list[str], ev: dict[str, list[dict]],
                 widths: dict[str, float]) -> Frames:
    """The labelled eval frames of ``split`` whose class the evaluator knows (sizes from events when there)."""
    arr, table = read_images(images, "eval")
    rows = table.to_pylist()
    unknown = sorted({r["label"] for r in rows if r["split"] == split and r["label"] not in classes})
    if unknown:
        log.warning("%s eval frames of classes without train frames are left out: %s", split, unknown)
    idx = [i for i, r in enumerate(rows) if r["split"] == split and r["label"] in classes]
    sizes = [gt.drawn_at(ev.get(rows[i]["video_id"], []), rows[i]["t_s"]).get(rows[i]["label"], np.nan)
             / widths.get(rows[i]["video_id"], 1.0) for i in idx]
    return Frames(np.asarray(arr[idx]) if idx else np.zeros((0, *arr.shape[1:]), np.uint8),
                  _encode([rows[i]["label"] for i in idx], classes), np.array(sizes, np.float32))


def load(images: Path, videos: Path, events: Path, *, none_class: bool, max_frames: int, seed: int) -> LabelledData:
    """Label the train corpus and gather the accuracy frames (see the module docstring)."""
    arr, table = read_images(images, "train")
    rows = table.to_pylist()
    clips = {r["video_id"]: r for r in manifests.read(videos, manifests.VIDEOS).to_pylist()}
    widths = {k: float(v["width"] or 1) for k, v in clips.items()}
    ev = gt.by_clip(events) if Path(events).is_file() else {}
    if ev:
        pos, labels, sizes = _world_rows(rows, ev, widths, none_class)
        keep = _balance_none(labels, seed) if none_class else np.arange(len(pos))
        pos, labels, sizes = [pos[k] for k in keep], [labels[k] for k in keep], [sizes[k] for k in keep]
        source = "events"
    else:
        pos = [i for i, r in enumerate(rows) if (clips.get(r["video_id"]) or {}).get("label")]
        labels, sizes = [clips[rows[i]["video_id"]]["label"] for i in pos], [np.nan] * len(pos)
        source = "clip labels"
    if not pos:
        raise ValueError(f"no labelled train frames in {images}/train.*: the evaluator needs frames of labelled "
                         "train clips (built-in world events or videos.parquet labels)")
    if max_frames and len(pos) > max_frames:
        sub = np.sort(np.random.default_rng(seed).choice(len(pos), max_frames, replace=False))
        pos, labels, sizes = [pos[k] for k in sub], [labels[k] for k in sub], [sizes[k] for k in sub]
    classes = sorted(set(labels) - {NONE}) + ([NONE] if NONE in labels else [])
    frames = Frames(np.asarray(arr[pos]), _encode(labels, classes), np.array(sizes, np.float32))
    test = _eval_frames(images, "test", classes, ev, widths)
    val = _eval_frames(images, "val", classes, ev, widths)
    if len(test) == 0:  # no labelled eval frames (real data): hold out every tenth train clip
        vid = np.array([rows[i]["video_id"] for i in pos], dtype=object)
        held = np.isin(vid, sorted(set(vid.tolist()))[::HOLD_OUT_EVERY])
        test = val = frames.take(np.flatnonzero(held))
        frames = frames.take(np.flatnonzero(~held))
        source += ", accuracy on held-out train clips"
    if len(frames) == 0:
        raise ValueError("no labelled train frames are left for training after holding out clips for the accuracy")
    log.info("evaluator data (%s): %d train frames, %d val, %d test, classes %s", source, len(frames), len(val),
             len(test), classes)
    return LabelledData(classes, frames, val, test, source)


def write_text(path: Path, text: str) -> None:
    """Write a report through a temporary name in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = manifests.tmp_name(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def to_unit(images: np.ndarray) -> Tensor:
    """uint8 ``[N, H, W, 3]`` -> float ``Tensor[N, 3, H, W]`` in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def augment(x: Tensor, sizes: Tensor, *, crop: float, zoom_out: float, rotate: float, lowres: int,
            gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """Random horizontal flips, rotations by up to ``rotate`` degrees, a square window of side ``crop`` ..
    ``zoom_out`` x the frame (below 1: a crop; above 1: the frame shrunk inside a border of its edge pixels)
    resampled to full size (the drawn size fraction becomes size / side), and with p = 0.5 a shrink to
    ``lowres``..full size and back (generated images are often smaller than the frames).
    ``x [B, 3, S, S]`` in [-1, 1], ``sizes [B]`` -> both, augmented."""
    b, s = x.shape[0], x.shape[-1]
    side = torch.empty(b).uniform_(crop, zoom_out, generator=gen)
    shift = (torch.rand(b, 2, generator=gen) * 2 - 1) * (1 - side).clamp(min=0)[:, None]
    flip = torch.where(torch.rand(b, generator=gen) < 0.5, -1.0, 1.0)
    angle = (torch.rand(b, generator=gen) * 2 - 1) * math.radians(rotate)
    cos, sin = torch.cos(angle) * side, torch.sin(angle) * side
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1),
                         torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, [b, 3, s, s], align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if lowres and lowres < s:
        small = int(torch.randint(lowres, s + 1, (1,), generator=gen))
        pick = torch.rand(b, generator=gen) < 0.5
        if pick.any() and small < s:
            down = F.interpolate(x[pick], size=(small, small), mode="bilinear", antialias=True, align_corners=False)
            x[pick] = F.interpolate(down, size=(s, s), mode="bilinear", align_corners=False)
    return x, (sizes / side).clamp(max=1.0)
