"""Training throughput of the visual half at the paper's sizes (params/vggsound.yaml), on a GPU, with and
without bf16 autocast: the `train_image_encoder` stage (SwAV, ResNet-50 width 64, 2 x 224 + 6 x 96 crops)
and the `train_generator` stage (IC-GAN, BigGAN 128 px, ch 96, dim_z 120, 2048-d features), each for a few
steps, through the stages' own ``run`` functions.

The corpus is synthetic (random uint8 images written with ``pipeline.image_store.ImageWriter``: no video
decoding, no ffmpeg). Each stage's report gives training images/s after its first (warm-up) step; the
generator counts the images of its G update batches (each step also runs ``d_steps`` D updates). The paper's
batch of 256 is one GPU's share here only if it fits: ``--swav-batch`` / ``--gan-batch`` set it, and the
peak GPU memory printed beside each figure says how far it could go.

    python bench/paper_gpu.py --device cuda --amp on,off        # what bench/paper_gpu.sh runs
    python bench/paper_gpu.py --tiny                            # tiny widths on the CPU: checks it runs
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from pipeline.image_store import ImageWriter
from pipeline.params import GeneratorParams, ImageEncoderParams, load_all
from stages import train_generator, train_image_encoder

REPO = Path(__file__).resolve().parents[1]
TINY_ENCODER = dict(width=2, hidden_dim=16, proj_dim=8, n_prototypes=6, crop_size=32, small_crops=1, small_size=16,
                    queue=0, knn_k=3, threads=1)
TINY_GENERATOR = dict(resolution=32, g_ch=4, d_ch=4, dim_z=16, shared_dim_feat=8, attn="0", k_neighbours=3,
                      threads=1)


def write_corpus(folder: Path, n_train: int, n_eval: int, size: int, seed: int = 0) -> Path:
    """Random uint8 ``train`` images and labelled ``eval`` ones (two classes, half val, half test)."""
    rng = np.random.default_rng(seed)
    w = ImageWriter(folder, "train", size)
    for start in range(0, n_train, 256):
        n = min(256, n_train - start)
        w.add(rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
              [dict(video_id=f"t{start + i}", split="train", t_s=0.0, label=None) for i in range(n)])
    w.close()
    w = ImageWriter(folder, "eval", size)
    w.add(rng.integers(0, 256, (n_eval, size, size, 3), dtype=np.uint8),
          [dict(video_id=f"e{i}", split="val" if i < n_eval // 2 else "test", t_s=0.0, label=f"c{i % 2}")
           for i in range(n_eval)])
    w.close()
    return folder


def sizes(args: argparse.Namespace) -> tuple[ImageEncoderParams, GeneratorParams, int]:
    """(SwAV params, IC-GAN params, stored image size): the paper file's, shortened to a few steps."""
    paper = load_all(REPO / "params" / "vggsound.yaml")
    enc = dataclasses.replace(paper["image_encoder"], steps=args.swav_steps, batch=args.swav_batch,
                              device=args.device, **(TINY_ENCODER if args.tiny else {}))
    gen = dataclasses.replace(paper["generator"], steps=args.gan_steps, batch=args.gan_batch, device=args.device,
                              eval_frames=args.eval_images, fid_images=args.eval_images, fid_every=0, minutes=0.0,
                              sample_every=10**9, checkpoint_every=10**9, **(TINY_GENERATOR if args.tiny else {}))
    return enc, gen, 32 if args.tiny else paper["images"].size


def peak_gib(device: str) -> float | None:
    """Peak GPU memory since the last call, GiB (None on the CPU); resets the counter."""
    if device != "cuda":
        return None
    peak = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    return round(peak, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--amp", default="on,off", help="comma-separated: on, off")
    ap.add_argument("--tiny", action="store_true", help="tiny widths and 32 px images (a CPU check that it runs)")
    ap.add_argument("--swav-steps", type=int, default=6)
    ap.add_argument("--gan-steps", type=int, default=5)
    ap.add_argument("--swav-batch", type=int, default=64)
    ap.add_argument("--gan-batch", type=int, default=64)
    ap.add_argument("--train-images", type=int, default=512)
    ap.add_argument("--eval-images", type=int, default=64)
    ap.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    args = ap.parse_args()
    if args.tiny:
        args.swav_batch, args.gan_batch = min(args.swav_batch, 8), min(args.gan_batch, 4)
        args.train_images, args.eval_images = min(args.train_images, 40), min(args.eval_images, 8)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        enc, gen, size = sizes(args)
        write_corpus(root / "images", args.train_images, args.eval_images, size)
        rows, modes = [], [a.strip() == "on" for a in args.amp.split(",")]
        for amp in modes:
            t0 = time.time()
            r = train_image_encoder.run(dataclasses.replace(enc, amp=amp), images=root / "images",
                                        out=root / f"enc_{amp}.pt", report=root / f"enc_{amp}.json")
            rows.append(("train_image_encoder (SwAV)", enc.batch, r, peak_gib(r["device"]), time.time() - t0))
        for amp in modes:  # conditioned on the first SwAV run's encoder (2048-d features at paper size)
            t0 = time.time()
            r = train_generator.run(dataclasses.replace(gen, amp=amp), encoder=root / f"enc_{modes[0]}.pt",
                                    images=root / "images", out=root / f"gen_{amp}.pt", reports=root / f"gen_{amp}")
            rows.append(("train_generator (IC-GAN)", gen.batch, r, peak_gib(r["device"]), time.time() - t0))
        print("| stage | device | amp | batch | steps | images/s | peak GiB | stage s |\n|---|---|---|---|---|---|---|---|")
        for name, batch, r, peak, secs in rows:
            print(f"| {name} | {r['device']} | {'bf16' if r['amp'] else 'fp32'} | {batch} | {r['steps']} | "
                  f"{r['images_per_s']} | {peak} | {secs:.0f} |")
        print(json.dumps([{"stage": n, "batch": b, "images_per_s": r["images_per_s"], "device": r["device"],
                           "amp": r["amp"], "peak_gib": p} for n, b, r, p, _ in rows]))


if __name__ == "__main__":
    main()
