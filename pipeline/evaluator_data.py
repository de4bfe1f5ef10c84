"""The evaluator's labelled frames and their augmentation (the `train_evaluator` stage).

Train frames are the `images` stage's unlabeled corpus (``train.npy`` / ``.parquet``), labelled here:

* built-in world (a non-empty events.parquet): a frame where exactly one class is drawn gets that class
  and its drawn size (the event's ``size`` / the frame width; the largest when the class is drawn twice);
  a frame with no source drawn gets the class ``none`` (size 0) when ``none_class`` is on, and is left out
  otherwise; a frame where exactly two classes are drawn is kept with both classes (soft target 0.5 / 0.5,
  size unknown) when ``two_source`` is on, and left out otherwise; frames with three or more classes are left
  out. ``none`` frames are subsampled to the mean count of the single-source classes so they do not swamp them.
  The two-source frames of every third train clip that has any (sorted ids) are the held-out two-source frames
  (the `images` stage's val/test frames skip two-class frames); with ``two_source`` on, those clips are left
  out of training altogether.
* real data (no events): every frame of a train clip gets the clip's label from videos.parquet; the size
  is unknown (NaN: the size head is not trained, and the volume control is not measured).

Accuracy frames: the `images` stage's labelled eval frames (``eval.*``, val and test clips); without them,
every tenth train clip is held out for val and test instead.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from pipeline import events as gt
from pipeline import composites, manifests
from pipeline.foreground import clip_scenes
from pipeline.image_store import clip_groups, read_images

log = logging.getLogger(__name__)
NONE = "none"
HOLD_OUT_EVERY = 10
TWO_SOURCE_HOLD_OUT_EVERY = 3  # every third clip with a two-source frame: ~1/3 of those frames for the report


@dataclass
class Frames:
    """Labelled frames: ``images`` uint8 [N, H, W, 3], ``labels`` int64 [N], ``sizes`` float32 [N] (NaN: unknown),
    ``second`` int64 [N]: the other class of a two-source frame (its target is 0.5 / 0.5), -1 for one class;
    ``masks`` bool [N, H, W] or None: each frame's foreground against its clip's median scene (composites)."""

    images: np.ndarray
    labels: np.ndarray
    sizes: np.ndarray
    second: np.ndarray | None = None
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.second is None:
            self.second = np.full(len(self.labels), -1, np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, idx: np.ndarray) -> "Frames":
        """The rows ``idx`` (sorted), as a new :class:`Frames` in memory."""
        idx = np.sort(idx)
        return Frames(np.asarray(self.images[idx]), self.labels[idx], self.sizes[idx], self.second[idx],
                      None if self.masks is None else self.masks[idx])


@dataclass
class LabelledData:
    """Everything the stage trains and reports on; ``source`` says where the labels came from;
    ``two_source``: held-out frames showing two classes (``labels`` and ``second``; empty without events)."""

    classes: list[str]
    train: Frames
    val: Frames
    test: Frames
    source: str
    two_source: Frames


Truth = tuple[tuple[str, ...], float]  # (the classes drawn: one, two sorted, or (none,); size fraction)


def _frame_truth(clip_events: list[dict], t: float, width: float, none_class: bool) -> Truth | None:
    """The truth of one world frame, or None when it is left out (three or more classes; no class without
    ``none_class``). A two-source frame's size is NaN: the size head learns the drawn size of *the* source,
    which two sources do not define (the larger one would teach it to read the larger of two, a quantity the
    volume control never asks for); NaN rows are skipped by its squared error, so the frame trains the classes."""
    drawn = gt.drawn_at(clip_events, t)
    if len(drawn) == 1:
        (label, px), = drawn.items()
        return (label,), px / width
    if len(drawn) == 2:
        return tuple(sorted(drawn)), float("nan")
    return ((NONE,), 0.0) if not drawn and none_class else None


def _world_rows(table_rows: list[dict], ev: dict[str, list[dict]], widths: dict[str, float],
                none_class: bool) -> tuple[list[int], list[Truth]]:
    rows, truths = [], []
    for i, r in enumerate(table_rows):
        truth = _frame_truth(ev.get(r["video_id"], []), r["t_s"], widths.get(r["video_id"], 1.0), none_class)
        if truth is not None:
            rows.append(i)
            truths.append(truth)
    return rows, truths


def _balance_none(truths: list[Truth], seed: int) -> np.ndarray:
    """Row positions to keep: every source frame and at most the mean single-source class count of ``none``
    frames (two-source frames are kept and counted neither as frames nor as a class of that mean)."""
    none = np.array([t[0] == (NONE,) for t in truths], bool)
    single = np.array([len(t[0]) == 1 for t in truths], bool) & ~none
    n_cls = len({t[0] for t, s in zip(truths, single) if s})
    keep_none = min(int(none.sum()), int(round(single.sum() / max(n_cls, 1))))
    none_pos = np.flatnonzero(none)
    picked = np.random.default_rng(seed).choice(none_pos, size=keep_none, replace=False) if keep_none else none_pos[:0]
    return np.sort(np.concatenate([np.flatnonzero(~none), picked]))


def held_out_two_source_clips(clips: Iterable[str]) -> set[str]:
    """Of the clips with a two-source train frame (``clips``), those whose two-source frames are held out of
    training: every third by sorted id."""
    return set(sorted(set(clips))[::TWO_SOURCE_HOLD_OUT_EVERY])


def _split_two_source(rows: list[dict], pos: list[int], truths: list[Truth], two_source: bool
                      ) -> tuple[list[int], list[Truth], list[int], list[Truth]]:
    """(train positions, their truths, held-out two-source positions, their truths): see the module docstring."""
    two = [k for k, t in enumerate(truths) if len(t[0]) == 2]
    held_clips = held_out_two_source_clips(rows[pos[k]]["video_id"] for k in two)
    held = [k for k in two if rows[pos[k]]["video_id"] in held_clips]
    if two_source:
        keep = [k for k in range(len(pos)) if rows[pos[k]]["video_id"] not in held_clips]
    else:
        keep = [k for k, t in enumerate(truths) if len(t[0]) < 2]
    return [pos[k] for k in keep], [truths[k] for k in keep], [pos[k] for k in held], [truths[k] for k in held]


def _encode(labels: list[str | None], classes: list[str]) -> np.ndarray:
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup.get(v, -1) for v in labels], np.int64)


def _frames(arr: np.ndarray, pos: list[int], truths: list[Truth], classes: list[str]) -> Frames:
    """Frames of the train-corpus rows ``pos`` with their truths (a second class for two-source frames)."""
    images = np.asarray(arr[pos]) if pos else np.zeros((0, *arr.shape[1:]), np.uint8)
    second = [t[0][1] if len(t[0]) == 2 else None for t in truths]
    return Frames(images, _encode([t[0][0] for t in truths], classes), np.array([t[1] for t in truths], np.float32),
                  _encode(second, classes))


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


def _train_masks(arr: np.ndarray, video_ids: list[str], pos: list[int]) -> np.ndarray | None:
    """bool ``[len(pos), H, W]``: the foregrounds of the train-corpus rows ``pos`` (``arr`` uint8
    ``[N, H, W, 3]``, ``video_ids`` of all N rows) against their clips' median scenes; None (logged) when
    the rows are not grouped by clip."""
    groups = clip_groups(video_ids)
    if groups is None:
        log.warning("evaluator.composites: the corpus rows are not grouped by clip; no composites")
        return None
    return composites.frame_masks(arr[pos], groups[pos], scenes=clip_scenes(arr, groups))  # scenes need every frame


def load(images: Path, videos: Path, events: Path, *, none_class: bool, max_frames: int, seed: int,
         two_source: bool, masks: bool = False) -> LabelledData:
    """Label the train corpus and gather the accuracy frames (see the module docstring); ``masks``: also each
    train frame's foreground against its clip's median scene (for :func:`composite`; world only)."""
    arr, table = read_images(images, "train")
    rows = table.to_pylist()
    clips = {r["video_id"]: r for r in manifests.read(videos, manifests.VIDEOS).to_pylist()}
    widths = {k: float(v["width"] or 1) for k, v in clips.items()}
    ev = gt.by_clip(events) if Path(events).is_file() else {}
    held, held_truths = [], []
    if ev:
        pos, truths = _world_rows(rows, ev, widths, none_class)
        pos, truths, held, held_truths = _split_two_source(rows, pos, truths, two_source)
        keep = _balance_none(truths, seed) if none_class else np.arange(len(pos))
        pos, truths = [pos[k] for k in keep], [truths[k] for k in keep]
        source = "events"
    else:
        pos = [i for i, r in enumerate(rows) if (clips.get(r["video_id"]) or {}).get("label")]
        truths = [((clips[rows[i]["video_id"]]["label"],), np.nan) for i in pos]
        source = "clip labels"
    if not pos:
        raise ValueError(f"no labelled train frames in {images}/train.*: the evaluator needs frames of labelled "
                         "train clips (built-in world events or videos.parquet labels)")
    if max_frames and len(pos) > max_frames:
        sub = np.sort(np.random.default_rng(seed).choice(len(pos), max_frames, replace=False))
        pos, truths = [pos[k] for k in sub], [truths[k] for k in sub]
    names = {c for t in truths for c in t[0]}
    classes = sorted(names - {NONE}) + ([NONE] if NONE in names else [])
    frames = _frames(arr, pos, truths, classes)
    if masks and ev:
        frames.masks = _train_masks(arr, table.column("video_id").to_pylist(), pos)
    test = _eval_frames(images, "test", classes, ev, widths)
    val = _eval_frames(images, "val", classes, ev, widths)
    if len(test) == 0:  # no labelled eval frames (real data): hold out every tenth train clip
        vid = np.array([rows[i]["video_id"] for i in pos], dtype=object)
        held_out = np.isin(vid, sorted(set(vid.tolist()))[::HOLD_OUT_EVERY])
        test = val = frames.take(np.flatnonzero(held_out))
        frames = frames.take(np.flatnonzero(~held_out))
        source += ", accuracy on held-out train clips"
    if len(frames) == 0:
        raise ValueError("no labelled train frames are left for training after holding out clips for the accuracy")
    two = _frames(arr, held, held_truths, classes)
    log.info("evaluator data (%s): %d train frames (%d of them two-source), %d val, %d test, %d held-out "
             "two-source frames, classes %s", source, len(frames), int((frames.second >= 0).sum()), len(val),
             len(test), len(two), classes)
    return LabelledData(classes, frames, val, test, source, two)


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


def composite(x: Tensor, masks: Tensor, labels: Tensor, second: Tensor, sizes: Tensor, *, p: float,
              none: int | None, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """Two-source composites from one-source frames: with chance ``p`` a row showing one class gets the
    foreground of another row of the batch (a random partner, also one class, a different one) pasted beside
    its own (``pipeline.composites.apart``), and trains as a two-source frame (``second`` = the partner's
    class, target 0.5 / 0.5, size unknown). Rows without a partner of another class stay as they are. ``x [B, 3, H, W]``, ``masks [B, H, W]`` (the
    frames' foregrounds), ``labels`` / ``second`` int64 ``[B]``, ``sizes [B]``; ``none``: the class index
    of frames without a source (never pasted, never pasted on) -> (x, second, sizes)."""
    b = len(x)
    partner = torch.randperm(b, generator=gen)
    one = (second < 0) & (labels != (-1 if none is None else none))
    use = (torch.rand(b, generator=gen) < p) & one & one[partner] & (labels != labels[partner])
    if not bool(use.any()):
        return x, second, sizes
    top, alpha = composites.apart(x[partner], masks[partner][:, None].to(x.dtype), masks[:, None].to(x.dtype))
    x = composites.paste(x, top, alpha * use.view(b, 1, 1, 1).to(x.dtype))
    return x, torch.where(use, labels[partner], second), torch.where(use, torch.full_like(sizes, float("nan")), sizes)
