"""Params of the data sections (`data`: the `videos` stage's sources, clips and the built-in world), strict
dataclasses re-exported by :mod:`pipeline.params` (which loads whole params files)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class WorldParams:
    """The built-in audio-visual world (DESIGN section 4)."""

    classes: int = 8  # number of sound-source classes (at most len(world.CLASSES))
    clips_per_class: int = 60
    duration_s: float = 6.0
    fps: int = 10
    size: int = 64  # frame width = height, pixels
    audio_sr: int = 16000
    two_source_frac: float = 0.15  # share of clips where a second source sounds (and shows) at once
    val_frac: float = 0.1
    test_frac: float = 0.1
    workers: int = 2


@dataclass(frozen=True)
class LocalParams:
    """``data.source: local``: a folder searched recursively, and an optional labels CSV."""

    dir: str | None = None
    labels: str | None = None  # CSV with a header: path (relative to dir) or video_id, label, split


@dataclass(frozen=True)
class VggsoundParams:
    """``data.source: vggsound``: the official CSV (no header: YouTube id, start seconds, label, split)."""

    csv: str | None = None
    url_template: str = "https://www.youtube.com/watch?v={id}"  # {id}: the first column, URL-quoted
    format: str = "bv*[height<=?480]+ba/b[height<=?480]/b"  # yt-dlp format selector


@dataclass(frozen=True)
class VegasParams:
    """``data.source: vegas``: a folder per class (the folder name is the label)."""

    dir: str | None = None


@dataclass(frozen=True)
class ClipParams:
    """How every fetched or local clip is normalised (docs/ingest.md)."""

    seconds: float = 10.0  # CSV sources: cut [start, start + seconds]
    min_seconds: float = 9.5  # a cut whose video or audio is shorter is failed (too_short)
    fps: int = 10  # 0 keeps the source frame rate
    short_side: int = 256  # scale down so the shorter side is at most this (never up)
    audio_sr: int = 16000  # mono AAC
    crf: int = 23  # libx264 quality


@dataclass(frozen=True)
class DataParams:
    """Where the videos come from (the `videos` stage's section)."""

    source: Literal["world", "vggsound", "vegas", "local"] = "world"
    local: LocalParams = field(default_factory=LocalParams)
    vggsound: VggsoundParams = field(default_factory=VggsoundParams)
    vegas: VegasParams = field(default_factory=VegasParams)
    clip: ClipParams = field(default_factory=ClipParams)
    classes: tuple[str, ...] = ()  # keep only these labels (empty: all)
    limit: int = 0  # at most this many input rows after the class filter (0: all)
    val_frac: float = 0.1  # rows without a split: share of val, by a hash of video_id
    test_frac: float = 0.1
    workers: int = 4  # parallel clips (downloads and ffmpeg cuts)
    retries: int = 2  # extra attempts after a transient failure (timeout, refused, 5xx, cut short)
    backoff_s: float = 2.0  # wait before retry k: backoff_s * 2**k
    timeout_s: float = 300.0  # wall limit of one clip, all attempts together
    socket_timeout_s: float = 30.0  # a connection that sends nothing this long fails (timeout)
    retry_failed: bool = False  # rerun: fetch again the clips a previous run recorded as failed
    keep_raw: bool = False  # keep the downloaded source files in the raw folder (reused on rerun)
    world: WorldParams = field(default_factory=WorldParams)
