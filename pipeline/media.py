"""Media decoding: probe a file, frames at timestamps, audio as 16 kHz mono float32.

Every public function returns its result or a one-line error string (video2dataset style), never raises
for a bad file, and never runs longer than its ``timeout_s``: decoding happens in a persistent worker
process (`pipeline.isolate`) that is killed when it overruns.

Frames are chosen by presentation time, never by index: for each requested time the frame whose pts is
nearest (ties go to the earlier frame), using the pts of every video packet from ffprobe. Times before
the first or after the last frame clamp to it. Rotated videos come back upright (display orientation).
Audio: the first audio stream of the file (by stream order), downmixed to mono, resampled to ``sr``.
"""
from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline import backends
from pipeline.isolate import Isolated, one_line

BACKENDS = ("torchcodec", "decord")
DEFAULT_BACKEND = "torchcodec"  # faster on bench/decode.py (see README's performance table)


@dataclass(frozen=True)
class Probe:
    """What ffprobe says of a file. ``width``/``height`` are display size (after rotation)."""

    duration_s: float
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0
    fps: float = 0.0  # average frame rate of the first video stream
    rotation: int = 0  # degrees, counter-clockwise, as the display matrix says
    video_codec: str = ""
    audio_codec: str = ""
    audio_sr: int = 0
    audio_channels: int = 0
    audio_streams: int = 0
    audio_index: int = -1  # absolute stream index of the first audio stream
    frame_pts: tuple[float, ...] = field(default=(), repr=False)  # sorted pts of the first video stream


def _ratio(text: str | None) -> float:
    num, _, den = (text or "0/1").partition("/")
    try:
        return float(num) / float(den or 1) if float(den or 1) else 0.0
    except ValueError:
        return 0.0


def _rotation(stream: dict) -> int:
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return int(round(float(side["rotation"]))) % 360
    return int(stream.get("tags", {}).get("rotate", 0)) % 360


def _shown(path: str | Path) -> str:
    """``path`` for a one-line message: line breaks in the name are escaped."""
    return str(path).replace("\r", "\\r").replace("\n", "\\n")


def _check_file(path: str | Path) -> str | None:
    p = Path(path)
    if not p.exists():
        return f"file not found: {_shown(p)}"
    if not p.is_file():
        return f"not a regular file: {_shown(p)}"
    if p.stat().st_size == 0:
        return f"empty file (0 bytes): {_shown(p)}"
    return None


def probe(path: str | Path, *, timeout_s: float = 30.0, packets: bool = True) -> Probe | str:
    """Probe ``path`` with ffprobe (argument list, no shell); a `Probe` or a one-line error.

    ``packets=False`` skips listing every packet (``frame_pts`` stays empty): audio decoding needs no frame
    times, and for a two-hour file the listing alone is ~18 MB of JSON and a pass over the whole file.
    """
    if err := _check_file(path):
        return err
    entries = ["-show_entries", "packet=stream_index,pts_time"] if packets else []
    cmd = ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", *entries, "--", str(path)]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return f"timeout: ffprobe took longer than {timeout_s:g} s"
    if out.returncode != 0:
        msg = out.stderr.decode(errors="replace").strip().splitlines()
        return f"ffprobe failed: {msg[-1] if msg else 'exit code %d' % out.returncode}"[:300]
    return _parse_probe(json.loads(out.stdout or b"{}"))


def _parse_probe(info: dict) -> Probe | str:
    streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not video and not audio:
        return "no audio or video stream"
    duration = float(info.get("format", {}).get("duration") or 0.0)
    kw: dict = dict(duration_s=duration, has_video=bool(video), has_audio=bool(audio), audio_streams=len(audio))
    if video:
        v = video[0]
        rot = _rotation(v)
        w, h = int(v.get("width", 0)), int(v.get("height", 0))
        if rot in (90, 270):
            w, h = h, w
        pts = sorted(float(p["pts_time"]) for p in info.get("packets", [])
                     if p.get("stream_index") == v["index"] and p.get("pts_time") not in (None, "N/A"))
        kw.update(width=w, height=h, rotation=rot, video_codec=v.get("codec_name", ""), frame_pts=tuple(pts),
                  fps=_ratio(v.get("avg_frame_rate")) or _ratio(v.get("r_frame_rate")))
    if audio:
        a = audio[0]
        kw.update(audio_codec=a.get("codec_name", ""), audio_sr=int(a.get("sample_rate", 0)),
                  audio_channels=int(a.get("channels", 0)), audio_index=int(a["index"]))
    return Probe(**kw)


def nearest_pts(frame_pts: Sequence[float], times: Sequence[float]) -> np.ndarray:
    """For each time, the pts of the nearest frame (ties: the earlier); times outside clamp. (N,) float64."""
    pts = np.asarray(frame_pts, dtype=np.float64)
    t = np.asarray(times, dtype=np.float64)
    right = np.clip(np.searchsorted(pts, t, side="left"), 0, len(pts) - 1)
    left = np.clip(right - 1, 0, len(pts) - 1)
    pick = np.where(np.abs(pts[left] - t) <= np.abs(pts[right] - t), left, right)
    return pts[pick]


_WORKER = Isolated()


def _checked(path: str | Path, backend: str, timeout_s: float, info: Probe | None,
             packets: bool = True) -> Probe | str:
    """The file's probe (``info`` when given), or a one-line error for an unknown backend or a bad file."""
    if backend not in BACKENDS:
        return f"unknown backend {backend!r} (choose from {', '.join(BACKENDS)})"
    return info if info is not None else probe(path, timeout_s=timeout_s, packets=packets)


def probe_audio(path: str | Path, *, timeout_s: float = 30.0) -> Probe | str:
    """A `Probe` for `decode_audio` read from the file's header by torchcodec in the decode worker: duration,
    streams, first audio stream (no frame times, no codec details). About 10 ms, where an ffprobe process
    takes 100+ ms to start; or a one-line error."""
    if err := _check_file(path):
        return err
    ok, value = _WORKER.call(backends.audio_header, str(path), timeout_s=timeout_s)
    return Probe(**value) if ok else value


def decode_frames(path: str | Path, times: Sequence[float], *, backend: str = DEFAULT_BACKEND,
                  timeout_s: float = 60.0, info: Probe | None = None) -> np.ndarray | str:
    """Frames nearest to ``times`` (seconds) as uint8 (N, H, W, 3), upright; or a one-line error."""
    info = _checked(path, backend, timeout_s, info)
    if isinstance(info, str):
        return info
    if not info.has_video:
        return "no video stream"
    if not info.frame_pts:
        return "video stream has no frame timestamps"
    if len(times) == 0:
        return np.zeros((0, info.height, info.width, 3), np.uint8)
    targets = nearest_pts(info.frame_pts, times)
    _, value = _WORKER.call(backends.frames, backend, str(path), targets, info.rotation, timeout_s=timeout_s)
    return value


def decode_audio(path: str | Path, *, sr: int = 16000, start_s: float = 0.0, duration_s: float | None = None,
                 backend: str = DEFAULT_BACKEND, timeout_s: float = 60.0,
                 info: Probe | None = None) -> np.ndarray | str:
    """First audio stream as mono float32 (N,) at ``sr`` Hz, from ``start_s`` for ``duration_s`` (None: to
    the end); or a one-line error. Only the requested window is decoded (the probe lists no packets)."""
    info = _checked(path, backend, timeout_s, info, packets=False)
    if isinstance(info, str):
        return info
    if not info.has_audio:
        return "no audio stream"
    if backend == "decord" and info.audio_streams > 1:
        return f"decord cannot choose the first of {info.audio_streams} audio streams; use backend torchcodec"
    _, value = _WORKER.call(backends.audio, backend, str(path), info.audio_index, sr, start_s, duration_s,
                             timeout_s=timeout_s)
    return value


def decode_frames_inline(path: str | Path, times: Sequence[float], *, backend: str = DEFAULT_BACKEND,
                         info: Probe) -> np.ndarray | str:
    """`decode_frames` in this process, without the timeout guard (for benchmarks and trusted files)."""
    try:
        return backends.frames(backend, str(path), nearest_pts(info.frame_pts, times), info.rotation)
    except Exception as exc:
        return one_line(exc)


def is_error(value: object) -> bool:
    """True when a media call returned an error string instead of its result."""
    return isinstance(value, str)
