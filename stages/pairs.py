"""Stage `pairs`: one (frame, audio window) pair per video -> pairs.parquet and WebDataset shards.

``selection`` (top level of params.yaml) picks each video's frame time:
  top1         rank 0 of moments.parquet (the localizer's best moment)
  mid          the middle frame (the paper's baseline)
  random       a uniformly random frame, reproducible from (seed, video_id)
  annotations  a CSV ``video_id,t_s`` (``pairs.annotations``), e.g. the published annotation file
Every selection uses the same videos: the ok videos that `score` scored (those with a rank-0 moment),
so an ablation compares frames, not video sets. Annotations skip the videos the CSV does not name.

The frame nearest to t (at ``decode.fps``) becomes ``KEY.jpg``; the ``pairs.window_s`` seconds of 16 kHz
mono audio centred on it (clamped into the track, as in `score`) become ``KEY.flac``; ``KEY.json`` is the
pairs row. Shards ``{split}-%06d.tar`` hold ``pairs.shard_size`` samples each, in key order, written as they
fill (memory holds at most one shard per split); a video whose decode fails is counted and left out. ``score`` is C[t] where moments.parquet has it, else null.
"""
from __future__ import annotations

import csv
import logging
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline import manifests, media, moments, shards
from pipeline.params import DecodeParams, PairsParams

log = logging.getLogger(__name__)
SELECTIONS = ("top1", "mid", "random", "annotations")


def read_annotations(path: str) -> dict[str, float]:
    """``{video_id: t_s}`` from a CSV with columns video_id, t_s."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"video_id", "t_s"} <= set(reader.fieldnames):
            raise ValueError(f"{path}: annotations need columns video_id and t_s")
        return {r["video_id"]: float(r["t_s"]) for r in reader}


def choose(selection: str, rows: list[dict], moment_rows: list[dict], *, seed: int, fps: float,
           annotations: str | None) -> list[tuple[dict, float, float | None]]:
    """(videos row, t_s, score or None) for each video that gets a pair, in video_id order."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}, got {selection!r}")
    best = {m["video_id"]: m for m in moment_rows if m["rank"] == 0}
    known = {(m["video_id"], m["frame_index"]): m["score"] for m in moment_rows}
    if selection == "annotations" and not annotations:
        raise ValueError("selection=annotations needs pairs.annotations (a CSV video_id,t_s)")
    notes = read_annotations(annotations) if selection == "annotations" else {}
    out = []
    for r in sorted((r for r in rows if r["status"] == "ok" and r["video_id"] in best), key=lambda r: r["video_id"]):
        vid, dur = r["video_id"], r["duration_s"]
        t = {"top1": lambda: best[vid]["t_s"], "mid": lambda: moments.mid_time(dur, fps),
             "random": lambda: moments.random_time(dur, fps, seed, vid), "annotations": lambda: notes.get(vid)}[selection]()
        if t is not None:
            out.append((r, float(t), known.get((vid, int(round(t * fps))))))
    return out


def _extract(args: tuple[str, float, PairsParams, DecodeParams]) -> tuple[bytes, bytes] | str:
    """Decode the frame at t and its audio window -> (jpg, flac) bytes, or a one-line error."""
    path, t, p, d = args
    info = media.probe(path, timeout_s=d.timeout_s)
    if media.is_error(info):
        return info
    frames = media.decode_frames(path, [t], backend=d.backend, timeout_s=d.timeout_s, info=info)
    if media.is_error(frames):
        return f"frame: {frames}"
    audio = media.decode_audio(path, sr=moments.SR, backend=d.backend, timeout_s=d.timeout_s, info=info)
    if media.is_error(audio):
        return f"audio: {audio}"
    if err := moments.check_audio(audio, p.window_s):
        return err
    window = moments.audio_windows(audio, np.array([t]), p.window_s)[0]
    return shards.encode_jpeg(frames[0], p.jpeg_quality), shards.encode_flac(window, moments.SR)


class SplitShards:
    """Streams samples into ``{split}-%06d.tar`` shards of ``shard_size``: at most one shard per split is
    held in memory, whatever the number of videos."""

    def __init__(self, folder: Path, shard_size: int) -> None:
        self.folder, self.size = Path(folder), max(1, shard_size)
        self.pending: dict[str, list[tuple[str, bytes, bytes, dict]]] = {}
        self.index: dict[str, int] = {}
        shards.clear(self.folder)

    def add(self, row: dict, jpg: bytes, flac: bytes) -> None:
        """Queue one sample; sets ``row["shard"]``; writes the split's shard when it is full."""
        split = row["split"]
        row["shard"] = shards.PATTERN.format(split=split, index=self.index.setdefault(split, 0))
        self.pending.setdefault(split, []).append((row["key"], jpg, flac, row))
        if len(self.pending[split]) == self.size:
            self.flush(split)

    def flush(self, split: str) -> None:
        if self.pending.get(split):
            shards.write_shard(self.folder / self.pending[split][0][3]["shard"], self.pending.pop(split))
            self.index[split] += 1

    def close(self) -> None:
        for split in list(self.pending):
            self.flush(split)


def run(selection: str, seed: int, p: PairsParams, d: DecodeParams, *, videos: Path, moments_path: Path,
        out: Path, shard_dir: Path) -> dict:
    """Write ``out`` (pairs.parquet) and the shards in ``shard_dir``; returns {total, ok, failed, shards}."""
    rows = manifests.read(videos, manifests.VIDEOS).to_pylist()
    chosen = choose(selection, rows, manifests.read(moments_path, manifests.MOMENTS).to_pylist(), seed=seed,
                    fps=d.fps, annotations=p.annotations)
    keys = [shards.safe_key(r["video_id"]) for r, _, _ in chosen]
    if len(set(keys)) != len(keys):
        raise ValueError("two video ids map to the same shard key")
    order = sorted(range(len(chosen)), key=keys.__getitem__)  # shards hold their samples in key order
    tasks = [(str(manifests.resolve(videos, chosen[i][0]["path"])), chosen[i][1], p, d) for i in order]
    writer, pair_rows, failed = SplitShards(Path(shard_dir), p.shard_size), [], 0
    with get_context("fork").Pool(max(1, p.workers), initializer=moments.worker_init) as pool:
        for i, res in tqdm(zip(order, pool.imap(_extract, tasks)), total=len(tasks), desc="pairs"):
            (r, t, score), key = chosen[i], keys[i]
            if isinstance(res, str):
                failed += 1
                log.warning("video %s failed: %s", r["video_id"], res)
                continue
            row = dict(key=key, video_id=r["video_id"], split=r["split"], label=r["label"], t_s=t, score=score,
                       selection=selection, shard="")
            writer.add(row, *res)
            pair_rows.append(row)
    writer.close()
    manifests.write(pair_rows, manifests.PAIRS, out)
    summary = dict(total=len(chosen), ok=len(pair_rows), failed=failed,
                   shards=sorted({r["shard"] for r in pair_rows}))
    log.info("pairs (%s): %d videos, %d ok, %d failed, %d shards", selection, summary["total"], summary["ok"],
             failed, len(summary["shards"]))
    return summary
