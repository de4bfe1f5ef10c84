"""Write media with the ffmpeg command-line tool (argument lists only, never a shell string)."""
from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
from scipy.io import wavfile


def _run(cmd: list[str], *, stdin: bytes | None, timeout_s: float) -> str | None:
    try:
        out = subprocess.run(cmd, input=stdin, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return f"timeout: ffmpeg took longer than {timeout_s:g} s"
    if out.returncode != 0:
        lines = out.stderr.decode(errors="replace").strip().splitlines()
        return f"ffmpeg failed: {lines[-1] if lines else 'exit code %d' % out.returncode}"[:300]
    return None


def write_mp4(path: str | Path, frames: np.ndarray, wave: np.ndarray | None, *, fps: int, sr: int,
              crf: int = 18, timeout_s: float = 120.0) -> str | None:
    """Encode uint8 frames (T, H, W, 3) and a mono float waveform (N,) as H.264 + AAC mp4.

    Written to a temporary name in the same folder and renamed when complete. Deterministic (one
    thread, bitexact flags, no metadata). Returns None, or a one-line error.
    """
    path = Path(path)
    t, h, w, _ = frames.shape
    tmp = path.with_name(f".{path.name}.part")
    with tempfile.TemporaryDirectory() as tdir:
        cmd = ["ffmpeg", "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
               "-r", str(fps), "-i", "pipe:0"]
        if wave is not None:
            wav = os.path.join(tdir, "a.wav")
            wavfile.write(wav, sr, np.asarray(wave, np.float32))
            cmd += ["-i", wav, "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-aac_coder", "fast", "-b:a", "96k", "-ac", "1"]
        cmd += ["-c:v", "libx264", "-preset", "veryfast", "-crf", str(crf), "-pix_fmt", "yuv420p",
                "-g", str(fps), "-threads", "1", "-movflags", "+faststart", "-fflags", "+bitexact",
                "-flags", "+bitexact", "-map_metadata", "-1", "-f", "mp4", str(tmp)]
        err = _run(cmd, stdin=np.ascontiguousarray(frames).tobytes(), timeout_s=timeout_s)
    if err:
        tmp.unlink(missing_ok=True)
        return err
    os.replace(tmp, path)
    return None
