"""One clip, in a worker process: fetch it with yt-dlp (or take the local file), cut it with ffmpeg, store a
normalised mp4, check it, and say how it went as a `status.Record` (never raises).

yt-dlp runs through its Python API (one instance per worker process, reused), ffmpeg and ffprobe through
argument lists: no string built from data ever reaches a shell. Transient failures (timeouts, refused or
reset connections, HTTP 429/5xx, a download cut short) are retried with exponential backoff while the clip's
time budget (``data.timeout_s``) lasts; the others fail at once. A clip is written to a temporary name in
the output folder and renamed only once ffprobe shows both streams at full length, so a file under its
final name is always complete. Normalisation and error kinds: docs/ingest.md.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.params import DataParams
from pipeline.pool import set_pdeathsig
from pipeline.status import Record

# Kinds worth another attempt; everything else (404, unavailable, not media, too short...) fails at once.
TRANSIENT = frozenset({"refused", "timeout", "rate_limited", "server_error", "incomplete", "network"})
_KINDS = (  # first match wins, on the lower-cased message
    ("refused", r"connection refused|errno 111"),
    ("timeout", r"timed out|timeout"),
    ("not_found", r"http error 40[14]|http error 410"),
    ("rate_limited", r"http error 429|too many requests"),
    ("server_error", r"http error 5\d\d"),
    ("http_error", r"http error \d\d\d"),
    ("incomplete", r"too short|incomplete|more expected|did not get any data|connection reset|"
                   r"remote end closed|broken pipe|ended prematurely|peer closed|connection aborted"),
    ("not_media", r"unsupported url|no video formats|requested format|invalid data|not a video"),
    ("unavailable", r"video unavailable|private video|been removed|terminated|not available|"
                    r"sign in to confirm|members-only|copyright"),
    ("network", r"name or service not known|name resolution|unreachable|no route to host|"
                r"unable to download|transporterror|failed to establish"),
)


@dataclass(frozen=True)
class Settings:
    """The part of ``data`` a worker needs (pickled with every job)."""

    format: str
    retries: int
    backoff_s: float
    timeout_s: float
    socket_timeout_s: float
    keep_raw: bool
    fps: int
    short_side: int
    audio_sr: int
    crf: int
    min_seconds: float

    @classmethod
    def from_data(cls, data: DataParams) -> "Settings":
        c = data.clip
        return cls(format=data.vggsound.format, retries=data.retries, backoff_s=data.backoff_s,
                   timeout_s=data.timeout_s, socket_timeout_s=data.socket_timeout_s, keep_raw=data.keep_raw,
                   fps=c.fps, short_side=c.short_side, audio_sr=c.audio_sr, crf=c.crf, min_seconds=c.min_seconds)


@dataclass(frozen=True)
class Job:
    """One clip to make: from ``url`` (downloaded) or ``path`` (local), cut from ``start_s`` for
    ``seconds`` (None: the whole file), stored as ``out_dir/name.mp4``."""

    video_id: str
    name: str
    key: str
    url: str | None
    path: str | None
    start_s: float
    seconds: float | None
    out_dir: str
    raw_dir: str
    tag: str  # this run's shard ("0-of-1"): temporary names carry it
    settings: Settings


def job_key(url: str | None, path: str | None, stamp: str, start_s: float, seconds: float | None,
            settings: Settings) -> str:
    """Fingerprint of what makes a clip: a stored clip or record with another key is redone."""
    s = settings
    parts = [url, path, stamp, start_s, seconds, s.format if url else "", s.fps, s.short_side, s.audio_sr, s.crf,
             s.min_seconds]
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]


def classify(message: str) -> str:
    """The error kind of a one-line failure message (``other`` when nothing matches)."""
    low = message.lower()
    return next((kind for kind, pattern in _KINDS if re.search(pattern, low)), "other")


def _clean(message: str) -> str:
    """yt-dlp's message as one short line: no ``ERROR:`` prefix, colour codes or ``(caused by ...)`` tail."""
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", message).split())
    text = re.sub(r"^(ERROR:\s*)+", "", text)
    return text.split(" (caused by ")[0][:240] or "unknown error"


# ------------------------------------------------------------------------------------------------- probing


def probe(path: Path, timeout_s: float) -> dict[str, Any] | str:
    """ffprobe's view of a file: durations of its first video and audio streams, size, rates, comment tag."""
    cmd = ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_streams", "--", str(path)]
    try:
        out = subprocess.run(cmd, capture_output=True, timeout=max(1.0, timeout_s), check=False,
                             preexec_fn=set_pdeathsig)
    except subprocess.TimeoutExpired:
        return f"timeout: ffprobe took longer than {timeout_s:.0f} s"
    if out.returncode != 0:
        lines = out.stderr.decode(errors="replace").replace(str(path), "file").strip().splitlines()
        return f"not_media: ffprobe: {lines[-1][:200] if lines else 'exit code %d' % out.returncode}"
    info = json.loads(out.stdout or b"{}")
    fmt = info.get("format", {})
    total = float(fmt.get("duration") or 0.0)
    streams = info.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not s.get("disposition", {}).get("attached_pic")), None)
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    num, _, den = ((video or {}).get("avg_frame_rate") or "0/1").partition("/")
    return dict(
        duration_s=total, comment=(fmt.get("tags") or {}).get("comment", ""),
        has_video=video is not None, has_audio=audio is not None,
        video_s=float((video or {}).get("duration") or total) if video else 0.0,
        audio_s=float((audio or {}).get("duration") or total) if audio else 0.0,
        width=int((video or {}).get("width", 0)), height=int((video or {}).get("height", 0)),
        fps=float(num) / float(den) if den and float(den) else 0.0,
        audio_sr=int((audio or {}).get("sample_rate", 0)))


def _check_source(info: dict, job: Job) -> str | None:
    if not info["has_video"]:
        return "no_video: the source has no video stream"
    if not info["has_audio"]:
        return "no_audio: the source has no audio stream"
    if job.seconds is None:
        return None if info["duration_s"] > 0 else "too_short: the source has no duration"
    need = job.start_s + job.settings.min_seconds
    if info["duration_s"] + 1e-3 < need:
        return (f"too_short: the source is {info['duration_s']:.2f} s long; the clip needs "
                f"[{job.start_s:g}, {job.start_s + job.seconds:g}] s")
    return None


def _check_clip(info: dict, job: Job) -> str | None:
    """A written clip is complete: both streams, and (for a cut) both at least ``min_seconds`` long."""
    if not (info["has_video"] and info["has_audio"]):
        return "encode: the written clip lacks a stream"
    need = job.settings.min_seconds if job.seconds is not None else 1e-3
    if min(info["video_s"], info["audio_s"]) < need:
        return (f"too_short: the clip has {info['video_s']:.2f} s of video and {info['audio_s']:.2f} s of "
                f"audio (needs {need:g} s)")
    return None


def _ok(job: Job, info: dict, attempts: int) -> Record:
    return Record(video_id=job.video_id, key=job.key, name=job.name, status="ok", error="",
                  duration_s=round(info["duration_s"], 6), fps=round(info["fps"], 6), width=info["width"],
                  height=info["height"], audio_sr=info["audio_sr"], has_audio=info["has_audio"],
                  attempts=attempts)


# ------------------------------------------------------------------------------------------ fetch and cut


_YDL: dict[tuple, Any] = {}


def _ydl(work: Path, s: Settings) -> Any:
    """This worker's yt-dlp instance for these settings (built once: building one costs ~70 ms)."""
    key = (str(work), s.format, s.socket_timeout_s)
    if key not in _YDL:
        import yt_dlp

        class Quiet:
            def debug(self, msg: str) -> None: ...
            info = warning = error = debug

        _YDL.clear()
        _YDL[key] = yt_dlp.YoutubeDL({
            "outtmpl": str(work / "source.%(ext)s"), "format": s.format, "quiet": True, "noprogress": True,
            "logger": Quiet(), "socket_timeout": s.socket_timeout_s, "retries": 0, "fragment_retries": 0,
            "extractor_retries": 0, "noplaylist": True, "overwrites": True, "continuedl": False,
            "cachedir": False, "merge_output_format": "mkv", "color": {"stderr": "never", "stdout": "never"}})
    return _YDL[key]


def _download(job: Job) -> Path | str:
    """Download ``job.url`` into this worker's scratch folder in the raw folder; the file or an error."""
    raw = Path(job.raw_dir)
    kept = sorted((raw / "files").glob(f"{job.name}.*")) if job.settings.keep_raw else []
    if kept:
        return kept[0]
    work = raw / f".work-{job.tag}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        _ydl(work, job.settings).extract_info(job.url, download=True)
    except Exception as exc:  # yt-dlp raises DownloadError, but also others on odd input
        shutil.rmtree(work, ignore_errors=True)
        msg = _clean(str(exc))
        return f"{classify(msg)}: {msg}"
    files = [p for p in work.iterdir() if p.is_file() and not p.name.endswith((".part", ".ytdl"))]
    if not files:
        shutil.rmtree(work, ignore_errors=True)
        return "not_media: yt-dlp finished without a file"
    if not job.settings.keep_raw:
        return files[0]
    (raw / "files").mkdir(exist_ok=True)
    dest = raw / "files" / f"{job.name}{files[0].suffix}"
    os.replace(files[0], dest)
    return dest


def _cut_cmd(src: Path, dst: Path, job: Job) -> list[str]:
    s = job.settings
    side = s.short_side
    scale = (f"scale='if(gte(iw,ih),-2,trunc(min(iw,{side})/2)*2)':'if(gte(iw,ih),trunc(min(ih,{side})/2)*2,-2)'"
             if side > 0 else "scale=trunc(iw/2)*2:trunc(ih/2)*2")
    vf = ",".join(([f"fps={s.fps}"] if s.fps > 0 else []) + [scale])
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-threads", "1"]
    if job.seconds is not None and job.start_s > 0:
        cmd += ["-ss", f"{job.start_s:.3f}"]
    cmd += ["-i", str(src)]
    if job.seconds is not None:
        cmd += ["-t", f"{job.seconds:.3f}"]
    return cmd + ["-map", "0:v:0", "-map", "0:a:0", "-vf", vf, "-filter_threads", "1",
                  "-c:v", "libx264", "-preset", "veryfast", "-crf", str(s.crf), "-pix_fmt", "yuv420p",
                  "-g", str(s.fps or 25), "-threads", "1", "-c:a", "aac", "-b:a", "64k", "-ac", "1",
                  "-ar", str(s.audio_sr), "-map_metadata", "-1", "-metadata", f"comment=s2s:{job.key}",
                  "-movflags", "+faststart", "-f", "mp4", str(dst)]


def _cut(src: Path, dst: Path, job: Job, timeout_s: float) -> str | None:
    try:
        out = subprocess.run(_cut_cmd(src, dst, job), capture_output=True, timeout=max(1.0, timeout_s),
                             check=False, preexec_fn=set_pdeathsig)
    except subprocess.TimeoutExpired:
        return f"timeout: ffmpeg took longer than {timeout_s:.0f} s"
    if out.returncode != 0:
        text = out.stderr.decode(errors="replace").replace(str(src), "source").replace(str(dst), "clip")
        lines = text.strip().splitlines()
        return f"encode: ffmpeg: {lines[-1][:200] if lines else 'exit code %d' % out.returncode}"
    return None


def _attempt(job: Job, final: Path, deadline: float) -> Record | str:
    """One try: source file, checks, cut to a temporary name, check, rename. A record or an error."""
    src = Path(job.path) if job.path else _download(job)
    if isinstance(src, str):
        return src
    tmp = final.with_name(f".{job.name}.{job.tag}.{os.getpid()}.part.mp4")
    done = False
    try:
        info = probe(src, deadline - time.monotonic())
        err = info if isinstance(info, str) else _check_source(info, job)
        err = err or _cut(src, tmp, job, deadline - time.monotonic())
        if err:
            return err
        out = probe(tmp, deadline - time.monotonic())
        if isinstance(out, str) or (err := _check_clip(out, job)):
            return err or f"encode: the written clip does not probe ({out})"
        os.replace(tmp, final)
        done = True
        return _ok(job, out, 1)
    finally:
        tmp.unlink(missing_ok=True)
        if job.url and not job.settings.keep_raw:
            shutil.rmtree(src.parent, ignore_errors=True)
        elif job.url and not done:  # a kept download that gave no clip is not reused
            src.unlink(missing_ok=True)


def _existing(final: Path, job: Job) -> Record | None:
    """A complete clip left by an earlier run with the same key (its record may have been lost)."""
    if not final.is_file():
        return None
    info = probe(final, 30.0)
    if isinstance(info, str) or info["comment"] != f"s2s:{job.key}" or _check_clip(info, job):
        return None
    return _ok(job, info, 0)


def process(job: Job) -> Record:
    """Make one clip (module-level: `pool.run_pool` runs it in a worker). Never raises."""
    deadline = time.monotonic() + job.settings.timeout_s
    final = Path(job.out_dir) / f"{job.name}.mp4"
    try:
        if done := _existing(final, job):
            return done
        for attempt in range(1, job.settings.retries + 2):
            result = _attempt(job, final, deadline)
            if isinstance(result, Record):
                return replace(result, attempts=attempt)
            wait = job.settings.backoff_s * 2 ** (attempt - 1)
            last = attempt > job.settings.retries or time.monotonic() + wait >= deadline
            if last or result.split(":", 1)[0] not in TRANSIENT:
                break
            time.sleep(wait)
    except Exception as exc:  # a bug here must cost one clip, not the stage
        result, attempt = f"other: {type(exc).__name__}: {exc}"[:300], 1
    tries = f" ({attempt} attempts)" if attempt > 1 else ""
    return Record(video_id=job.video_id, key=job.key, name=job.name, status="failed",
                  error=f"{result}{tries}", attempts=attempt)
