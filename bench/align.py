"""Alignment training throughput, in one run on one machine: our stage's loop against its limit and
against the published train.py's per-step work, at the world's size and at the paper's size.

For each size, the same synthetic shards (real JPEG + FLAC, ``pipeline.synthetic_pairs``) feed:
  (a) stage  our training loop end to end: shard reading + FLAC decoding in DataLoader workers,
             features looked up by key (precomputed by the embed stage), spectrogram where the stage
             puts it by default (``spectrogram.on: auto``: on a GPU, else in the workers),
             audio encoder forward/backward, Adam step (``pipeline.align_train.train_epoch``: on a GPU,
             batches copied on a side stream, the losses read once per epoch); once per
             ``--cache-mb`` value (the stage's ``audio_encoder.cache_mb``; 0: no cache), over ``--epochs``
             epochs of the same shards through one loader, as the stage runs them. Printed: the first
             epoch after its warm-up step (cold: nothing cached yet; the workers' prefetched batches
             flatter it) and the later epochs timed whole, from the start of each epoch's iteration (what
             all but the first of the stage's epochs see); (a)/(b) and (a)/(c) are of the later epochs;
  (b) bare   the audio encoder's forward + backward + Adam step on ready spectrogram tensors of the
             same shape (the limit for (a));
  (c) published-style: per sample in DataLoader workers, decode the JPEG, the published image
             preprocessing (256, bicubic 224 at paper size) and a scipy spectrogram (float64 numpy);
             per step, the image encoder forward on the batch, then the audio step.
Training samples/s after one warm-up step (best of ``--rounds`` interleaved runs); prints (a)/(b), (a)/(c).
An epoch is ``--steps`` + 1 batches (320 pairs at world size: about the world's training set).

    python bench/align.py [--sizes world,paper] [--steps 4] [--workers 2] [--rounds 1] [--epochs 3]
                          [--cache-mb 0,512] [--device cuda --amp]

On a GPU (``--device cuda``) every network runs there, (a) makes its spectrograms on the device (the stage's
``on: auto``), (a) and (b) run under bf16 autocast with ``--amp``; (c) stays as published (fp32, per-sample
scipy spectrograms in the workers, the image encoder forward on the device).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.signal
import torch
from torch.utils.data import DataLoader, Dataset

from models.audio_encoder import AudioEncoder, AudioEncoderConfig
from models.image_encoder import ImageEncoder, ImageEncoderConfig
from models.losses import make_loss
from pipeline import align_train, audio_input, shard_io
from pipeline.align_stream import AlignStream, loader
from pipeline.distributed import Dist
from pipeline.features import FeatureTable
from pipeline.params import AudioEncoderParams, SpectrogramParams
from pipeline.synthetic_pairs import write_shards
from pipeline.preprocess import encoder_tensor


@dataclass(frozen=True)
class Size:
    name: str
    batch: int
    frame: int  # JPEG side, pixels
    seconds: float  # audio per pair
    audio_width: int
    image_width: int
    image_input: int | None  # None: the published 256 -> bicubic 224
    spec: SpectrogramParams


SIZES = {
    "world": Size("world (64x128 log-mel, ResNet-18 w16; image ResNet-50 w8 at 64 px)", 64, 64, 3.0, 16, 8, 64,
                  SpectrogramParams(kind="logmel")),
    "paper": Size("paper (1x257x1004, ResNet-18; image ResNet-50 at 224 px)", 8, 256, 10.0, 64, 64, None,
                  SpectrogramParams(kind="paper")),
}


DEVICE = torch.device("cpu")
AMP = False


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def rate(step_fn, batches, batch: int, steps: int) -> float:
    """Samples/s of ``step_fn`` over ``steps`` batches after one warm-up step (the iterator included)."""
    it = iter(batches)
    step_fn(next(it))
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step_fn(next(it))
    sync()
    return steps * batch / (time.perf_counter() - t0)


def audio_step(size: Size, dim: int, amp: bool = False) -> align_train.Step:
    torch.manual_seed(0)
    model = AudioEncoder(AudioEncoderConfig(width=size.audio_width, embed_dim=dim)).to(DEVICE)
    p = AudioEncoderParams()
    return align_train.Step(model, align_train.make_optimizer(p, model), make_loss("infonce"),
                            audio_input.spectrogram_fn(size.spec), None, Dist(0, 1, DEVICE), amp)


def stage_rates(size: Size, urls: list[str], table: FeatureTable, steps: int, workers: int, cache_mb: int,
                epochs: int) -> tuple[float, float]:
    """(a) with a cache of ``cache_mb``: samples/s of the first epoch after its warm-up step, and of epochs
    2 .. ``epochs`` timed whole (NaN for one epoch)."""
    spec = audio_input.spectrogram_fn(size.spec) if audio_input.in_workers(size.spec, DEVICE) else None
    stream = AlignStream(urls, table, n_samples=audio_input.n_samples(size.spec), batch=size.batch,
                         shuffle_buffer=size.batch, seed=0, spec_fn=spec, cache_bytes=cache_mb << 20)
    step, pin = audio_step(size, table.dim, AMP), DEVICE.type == "cuda"
    batches = loader(stream, workers, pin)
    first = rate(step, align_train.on_device(batches, DEVICE), size.batch, steps)
    rows, t0 = 0, time.perf_counter()
    for epoch in range(1, epochs):  # as the stage runs them: train_epoch reads the losses at the epoch's end
        stream.epoch = epoch
        rows += align_train.train_epoch(step, batches, shard_mode=False, max_steps=None).samples
    sync()
    return first, rows / (time.perf_counter() - t0) if rows else float("nan")


def bare_rate(size: Size, dim: int, steps: int) -> float:
    step = audio_step(size, dim, AMP)
    spec = step.spec_fn(torch.randn(size.batch, audio_input.n_samples(size.spec)) * 0.1).to(DEVICE)
    feats = torch.randn(size.batch, dim, device=DEVICE)
    model, opt = step.model.train(), step.optimizer

    def bare(_: object) -> None:
        with step.autocast():
            z_a = model(spec)
        loss = step.loss_fn(z_a.float(), feats)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return rate(bare, iter(int, 1), size.batch, steps)


class PublishedStyle(Dataset):
    """Per sample as the published GetVGGSound: JPEG -> encoder input, audio -> scipy spectrogram."""

    def __init__(self, samples: list[dict], size: Size):
        self.samples, self.size = samples, size

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        s = self.samples[i]
        img = encoder_tensor(shard_io.decode_image_bytes(s["jpg"]), self.size.image_input)
        wave = shard_io.decode_audio_bytes(s["flac"]).astype(np.float64)
        if self.size.spec.kind == "paper":
            x = np.clip(np.tile(wave, 10)[:160000], -1.0, 1.0)
            _, _, spec = scipy.signal.spectrogram(x, 16000, nperseg=512, noverlap=353)
            spec = np.log(spec + 1e-7)
            spec = (spec - spec.mean()) / (spec.std() + 1e-9)
            spec = torch.from_numpy(spec).float()[None]
        else:  # the world's log-mel, per sample
            x = torch.from_numpy(shard_io.fit_samples(wave, audio_input.n_samples(self.size.spec)))
            spec = audio_input.spectrogram_fn(self.size.spec)(x[None])[0]
        return img, spec


def published_rate(size: Size, urls: list[str], dim: int, steps: int, workers: int) -> float:
    samples = list(shard_io.read_samples(urls, ("jpg", "flac")))
    torch.manual_seed(0)
    image_encoder = ImageEncoder(ImageEncoderConfig(width=size.image_width)).eval().to(DEVICE)
    step = audio_step(size, dim)
    model, opt = step.model.train(), step.optimizer

    def published(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
        images, spec = batch[0].to(DEVICE), batch[1].to(DEVICE)
        with torch.no_grad():
            z_v = image_encoder(images)
        loss = step.loss_fn(model(spec), z_v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    data = DataLoader(PublishedStyle(samples, size), batch_size=size.batch, shuffle=True, num_workers=workers)
    return rate(published, data, size.batch, steps)


def bench_size(key: str, steps: int, workers: int, rounds: int, caches: list[int], epochs: int,
               batch: int | None = None) -> dict[str, float]:
    size = SIZES[key] if batch is None else dataclasses.replace(SIZES[key], batch=batch)
    dim = 32 * size.image_width
    n = size.batch * (steps + 1)
    with tempfile.TemporaryDirectory() as tmp:
        keys = write_shards(Path(tmp), "train", n, per_shard=max(8, n // 4), size=size.frame,
                            seconds=size.seconds)
        rng = np.random.default_rng(0)
        table = FeatureTable(rng.normal(size=(n, dim)).astype(np.float32), keys, [None] * n,
                             {k: i for i, k in enumerate(keys)})
        urls = shard_io.shard_urls(tmp, "train")
        out = {"b": 0.0, "c": 0.0} | {f"a1 {mb}": 0.0 for mb in caches} | {f"a {mb}": 0.0 for mb in caches}
        for _ in range(rounds):  # interleaved, best of each: the machine's other load only slows runs down
            for mb in caches:
                first, later = stage_rates(size, urls, table, steps, workers, mb, epochs)
                out[f"a1 {mb}"], out[f"a {mb}"] = max(out[f"a1 {mb}"], first), max(out[f"a {mb}"], later)
            out["b"] = max(out["b"], bare_rate(size, dim, steps))
            out["c"] = max(out["c"], published_rate(size, urls, dim, steps, workers))
    print(f"{size.name}, batch {size.batch}, {n} pairs, {steps} timed steps, {epochs} epochs, best of {rounds}, "
          f"{workers} workers, {torch.get_num_threads()} threads:")
    for mb in caches:
        a = out[f"a {mb}"]
        print(f"  (a) stage, cache {f'{mb} MiB' if mb else 'off':>8}  first epoch {out[f'a1 {mb}']:8.2f}, "
              f"epochs 2-{epochs} {a:8.2f} samples/s   (a)/(b) = {a / out['b']:.2f}   (a)/(c) = {a / out['c']:.2f}")
    print(f"  (b) bare fwd+bwd       {out['b']:8.2f} samples/s")
    print(f"  (c) published-style    {out['c']:8.2f} samples/s")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="world,paper")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=1, help="repeat (a), (b), (c) interleaved; keep the best")
    ap.add_argument("--epochs", type=int, default=3, help="epochs of (a); epochs 2.. are its figure")
    ap.add_argument("--cache-mb", default=f"0,{AudioEncoderParams().cache_mb}",
                    help="comma-separated audio_encoder.cache_mb values for (a) (0: no cache)")
    ap.add_argument("--batch", type=int, default=None, help="batch size for every size (default: each size's own)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda")
    ap.add_argument("--amp", action="store_true", help="bf16 autocast for (a) and (b) (on cuda)")
    args = ap.parse_args()
    global DEVICE, AMP
    DEVICE, AMP = torch.device(args.device), args.amp
    if DEVICE.type == "cuda":
        print(f"device: {torch.cuda.get_device_name()}, amp: {AMP}")
    print(f"load average before: {os.getloadavg()}")
    for key in args.sizes.split(","):
        bench_size(key, args.steps, args.workers, args.rounds, [int(v) for v in args.cache_mb.split(",")],
                   args.epochs, args.batch)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
