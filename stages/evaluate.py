"""Stage `evaluate`: images from every test clip's sound, measured against the evaluator, with references.

For each test pair (the `pairs` stage's test shards) the audio window goes through the audio encoder (its
own spectrogram recipe) and the generator with ``n_noise`` fixed noise draws (the same draws for every
variant below). The evaluator (`train_evaluator`) then gives:

* ``r1`` / ``r5``: share of generated images whose top-1 / top-5 evaluator class is the clip's label;
  ``fid``: FID of the generated images against the real labelled test frames (`images` stage ``eval.*``;
  the pairs' own frames when there are none), on the evaluator's pool features; ``is``: Inception Score
  with the evaluator's softmax. ``fid_real``: FID of the real val frames against the real test frames
  (the floor a perfect generator would reach with this many frames).
* References in the same run: ``*_upper``: the generator fed the true image feature of the pair's frame
  (the `embed` stage's test features); ``*_lower``: every clip's images drawn from the audio feature of
  another clip (a seeded derangement), scored against the clip's own label. ``r1_real_pairs``: the
  evaluator's R@1 on the real pair frames themselves (a selected frame may show the source partly, small or
  not at all, so this caps ``r1_upper``). ``r1_upper_frames`` / ``r5_upper_frames``: the generator fed the
  image encoder's features of the labelled test frames (`images` stage ``eval.*``: a source of that class on
  screen), its images scored against the frame's label (null without labelled frames).
* Controls: ``volume_spearman``: the same clip's waveform scaled by each of ``gains`` (before the
  spectrogram), fixed noise, the evaluator's drawn-size head on the images, Spearman of size against gain
  per clip and noise, averaged; ``mix_top2``: two clips of different classes mixed 50/50, the share of
  images whose evaluator top-2 (``none`` left out) holds both classes, beside ``mix_top2_single``, the same
  share for the images of each of the two clips alone (what one sound scores without mixing);
  ``moment_hit``: the share of pairs (all splits) whose selected frame lies in a main event of
  events.parquet (pipeline/events.py).
* ``clip_r1`` / ``clip_r5`` with ``clip_checkpoint`` (pipeline/clip_eval.py).

Writes ``reports/metrics.json`` (flat keys; null where a figure cannot be measured, e.g. controls without
events), ``reports/evaluate/per_class.csv``, ``per_clip.csv`` (:func:`per_clip_csv`; a confusion plot of label
against the class drawn most often) and ``volume.csv`` (DVC plots) and ``reports/samples/*.png``; the
run's ``seconds`` go to ``reports/metrics.timings.json`` (``pipeline.timings``).
"""
from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from models.evaluator import ClassLogits, PoolFeatures
from pipeline import eval_metrics, evaluation, features, generate, manifests, timings
from pipeline import events as gt
from pipeline.evaluation import Judge, SoundToImage, TestSet
from pipeline.atomic import write_text
from pipeline.evaluator_data import NONE
from pipeline.image_store import read_images
from pipeline.manifests import tmp_name
from pipeline.params import EvaluateParams
from pipeline.sample_grid import sample_grid

log = logging.getLogger(__name__)


class Scorer:
    """R@k, FID and IS of sets of generated images against the test labels."""

    def __init__(self, judge: Judge, real: Tensor, p: EvaluateParams):
        self.judge, self.p = judge, p
        self.fid = eval_metrics.Fid(PoolFeatures(judge.model), real, batch=p.batch * 4) if len(real) >= 2 else None

    def __call__(self, name: str, images: Tensor, labels: Tensor, *, fid: bool = True) -> tuple[dict, Tensor]:
        """``images [N, K, 3, R, R]``, ``labels [N]`` -> ({r1, r5, fid, is} with suffix ``name``, logits [N*K, C])."""
        flat = images.flatten(0, 1)
        logits, _ = self.judge(flat)
        r = eval_metrics.recall_at_k(logits, labels.repeat_interleave(images.shape[1]), (1, 5))
        out = {f"r1{name}": r[1], f"r5{name}": r[5]}
        if fid:  # both need two images at least (FID: two real frames too)
            enough = len(flat) >= 2
            out[f"fid{name}"] = self.fid(flat) if enough and self.fid is not None else float("nan")
            out[f"is{name}"] = (eval_metrics.inception_score(ClassLogits(self.judge.model), flat, self.p.is_splits,
                                                              seed=self.p.seed) if enough else float("nan"))
        return out, logits


def real_frames(images: Path, split: str) -> tuple[np.ndarray, list[str]]:
    """The labelled eval frames of ``split`` (uint8 ``[M, S, S, 3]``; empty when there are none), their labels."""
    arr, table = read_images(images, "eval")
    idx = np.flatnonzero(np.array(table.column("split").to_pylist(), dtype=object) == split)
    every = table.column("label").to_pylist()
    labels = [every[i] for i in idx]
    return (np.asarray(arr[idx]) if len(idx) else np.zeros((0, *arr.shape[1:]), np.uint8)), labels


def upper_features(embeddings: Path, keys: list[str]) -> tuple[list[int], Tensor]:
    """(positions of the test keys that have an image feature, their features ``[M, D]``)."""
    table = features.read(embeddings, "test")
    pos = [i for i, k in enumerate(keys) if k in table.rows]
    if len(pos) < len(keys):
        log.warning("%d test pairs have no image feature in %s: left out of the upper reference",
                    len(keys) - len(pos), embeddings)
    rows = np.array([table.rows[keys[i]] for i in pos], np.int64)
    return pos, torch.from_numpy(np.asarray(table.features[rows], np.float32).reshape(len(pos), -1))


def volume(s2i: SoundToImage, judge: Judge, test: TestSet, z: Tensor, p: EvaluateParams) -> tuple[float, list[float]]:
    """(mean Spearman of drawn size against gain, mean drawn size per gain) over test clips and noises."""
    sizes = []
    for g in p.gains:
        imgs = s2i.images(s2i.features(s2i.fit(test.waves, g)), z)  # [N, K, 3, R, R]
        sizes.append(judge(imgs.flatten(0, 1))[1].view(len(test.keys), len(z)))
    per_gain = torch.stack(sizes, -1).flatten(0, 1).numpy()  # [N * K, n_gains]
    return (eval_metrics.volume_spearman(per_gain, np.array(p.gains)),
            [round(float(v), 4) for v in per_gain.mean(0)])


def mixing(s2i: SoundToImage, judge: Judge, test: TestSet, z: Tensor, p: EvaluateParams,
           single: Tensor) -> tuple[float, float, int]:
    """(share of mixed-clip images whose top-2 holds both classes, the same share for the images of each of
    the two clips alone, number of mixed pairs). ``single``: the evaluator's logits ``[N * K, C]`` of every test
    clip's own images (clip-major, the same ``K`` noises), the reference: what one sound already scores."""
    pairs = evaluation.mix_partners(test.labels, p.mix_pairs)
    if not pairs:
        return float("nan"), float("nan"), 0
    a, b = [i for i, _ in pairs], [j for _, j in pairs]
    waves = 0.5 * (s2i.fit([test.waves[i] for i in a]) + s2i.fit([test.waves[j] for j in b]))
    logits, _ = judge(s2i.images(s2i.features(waves), z).flatten(0, 1))
    y = judge.index(test.labels)
    none = judge.classes.index(NONE) if NONE in judge.classes else None
    k = len(z)
    ya, yb = y[a].repeat_interleave(k), y[b].repeat_interleave(k)
    alone = torch.cat([single[evaluation.clip_rows(a, k)], single[evaluation.clip_rows(b, k)]])
    return (eval_metrics.mix_top2(logits, ya, yb, exclude=none),
            eval_metrics.mix_top2(alone, torch.cat([ya, ya]), torch.cat([yb, yb]), exclude=none), len(pairs))


def moment_hit(pairs: Path, videos: Path, events: Path) -> float:
    """Share of pairs whose selected frame is inside a main event (NaN without events: real data)."""
    ev = [e for rows in gt.by_clip(events).values() for e in rows]
    if not ev:
        return float("nan")
    clips = {r["video_id"]: r for r in manifests.read(videos, manifests.VIDEOS).to_pylist()}
    picks = {r["video_id"]: r["t_s"] for r in manifests.read(pairs, manifests.PAIRS).to_pylist()}
    hits, n = gt.moment_hits(picks, ev, clips)
    return hits / n if n else float("nan")


def _clean(v: object) -> object:
    """JSON-safe: NaN/inf -> null, floats rounded."""
    if isinstance(v, float):
        return None if not math.isfinite(v) else round(v, 5)
    return v


def per_class_csv(judge: Judge, labels: list[str], variants: dict[str, tuple[Tensor, Tensor]]) -> str:
    """One row per test class: its clips, R@1 of each variant (``{suffix: (logits [M, C], labels [M])}``, one
    row per image) and whether the evaluator knows the class (an unknown class scores 0)."""
    rows = ["class,clips," + ",".join(f"r1{s}" for s in variants) + ",in_evaluator"]
    for c in sorted(set(labels)):
        ci = judge.classes.index(c) if c in judge.classes else None
        rates = [eval_metrics.recall_at_k(lg[yy == ci], yy[yy == ci], (1,))[1] if ci is not None else 0.0
                 for lg, yy in variants.values()]
        rows.append(f"{c},{labels.count(c)}," + ",".join(f"{r:.4f}" for r in rates) + f",{int(ci is not None)}")
    return "\n".join(rows) + "\n"


def per_clip_csv(judge: Judge, test: TestSet, k: int, own: Tensor, upper: tuple[list[int], Tensor],
                 pair: Tensor) -> str:
    """One row per test clip, to see where R@1 is lost: ``r1``, the share of its ``k`` images the evaluator names
    its label; ``drawn`` / ``drawn_share``, the class named most often for them and its share (``none``: no source
    seen); ``r1_upper``, the same share for the images of its frame's true feature (empty without one);
    ``pair_frame``, the class named for the real selected frame itself (``none`` there: the moment shows no
    source, a frame-selection miss rather than the model's). Logits: ``own [N*K, C]``; ``upper``: (positions
    of the clips with a feature, ``[len(pos)*K, C]``); ``pair [N, C]``."""
    y = judge.index(test.labels)
    named = own.argmax(1).view(len(y), k)
    up_pos, up_logits = upper
    up_named = dict(zip(up_pos, up_logits.argmax(1).view(len(up_pos), k))) if len(up_pos) else {}
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["key", "label", "r1", "drawn", "drawn_share", "r1_upper", "pair_frame"])
    for i, key in enumerate(test.keys):
        counts = torch.bincount(named[i], minlength=len(judge.classes))
        top = int(counts.argmax())
        up = f"{(up_named[i] == y[i]).float().mean():.4f}" if i in up_named else ""
        w.writerow([key, test.labels[i], f"{(named[i] == y[i]).float().mean():.4f}", judge.classes[top],
                    f"{counts[top] / k:.4f}", up, judge.classes[int(pair[i].argmax())]])
    return out.getvalue()


def write_samples(folder: Path, s2i: SoundToImage, test: TestSet, images: Tensor, n: int, tile: int) -> int:
    """``reports/samples/NNN_KEY.png``: [spectrogram | true frame | four generated images] for ``n`` clips taken
    class by class (`evaluation.class_spread`: every class's first clip, then every class's second, ...)."""
    tmp = tmp_name(folder)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    picked = evaluation.class_spread(test.labels, n)
    for j, i in enumerate(picked):
        spec = s2i.spectrogram(s2i.fit(test.waves[i:i + 1]))[0]
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", test.keys[i])
        sample_grid(tmp / f"{j:03d}_{name}.png", spec, test.frames[i], images[i, :4], tile)
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)
    return len(picked)


def variants(scorer: Scorer, s2i: SoundToImage, test: TestSet, y: Tensor, z: Tensor, embeddings: Path,
             seed: int) -> tuple[dict, dict[str, tuple[Tensor, Tensor]], Tensor, list[int]]:
    """The clips' own sound, the upper and the lower reference: (metrics, ``{suffix: (logits [M, C], labels [M])}``,
    the images of the clips' own sound ``[N, K, 3, R, R]``, the positions of the clips in the upper reference)."""
    feats = s2i.features(s2i.fit(test.waves))
    main = s2i.images(feats, z)
    m, logits = scorer("", main, y)
    pos, up_feats = upper_features(embeddings, test.keys)
    up, logits_up = scorer("_upper", s2i.images(up_feats, z), y[pos])
    perm = torch.from_numpy(evaluation.derangement(len(test.keys), seed))
    low, logits_low = scorer("_lower", s2i.images(feats[perm], z), y, fid=False)
    k = len(z)
    per_image = {"": (logits, y.repeat_interleave(k)), "_upper": (logits_up, y[pos].repeat_interleave(k)),
                 "_lower": (logits_low, y.repeat_interleave(k))}
    return {**m, **up, **low}, per_image, main, pos


def frame_references(scorer: Scorer, s2i: SoundToImage, test: TestSet, y: Tensor, z: Tensor, image_encoder: Path,
                     frames: np.ndarray, labels: list[str]) -> tuple[dict, dict[str, tuple[Tensor, Tensor]]]:
    """``r1_real_pairs`` and ``r1_upper_frames`` / ``r5_upper_frames`` (module docstring); their
    ``{suffix: (logits [M, C], labels [M])}`` for the per-class table (``_real_pairs``: one row per pair frame;
    ``_upper_frames``: K rows per labelled frame, none without labelled frames)."""
    pairs = scorer.judge(evaluation.frames_like(test.frames, test.frames.shape[1]))[0]
    m = {"r1_real_pairs": eval_metrics.recall_at_k(pairs, y, (1,))[1]}
    per_image = {"_real_pairs": (pairs, y)}
    yf = scorer.judge.index(labels)
    if not len(frames):
        return {**m, "r1_upper_frames": float("nan"), "r5_upper_frames": float("nan")}, per_image
    feats = evaluation.frame_features(image_encoder, frames)
    if feats.shape[1] != s2i.G.cfg.feat_dim:
        raise evaluation.EvaluationError(f"the image encoder {image_encoder} gives {feats.shape[1]}-d features but the "
                                         f"generator takes {s2i.G.cfg.feat_dim}-d ones")
    up, logits = scorer("_upper_frames", s2i.images(feats, z), yf, fid=False)
    return {**m, **up}, {**per_image, "_upper_frames": (logits, yf.repeat_interleave(len(z)))}


def controls(s2i: SoundToImage, judge: Judge, test: TestSet, z: Tensor, p: EvaluateParams, plots: Path,
             single: Tensor) -> dict:
    """Volume (also written to ``plots/volume.csv``) and mixing (``single``: see :func:`mixing`)."""
    m: dict = {"volume_spearman": float("nan")}
    sizes = [float("nan")] * len(p.gains)
    if judge.has_size:
        m["volume_spearman"], sizes = volume(s2i, judge, test, z[:p.volume_noise], p)
    else:
        log.warning("volume control not measured: the evaluator has no drawn-size training (no events)")
    write_text(plots / "volume.csv", "gain,mean_size\n" + "".join(f"{g},{s}\n" for g, s in zip(p.gains, sizes)))
    m["mix_top2"], m["mix_top2_single"], m["mix_pairs"] = mixing(s2i, judge, test, z, p, single)
    return m


def run(p: EvaluateParams, *, shards: Path, audio_encoder: Path, generator: Path, evaluator: Path,
        image_encoder: Path, embeddings: Path, images: Path, pairs: Path, videos: Path, events: Path, metrics: Path,
        plots: Path, samples: Path) -> dict:
    """Measure everything (module docstring); write metrics, plots and samples; return the metrics."""
    torch.set_num_threads(p.threads)
    t0 = time.time()
    if p.clip_checkpoint:  # fail now, not after the rest
        from pipeline import clip_eval
        clip_eval.require(Path(p.clip_checkpoint), p.clip_model)
    judge, s2i = Judge(evaluator), SoundToImage(audio_encoder, generator, p.batch)
    test = evaluation.read_test(shards, judge.model.config.image_size)
    res, y = s2i.G.cfg.resolution, judge.index(test.labels)
    unknown = sorted({lab for lab, i in zip(test.labels, y.tolist()) if i < 0})
    if unknown:
        log.warning("test classes without train frames (the evaluator cannot name them; their clips count as "
                    "misses): %s", unknown)
    (real_test, test_labels), (real_val, _) = real_frames(images, "test"), real_frames(images, "val")
    real = evaluation.frames_like(real_test if len(real_test) else test.frames, res)
    scorer = Scorer(judge, real, p)
    z = generate.truncated_noise(p.n_noise, s2i.dim_z, p.truncation, p.seed)
    m: dict = {"test_clips": len(test.keys), "images_per_clip": p.n_noise, "unknown_class_clips": int((y < 0).sum()),
               "evaluator_acc": judge.test_acc, "real_frames": len(real)}
    scores, per_image, main, up_pos = variants(scorer, s2i, test, y, z, embeddings, p.seed)
    m.update(scores)
    frame_scores, frame_images = frame_references(scorer, s2i, test, y, z, image_encoder, real_test, test_labels)
    m.update(frame_scores)
    m["fid_real"] = (scorer.fid(evaluation.frames_like(real_val, res))
                     if len(real_val) >= 2 and len(real_test) and scorer.fid is not None else float("nan"))
    m.update(controls(s2i, judge, test, z, p, plots, per_image[""][0]))
    m["moment_hit"] = moment_hit(pairs, videos, events)
    if p.clip_checkpoint:
        from pipeline import clip_eval
        names = sorted(set(c for c in judge.classes if c != NONE) | set(test.labels))
        m.update(clip_eval.clip_recall(main.flatten(0, 1), [names.index(v) for v in test.labels for _ in z],
                                       names, Path(p.clip_checkpoint), p.clip_model))
    write_text(plots / "per_class.csv", per_class_csv(judge, test.labels, {**per_image, **frame_images}))
    write_text(plots / "per_clip.csv", per_clip_csv(judge, test, len(z), per_image[""][0],
                                                    (up_pos, per_image["_upper"][0]), frame_images["_real_pairs"][0]))
    m["samples"] = write_samples(samples, s2i, test, main, p.samples, judge.model.config.image_size)
    m["seconds"] = round(time.time() - t0, 1)
    m = {k: _clean(v) for k, v in m.items()}
    timings.write_report(m, metrics, ("seconds",))
    log.info("evaluate: %s", m)
    return m
