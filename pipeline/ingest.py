"""The `videos` stage for real-world sources (vggsound, vegas, local): input rows in; clips, one manifest row
per input row and a stats summary out (DESIGN sections 3, 7, 8; docs/ingest.md).

Two streaming passes over the rows (memory stays flat in their number): the first runs every clip that has
no usable status record through the worker pool and records each outcome as it comes back; the second reads
the rows again, in input order, and writes ``videos.parquet`` from the records in batches. A killed run
leaves finished clips and their records; the next run skips them (resume) and only redoes clips in flight.
"""
from __future__ import annotations

import collections
import logging
import os
import shutil
import time
from contextlib import closing
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline import manifests
from pipeline.atomic import write_json
from pipeline.download import Job, Settings, job_key, process
from pipeline.params import DataParams
from pipeline.pool import run_pool
from pipeline.sources import Row, rows_for, select
from pipeline.status import Record, StatusStore

log = logging.getLogger(__name__)
BATCH = 4096  # manifest rows per Parquet write


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` (0 <= i < n) -> (i, n); a ValueError in one sentence otherwise."""
    head, sep, tail = text.partition("/")
    try:
        i, n = int(head), int(tail)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard must be i/n with 0 <= i < n (e.g. 0/4), got {text!r}")
    return i, n


def _rows(data: DataParams, shard: tuple[int, int]) -> Iterator[Row]:
    return select(rows_for(data), classes=data.classes, limit=data.limit, shard=shard,
                  val_frac=data.val_frac, test_frac=data.test_frac)


def _job(row: Row, settings: Settings, out_dir: Path, raw_dir: Path, tag: str) -> Job:
    key = job_key(row.url, row.path, row.stamp, row.start_s, row.seconds, settings)
    return Job(video_id=row.video_id, name=row.name, key=key, url=row.url, path=row.path, start_s=row.start_s,
               seconds=row.seconds, out_dir=str(out_dir), raw_dir=str(raw_dir), tag=tag, settings=settings)


def _usable(rec: Record | None, job: Job, out_dir: Path, retry_failed: bool) -> bool:
    """A record that lets a rerun skip the clip: same key, and ok with its file there, or failed."""
    if rec is None or rec.key != job.key:
        return False
    if rec.status == "ok":
        return (out_dir / f"{rec.name}.mp4").is_file()
    return not retry_failed


def _clean_stale(out_dir: Path, raw_dir: Path, tag: str) -> None:
    """Remove what a killed run of this shard left half done (temporary clips, scratch downloads)."""
    for tmp in out_dir.glob(f".*.{tag}.*.part.mp4"):
        tmp.unlink(missing_ok=True)
    for work in raw_dir.glob(f".work-{tag}-*"):
        shutil.rmtree(work, ignore_errors=True)


def _fetch(data: DataParams, store: StatusStore, out_dir: Path, raw_dir: Path, shard: tuple[int, int],
           progress: bool) -> collections.Counter:
    """Pass 1: run every clip without a usable record; count fetched / resumed / bad rows."""
    settings, tag = Settings.from_data(data), f"{shard[0]}-of-{shard[1]}"
    counts: collections.Counter = collections.Counter()
    bar = tqdm(desc="videos", unit="row", disable=not progress, mininterval=1.0)

    def jobs() -> Iterator[Job]:
        for row in _rows(data, shard):
            if row.error:
                counts["bad_rows"] += 1
                bar.update()
                continue
            job = _job(row, settings, out_dir, raw_dir, tag)
            if _usable(store.get(job.video_id), job, out_dir, data.retry_failed):
                counts["resumed"] += 1
                bar.update()
                continue
            yield job

    with closing(run_pool(process, jobs(), workers=data.workers, timeout_s=data.timeout_s + 5)) as results:
        for job, ok, value in results:
            rec = value if ok else Record(video_id=job.video_id, key=job.key, name=job.name, status="failed",
                                          error=str(value) if ":" in str(value) else f"worker: {value}")
            store.put(rec)
            counts["fetched"] += 1
            counts[rec.status] += 1
            bar.update()
            bar.set_postfix(ok=counts["ok"], failed=counts["failed"], refresh=False)
    bar.close()
    return counts


def _manifest_row(row: Row, rec: Record | None, rel_dir: str) -> dict:
    out = dict(video_id=row.video_id, path=f"{rel_dir}/{row.name}.mp4" if not row.error else "",
               source=row.source, label=row.label, split=row.split, duration_s=0.0, fps=0.0, width=0, height=0,
               audio_sr=0, has_audio=False, status="failed", error=row.error)
    if row.error:
        return out
    if rec is None:
        return {**out, "error": "internal: no status was recorded for this clip"}
    out.update(duration_s=rec.duration_s, fps=rec.fps, width=rec.width, height=rec.height, audio_sr=rec.audio_sr,
               has_audio=rec.has_audio, status=rec.status, error=rec.error)
    return out


def _write_manifest(data: DataParams, store: StatusStore, shard: tuple[int, int], manifest: Path,
                    rel_dir: str) -> collections.Counter:
    """Pass 2: the manifest, in input order, written in batches to a temporary name and renamed."""
    kinds: collections.Counter = collections.Counter()
    manifest.parent.mkdir(parents=True, exist_ok=True)
    tmp = manifests.tmp_name(manifest)
    batch: list[dict] = []
    with pq.ParquetWriter(tmp, manifests.VIDEOS) as writer:
        for row in _rows(data, shard):
            out = _manifest_row(row, None if row.error else store.get(row.video_id), rel_dir)
            kinds["ok" if out["status"] == "ok" else out["error"].split(":", 1)[0]] += 1
            batch.append(out)
            if len(batch) >= BATCH:
                writer.write_table(pa.Table.from_pylist(batch, schema=manifests.VIDEOS))
                batch.clear()
        writer.write_table(pa.Table.from_pylist(batch, schema=manifests.VIDEOS))
    os.replace(tmp, manifest)
    return kinds


def ingest(data: DataParams, *, out_dir: Path, raw_dir: Path, manifest: Path, shard: tuple[int, int] = (0, 1),
           progress: bool = True) -> dict:
    """Fetch or read every input row's clip into ``out_dir`` (resuming), write ``manifest``; the stats."""
    t0 = time.monotonic()
    rows_for(data)  # bad settings (no CSV, no folder) fail here, before anything is written
    out_dir, raw_dir, manifest = Path(out_dir), Path(raw_dir), Path(manifest)
    out_dir.mkdir(parents=True, exist_ok=True)
    raw_dir.mkdir(parents=True, exist_ok=True)
    _clean_stale(out_dir, raw_dir, f"{shard[0]}-of-{shard[1]}")
    rel_dir = Path(os.path.relpath(out_dir.resolve(), manifest.parent.resolve())).as_posix()
    with StatusStore(raw_dir, shard) as store:
        counts = _fetch(data, store, out_dir, raw_dir, shard, progress)
        kinds = _write_manifest(data, store, shard, manifest, rel_dir)
    elapsed = time.monotonic() - t0
    ok = kinds.pop("ok", 0)
    failed = sum(kinds.values())
    stats = dict(source=data.source, shard=f"{shard[0]}/{shard[1]}", total=ok + failed, ok=ok, failed=failed,
                 failed_by_kind=dict(sorted(kinds.items())), fetched=counts["fetched"], resumed=counts["resumed"],
                 elapsed_s=round(elapsed, 3), clips_per_s=round(counts["fetched"] / max(elapsed, 1e-9), 3))
    log.info("videos: %d rows, %d ok, %d failed (%s); %d fetched, %d resumed, %.2f clips/s", stats["total"], ok,
             failed, ", ".join(f"{k} {v}" for k, v in stats["failed_by_kind"].items()) or "none",
             stats["fetched"], stats["resumed"], stats["clips_per_s"])
    return stats


def write_stats(stats: dict, path: str | Path) -> None:
    """Write the stats summary as JSON, atomically."""
    write_json(stats, path, sort_keys=True)
