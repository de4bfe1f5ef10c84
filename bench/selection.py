"""Moment selection on the built-in world: how often is the chosen frame inside a ground-truth main event?

A main event is a sound of the video's own class whose source is drawn while it sounds (events.parquet:
``label`` = the video's label and ``on_screen``); a time t hits it when ``t_start <= t < t_end``. Selectors,
all on the same videos, in one run:
  localizer  rank 0 of moments.parquet (the `score` stage)
  middle     the middle frame (the paper's baseline)
  random     a uniformly random frame: the exact expectation (share of frames inside a main event)
  energy     the frame whose audio window (same length as the localizer's) has the largest RMS: an
             audio-energy-only selector, which off-screen sounds and ambient bursts should fool

    python bench/selection.py --data data [--split test] [--window-s 1.0] [--fps 10]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from pipeline import manifests, media, moments
from pipeline.events import inside, main_events


def energy_time(path: Path, times: np.ndarray, window_s: float) -> float | None:
    """The time whose centred audio window has the largest RMS (None when the audio cannot be read)."""
    audio = media.decode_audio(path, sr=moments.SR)
    if media.is_error(audio) or len(audio) < window_s * moments.SR:
        return None
    rms = np.sqrt(np.mean(np.square(moments.audio_windows(audio, times, window_s), dtype=np.float64), axis=1))
    return float(times[int(np.argmax(rms))])


def hit_rates(data: Path, split: str, window_s: float, fps: float) -> dict[str, tuple[int, int]]:
    """``{selector: (hits, videos)}`` over the ok videos of ``split`` that have a main event."""
    videos = {r["video_id"]: r for r in manifests.read(data / "videos.parquet").to_pylist()
              if r["split"] == split and r["status"] == "ok"}
    spans = main_events(manifests.read(data / "events.parquet").to_pylist(), videos)
    top1 = {r["video_id"]: r["t_s"] for r in manifests.read(data / "moments.parquet").to_pylist() if r["rank"] == 0}
    counts = {k: [0.0, 0] for k in ("localizer", "middle", "random (expected)", "energy")}
    for vid, v in sorted(videos.items()):
        if vid not in spans:
            continue
        times = moments.frame_times(v["duration_s"], fps)
        picks = {"localizer": top1.get(vid), "middle": moments.mid_time(v["duration_s"], fps),
                 "energy": energy_time(manifests.resolve(data / "videos.parquet", v["path"]), times, window_s)}
        for name, t in picks.items():
            counts[name][0] += t is not None and inside(t, spans[vid])
            counts[name][1] += 1
        counts["random (expected)"][0] += float(np.mean([inside(t, spans[vid]) for t in times]))
        counts["random (expected)"][1] += 1
    return {k: (h, n) for k, (h, n) in counts.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data"), help="folder with videos/events/moments.parquet")
    ap.add_argument("--split", default="test")
    ap.add_argument("--window-s", type=float, default=1.0, help="audio window of the energy selector")
    ap.add_argument("--fps", type=float, default=10.0)
    args = ap.parse_args()
    rates = hit_rates(args.data, args.split, args.window_s, args.fps)
    print(f"moment hit rate, {args.split} split (top-1 frame inside a main event):")
    print("| selector | hit rate | videos |\n|---|---|---|")
    for name, (h, n) in rates.items():
        print(f"| {name} | {100 * h / max(n, 1):.1f}% | {n} |")


if __name__ == "__main__":
    main()
