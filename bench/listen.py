"""What reading a user's sound costs: `pipeline.inputs.listen` (a plain 16 kHz mono 16-bit wav or flac read
in-process, `plain_pcm`) against the same file through the decoder, in one run.

Makes a 10 s 16 kHz mono tone as wav, flac and mp3 with ffmpeg, then times, per file, the median of R calls of
  listen   `inputs.listen(path)`: what `s2s generate / interpolate / edit` run
  decoder  the same with the in-process read turned off (check, then the timeout-guarded decode worker)
and prints both in ms with their ratio (mp3 always takes the decoder, so its ratio is about 1).

    python bench/listen.py [--repeats 15]
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import inputs

CODECS = {"wav": ["-c:a", "pcm_s16le"], "flac": ["-c:a", "flac", "-sample_fmt", "s16"], "mp3": ["-c:a", "libmp3lame"]}


def make(root: Path, ext: str, seconds: float = 10.0) -> Path:
    """A ``seconds`` long 16 kHz mono tone under noise as ``root/clip.<ext>``."""
    path = root / f"clip.{ext}"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"sine=frequency=300:sample_rate=16000:duration={seconds}", "-f", "lavfi", "-i",
                    f"anoisesrc=a=0.1:r=16000:d={seconds}", "-filter_complex", "amix=inputs=2", "-ar", "16000",
                    "-ac", "1", *CODECS[ext], str(path)], check=True)
    return path


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls after one warm-up call, in ms."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def through_decoder(path: Path) -> np.ndarray:
    """``inputs.listen(path)`` with the in-process read turned off."""
    plain, inputs.plain_pcm = inputs.plain_pcm, lambda *a: None
    try:
        return inputs.listen(path, inputs.SoundOptions())
    finally:
        inputs.plain_pcm = plain


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for ext in CODECS:
            path = make(Path(tmp), ext)
            fast = median_ms(lambda: inputs.listen(path, inputs.SoundOptions()), args.repeats)
            slow = median_ms(lambda: through_decoder(path), args.repeats)
            rows.append({"file": f"10 s {ext}", "listen_ms": fast, "decoder_ms": slow})
            print(f"10 s {ext:4s}  listen {fast:6.1f} ms   decoder {slow:6.1f} ms   decoder / listen {slow / fast:5.2f}")
    return rows


if __name__ == "__main__":
    main()
