"""Stage `train_evaluator`: the classifier (and drawn-size regressor) that the `evaluate` stage measures with.

The paper fine-tuned its own Inception on VGGSound for FID and IS; here a narrow ResNet
(models/evaluator.py) learns the labelled frames of the train split (pipeline/evaluator_data.py: labels and
sizes from events.parquet on the built-in world, clip labels on real data) with flips, small crops and
low-resolution round trips, and with ``composites`` (world) one-source frames that get another class's
foreground pasted beside their own (``pipeline.composites``: two-source scenes, which the corpus has few of).
Loss: cross-entropy (soft target 0.5 / 0.5 on frames showing two classes, with
``two_source``) + ``size_weight`` x squared error of the size head (on frames whose size is known). AdamW
with a one-epoch warm-up, then cosine decay; the last epoch is kept.

Writes ``artifacts/evaluator.pt`` (``{"model", "config", "step", "classes", "has_size", "test_acc"}``),
``reports/evaluator.json`` (test accuracy on real frames = ``evaluator_acc``, per-class accuracy, size
error, ``two_source_top2``: the share of held-out two-source frames whose top-2 classes, ``none`` left out,
are both drawn classes: the mixing control's statistic on real scenes) and ``reports/evaluator_curve.csv``
(one row per epoch: the DVC plot of the training curve). The run's seconds, in all and per epoch, go to
``reports/evaluator.timings.json`` (``pipeline.timings``): the report and the curve are the same on every run.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from models.checkpoint import save_checkpoint
from models.evaluator import Evaluator, EvaluatorConfig
from pipeline import eval_metrics, evaluator_data, timings
from pipeline.atomic import write_text
from pipeline.evaluator_data import Frames, to_unit
from pipeline.params import EvaluatorParams

log = logging.getLogger(__name__)


def loss_fn(out: tuple, labels: torch.Tensor, second: torch.Tensor, sizes: torch.Tensor,
            size_weight: float) -> torch.Tensor:
    """Cross-entropy of the logits against the target rows (1 on ``labels [B]``; 0.5 on ``labels`` and 0.5 on
    ``second [B]`` where ``second`` >= 0) + ``size_weight`` x mean squared size error over the known sizes.
    The soft cross-entropy is written as the mean of the two hard ones, which it equals: a batch of
    one-class frames then gives exactly (bit for bit) the plain cross-entropy."""
    other = torch.where(second >= 0, second, labels)
    loss = 0.5 * (F.cross_entropy(out[0], labels) + F.cross_entropy(out[0], other))
    known = torch.isfinite(sizes)
    if size_weight and bool(known.any()):
        loss = loss + size_weight * F.mse_loss(out[1][known], sizes[known])
    return loss


@torch.no_grad()
def logits_and_sizes(model: Evaluator, frames: Frames, batch: int = 256) -> tuple[torch.Tensor, np.ndarray]:
    """(logits [N, C], predicted size [N]) of ``frames`` in eval mode."""
    model.eval()
    logits, sizes = [torch.zeros(0, model.config.n_classes)], [np.zeros(0, np.float32)]
    for s in range(0, len(frames), batch):
        out = model(to_unit(frames.images[s:s + batch]))
        logits.append(out.logits)
        sizes.append(out.size.numpy())
    return torch.cat(logits), np.concatenate(sizes)


def predict(model: Evaluator, frames: Frames) -> tuple[np.ndarray, np.ndarray]:
    """(predicted class [N], predicted size [N]) of ``frames`` in eval mode."""
    logits, sizes = logits_and_sizes(model, frames)
    return logits.argmax(1).numpy(), sizes


def two_source_top2(model: Evaluator, frames: Frames, classes: list[str]) -> float:
    """Share of two-source ``frames`` whose two highest logits (``none`` left out) are their two classes
    (NaN for none)."""
    logits, _ = logits_and_sizes(model, frames)
    none = classes.index(evaluator_data.NONE) if evaluator_data.NONE in classes else None
    return eval_metrics.mix_top2(logits, torch.from_numpy(frames.labels), torch.from_numpy(frames.second), none)


def scores(model: Evaluator, frames: Frames, classes: list[str]) -> dict:
    """Accuracy, size MAE (frames with a known size) and per-class accuracy of ``frames``."""
    pred, size = predict(model, frames)
    known = np.isfinite(frames.sizes)
    per_class = {c: round(float((pred[frames.labels == i] == i).mean()), 4)
                 for i, c in enumerate(classes) if (frames.labels == i).any()}
    return {"acc": round(float((pred == frames.labels).mean()), 4) if len(frames) else float("nan"),
            "size_mae": round(float(np.abs(size[known] - frames.sizes[known]).mean()), 4) if known.any()
            else float("nan"), "frames": len(frames), "per_class": per_class}


def _lr(step: int, total: int, warmup: int, base: float) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    return 0.5 * base * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def train(p: EvaluatorParams, data: evaluator_data.LabelledData) -> tuple[Evaluator, list[dict]]:
    """Train the evaluator; return it and the per-epoch curve."""
    torch.manual_seed(p.seed)
    gen = torch.Generator().manual_seed(p.seed)
    cfg = EvaluatorConfig(n_classes=len(data.classes), width=p.width, layers=p.layers, image_size=p.image_size,
                          stem=p.stem, pool=p.pool)
    model = Evaluator(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    tr = data.train
    none = data.classes.index(evaluator_data.NONE) if evaluator_data.NONE in data.classes else None
    if p.composites > 0 and tr.masks is None:
        log.warning("evaluator.composites: no foreground masks (real data has no events): trained without composites")
    per_epoch = max(1, len(tr) // p.batch)
    total, step, curve, t0 = per_epoch * p.epochs, 0, [], time.time()
    for epoch in range(p.epochs):
        model.train()
        order = torch.randperm(len(tr), generator=gen).numpy()
        losses, hits = [], 0
        for b in tqdm(range(per_epoch), desc=f"evaluator epoch {epoch + 1}/{p.epochs}", unit="batch", leave=False):
            idx = np.sort(order[b * p.batch:(b + 1) * p.batch])
            x, size = to_unit(tr.images[idx]), torch.from_numpy(tr.sizes[idx])
            labels, second = torch.from_numpy(tr.labels[idx]), torch.from_numpy(tr.second[idx])
            if p.composites > 0 and tr.masks is not None:
                x, second, size = evaluator_data.composite(x, torch.from_numpy(tr.masks[idx]), labels, second, size,
                                                           p=p.composites, none=none, gen=gen)
            x, size = evaluator_data.augment(x, size, crop=p.crop, zoom_out=p.zoom_out, rotate=p.rotate,
                                             lowres=p.lowres, gen=gen)
            for group in opt.param_groups:
                group["lr"] = _lr(step, total, per_epoch, p.lr)
            out = model(x)
            loss = loss_fn(out, labels, second, size, p.size_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            losses.append(float(loss.detach()))
            pred = out.logits.argmax(1)
            hits += int(((pred == labels) | (pred == second)).sum())  # either class of a two-source frame
        val = scores(model, data.val, data.classes)
        curve.append({"epoch": epoch + 1, "step": step, "seconds": round(time.time() - t0, 1),
                      "train_loss": round(float(np.mean(losses)), 5),
                      "train_acc": round(hits / (per_epoch * p.batch), 4) if len(tr) >= p.batch else float("nan"),
                      "val_acc": val["acc"], "val_size_mae": val["size_mae"]})
        log.info("evaluator epoch %d: %s", epoch + 1, curve[-1])
    return model, curve


def run(p: EvaluatorParams, *, images: Path, videos: Path, events: Path, out: Path, report: Path,
        curve_csv: Path) -> dict:
    """Label, train, test on real frames; write the checkpoint, the report and the curve; return the report."""
    torch.set_num_threads(p.threads)
    t0 = time.time()
    data = evaluator_data.load(Path(images), Path(videos), Path(events), none_class=p.none_class,
                               max_frames=p.max_frames, seed=p.seed, two_source=p.two_source,
                               masks=p.composites > 0)
    if len(data.train) < p.batch:
        log.warning("only %d labelled train frames, fewer than one batch of %d: one short batch per epoch",
                    len(data.train), p.batch)
    model, curve = train(p, data)
    test = scores(model, data.test, data.classes)
    top2 = two_source_top2(model, data.two_source, data.classes)
    has_size = bool(np.isfinite(data.train.sizes).any())
    seconds = round(time.time() - t0, 1)
    save_checkpoint(out, model, model.config, step=curve[-1]["step"] if curve else 0, classes=data.classes,
                    has_size=has_size, test_acc=test["acc"])
    summary = {"evaluator_acc": test["acc"], "evaluator_size_mae": test["size_mae"], "test_frames": test["frames"],
               "train_frames": len(data.train), "classes": data.classes, "labels_from": data.source,
               "two_source_train_frames": int((data.train.second >= 0).sum()),
               "two_source_top2": round(top2, 4),
               "two_source_frames": len(data.two_source), "two_source_from": "held-out train clips",
               "seconds": seconds, "per_class_acc": test["per_class"]}
    timings.write_report({**summary, "epoch_seconds": [r["seconds"] for r in curve]}, report,
                         ("seconds", "epoch_seconds"))
    cols = [c for c in curve[0] if c != "seconds"] if curve else ["epoch"]
    rows = [",".join(cols)] + [",".join(str(r[c]) for c in cols) for r in curve]
    write_text(Path(curve_csv), "\n".join(rows) + "\n")
    log.info("evaluator: test accuracy %s on %d real test frames, size MAE %s, two-source top-2 %.4f on %d held-out "
             "frames, %.0f s", test["acc"], test["frames"], test["size_mae"], top2, len(data.two_source), seconds)
    return summary
