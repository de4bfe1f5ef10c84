"""SwAV training of the image encoder (Caron et al. 2020) on an unlabeled uint8 image corpus.

Each step: multi-crop views of a batch (2 global crops + ``small_crops`` low-resolution ones), prototype
scores of every view, Sinkhorn-Knopp codes of the global views (equal partition over the batch), and the
swapped-prediction loss: every view predicts the codes of each *other* global view. Prototypes are frozen
for the first steps and renormalised to unit length after each step. Features for k-NN / the generator are
the encoder's average-pool output, L2-normalised (:func:`embed`).

Two options for video-frame corpora whose frames share their clip's static scene (the built-in world):
``min_foreground`` trains only on frames where something moved in (:mod:`pipeline.foreground`), and
``bg_swap`` pastes each view's foreground onto another clip's scene, so two views agree only on what moved.
SwAV's codes collapsed under the swap on the world (README, "Image encoder"), so ``objective: nt_xent``
replaces the swapped prediction by SimCLR's NT-Xent between the two global views (Chen et al. 2020);
encoder, projection head and checkpoint format stay the same. ``texture_negatives`` adds, for each frame
with a textured foreground, that frame with its foreground pixels shuffled as one more negative: same
colours, outline, size and place, so only the texture tells it from the frame's own views.
"""
from __future__ import annotations

import logging
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from models.image_encoder import ImageEncoder
from pipeline.devices import autocast, to_device
from pipeline.foreground import (THRESHOLD, clip_scenes, foreground, keep_foreground, shuffle_foreground,
                                 swap_background, to_float)
from pipeline.image_store import clip_runs
from pipeline.augment import box_crop, colour_jitter, hue_shuffle, mask_boxes, random_resized_crop
from pipeline.preprocess import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SwavRecipe:
    """The training knobs of :func:`train` (see ``params.ImageEncoderParams`` for the defaults)."""

    steps: int
    batch: int
    lr: float
    weight_decay: float
    temperature: float
    epsilon: float
    sinkhorn_iters: int
    crop_size: int
    small_crops: int
    small_size: int
    freeze_prototypes_steps: int
    seed: int
    jitter: float = 0.4  # brightness / contrast / saturation strength
    hue_p: float = 0.0  # chance of an RGB channel permutation per view
    grey_p: float = 0.0  # chance of grey scale per view
    queue: int = 0  # embeddings of earlier batches added to each Sinkhorn problem (0: none)
    group_size: int = 0  # frames per clip in a batch (0: images drawn independently)
    objective: str = "swav"  # swav: swapped prediction | nt_xent: SimCLR's loss on the two global views
    nce_temperature: float = 0.2  # NT-Xent temperature
    hard_negatives: float = 0.0  # NT-Xent: negatives weighted by exp(beta x logit) (0: plain NT-Xent)
    bg_swap: float = 0.0  # chance per view of pasting the frame's foreground onto another clip's scene
    min_foreground: float = 0.0  # train only on frames whose foreground covers at least this share
    crop_scale: tuple[float, float] = (0.35, 1.0)  # area range of the global crops (share of the image)
    rotate: float = 0.0  # each view turned by up to this many degrees (0: none)
    fg_zoom: float = 0.0  # chance per image that its second global view zooms onto the foreground's box
    texture_negatives: bool = False  # NT-Xent: each textured frame, foreground shuffled, as an extra negative
    amp: bool = False  # bf16 autocast of the forward passes when the model is on CUDA (ignored on CPU)


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float, iters: int) -> Tensor:
    """Soft codes ``Tensor[B, K]`` (rows sum to 1) from prototype scores ``Tensor[B, K]``: the entropic
    optimal transport with equal mass per prototype (SwAV's ``distributed_sinkhorn``, one process)."""
    q = torch.exp((scores - scores.max()) / epsilon).t()  # [K, B]; the shift cancels out
    q /= q.sum()
    k, b = q.shape
    for _ in range(iters):
        q /= q.sum(dim=1, keepdim=True) * k
        q /= q.sum(dim=0, keepdim=True) * b
    return (q * b).t()


def swapped_loss(scores: list[Tensor], n_global: int, temperature: float, epsilon: float, iters: int,
                 queued: list[Tensor] | None = None) -> Tensor:
    """SwAV loss over views ``scores[v]`` ``Tensor[B, K]``; views 0..n_global-1 give the codes. ``queued[i]``
    ``[Q, K]``: scores of earlier batches' view-i embeddings, added to the Sinkhorn problem (not the loss)
    so that small batches still get a well-spread assignment. Scores are cast to float32 (autocast gives
    bf16), so codes and log-softmax are computed in full precision."""
    scores = [s.float() for s in scores]
    total = scores[0].new_zeros(())
    b = scores[0].shape[0]
    for i in range(n_global):
        block = scores[i].detach() if queued is None else torch.cat([scores[i].detach(), queued[i]])
        q = sinkhorn(block, epsilon, iters)[:b]
        for v in (v for v in range(len(scores)) if v != i):
            total = total - torch.mean(torch.sum(q * F.log_softmax(scores[v] / temperature, dim=1), dim=1))
    return total / (n_global * (len(scores) - 1))


def nt_xent(z1: Tensor, z2: Tensor, temperature: float, hard_negatives: float = 0.0,
            extra: Tensor | None = None) -> Tensor:
    """SimCLR's NT-Xent (Chen et al. 2020) of two views ``z1, z2: Tensor[B, D]`` of the same B images:
    each of the 2B rows must pick its other view among the 2B - 1 other rows by cosine / ``temperature``
    (chance level: log(2B - 1)); scalar, averaged over the 2B rows, computed in float32.

    ``hard_negatives`` = beta > 0 weights each row's negatives by ``exp(beta * logit)``, rescaled to mean 1
    (Robinson et al. 2021, without their debiasing): the negatives most like the row, here frames of the
    same colour, count most, so the encoder must tell them apart by shape and texture.

    ``extra`` ``Tensor[M, D]``: more negatives for every row (here texture negatives, frames whose
    foreground was shuffled: :func:`pipeline.foreground.shuffle_foreground`); they are never a target."""
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"expected two [B, D] views of one shape, got {list(z1.shape)} and {list(z2.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = (z @ z.t() / temperature).fill_diagonal_(float("-inf"))
    b = z1.shape[0]
    target = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(sim.device)
    if extra is not None and len(extra):
        sim = torch.cat([sim, z @ F.normalize(extra.float(), dim=1).t() / temperature], dim=1)
    if hard_negatives > 0:
        negative = torch.ones_like(sim, dtype=torch.bool)
        negative[torch.arange(2 * b), torch.arange(2 * b)] = False
        negative[torch.arange(2 * b), target] = False
        weight = torch.log_softmax((hard_negatives * sim).masked_fill(~negative, float("-inf")), dim=1)
        sim = sim + (weight + math.log(sim.shape[1] - 2)).masked_fill(~negative, 0.0).detach()
    return F.cross_entropy(sim, target)


def normalise(x01: Tensor) -> Tensor:
    """Images in [0, 1] ``Tensor[B, 3, H, W]`` -> ImageNet mean/std normalised."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x01.dtype, device=x01.device).view(1, 3, 1, 1)
    return (x01 - mean) / std


def load_batch(images: np.ndarray, idx: np.ndarray, device: torch.device) -> Tensor:
    """uint8 rows ``idx`` of ``images`` [N, H, W, 3] (read on the CPU, moved as uint8) -> float
    ``Tensor[B, 3, H, W]`` in [0, 1] on ``device``."""
    return to_float(to_device(torch.from_numpy(np.array(images[idx])), device))


def views(x01: Tensor, r: SwavRecipe, gen: torch.Generator,
          source: Callable[[], Tensor] | None = None, boxes: Tensor | None = None) -> list[Tensor]:
    """Multi-crop: 2 global crops (area ``r.crop_scale``, default 35-100%) and ``small_crops`` small ones
    (10-40%; none for ``nt_xent``), turned up to ``r.rotate`` degrees, colour-jittered, channel-shuffled /
    greyed, normalised;
    ``Tensor[B, 3, H, W]`` in [0, 1] -> list of ``Tensor[B, 3, s, s]``. ``source()``, when given, draws
    the image each view is cropped from (a background-swapped copy of ``x01``). With ``r.fg_zoom`` and
    ``boxes`` (``Tensor[B, 4]``, :func:`pipeline.augment.mask_boxes` of the foreground), the second global
    view of a share ``fg_zoom`` of the images is a zoom onto the foreground instead (a local-to-global pair:
    the whole frame must say what its source looks like up close)."""
    src = source or (lambda: x01)
    small = r.small_crops if r.objective == "swav" else 0
    out = [random_resized_crop(src(), r.crop_size, r.crop_scale, gen, rotate=r.rotate) for _ in range(2)]
    if r.fg_zoom > 0 and boxes is not None:
        zoom = (torch.rand(len(x01), generator=gen) < r.fg_zoom).view(-1, 1, 1, 1).to(x01.device)
        out[1] = torch.where(zoom, box_crop(src(), boxes, r.crop_size, gen), out[1])
    out += [random_resized_crop(src(), r.small_size, (0.1, 0.4), gen, rotate=r.rotate) for _ in range(small)]
    return [normalise(hue_shuffle(colour_jitter(v, r.jitter, gen), r.hue_p, r.grey_p, gen)) for v in out]


def _lr(step: int, r: SwavRecipe) -> float:
    warm = max(1, r.steps // 20)
    if step < warm:
        return r.lr * (step + 1) / warm
    return r.lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, r.steps - warm)))


def batch_indices(groups: np.ndarray | None, r: SwavRecipe, gen: torch.Generator, n: int) -> np.ndarray:
    """Sorted indices of one batch: ``r.batch`` images drawn independently or, with ``r.group_size`` and
    ``groups`` (int [N], the clip of each image), ``r.batch // r.group_size`` clips with ``group_size``
    frames each. Frames of one clip share their scene, so the equal partition of the Sinkhorn codes over a
    grouped batch must separate them by what changes between them (the sources), not by the scene."""
    if not r.group_size or groups is None:
        return np.sort(torch.randint(0, n, (r.batch,), generator=gen).numpy())
    starts, ends = clip_runs(groups)
    clips = torch.randint(0, len(starts), (max(1, r.batch // r.group_size),), generator=gen).numpy()
    u = torch.rand(len(clips), r.group_size, generator=gen).numpy()
    idx = starts[clips, None] + (u * (ends - starts)[clips, None]).astype(int)
    return np.sort(idx.ravel())


def train(model: ImageEncoder, images: np.ndarray, r: SwavRecipe, start_step: int = 0,
          on_step: Callable[[int, float], None] | None = None, groups: np.ndarray | None = None) -> int:
    """Train ``model`` in place on uint8 ``images`` [N, H, W, 3] from ``start_step`` to ``r.steps``;
    ``groups`` int [N] (contiguous runs: the clip of each image) enables clip-grouped batches, the
    foreground filter and the background swap; ``on_step(step, loss)`` is called after each step. Runs on
    the model's device; the random draws come from a CPU generator (the same crops on any device).
    Returns the last step count."""
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(r.seed + start_step)
    opt = torch.optim.SGD(model.parameters(), lr=r.lr, momentum=0.9, weight_decay=r.weight_decay)
    images, groups, scenes = foreground_corpus(images, groups, r, device)
    model.train()
    t0 = time.time()
    queue = torch.zeros(2, r.queue, model.config.proj_dim, device=device)
    for step in range(start_step, r.steps):
        idx = batch_indices(groups, r, gen, len(images))
        x = load_batch(images, idx, device)
        swap, boxes = None, None
        if scenes is not None:
            own = torch.from_numpy(np.asarray(groups[idx], np.int64))
            mask = foreground(x, scenes[own.to(device)], THRESHOLD)
            boxes = mask_boxes(mask) if r.fg_zoom > 0 else None
            if r.bg_swap > 0:
                swap = lambda: swap_background(x, mask, scenes, own, r.bg_swap, gen)  # noqa: E731
        with autocast(device, r.amp):
            zs, scores = zip(*(model.swav_forward(v) for v in views(x, r, gen, swap, boxes)))
            extra = None
            if r.texture_negatives and scenes is not None:
                extra = texture_negatives(model, x, scenes, own, mask, r, gen)
        loss, queue = _loss(model, list(zs), list(scores), queue, r, warm=step - start_step >= r.queue // r.batch,
                            extra=extra)
        for group in opt.param_groups:
            group["lr"] = _lr(step, r)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if step < r.freeze_prototypes_steps:
            model.prototypes.weight.grad = None
        if torch.isfinite(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf"))):  # norm only
            opt.step()
        else:  # a non-finite gradient (seen with tiny widths): skip the update, keep the weights finite
            log.warning("swav step %d: non-finite gradient, update skipped", step + 1)
        model.normalize_prototypes_()
        if on_step is not None:
            on_step(step + 1, float(loss.detach()))
        if (step + 1) % 50 == 0:
            log.info("%s step %d/%d loss %.3f (%.2f s/step)", r.objective, step + 1, r.steps,
                     float(loss.detach()), (time.time() - t0) / (step + 1 - start_step))
    return r.steps


@contextmanager
def _frozen_bn_stats(model: torch.nn.Module) -> Iterator[None]:
    """Forward passes inside keep every BatchNorm's running statistics as they are (momentum 0)."""
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, momentum in zip(norms, saved):
            m.momentum = momentum


def texture_negatives(model: ImageEncoder, x01: Tensor, scenes: Tensor, own: Tensor, mask: Tensor,
                      r: SwavRecipe, gen: torch.Generator) -> Tensor | None:
    """Projections ``Tensor[M, D]`` of the texture negatives of a batch ``x01`` ``Tensor[B, 3, H, W]``:
    each frame whose foreground has a texture (:func:`pipeline.foreground.shuffle_foreground` on the
    ungrown foreground against its clip's scene ``scenes[own]``), shuffled, background-swapped like the
    views (``mask``: the grown foreground), cropped and jittered like a global view; None when fewer than two
    frames have one. Their forward pass leaves the BatchNorm running statistics alone (shuffled frames are not
    the images the encoder will embed)."""
    core = foreground(x01, scenes[own.to(x01.device)], THRESHOLD, grow=0)
    shuffled, ok = shuffle_foreground(x01, core, gen)
    if int(ok.sum()) < 2:  # BatchNorm in training mode needs two images
        return None
    src = swap_background(shuffled, mask, scenes, own, r.bg_swap, gen)[ok]
    v = random_resized_crop(src, r.crop_size, r.crop_scale, gen, rotate=r.rotate)
    v = normalise(hue_shuffle(colour_jitter(v, r.jitter, gen), r.hue_p, r.grey_p, gen))
    with _frozen_bn_stats(model):
        return model.swav_forward(v)[0]


def _loss(model: ImageEncoder, zs: list[Tensor], scores: list[Tensor], queue: Tensor, r: SwavRecipe,
          warm: bool, extra: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(loss, updated queue) of one step: NT-Xent of the two global embeddings ``zs[0..1]`` ``[B, D]``, or
    SwAV's swapped prediction over every view's ``scores`` ``[B, K]`` with the ``queue`` ``[2, Q, D]`` of
    earlier global embeddings in each Sinkhorn problem once ``warm`` (the queue has been filled). ``extra``
    ``[M, D]``: NT-Xent's texture negatives (:func:`texture_negatives`)."""
    if r.objective == "nt_xent":
        return nt_xent(zs[0], zs[1], r.nce_temperature, r.hard_negatives, extra), queue
    queued = [queue[i] @ model.prototypes.weight.detach().t() for i in range(2)] if r.queue and warm else None
    loss = swapped_loss(scores, 2, r.temperature, r.epsilon, r.sinkhorn_iters, queued)
    if r.queue:
        queue = torch.cat([torch.stack([z.detach().float() for z in zs[:2]]), queue], dim=1)[:, : r.queue]
    return loss, queue


def foreground_corpus(images: np.ndarray, groups: np.ndarray | None, r: SwavRecipe,
                      device: torch.device) -> tuple[np.ndarray, np.ndarray | None, Tensor | None]:
    """(images, groups, scenes) to train on: with ``r.min_foreground``, only the frames whose foreground
    covers that share (``groups`` keep their clip numbers); with ``r.bg_swap``, ``r.fg_zoom`` or
    ``r.texture_negatives``, every clip's median scene ``Tensor[G, 3, H, W]`` in [0, 1] on ``device``
    (else None). All need ``groups``."""
    if r.bg_swap <= 0 and r.min_foreground <= 0 and r.fg_zoom <= 0 and not r.texture_negatives:
        return images, groups, None
    if groups is None:
        raise ValueError("image_encoder.bg_swap, min_foreground, fg_zoom and texture_negatives need the clip "
                         "of each frame (a video_id column in the image corpus); turn them off for this corpus")
    scenes = clip_scenes(images, groups)
    if r.min_foreground > 0:
        keep = keep_foreground(images, groups, r.min_foreground, param="image_encoder.min_foreground",
                               scenes=scenes)
        images, groups = np.ascontiguousarray(images[keep]), groups[keep]
    use = r.bg_swap > 0 or r.fg_zoom > 0 or r.texture_negatives
    return images, groups, to_float(to_device(torch.from_numpy(scenes), device)) if use else None


@torch.no_grad()
def embed(model: ImageEncoder, images: np.ndarray | Tensor, batch: int = 256, size: int | None = None) -> Tensor:
    """L2-normalised features ``Tensor[N, out_dim]`` (on the CPU) of uint8 images [N, H, W, 3] (resized to
    ``size`` bilinearly when given), in eval mode and float32, on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(images), batch):
        x = to_float(to_device(torch.from_numpy(np.array(images[start:start + batch])), device))
        if size is not None and x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        out.append(F.normalize(model(normalise(x)), dim=1).cpu())
    return torch.cat(out) if out else torch.zeros(0, model.out_dim)
