"""Decode throughput: torchcodec and decord (our media layer) against the ffmpeg CLI, in one run.

Makes N clips with ffmpeg (two kinds: 256 px 25 fps 10 s "downloaded" clips and 64 px 10 fps 6 s world-like
clips), then times decoding every clip at 10 fps (the score stage's access pattern) with:
  ffmpeg    `ffmpeg -threads 1 -i CLIP -vf fps=10 -f null -` (decode + frame selection, no output)
  <backend> `media.decode_frames_inline` (probe with ffprobe + decode + nearest-pts selection, to numpy)
  <backend>+guard `media.decode_frames` (same, through the timeout-guarded worker process)
Everything single-threaded. Prints frames/s and the ratio to ffmpeg; repeat and take the best of R rounds.

    python bench/decode.py [--clips 12] [--rounds 3]
"""
from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline import media

KINDS = {"256px 25fps 10s": (256, 25, 10.0), "64px 10fps 6s": (64, 10, 6.0)}


def make_clips(root: Path, n: int, size: int, fps: int, dur: float) -> list[Path]:
    out = []
    for i in range(n):
        p = root / f"c{size}_{i}.mp4"
        subprocess.run(["ffmpeg", "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                        f"testsrc2=size={size}x{size}:rate={fps},hue=h={i * 30}", "-f", "lavfi", "-i",
                        f"sine=frequency={300 + 50 * i}:sample_rate=44100", "-t", str(dur), "-c:v", "libx264",
                        "-preset", "veryfast", "-g", str(2 * fps), "-pix_fmt", "yuv420p", "-c:a", "aac", str(p)],
                       check=True)
        out.append(p)
    return out


def time_ffmpeg(clips: list[Path]) -> float:
    t = time.perf_counter()
    for c in clips:
        subprocess.run(["ffmpeg", "-loglevel", "error", "-threads", "1", "-i", str(c), "-vf", "fps=10", "-an",
                        "-f", "null", "-"], check=True)
    return time.perf_counter() - t


def time_backend(clips: list[Path], backend: str, guarded: bool, dur: float) -> float:
    times = np.arange(0, dur, 0.1)
    t = time.perf_counter()
    for c in clips:
        info = media.probe(c)
        assert not isinstance(info, str), info
        if guarded:
            frames = media.decode_frames(c, times, backend=backend, info=info)
        else:
            frames = media.decode_frames_inline(c, times, backend=backend, info=info)
        assert not isinstance(frames, str) and len(frames) == len(times), frames
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"{'clips':<18}{'method':<20}{'frames/s':>10}{'vs ffmpeg':>11}")
    with tempfile.TemporaryDirectory() as tdir:
        for kind, (size, fps, dur) in KINDS.items():
            clips = make_clips(Path(tdir), args.clips, size, fps, dur)
            n_frames = len(clips) * len(np.arange(0, dur, 0.1))
            media.decode_frames(clips[0], [0.0])  # start the guarded worker outside the timing
            results: dict[str, float] = {}
            for _ in range(args.rounds):
                for name, fn in [("ffmpeg -vf fps=10", lambda: time_ffmpeg(clips))] + [
                        (f"{b}{'+guard' if g else ''}", lambda b=b, g=g: time_backend(clips, b, g, dur))
                        for b in media.BACKENDS for g in (False, True)]:
                    results[name] = min(results.get(name, float("inf")), fn())
            base = n_frames / results["ffmpeg -vf fps=10"]
            for name, secs in results.items():
                print(f"{kind:<18}{name:<20}{n_frames / secs:>10.0f}{n_frames / secs / base:>10.2f}x")


if __name__ == "__main__":
    main()
