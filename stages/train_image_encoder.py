"""Stage `train_image_encoder`: SwAV (or, with ``objective: nt_xent``, SimCLR's loss) on the unlabeled corpus,
or the published SwAV weights loaded strictly.

Writes ``artifacts/image_encoder.pt`` as ``{"model", "config", "step", "input_size"}`` (``input_size``: the
square size images are resized to before the network; 224 for published weights) and a health report: k-NN
and nearest-centroid accuracy of its features on the labelled eval frames (val frames = bank, test frames
= queries), beside the same figures for a randomly initialised encoder. Training resumes from
``<out>.resume`` (written every 100 steps, removed when done). Its timings (``seconds``, ``images_per_s``) go to
``<report>.timings.json`` (``pipeline.timings``), so the report is the same on every run.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import load_model, read_resume, save_checkpoint
from models.image_encoder import ImageEncoder, ImageEncoderConfig, load_encoder
from pipeline import metrics, swav, timings
from pipeline.devices import pick_device
from pipeline.image_store import clip_groups, labels_of, read_images
from pipeline.params import ImageEncoderParams

log = logging.getLogger(__name__)


def recipe(p: ImageEncoderParams) -> swav.SwavRecipe:
    return swav.SwavRecipe(steps=p.steps, batch=p.batch, lr=p.lr, weight_decay=p.weight_decay,
                           temperature=p.temperature, epsilon=p.epsilon, sinkhorn_iters=p.sinkhorn_iters,
                           crop_size=p.crop_size, small_crops=p.small_crops, small_size=p.small_size,
                           freeze_prototypes_steps=p.freeze_prototypes_steps, seed=p.seed, jitter=p.jitter,
                           hue_p=p.hue_p, grey_p=p.grey_p, queue=p.queue,
                           group_size=p.group_size, amp=p.amp, objective=p.objective,
                           nce_temperature=p.nce_temperature,
                           hard_negatives=p.hard_negatives, bg_swap=p.bg_swap,
                           min_foreground=p.min_foreground, crop_scale=p.crop_scale, rotate=p.rotate,
                           fg_zoom=p.fg_zoom, texture_negatives=p.texture_negatives)


def health(model: ImageEncoder, size: int, images: Path, k: int) -> dict:
    """k-NN (k, cosine) and nearest-centroid accuracy: val eval frames as bank, test eval frames as queries."""
    frames, table = read_images(images, "eval")
    split = np.array(table.column("split").to_pylist(), dtype=object)
    if not ((split == "val").any() and (split == "test").any()):
        return {"knn_acc": None, "centroid_acc": None, "bank": int((split == "val").sum()),
                "queries": int((split == "test").sum())}
    labels, classes = labels_of(table)
    feats = swav.embed(model, frames, size=size)
    y = torch.as_tensor(labels)
    bank, query = torch.as_tensor(split == "val"), torch.as_tensor(split == "test")
    knn = metrics.knn_predict(feats[bank], y[bank], feats[query], k, len(classes))
    seen = torch.unique(y[bank])  # centroids of the classes that have val frames
    cents = metrics.centroids(feats[bank], torch.searchsorted(seen, y[bank]), len(seen))
    pred = seen[metrics.nearest_centroid(feats[query], cents)]
    return {"knn_acc": round(metrics.accuracy(knn, y[query]), 4),
            "centroid_acc": round(metrics.accuracy(pred, y[query]), 4),
            "bank": int(bank.sum()), "queries": int(query.sum()), "classes": classes}


@torch.no_grad()
def projection_spread(model: ImageEncoder, size: int, images: Path, n: int = 512) -> float | None:
    """Mean over dimensions of the std over up to ``n`` train images of the unit SwAV embedding: near 0
    means collapse (every image gets the same embedding); no labels needed."""
    frames, _ = read_images(images, "train")
    pick = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    x = torch.nn.functional.interpolate(swav.to_float(frames[pick]), size=(size, size), mode="bilinear")
    x = x.to(next(model.parameters()).device)
    model.eval()
    spread = float(model.project(model(swav.normalise(x))).std(0).mean()) if len(pick) > 1 else 0.0
    return round(spread, 4) if np.isfinite(spread) else None  # None: the weights diverged


class Throughput:
    """Training images/s from the step times ``on_step`` reports, after the first (warm-up) step."""

    def __init__(self, batch: int) -> None:
        self.batch, self.times = batch, [time.perf_counter()]

    def tick(self) -> None:
        self.times.append(time.perf_counter())

    def images_per_s(self) -> float | None:
        steady = self.times[1:] if len(self.times) > 2 else self.times
        return round(self.batch * (len(steady) - 1) / (steady[-1] - steady[0]), 1) if len(steady) > 1 else None


def _train(p: ImageEncoderParams, images: Path, out: Path,
           device: torch.device) -> tuple[ImageEncoder, int, float | None]:
    """Train on ``device``; return (model, input size, training images/s)."""
    cfg = ImageEncoderConfig(stem=p.stem, width=p.width, hidden_dim=p.hidden_dim, proj_dim=p.proj_dim,
                             n_prototypes=p.n_prototypes)
    resume = out.with_name(out.name + ".resume")
    torch.manual_seed(p.seed)
    model, start = ImageEncoder(cfg), 0
    blob = read_resume(resume)
    if blob is not None:
        model = load_model(ImageEncoder, ImageEncoderConfig, blob, official_prefix="module.", config=cfg)
        start = int(blob["step"])
        log.info("resuming SwAV from step %d (%s)", start, resume)
    model = model.to(device)
    frames, table = read_images(images, "train")
    frames = np.ascontiguousarray(frames)
    groups = clip_groups(table.column("video_id").to_pylist())

    speed = Throughput(p.batch)

    def keep(step: int, loss: float) -> None:  # loss is a float: the step has finished on the device
        speed.tick()
        if step % 100 == 0 and step < p.steps:
            save_checkpoint(resume, model, cfg, step=step, input_size=p.crop_size)

    swav.train(model, frames, recipe(p), start_step=start, on_step=keep, groups=groups)
    save_checkpoint(out, model, cfg, step=p.steps, input_size=p.crop_size)
    resume.unlink(missing_ok=True)
    return model.eval(), p.crop_size, speed.images_per_s()


def run(p: ImageEncoderParams, *, images: Path, out: Path, report: Path) -> dict:
    """Train (or load ``p.checkpoint``), write ``out`` and the health ``report``; return the report."""
    torch.set_num_threads(p.threads)
    device = pick_device(p.device)
    out, report = Path(out), Path(report)
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if p.checkpoint:
        model, size = load_encoder(p.checkpoint)
        save_checkpoint(out, model, model.config, step=0, input_size=size)
        model, trained, speed = model.to(device), False, None
    else:
        model, size, speed = _train(p, images, out, device)
        trained = True
    seconds = round(time.time() - t0, 1)
    torch.manual_seed(p.seed)
    baseline = health(ImageEncoder(model.config).eval().to(device), size, images, p.knn_k)
    summary = {"trained": trained, "objective": p.objective if trained else None,
               "steps": p.steps if trained else 0, "seconds": seconds,
               "images_per_s": speed, "device": device.type, "amp": p.amp and device.type == "cuda",
               "k": p.knn_k,
               "input_size": size, "feature_dim": model.out_dim, **health(model, size, images, p.knn_k),
               "projection_spread": projection_spread(model, size, images),
               "random_init": {k: baseline[k] for k in ("knn_acc", "centroid_acc")}}
    timings.write_report(summary, report, ("seconds", "images_per_s"))
    return summary
