"""Stage `videos`: the clips every later stage reads, and their manifest (DESIGN section 3).

``data.source: world`` generates the built-in audio-visual world: real H.264 + AAC mp4 files written with
ffmpeg, ``videos.parquet`` (one row per clip, probed from the written file) and ``events.parquet`` (the
ground truth, one row per sound). The real-world sources (``vggsound``, ``vegas``, ``local``) go through
`pipeline.ingest` (download or read, cut, normalise, resume; docs/ingest.md) and write an empty
``events.parquet`` with its schema.
"""
from __future__ import annotations

import collections
import logging
import os
import shutil
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import ingest, manifests, media, world
from pipeline.ffmpeg import write_mp4
from pipeline.params import DataParams
from pipeline.world_render import render_frames
from pipeline.world_sound import render_audio

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipJob:
    seed: int
    index: int
    label: int
    split: str
    two_source: bool


def world_jobs(seed: int, p: world.WorldParams) -> list[ClipJob]:
    """The clips of the world, in id order: ``clips_per_class`` per class, split stratified by class."""
    if not 1 <= p.classes <= len(world.CLASSES):
        raise ValueError(f"data.world.classes must be between 1 and {len(world.CLASSES)}, got {p.classes}")
    rng = np.random.default_rng([seed, 7])
    jobs = []
    for label in range(p.classes):
        ranks = rng.permutation(p.clips_per_class)
        for k in range(p.clips_per_class):
            index = label * p.clips_per_class + k
            split = world.split_for(int(ranks[k]), p.clips_per_class, p.val_frac, p.test_frac)
            jobs.append(ClipJob(seed, index, label, split, bool(rng.random() < p.two_source_frac)))
    return jobs


def _make_clip(args: tuple[ClipJob, world.WorldParams, str, str]) -> tuple[dict, list[dict]]:
    """Plan, render, encode and probe one clip -> (videos row, events rows). Never raises."""
    job, p, out_dir, rel_dir = args
    clip = world.plan_clip(job.seed, job.index, job.label, n_classes=p.classes, duration_s=p.duration_s,
                           fps=p.fps, size=p.size, sr=p.audio_sr, two_source=job.two_source)
    rel = f"{rel_dir}/{clip.video_id}.mp4"
    row = dict(video_id=clip.video_id, path=rel, source="world", label=world.CLASSES[job.label].name,
               split=job.split, duration_s=0.0, fps=0.0, width=0, height=0, audio_sr=0, has_audio=False,
               status="failed", error="")
    try:
        err = write_mp4(Path(out_dir) / f"{clip.video_id}.mp4", render_frames(clip), render_audio(clip),
                        fps=p.fps, sr=p.audio_sr)
    except Exception as exc:  # a rendering bug must not stop the stage
        err = f"{type(exc).__name__}: {exc}"
    info = media.probe(Path(out_dir) / f"{clip.video_id}.mp4") if not err else err
    if isinstance(info, str):
        row["error"] = info
        return row, []
    row.update(duration_s=round(info.duration_s, 6), fps=round(info.fps, 6), width=info.width,
               height=info.height, audio_sr=info.audio_sr, has_audio=info.has_audio, status="ok")
    return row, world.event_rows(clip)


def make_world(seed: int, data: DataParams, *, out_dir: Path, rel_dir: str) -> tuple[list[dict], list[dict]]:
    """Generate every clip of the world into ``out_dir`` with a worker pool and a progress bar;
    ``rel_dir`` is ``out_dir`` relative to the manifest's folder (how rows name their files)."""
    p = data.world
    jobs = world_jobs(seed, p)
    videos, events = [], []
    tasks = [(j, p, str(out_dir), rel_dir) for j in jobs]
    with get_context("fork").Pool(max(1, p.workers)) as pool:
        for row, ev in tqdm(pool.imap(_make_clip, tasks, chunksize=4), total=len(tasks),
                            desc="world clips", unit="clip"):
            videos.append(row)
            events.extend(ev)
    return videos, events


def run(seed: int, data: DataParams, *, out_dir: Path, manifest: Path, events: Path, raw_dir: Path | None = None,
        stats: Path | None = None, shard: tuple[int, int] = (0, 1), progress: bool = True) -> dict:
    """Write the clips to ``out_dir`` and the manifests; return a summary {total, ok, failed, ...}, also
    written to ``stats`` when given. Downloaded and local sources (`pipeline.ingest`) resume in ``out_dir``
    and keep their working state in ``raw_dir`` (default: ``raw`` beside ``out_dir``); ``shard`` = (i, n)
    does the i-th of n parts of their rows. The world is generated afresh."""
    if data.source != "world":
        raw_dir = Path(raw_dir) if raw_dir is not None else Path(out_dir).parent / "raw"
        summary = ingest.ingest(data, out_dir=Path(out_dir), raw_dir=raw_dir, manifest=Path(manifest), shard=shard,
                                progress=progress)
        manifests.write([], manifests.EVENTS, events)
        if stats is not None:
            ingest.write_stats(summary, stats)
        return summary
    if shard != (0, 1):
        raise ValueError("--shard splits downloaded or local sources; the built-in world is made in one piece")
    summary = _run_world(seed, data, out_dir=Path(out_dir), manifest=manifest, events=events)
    if stats is not None:
        ingest.write_stats(summary, stats)
    return summary


def _run_world(seed: int, data: DataParams, *, out_dir: Path, manifest: Path, events: Path) -> dict:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    rel_dir = Path(os.path.relpath(out_dir.resolve(), Path(manifest).parent.resolve())).as_posix()
    videos, event_rows = make_world(seed, data, out_dir=out_dir, rel_dir=rel_dir)
    manifests.write(event_rows, manifests.EVENTS, events)
    manifests.write(videos, manifests.VIDEOS, manifest)
    failed = [v for v in videos if v["status"] != "ok"]
    for v in failed:
        log.warning("clip %s failed: %s", v["video_id"], v["error"])
    kinds = collections.Counter(v["error"].split(":", 1)[0] for v in failed)
    summary = dict(source="world", total=len(videos), ok=len(videos) - len(failed), failed=len(failed),
                   failed_by_kind=dict(sorted(kinds.items())))
    log.info("videos: %(total)d clips, %(ok)d ok, %(failed)d failed", summary)
    return summary
