"""Small media files for the bad-input tests of `pipeline.media`, made with the real ffmpeg tools.

Commands are argument lists (never a shell string). Video frames are flat grey levels, one level per frame
(`LEVEL0 + STEP * i`), so a decoded frame tells which source frame it is (`frame_ids`). Audio is a sine
tone from ffmpeg's ``sine`` source, so its frequency can be checked after decoding.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Sequence

import numpy as np

LEVEL0, STEP = 16, 12  # grey level of frame i; 20 frames fit below 255
MAX_FRAMES = (255 - LEVEL0) // STEP + 1
H264 = ("-c:v", "libx264", "-preset", "veryfast", "-crf", "8", "-pix_fmt", "yuv420p", "-threads", "1")
AAC = ("-c:a", "aac", "-b:a", "128k")


def grey_frames(n: int, h: int = 16, w: int = 24) -> np.ndarray:
    """``n`` flat grey frames, uint8 (n, h, w, 3); frame i has level ``LEVEL0 + STEP * i``."""
    assert n <= MAX_FRAMES, f"at most {MAX_FRAMES} distinct grey frames"
    levels = (LEVEL0 + STEP * np.arange(n)).astype(np.uint8)
    return np.broadcast_to(levels[:, None, None, None], (n, h, w, 3)).copy()


def frame_ids(frames: np.ndarray) -> list[int]:
    """Which grey frame each decoded frame (N, H, W, 3) is, from its mean level."""
    means = frames.reshape(len(frames), -1).mean(axis=1)
    return [int(i) for i in np.rint((means - LEVEL0) / STEP)]


def tone(freq: float, sr: int, seconds: float, layout: str = "mono") -> str:
    """A lavfi source: a sine tone, the same signal in every channel of ``layout``."""
    src = f"sine=frequency={freq:g}:sample_rate={sr}:duration={seconds:g}"
    if layout == "mono":
        return src
    n = {"stereo": 2, "5.1": 6}[layout]
    return src + f",pan={layout}|" + "|".join(f"c{i}=c0" for i in range(n))


def silence(sr: int, seconds: float, layout: str = "stereo") -> str:
    """A lavfi source: digital silence (all samples zero)."""
    return f"anullsrc=sample_rate={sr}:channel_layout={layout},atrim=duration={seconds:g}"


def ffmpeg(args: Sequence[str], stdin: bytes | None = None) -> None:
    """Run ffmpeg with ``args``; raise with its last error line when it fails."""
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args]
    out = subprocess.run(cmd, input=stdin, capture_output=True, timeout=120, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{cmd}: {out.stderr.decode(errors='replace').strip()}")


def make(path: Path, *, frames: np.ndarray | None = None, fps: float = 10, audio: Sequence[str] = (),
         video_args: Sequence[str] = H264, extra: Sequence[str] = ()) -> Path:
    """Encode ``frames`` (rgb24, at ``fps``) and one audio stream per lavfi source in ``audio``."""
    args: list[str] = []
    maps: list[str] = []
    if frames is not None:
        t, h, w, _ = frames.shape
        args += ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "pipe:0"]
        maps += ["-map", "0:v"]
    for k, src in enumerate(audio):
        args += ["-f", "lavfi", "-i", src]
        maps += ["-map", f"{k + (frames is not None)}:a"]
    args += maps
    if frames is not None:
        args += video_args
    if audio:
        args += AAC
    ffmpeg([*args, *extra, str(path)], stdin=None if frames is None else np.ascontiguousarray(frames).tobytes())
    return path


def packet_pts(path: Path) -> list[float]:
    """Presentation times (s) of the first video stream's packets, by ffprobe, sorted."""
    cmd = ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time",
           "-of", "json", str(path)]
    out = subprocess.run(cmd, capture_output=True, timeout=60, check=True)
    return sorted(float(p["pts_time"]) for p in json.loads(out.stdout)["packets"])


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of ``src``'s bytes to ``dst``."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def peak_hz(wave: np.ndarray, sr: int) -> float:
    """Frequency of the strongest component of ``wave`` (Hann-windowed FFT)."""
    spec = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spec) * sr / len(wave))
