"""The published frame annotations (``top1_boxes_top10_moments.json``) as ``moments.parquet`` rows, so that
``selection: annotations`` can pick the annotated frames instead of the localizer's.

The file maps a clip id (``{ytid}_{start_ms}_{end_ms}``, as `pipeline.sources` names VGGSound clips) to its
ten best frame numbers at 10 fps, best first. Assumptions (docs/ingest.md):

- frame numbers are 0-based (frame k shows time k / 10 s from the clip's start); ``base=1`` reads them as
  1-based instead;
- a value is a list of frame numbers, or a list of lists / dicts whose first element / ``frame`` entry is
  the frame, or a dict holding such a list under a key containing ``moment`` or ``frame``;
- with a videos manifest, only clips that are ``ok`` there are kept, and a frame beyond a clip's last frame
  (a clip shorter than the annotation assumed) is clamped to its last frame, keeping its rank.

``score`` carries no model score (there is none): it is ``(K - rank) / K`` for an entry of K frames, so the
best frame scores 1 and the order agrees with ``rank``.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from pipeline import manifests

ANNOTATION_FPS = 10.0


def _frame_of(item: Any) -> int | None:
    if isinstance(item, dict):
        item = item.get("frame", item.get("frame_index"))
    elif isinstance(item, (list, tuple)):
        item = item[0] if item else None
    if isinstance(item, bool) or not isinstance(item, (int, float)) or not math.isfinite(item):
        return None
    return int(item) if float(item).is_integer() else None


def frames_of(value: Any) -> list[int] | str:
    """The frame numbers of one annotation entry, best first, or a one-line reason it has none."""
    if isinstance(value, dict):
        keys = [k for k in value if "moment" in str(k).lower() or "frame" in str(k).lower()]
        if not keys:
            return f"no key with 'moment' or 'frame' among {sorted(map(str, value))[:5]}"
        value = value[keys[0]]
    if not isinstance(value, (list, tuple)) or not value:
        return "not a non-empty list of frames"
    frames = [_frame_of(item) for item in value]
    if any(f is None for f in frames):
        return "a frame number is not an integer"
    return frames  # type: ignore[return-value]


def _durations(videos: str | Path) -> dict[str, float]:
    table = manifests.read(videos, manifests.VIDEOS).select(["video_id", "duration_s", "status"])
    return {v: d for v, d, s in zip(*(table.column(c).to_pylist() for c in table.column_names)) if s == "ok"}


def moments_rows(path: str | Path, *, decode_fps: float = 10.0, base: int = 0,
                 videos: str | Path | None = None) -> tuple[list[dict], dict[str, int]]:
    """(moments rows, counts): rows in the ``manifests.MOMENTS`` schema; counts of clips kept, entries
    dropped as malformed or absent from ``videos``, and frames clamped."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read annotations {path}: {type(exc).__name__}: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"annotations {path}: expected a JSON object (clip id -> frames)")
    durations = _durations(videos) if videos is not None else None
    rows: list[dict] = []
    counts = dict(clips=0, malformed=0, not_in_videos=0, clamped=0)
    for video_id, value in sorted(data.items()):
        frames = frames_of(value)
        if isinstance(frames, str):
            counts["malformed"] += 1
            continue
        if durations is not None and video_id not in durations:
            counts["not_in_videos"] += 1
            continue
        last = (max(1, math.ceil(durations[video_id] * ANNOTATION_FPS - 1e-6)) - 1 if durations is not None
                else None)
        counts["clips"] += 1
        for rank, frame in enumerate(frames):
            k = frame - base
            if k < 0 or (last is not None and k > last):
                k = 0 if k < 0 else last
                counts["clamped"] += 1
            t_s = k / ANNOTATION_FPS
            rows.append(dict(video_id=video_id, rank=rank, t_s=t_s, frame_index=int(round(t_s * decode_fps)),
                             score=(len(frames) - rank) / len(frames)))
    return rows, counts


def import_annotations(path: str | Path, out: str | Path, *, decode_fps: float = 10.0, base: int = 0,
                       videos: str | Path | None = None) -> dict[str, int]:
    """Write ``out`` (moments.parquet schema) from the annotation file; returns the counts."""
    rows, counts = moments_rows(path, decode_fps=decode_fps, base=base, videos=videos)
    manifests.write(rows, manifests.MOMENTS, out)
    return counts
