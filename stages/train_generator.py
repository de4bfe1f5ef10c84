"""Stage `train_generator`: IC-GAN on the BigGAN backbone, conditioned on the frozen image encoder's features.

Writes ``artifacts/generator.pt`` (``{"model": EMA G, "config", "step", ...}``, loadable by
``models.biggan_io.load_generator``), ``reports/generator/metrics.json`` (class-accuracy curve; the timings go to
``reports/generator.timings.json``),
``reports/generator/fid.csv`` (``step,fid``: every ``fid_every`` steps and at the end, FID of G_ema's images
for ``fid_images`` train instances against those real images, on the image encoder's features; a DVC plot)
and sample grids ``reports/generator/step_XXXXXX.png`` / ``samples.png`` (each row: a real test frame, then
G_ema's images for its feature and several noises). ``generator.checkpoint`` naming a published folder or
one of our files skips training. Class accuracy: the generated image's class is the nearest class centroid
(val eval frames) in the encoder's feature space; it should equal the conditioning test frame's class.
Training resumes from ``<out>.resume`` and stops after ``steps`` or ``minutes``, whichever comes first; a
stop by ``minutes`` is logged as a warning and the summary says which (``stopped_by``), since its weights
then depend on the machine's speed.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.utils import save_image

from models.biggan import DiscriminatorConfig, Generator, GeneratorConfig, zca
from models.biggan_io import load_generator
from models.checkpoint import read_resume, save_checkpoint, save_file
from models.image_encoder import ImageEncoder, load_encoder
from pipeline.atomic import write_json
from pipeline import composites, foreground, icgan, metrics, swav, timings
from pipeline.devices import amp_on, pick_device
from pipeline.fid import EncoderFeatures, FeatureConsistency, FidCurve, write_csv
from pipeline.image_store import clip_groups, labels_of, read_images
from pipeline.params import GeneratorParams

log = logging.getLogger(__name__)


def configs(p: GeneratorParams, feat_dim: int) -> tuple[GeneratorConfig, DiscriminatorConfig]:
    """The narrow G and D of ``p`` for features of size ``feat_dim`` (instance-conditioned only)."""
    common = dict(n_classes=1, class_cond=False, instance_cond=True, feat_dim=feat_dim,
                  centre_features=p.centre_features, whiten_features=p.whiten_features)
    g = GeneratorConfig(ch=p.g_ch, dim_z=p.dim_z, resolution=p.resolution, attn=p.attn, hier=True,
                        shared_dim=16, shared_dim_feat=p.shared_dim_feat,
                        feature_first=p.feature_first, **common)
    return g, DiscriminatorConfig(ch=p.d_ch, resolution=p.resolution, attn=p.attn, **common)


def recipe(p: GeneratorParams) -> icgan.GanRecipe:
    return icgan.GanRecipe(batch=p.batch, g_lr=p.g_lr, d_lr=p.d_lr, d_steps=p.d_steps, betas=p.betas,
                           augment=p.augment, ema_decay=p.ema_decay, ema_start=p.ema_start, amp=p.amp,
                           feature_weight=p.feature_weight, neighbour_mean=p.neighbour_mean,
                           composites=p.composites)


class ClassCheck:
    """Conditioning test frames, their labels, fixed noise and the val class centroids."""

    def __init__(self, encoder: ImageEncoder, size: int, images: Path, n: int, dim_z: int, seed: int) -> None:
        frames, table = read_images(images, "eval")
        split = np.array(table.column("split").to_pylist(), dtype=object)
        labels, self.classes = labels_of(table) if table.num_rows else (np.zeros(0, np.int64), [])
        val, test = np.flatnonzero(split == "val"), np.flatnonzero(split == "test")
        # Usable when every class has val frames (its centroid) and there are test frames to condition on.
        self.ok = len(test) > 0 and set(labels[val].tolist()) == set(range(len(self.classes)))
        if not self.ok:  # nothing to check with: condition the sample grid on train frames instead
            frames, val = read_images(images, "train")[0], val[:0]
            test, labels = np.arange(min(8, len(frames))), np.zeros(len(frames), np.int64)
        test = test[np.linspace(0, len(test) - 1, min(n, len(test))).round().astype(int)]
        feats = swav.embed(encoder, frames[np.concatenate([val, test])], size=size)
        y = torch.as_tensor(labels)
        self.features = EncoderFeatures(encoder, size)
        self.feats, self.labels, self.frames = feats[len(val):], y[test], np.asarray(frames[test])
        self.z = torch.randn(len(test), dim_z, generator=torch.Generator().manual_seed(seed))
        self.cents = metrics.centroids(feats[: len(val)], y[val], len(self.classes)) if self.ok else None
        self.real_acc = (round(metrics.accuracy(metrics.nearest_centroid(self.feats, self.cents), self.labels), 4)
                         if self.ok else None)

    def classify(self, images: Tensor) -> Tensor:
        """Nearest-centroid class ``[N]`` of images ``[N, 3, R, R]`` in [-1, 1]."""
        f = torch.cat([F.normalize(self.features(images[s:s + 128]), dim=1).cpu() for s in range(0, len(images), 128)])
        return metrics.nearest_centroid(f, self.cents)

    def accuracy(self, G: Generator) -> float | None:
        """Share of test frames whose generated image has their class (None without labelled frames)."""
        if not self.ok:
            return None
        return round(metrics.accuracy(self.classify(icgan.sample(G, self.feats, self.z)), self.labels), 4)

    def grid(self, G: Generator, path: Path, noises: int = 5) -> None:
        """Save one row per class (its first test frame, then ``noises`` samples) as a PNG; without labelled
        frames one row per conditioning train frame."""
        rows = [int(np.flatnonzero(self.labels.numpy() == c)[0]) for c in range(len(self.classes))
                if bool((self.labels == c).any())] if self.ok else list(range(len(self.labels)))
        res = G.cfg.resolution
        real = icgan.to_unit(icgan.to_gan_images(self.frames[rows], res))
        z = torch.randn(len(rows) * noises, G.dim_z, generator=torch.Generator().manual_seed(1))
        fake = icgan.sample(G, self.feats[rows].repeat_interleave(noises, 0), z).cpu().view(len(rows), noises, 3, res, res)
        tiles = torch.cat([real[:, None], fake], 1).flatten(0, 1)
        tiles = F.interpolate(tiles, scale_factor=max(1, 64 // res), mode="nearest")
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image((tiles + 1) / 2, path, nrow=noises + 1, padding=2, pad_value=1.0)


def _foreground_masks(frames: np.ndarray, video_ids: list[str], p: GeneratorParams) -> tuple[np.ndarray, Tensor | None]:
    """(indices of the frames (uint8 ``[N, H, W, 3]``) whose foreground against their clip's median scene
    covers at least ``p.min_foreground`` of the frame, all of them when the rows do not come in runs per clip;
    with ``p.composites``, each kept frame's foreground as uint8 ``[K, 1, R, R]`` (255: foreground, area-resized
    to the generator's resolution), else None)."""
    every = np.arange(len(frames))
    if p.min_foreground <= 0 and p.composites <= 0:
        return every, None
    groups = clip_groups(video_ids)
    if groups is None:
        if p.composites > 0:
            raise ValueError("generator.composites needs the corpus rows grouped by clip (their median scene "
                             "finds the foreground): set it to 0 for this corpus")
        log.warning("generator.min_foreground: the corpus rows are not grouped by clip; using every frame")
        return every, None
    scenes = foreground.clip_scenes(frames, groups)
    keep = every
    if p.min_foreground > 0:
        keep = np.flatnonzero(foreground.keep_foreground(frames, groups, p.min_foreground,
                                                         param="generator.min_foreground", scenes=scenes))
    if p.composites <= 0:
        return keep, None
    masks = torch.from_numpy(composites.frame_masks(frames[keep], groups[keep], scenes=scenes))[:, None].float()
    if masks.shape[-1] != p.resolution:
        masks = F.interpolate(masks, size=(p.resolution, p.resolution), mode="area")
    return keep, masks.mul(255).round().to(torch.uint8)


def _corpus(encoder: ImageEncoder, size: int, images: Path, p: GeneratorParams
            ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """(uint8 real images [N, 3, R, R], unit features [N, D], neighbourhoods [N, k], foregrounds uint8
    [N, 1, R, R] or None: see :func:`_foreground_masks`) of the train corpus, on the CPU (features and
    neighbourhoods are computed on the encoder's device)."""
    frames, table = read_images(images, "train")
    keep, alpha = _foreground_masks(frames, table.column("video_id").to_pylist(), p)
    if len(keep) < len(frames):
        frames = np.ascontiguousarray(frames[keep])
    feats = swav.embed(encoder, frames, size=size)
    nbrs = icgan.neighbourhoods(feats.to(next(encoder.parameters()).device), p.k_neighbours).cpu()
    return icgan.to_gan_images(frames, p.resolution), feats, nbrs, alpha


def train(p: GeneratorParams, encoder: ImageEncoder, size: int, images: Path, out: Path,
          reports: Path) -> tuple[Generator, dict]:
    """Train on the encoder's device (resuming from ``<out>.resume``); return (EMA G, metrics dict)."""
    torch.manual_seed(p.seed)
    device = next(encoder.parameters()).device
    real, feats, nbrs, alpha = _corpus(encoder, size, images, p)
    g_cfg, d_cfg = configs(p, feats.shape[1])
    consistency = FeatureConsistency(encoder, size) if p.feature_weight > 0 else None
    trainer = icgan.Trainer(g_cfg, d_cfg, recipe(p), device, encoder=consistency)
    if alpha is not None:
        trainer.set_composites(alpha)
        log.info("generator.composites: %.0f%% of the rows are two-source composites (mean foreground %.0f%%)",
                 100 * p.composites, 100 * float(alpha.float().mean() / 255))
    if p.whiten_features:
        trainer.set_feature_centre(*zca(feats, p.whiten_eps, rank=p.whiten_rank))
    elif p.centre_features:
        trainer.set_feature_centre(feats.mean(0))
    log.info("IC-GAN on %s with %d threads, bf16 autocast %s", device, torch.get_num_threads(),
             "on" if amp_on(device, p.amp, cpu=True) else "off")
    check = ClassCheck(encoder, size, images, p.eval_frames, trainer.G.dim_z, p.seed)
    fid = FidCurve(check.features, read_images(images, "train")[0], p.resolution, p.fid_images, trainer.G.dim_z,
                   p.seed + 1)
    resume, curve, fids, seconds = out.with_name(out.name + ".resume"), [], [], 0.0
    blob = read_resume(resume)
    if blob is not None and blob["config"] != dataclasses.asdict(g_cfg):
        log.warning("ignoring %s: it was saved with another generator configuration", resume)
        blob = None
    if blob is not None:
        trainer.load(blob)
        curve, fids, seconds = json.loads(blob["curve"]), json.loads(blob.get("fids", "[]")), float(blob["seconds"])
        log.info("resuming IC-GAN from step %d", trainer.steps)
    gen = torch.Generator().manual_seed(p.seed + trainer.steps)
    t0, start, step_s = time.time() - seconds, trainer.steps, []
    while trainer.steps < p.steps and not (p.minutes and time.time() - t0 > 60 * p.minutes):
        ts = time.perf_counter()
        losses = trainer.step(real, feats, nbrs, gen)  # float losses: the step has finished on the device
        step_s.append(time.perf_counter() - ts)
        s = trainer.steps
        if s % p.sample_every == 0 or s == p.steps:
            acc = check.accuracy(trainer.G_ema)
            curve.append({"step": s, "seconds": round(time.time() - t0, 1), "class_acc": acc, **losses})
            check.grid(trainer.G_ema, reports / f"step_{s:06d}.png")
            log.info("IC-GAN step %d: class accuracy %s, %s", s, acc, losses)
        if p.fid_every and s % p.fid_every == 0:
            fids.append({"step": s, "fid": fid.score(trainer.G_ema)})
            write_csv(reports / "fid.csv", fids)
            log.info("IC-GAN step %d: FID %s (%d images)", s, fids[-1]["fid"], len(fid))
        if s % p.checkpoint_every == 0 and s < p.steps:
            save_file({**trainer.state(), "curve": json.dumps(curve), "fids": json.dumps(fids),
                       "seconds": time.time() - t0}, resume)
    seconds = time.time() - t0
    stopped_by = "steps" if trainer.steps >= p.steps else "minutes"
    if stopped_by == "minutes":
        log.warning("IC-GAN stopped by generator.minutes (%g) at step %d of %d (%.3f s a step): the weights depend "
                    "on this machine's speed and load; generator.minutes: 0 trains every step",
                    p.minutes, trainer.steps, p.steps, seconds / max(1, trainer.steps))
    if not curve or curve[-1]["step"] != trainer.steps:
        curve.append({"step": trainer.steps, "seconds": round(seconds, 1),
                      "class_acc": check.accuracy(trainer.G_ema)})
    if not fids or fids[-1]["step"] != trainer.steps:
        fids.append({"step": trainer.steps, "fid": fid.score(trainer.G_ema)})
    write_csv(reports / "fid.csv", fids)
    check.grid(trainer.G_ema, reports / "samples.png")
    save_checkpoint(out, trainer.G_ema, trainer.G_ema.cfg, step=trainer.steps, feature_dim=feats.shape[1],
                    encoder_input_size=size)
    resume.unlink(missing_ok=True)
    steady = step_s[1:] if len(step_s) > 1 else step_s  # the first step warms up (allocator, cuDNN)
    return trainer.G_ema, {"trained": True, "steps": trainer.steps, "steps_asked": p.steps, "stopped_by": stopped_by,
                           "seconds": round(seconds, 1),
                           "s_per_step": round(seconds / max(1, trainer.steps), 3), "resumed_at": start,
                           "images_per_s": round(p.batch * len(steady) / sum(steady), 1) if steady else None,
                           "device": device.type, "amp": amp_on(device, p.amp, cpu=True),
                           "class_acc": curve[-1]["class_acc"], "real_frames_class_acc": check.real_acc,
                           "fid": fids[-1]["fid"], "fid_images": len(fid),
                           "eval_frames": len(check.labels), "curve": curve}


def run(p: GeneratorParams, *, encoder: Path, images: Path, out: Path, reports: Path) -> dict:
    """Train (or load ``p.checkpoint``), write ``out`` and ``reports/metrics.json``; return the metrics."""
    torch.set_num_threads(p.threads)
    device = pick_device(p.device)
    out, reports = Path(out), Path(reports)
    out.parent.mkdir(parents=True, exist_ok=True)
    reports.mkdir(parents=True, exist_ok=True)
    enc, size = load_encoder(encoder)
    enc = enc.to(device)
    if p.checkpoint:
        G = load_generator(p.checkpoint)
        save_checkpoint(out, G, G.cfg, step=0)
        G = G.to(device)
        summary: dict = {"trained": False, "checkpoint": p.checkpoint, "resolution": G.cfg.resolution}
        if G.cfg.feat_dim == enc.out_dim:
            check = ClassCheck(enc, size, images, p.eval_frames, G.dim_z, p.seed)
            summary["class_acc"] = check.accuracy(G)
            check.grid(G, reports / "samples.png")
            fid = FidCurve(check.features, read_images(images, "train")[0], G.cfg.resolution, p.fid_images,
                           G.dim_z, p.seed + 1)
            summary["fid"] = fid.score(G)
        write_csv(reports / "fid.csv", [{"step": 0, "fid": summary.get("fid")}])
    else:
        _, summary = train(p, enc, size, images, out, reports)
    write_metrics(summary, reports)
    return summary


def write_metrics(summary: dict, reports: Path) -> None:
    """``reports/metrics.json``: ``summary`` but its timings, which go to ``<reports>.timings.json`` with each
    curve point's seconds (``pipeline.timings``): the metrics are the same on every run, resumed or not."""
    curve = summary.get("curve")
    kept, took = timings.split(summary, TIMING_KEYS)
    if curve is not None:
        kept["curve"] = [{k: v for k, v in c.items() if k != "seconds"} for c in curve]
        took["curve"] = [{"step": c["step"], "seconds": c.get("seconds")} for c in curve]
    write_json(kept, reports / "metrics.json")
    timings.write(reports, took)


TIMING_KEYS = ("seconds", "s_per_step", "images_per_s", "resumed_at")  # -> reports/generator.timings.json
