"""Stage `images`: the unlabeled image corpus the visual half learns from (DESIGN section 3).

``images.source: videos``: every ``images.every``-th frame (at ``decode.fps``) of each ok train-split clip
of videos.parquet, resized to ``images.size``. It also writes labelled evaluation frames of the val and test
clips: with a non-empty events.parquet (the built-in world) every ``images.eval_every``-th frame inside each
on-screen source event, skipping frames where another class is drawn too; without events (real videos) every
``images.eval_every``-th frame of each labelled clip, with the clip's label. ``images.source: folder``: every
image under ``images.folder`` (corrupt files are skipped and counted); no evaluation frames.
``images.source: webdataset``: the first ``jpg``/``jpeg``/``png``/``webp`` member of every sample of the shards
``images.webdataset`` names (brace-expanded, ``::``-separated; local paths or ``pipe:`` commands such as
``pipe:aws s3 cp s3://bucket/train-{000..099}.tar -``); corrupt images are skipped and counted, unreadable
shards logged and skipped; no evaluation frames. The shards are read where they are (not a DVC dependency).

Writes ``<out>/train.npy|parquet`` and ``<out>/eval.npy|parquet`` (:mod:`pipeline.image_store`).
"""
from __future__ import annotations

import io
import logging
import shutil
from pathlib import Path
from typing import IO, Iterable, Iterator

import numpy as np
from PIL import Image
from tqdm import tqdm
from webdataset.shardlists import expand_urls

from pipeline import manifests, media, shard_io
from pipeline.image_store import ImageWriter
from pipeline.params import DecodeParams, ImagesParams

log = logging.getLogger(__name__)
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm"}
SHARD_IMAGE_MEMBERS = ("jpg", "jpeg", "png", "webp")


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 [n, h, w, 3] -> uint8 [n, size, size, 3] (PIL bilinear; a no-op at the right size)."""
    if frames.shape[1:3] == (size, size):
        return frames
    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames])


def eval_times(events: list[dict], fps: float, every: int) -> list[tuple[float, str]]:
    """(time, label) of every ``every``-th frame inside each on-screen event of one clip, where no
    on-screen event of another label is drawn at the same time."""
    shown = [e for e in events if e["on_screen"] and e["label"] != "ambient"]
    out = []
    for e in shown:
        f0, f1 = int(round(e["t_start"] * fps)), int(round(e["t_end"] * fps))
        for f in range(f0, f1, every):
            t = f / fps
            if not any(o["label"] != e["label"] and o["t_start"] <= t < o["t_end"] for o in shown):
                out.append((round(t, 6), e["label"]))
    return out


def _clip_frames(path: Path, times: list[float], p: ImagesParams, d: DecodeParams) -> np.ndarray | str:
    if not times:
        return np.zeros((0, p.size, p.size, 3), np.uint8)
    frames = media.decode_frames(path, times, backend=d.backend, timeout_s=d.timeout_s)
    return frames if media.is_error(frames) else _resize(frames, p.size)


def from_videos(p: ImagesParams, d: DecodeParams, videos: Path, events: Path, out: Path) -> dict:
    """Sample the train corpus and the labelled eval frames from the clips of ``videos``."""
    rows = [r for r in manifests.read(videos, manifests.VIDEOS).to_pylist() if r["status"] == "ok"]
    by_clip: dict[str, list[dict]] = {}
    for e in manifests.read(events, manifests.EVENTS).to_pylist():
        by_clip.setdefault(e["video_id"], []).append(e)
    train, evals = ImageWriter(out, "train", p.size), ImageWriter(out, "eval", p.size)
    failed = 0
    for r in tqdm(rows, desc="images", unit="clip"):
        if r["split"] == "train":
            times = [round(t, 6) for t in np.arange(0.0, r["duration_s"], p.every / d.fps)]
            labels: list[str | None] = [None] * len(times)
        elif by_clip or not r["label"]:
            pairs = eval_times(by_clip.get(r["video_id"], []), d.fps, p.eval_every)
            times, labels = [t for t, _ in pairs], [lab for _, lab in pairs]
        else:  # real videos (no events at all): the clip's label on every eval_every-th frame
            times = [round(t, 6) for t in np.arange(0.0, r["duration_s"], p.eval_every / d.fps)]
            labels = [r["label"]] * len(times)
        frames = _clip_frames(manifests.resolve(videos, r["path"]), times, p, d)
        if media.is_error(frames):
            failed += 1
            log.warning("clip %s skipped: %s", r["video_id"], frames)
            continue
        writer = train if r["split"] == "train" else evals
        writer.add(frames, [dict(video_id=r["video_id"], split=r["split"], t_s=t, label=lab)
                            for t, lab in zip(times, labels)])
    return dict(clips=len(rows), failed=failed, train=train.close(), eval=evals.close())


def from_folder(p: ImagesParams, out: Path) -> dict:
    """Every readable image under ``p.folder`` (sorted paths) into the train corpus."""
    root = Path(p.folder or "")
    if not root.is_dir():
        raise ValueError(f"images.folder {str(root)!r} is not a folder")
    files = sorted(f for f in root.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file())
    named = ((f.relative_to(root).as_posix(), f) for f in files)
    return _store(tqdm(named, desc="images", unit="image", total=len(files)), p, out)


def from_webdataset(p: ImagesParams, out: Path) -> dict:
    """The first image member of every sample of the ``p.webdataset`` shards, in shard order."""
    urls = expand_urls(p.webdataset or "")
    if not urls or not any(u.strip() for u in urls):
        raise ValueError("images.source is webdataset but images.webdataset names no shards")

    def named() -> Iterator[tuple[str, IO[bytes] | str]]:
        for s in shard_io.read_samples(urls, SHARD_IMAGE_MEMBERS):
            # "KEY.jpg", or "KEY.x.jpg" (webdataset's suffix is all after the key's first dot)
            member = next(k for k in s if not k.startswith("__") and k.rsplit(".", 1)[-1] in SHARD_IMAGE_MEMBERS)
            yield s["__key__"], io.BytesIO(s[member]) if s[member] else "empty member"

    return _store(tqdm(named(), desc="images", unit="image"), p, out)


def _store(named: Iterable[tuple[str, Path | IO[bytes] | str]], p: ImagesParams, out: Path) -> dict:
    """Decode each (id, file or error) to RGB ``p.size`` x ``p.size`` into the train corpus; corrupt ones
    are logged, skipped and counted."""
    train, evals = ImageWriter(out, "train", p.size), ImageWriter(out, "eval", p.size)
    total = failed = 0
    for name, src in named:
        total += 1
        try:
            if isinstance(src, str):
                raise ValueError(src)
            with Image.open(src) as im:
                arr = np.asarray(im.convert("RGB").resize((p.size, p.size), Image.BILINEAR))
        except Exception as exc:  # PIL raises many types for corrupt files
            failed += 1
            log.warning("image %s skipped: %s", name, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
            continue
        train.add(arr[None], [dict(video_id=name, split="train", t_s=0.0, label=None)])
    return dict(clips=total, failed=failed, train=train.close(), eval=evals.close())


def run(p: ImagesParams, d: DecodeParams, *, videos: Path, events: Path, out: Path) -> dict:
    """Write the corpus into ``out``; return {clips, failed, train, eval} counts. An empty corpus is an error."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    if p.source == "videos":
        summary = from_videos(p, d, videos, events, out)
    else:
        summary = from_folder(p, out) if p.source == "folder" else from_webdataset(p, out)
    if summary["train"] == 0:
        shutil.rmtree(out, ignore_errors=True)
        raise ValueError(f"the image corpus is empty ({summary['clips']} inputs, {summary['failed']} failed)")
    log.info("images: %(clips)d inputs, %(failed)d failed, %(train)d train images, %(eval)d eval images", summary)
    return summary
