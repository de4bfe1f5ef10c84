"""Stage `train_audio_encoder`: align the audio encoder to the frozen image features (DESIGN section 5).

Reads the train and val shards' audio and the ``embed`` stage's features, trains with the loss named by
the top-level ``loss`` param, validates on the val split after every epoch and keeps the checkpoint of
the best val R@1 at ``out`` (with ``ema_decay``, the exponential moving average of the weights is what is
validated and kept: ``pipeline.align_train.Ema``). ``last`` holds everything needed to resume (model,
optimizer, the average, epoch, the best state and the history); a rerun with the same settings continues
from it, other settings start over. Metrics: ``reports/metrics.json`` (best epoch), ``epochs.csv`` and ``steps.csv`` (DVC plots);
each epoch's training speed goes to ``metrics.timings.json`` beside them (``pipeline.timings``), not into the rows.
Run it plain or under ``torchrun --nproc_per_node N`` (same code, DDP).

With ``audio_encoder.align_space: generator`` the loss compares both features after the generator's input
map (:func:`generator_space`, read from ``generator``), which is then part of the run key.

With ``audio_encoder.checkpoint`` set (e.g. the published ``sound2scene.pth``) nothing is trained: the
file is loaded strictly, validated when features of its size exist, and written to ``out``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from models.audio_encoder import AudioEncoder
from models.biggan import FeatureCentre
from models.biggan_io import load_generator
from models.checkpoint import read_checkpoint, read_resume, save_checkpoint
from models.losses import make_loss
from pipeline import align_train, audio_input, distributed, features, gain_augment, shard_io, timings
from pipeline.mix_augment import SoundMix
from pipeline.align_stream import AlignStream, loader
from pipeline.atomic import write_json, write_text
from pipeline.params import AudioEncoderParams, SpectrogramParams

log = logging.getLogger(__name__)
NOT_IN_RUN_KEY = ("epochs", "max_steps", "workers", "cache_mb", "threads", "device")


def run_key(p: AudioEncoderParams, loss: str, seed: int, embeddings: Path | None = None,
            space: nn.Module | None = None) -> dict[str, Any]:
    """The settings (and, given ``embeddings``, the data; given ``space``, the loss's feature map) a resumed
    run must share with the checkpoint it resumes from: other pairs or features (e.g. ``selection=mid``) or
    another generator's map start a fresh run."""
    d = {k: v for k, v in dataclasses.asdict(p).items() if k not in NOT_IN_RUN_KEY}
    if space is not None:
        digest = hashlib.sha256()
        for name, buf in sorted(space.state_dict().items()):
            digest.update(name.encode() + buf.detach().cpu().float().numpy().tobytes())
        d["space"] = digest.hexdigest()
    if embeddings is not None:
        digest = hashlib.sha256()  # the keys (.parquet) and the features (.npy): selection=mid keeps the keys
        for f in sorted([*Path(embeddings).glob("*.parquet"), *Path(embeddings).glob("*.npy")]):
            digest.update(f.name.encode())
            with open(f, "rb") as fh:
                for chunk in iter(lambda: fh.read(1 << 24), b""):
                    digest.update(chunk)
        d["data"] = digest.hexdigest()
    return json.loads(json.dumps({**d, "loss": loss, "seed": seed}))


def generator_space(p: AudioEncoderParams, generator: Path | None, dim: int) -> FeatureCentre | None:
    """The map the loss is measured in: None for ``align_space: unit``; for ``generator``, the generator's own
    input map ``h [B, dim] -> unit((unit(h) - mean) @ whiten)`` (``models.biggan.FeatureCentre``, its buffers
    from the checkpoint ``generator``: ours or a published folder), the unit map when it has none."""
    if p.align_space == "unit":
        return None
    if generator is None or not Path(generator).exists():
        raise FileNotFoundError(f"audio_encoder.align_space: generator needs the generator checkpoint "
                                f"{generator or '(none given)'}: run `dvc repro train_generator`")
    g = load_generator(generator)  # an unreadable file: models.checkpoint.CheckpointReadError (a ValueError)
    if g.cfg.feat_dim != dim:
        raise ValueError(f"audio_encoder.align_space: generator: {generator} reads {g.cfg.feat_dim}-d features, "
                         f"the embeddings are {dim}-d")
    space = g.feature_centre if g.feature_centre is not None else FeatureCentre(dim)
    log.info("the loss is measured in %s's input space (%s)", generator,
             "centred and whitened" if space.whiten is not None else
             "centred" if bool(space.mean.any()) else "unit features: the same as align_space: unit for infonce")
    return space


def class_centroids(table: features.FeatureTable) -> tuple[torch.Tensor, list[str]] | None:
    """Mean image feature per label of a split (``Tensor[C, D]``, names); None without labels."""
    names = sorted({lab for lab in table.labels if lab is not None})
    if not names:
        return None
    labels = np.array([lab if lab is not None else "" for lab in table.labels])
    rows = [np.asarray(table.features[np.flatnonzero(labels == n)]).mean(axis=0) for n in names]
    return torch.from_numpy(np.stack(rows)).float(), names


def write_reports(reports: Path, history: list[dict], steps: list[float], best: dict | None,
                  speeds: list[dict] | None = None) -> None:
    """``metrics.json`` (the best epoch's row), ``epochs.csv`` (one row per epoch), ``steps.csv``; with
    ``speeds`` (``{"epoch", "train_samples_per_s"}`` per epoch) also ``metrics.timings.json`` (``pipeline.timings``)."""
    write_json(best or {}, reports / "metrics.json")
    if speeds is not None:
        timings.write(reports / "metrics.json", {"epochs": speeds})
    if history:
        rows = [",".join(history[0])] + [",".join(str(h[k]) for k in history[0]) for h in history]
        write_text(reports / "epochs.csv", "\n".join(rows) + "\n")
    write_text(reports / "steps.csv",
                      "step,loss\n" + "".join(f"{i + 1},{v:.7g}\n" for i, v in enumerate(steps)))


def _untimed(row: dict) -> dict:
    """An epoch row of a resume file written before the timings left the rows (``pipeline.timings``)."""
    return {k: v for k, v in row.items() if k != "train_samples_per_s"}


def interned(obj: Any) -> Any:
    """``obj`` with every string in its dicts, lists and tuples interned (tensors and numbers as they are).

    ``torch.save`` pickles one string object once and refers back to it; an equal string that is another object
    is written again. A fresh run's keys (``"step"`` in Adam's state, the epoch rows' names) are the program's
    interned literals, a loaded file's are new objects, so without this a resumed run's ``last.pt`` held the
    same values in other bytes than a straight run's, and ``dvc.lock`` changed."""
    if isinstance(obj, str):
        return sys.intern(obj)
    if isinstance(obj, dict):
        return {interned(k): interned(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(interned(v) for v in obj)
    return obj


def load_resume(last: Path, key: dict) -> dict | None:
    """The resume state at ``last`` when its run key equals ``key``; else None (logged)."""
    state = interned(read_resume(last))
    if state is None:
        return None
    if state.get("run_key") != key:
        log.info("%s was written with other settings: starting over", last)
        return None
    log.info("resuming from %s after epoch %d", last, state["epoch"])
    return dict(state)


def save_best(out: Path, model_state: dict, cfg: Any, sp: SpectrogramParams, *, step: int, **extra: Any) -> None:
    model = AudioEncoder(cfg)
    model.load_state_dict(model_state)
    save_checkpoint(out, model, cfg, step=step, spectrogram=dataclasses.asdict(sp), **extra)


def _mean(values: list[float]) -> float:
    """Mean of the finite values (NaN marks a step without two valid pairs); NaN when there are none."""
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _score(row: dict | None) -> float:
    """Val R@1 for choosing the best epoch (an empty val split counts as -1, so a best exists)."""
    r1 = -2.0 if row is None else row.get("val_r1", float("nan"))
    return r1 if r1 == r1 else -1.0


def _streams(p: AudioEncoderParams, d: distributed.Dist, seed: int, shards: Path, train_t: features.FeatureTable,
             val_t: features.FeatureTable) -> tuple[AlignStream, AlignStream]:
    """The train stream (this rank's) and the val stream (validated on rank 0, which alone caches it). The
    cache budget ``cache_mb`` goes to the train split first, what it leaves to val."""
    n = audio_input.n_samples(p.spectrogram)
    spec = audio_input.spectrogram_fn(p.spectrogram) if audio_input.in_workers(p.spectrogram, d.device) else None
    wave_gain = (p.gain_p > 0 and p.gain_on == "waveform") or p.mix_p > 0  # the step needs the training waveforms
    budget = p.cache_mb << 20
    train = AlignStream(shard_io.shard_urls(shards, "train"), train_t, n_samples=n, batch=p.batch, rank=d.rank,
                        world=d.world, seed=seed, shuffle_buffer=p.shuffle_buffer, split_by=p.split_by,
                        spec_fn=None if wave_gain else spec, cache_bytes=budget)
    val = AlignStream(shard_io.shard_urls(shards, "val"), val_t, n_samples=n, batch=p.batch, drop_last=False,
                      spec_fn=spec, cache_bytes=budget - train.cache_nbytes if d.main else 0)
    if budget:
        log.info("audio cache: %.3g MiB for train, %.3g MiB for val (%s per clip)", train.cache_nbytes / 2**20,
                 val.cache_nbytes / 2**20, f"{train.item_key} {list(train.item_shape)}")
    return train, val


def counted(batches: Iterable[dict[str, Any]], tally: dict[str, int]) -> Iterator[dict[str, Any]]:
    """The batches, adding their rows and those served from the audio cache to ``tally``."""
    for b in batches:
        tally["rows"] += len(b["keys"])
        tally["cached"] += b["cached"]
        yield b


@torch.no_grad()
def gain_shift(p: AudioEncoderParams, step: align_train.Step, batches: Iterable[dict[str, Any]],
               d: distributed.Dist, seed: int) -> gain_augment.GainShift:
    """One pass over the train batches (no update): each pair's level and image feature -> the level
    direction of ``pipeline.gain_augment`` (under torchrun, rank 0's pairs decide; broadcast to all)."""
    levels, feats = [], []
    for batch in batches:
        if batch["keys"]:
            ok = batch["valid"]
            levels.append(gain_augment.clip_level(step.spectrogram(batch), p.spectrogram.log_eps).cpu()[ok])
            feats.append(batch["feature"][ok])
    lv = torch.cat(levels)
    direction, share = gain_augment.level_direction(lv, torch.cat(feats), clusters=p.gain_clusters, seed=seed)
    bounds = torch.stack([lv.min(), lv.max()]).float()
    if d.world > 1:
        direction, bounds = direction.to(d.device), bounds.to(d.device)
        torch.distributed.broadcast(direction, src=0)
        torch.distributed.broadcast(bounds, src=0)
    log.info("gain augmentation on the %s: %.0f%% of rows at gains %s; level direction from %d pairs (norm %.4f "
             "per unit of log power; %.0f%% of the level variance lies within the %d feature clusters)", p.gain_on,
             100 * p.gain_p, list(p.gain_range), sum(len(v) for v in levels), float(direction.norm()), 100 * share,
             p.gain_clusters)
    levels_range = tuple(bounds.cpu().tolist()) if p.gain_saturate else None
    if levels_range is not None:
        log.info("gain augmentation: targets stay within the training pairs' levels %.2f .. %.2f", *levels_range)
    return gain_augment.GainShift(direction.cpu() * p.gain_scale, p.gain_p, *p.gain_range, eps=p.spectrogram.log_eps,
                                  levels=levels_range)


def _train(p: AudioEncoderParams, d: distributed.Dist, *, loss: str, seed: int, shards: Path, embeddings: Path,
           generator: Path | None, out: Path, last: Path, reports: Path) -> dict[str, Any]:
    train_t, val_t = features.read(embeddings, "train"), features.read(embeddings, "val")
    space = generator_space(p, generator, train_t.dim)
    torch.manual_seed(seed)
    raw, model = align_train.build_model(p, train_t.dim, d)
    opt = align_train.make_optimizer(p, model)
    key = run_key(p, loss, seed, embeddings, space)
    state = load_resume(last, key) or {}
    ema = align_train.Ema(raw, p.ema_decay) if p.ema_decay > 0 else None
    if state:
        raw.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
    history, steps = [_untimed(h) for h in state.get("history", [])], list(state.get("steps", []))
    best_state, best = state.get("best_model"), state.get("best") and _untimed(state["best"])
    speeds = [e for e in timings.read(reports / "metrics.json").get("epochs", [])  # the resumed run's epochs
              if e.get("epoch", len(history) + 1) <= len(history)]
    train_s, val_s = _streams(p, d, seed, shards, train_t, val_t)
    loss_fn = make_loss(loss, p.temperature, space=None if space is None else space.to(d.device),
                        false_negative_cos=p.false_negative_cos)
    step = align_train.Step(model, opt, loss_fn, audio_input.spectrogram_fn(p.spectrogram),
                            audio_input.masker(p.spectrogram), d, p.amp, ema=None if ema is None else (ema, raw),
                            mix=SoundMix(p.mix_p) if p.mix_p > 0 else None)
    judged = ema.module if ema is not None else raw  # the weights validated and kept
    centroids, labels = class_centroids(train_t), dict(zip(val_t.keys, val_t.labels))
    pin = d.device.type == "cuda"
    train_l, val_l = loader(train_s, p.workers, pin), loader(val_s, p.workers, pin) if d.main else None
    if p.gain_p > 0:  # the same pass after a resume: the same direction
        train_s.epoch = 0
        step.gain = gain_shift(p, step, train_l, d, seed)
    for epoch in range(state.get("epoch", -1) + 1, p.epochs):
        left = None if p.max_steps is None else p.max_steps - len(steps)
        if left is not None and left <= 0:
            break
        train_s.epoch = epoch
        batches = iter(train_l)  # first: making it draws from torch's RNG (worker seeds; persistent workers: once)
        torch.manual_seed(seed * 7919 + epoch)  # masks: the same draws after a resume, with or without workers
        train_n, val_n = dict(rows=0, cached=0), dict(rows=0, cached=0)
        res = align_train.train_epoch(step, counted(batches, train_n),
                                      shard_mode=p.split_by == "shard", max_steps=left)
        steps += res.losses
        if d.main:
            row = dict(epoch=epoch + 1, step=len(steps), train_loss=_mean(res.losses),
                       **align_train.validate(judged, counted(val_l, val_n), step,
                                              batch=p.batch, labels=labels, centroids=centroids),
                       skipped=res.skipped)
            speeds.append({"epoch": epoch + 1, "train_samples_per_s": round(res.samples / max(res.seconds, 1e-9), 1)})
            if train_s.cache is not None or val_s.cache is not None:
                log.info("epoch %d: from the audio cache: %d of %d train samples%s, %d of %d val samples", epoch + 1,
                         train_n["cached"], train_n["rows"], " (rank 0's share)" if d.world > 1 else "",
                         val_n["cached"], val_n["rows"])
            history.append(row)
            log.info("epoch %d: %s", epoch + 1, {k: round(v, 4) if isinstance(v, float) else v
                                                  for k, v in {**row, **speeds[-1]}.items()})
            if _score(row) > _score(best):
                best, best_state = row, {k: v.detach().cpu().clone() for k, v in judged.state_dict().items()}
                save_best(out, best_state, raw.config, p.spectrogram, step=len(steps), epoch=epoch + 1,
                          val_r1=row["val_r1"], loss=loss)
            save_checkpoint(last, raw, raw.config, step=len(steps), optimizer=opt.state_dict(), epoch=epoch,
                            run_key=key, history=history, steps=steps, best_model=best_state, best=best,
                            **({"ema": ema.state_dict()} if ema is not None else {}))
            write_reports(reports, history, steps, best, speeds)
        distributed.barrier(d)
    if d.main:  # also when a resumed run had nothing left to do: its reports are outputs too
        write_reports(reports, history, steps, best, speeds)
    if d.main and best_state is not None and not out.is_file():
        save_best(out, best_state, raw.config, p.spectrogram, step=best["step"], epoch=best["epoch"],
                  val_r1=best["val_r1"], loss=loss)
    return dict(epochs=len(history), steps=len(steps), best=best or {}, rank=d.rank)


def _from_checkpoint(p: AudioEncoderParams, d: distributed.Dist, *, loss: str, shards: Path, embeddings: Path,
                     out: Path, reports: Path) -> dict[str, Any]:
    """Use the given weights as they are: strict load, validation when possible, written to ``out``."""
    obj = read_checkpoint(p.checkpoint)
    model = AudioEncoder.from_checkpoint(obj).to(d.device)
    sp = SpectrogramParams(**obj["spectrogram"]) if "spectrogram" in obj else SpectrogramParams(kind="paper")
    row: dict[str, Any] = {"epoch": 0, "step": int(obj.get("step", 0)), "checkpoint": str(p.checkpoint)}
    if d.main and features.paths(embeddings, "val")[0].is_file():
        val_t = features.read(embeddings, "val")
        if val_t.dim == model.config.embed_dim:
            val_loss = make_loss(loss, p.temperature, false_negative_cos=p.false_negative_cos)
            step = align_train.Step(model, None, val_loss, audio_input.spectrogram_fn(sp), None, d, p.amp)
            val_s = AlignStream(shard_io.shard_urls(shards, "val"), val_t, n_samples=audio_input.n_samples(sp),
                                batch=p.batch, drop_last=False)
            row.update(align_train.validate(model, loader(val_s, p.workers), step, batch=p.batch,
                                            labels=dict(zip(val_t.keys, val_t.labels)), centroids=None))
    if d.main:
        save_best(out, {k: v.cpu() for k, v in model.state_dict().items()}, model.config, sp, step=row["step"],
                  epoch=0, val_r1=row.get("val_r1", float("nan")), loss=loss)
        write_reports(reports, [row], [], row)
    return dict(epochs=0, steps=0, best=row, rank=d.rank)


def run(p: AudioEncoderParams, *, loss: str, seed: int, shards: Path, embeddings: Path, out: Path, last: Path,
        reports: Path, generator: Path | None = None) -> dict[str, Any]:
    """Train (or take ``p.checkpoint``) and write ``out``, ``last`` and the reports; returns a summary
    ``{epochs, steps, best: {epoch, val_r1, ...}, rank}`` (complete on rank 0). ``generator`` is read only with
    ``align_space: generator``. Under torchrun every rank calls this."""
    d = distributed.init(p.device)
    if p.threads:
        torch.set_num_threads(p.threads)
    try:
        if p.checkpoint:
            return _from_checkpoint(p, d, loss=loss, shards=shards, embeddings=embeddings, out=Path(out),
                                    reports=Path(reports))
        return _train(p, d, loss=loss, seed=seed, shards=Path(shards), embeddings=Path(embeddings),
                      generator=None if generator is None else Path(generator), out=Path(out), last=Path(last),
                      reports=Path(reports))
    finally:
        distributed.shutdown()
