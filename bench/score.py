"""Score stage throughput: videos/s of `score` and its cost over decoding alone, on the same videos, one run.

  decode  the score stage's decode path only (probe, every frame at decode.fps, the audio track) through
          the same worker pool, results dropped
  score   the stage itself (`stages.score.score_videos`): decode + log-mel windows + localizer + top-k
Best of R rounds each, alternating; prints videos/s and score/decode - 1 (the target is at most +50%).

    python bench/score.py --data data --checkpoint artifacts/localizer.pt [--videos 48] [--rounds 2]
"""
from __future__ import annotations

import argparse
import time
from multiprocessing import get_context
from pathlib import Path

import torch

from pipeline import manifests, moments
from pipeline.params import DecodeParams, ScoreParams
from stages import score


def _decode_only(args: tuple[str, float, float]) -> bool:
    path, fps, window_s = args
    return not isinstance(moments.decode_clip(path, fps=fps, window_s=window_s), str)


def time_decode(paths: list[str], p: ScoreParams, d: DecodeParams) -> float:
    """Seconds to decode every video with ``p.workers`` processes (pool start included, as in `score`)."""
    t0 = time.perf_counter()
    with get_context("fork").Pool(max(1, p.workers), initializer=moments.worker_init) as pool:
        ok = sum(pool.imap(_decode_only, [(x, d.fps, p.window_s) for x in paths]))
    assert ok == len(paths), f"{len(paths) - ok} videos failed to decode"
    return time.perf_counter() - t0


def time_score(rows: list[dict], manifest: Path, checkpoint: Path, p: ScoreParams, d: DecodeParams) -> float:
    """Seconds for `score_videos` on ``rows`` (the model loaded beforehand)."""
    torch.set_num_threads(max(1, p.threads))
    model = score.load_model(checkpoint)
    t0 = time.perf_counter()
    _, errors, _ = score.score_videos(model, rows, manifest, p, d)
    assert not errors, errors
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data"))
    ap.add_argument("--checkpoint", type=Path, default=Path("artifacts/localizer.pt"))
    ap.add_argument("--videos", type=int, default=48)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    manifest = args.data / "videos.parquet"
    rows = [r for r in manifests.read(manifest).to_pylist() if r["status"] == "ok"][: args.videos]
    paths = [str(manifests.resolve(manifest, r["path"])) for r in rows]
    p, d = ScoreParams(workers=args.workers), DecodeParams()
    dec, sco = float("inf"), float("inf")
    for _ in range(args.rounds):
        dec = min(dec, time_decode(paths, p, d))
        sco = min(sco, time_score(rows, manifest, args.checkpoint, p, d))
    n = len(rows)
    print(f"{n} videos, {args.workers} decode workers, best of {args.rounds}:")
    print("| path | s | videos/s |\n|---|---|---|")
    print(f"| decode only | {dec:.2f} | {n / dec:.1f} |\n| score | {sco:.2f} | {n / sco:.1f} |")
    print(f"score adds {100 * (sco / dec - 1):.0f}% to decode time")


if __name__ == "__main__":
    main()
