"""The volume control link by link (built-in world only): where does loudness stop reaching the drawn size?

`volume_spearman` (stage `evaluate`) measures the whole chain: gain -> audio feature -> generator -> drawn
size read by the evaluator. This script measures its links apart, on the pipeline's artifacts:

1. audio: a ridge probe from the audio encoder's unit features (train and val pairs, gain 1) to the drawn size
   of each pair's frame (events.parquet), scored on the test pairs; then the same probe read from the test
   clips at every gain: mean probe size per gain and the per-clip Spearman of probe size against gain;
2. generator: the evaluator's drawn-size head on G(image feature of each labelled test frame), Spearman
   against the true size (mean over noise draws), beside the head on the real frames themselves;
3. steering: those test frames' features moved along the size probe of the image features (fit on the val
   frames) by -12 .. +12 px of probe size: does G's drawn size follow its feature (per frame and noise)?
4. the ideal sound for this G: each test clip's gain-1 audio feature moved only along the gain augmentation's
   level direction (fitted on the train pairs' levels and image features, ``pipeline.gain_augment``) by the
   gain's level change (``2 log g``, as if nothing clipped), bounded to the train pairs' levels
   (``gain_saturate``), at several multiples of the fitted slope: the `volume_spearman` an audio encoder that
   learned its training target exactly would get (the evaluate stage's noise draws, its Spearman), beside the
   whole chain's in the same run.

    python bench/volume_chain.py [--audio-encoder A] [--generator G] [--evaluator E] [--image-encoder I] [--params P]
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.stats import spearmanr

from models.image_encoder import load_encoder
from pipeline import eval_metrics, features, gain_augment, generate, shard_io, swav
from pipeline.evaluation import Judge, SoundToImage, frames_like
from pipeline.params import EvaluateParams, load_all
from pipeline.image_store import read_images
import chain_args
from size_probe import fit_probe, frame_sizes, probe, ridge_weights

GAINS = (0.25, 0.5, 1.0, 2.0, 4.0)
SHIFTS = (-12.0, -6.0, 0.0, 6.0, 12.0)  # px of the image-feature size probe (the world's sizes: 14-40 px)
SCALES = (1.0, 2.0, 3.0, 4.0, 6.0)  # link 4: multiples of the fitted level slope (the world trains at 6)


def gain_response(pred: np.ndarray, gains: tuple[float, ...]) -> tuple[list[float], float]:
    """(mean of each column, mean over rows of Spearman(row, gains)) for ``pred [clips, len(gains)]``;
    rows without variation are left out of the mean."""
    rhos = [spearmanr(row, gains)[0] for row in pred if np.ptp(row) > 0]
    return [float(v) for v in pred.mean(0)], float(np.mean(rhos)) if rhos else float("nan")


def split_audio(shards: Path, split: str) -> tuple[list[str], list[np.ndarray]]:
    """Keys and 16 kHz waveforms of a split's readable pairs."""
    keys, waves = [], []
    for s in shard_io.read_samples(shard_io.shard_urls(shards, split), ("flac", "json")):
        wave = shard_io.decode_audio_bytes(s["flac"]) if "flac" in s else "no flac"
        if not isinstance(wave, str):
            keys.append(s["__key__"])
            waves.append(wave)
    return keys, waves


def audio_link(s2i: SoundToImage, shards: Path, pairs: pd.DataFrame, events: pd.DataFrame) -> dict:
    """Link 1: the probe's test Spearman, its mean size per gain and its per-clip Spearman over gains."""
    feats, sizes = {}, {}
    for split in ("train", "val", "test"):
        keys, waves = split_audio(shards, split)
        sizes[split] = frame_sizes(pairs.loc[keys].reset_index(), events)
        gains = GAINS if split == "test" else (1.0,)
        feats[split] = {g: F.normalize(s2i.features(s2i.fit(waves, g)), dim=1).double().numpy() for g in gains}
    x = np.concatenate([feats["train"][1.0], feats["val"][1.0], feats["test"][1.0]])
    y = np.concatenate([sizes["train"], sizes["val"], sizes["test"]])
    n_fit, ok = len(sizes["train"]) + len(sizes["val"]), ~np.isnan(y)
    fit, score = (np.arange(len(y)) < n_fit) & ok, (np.arange(len(y)) >= n_fit) & ok
    rho, r2 = probe(x, y, fit, score)
    read = fit_probe(x[fit], y[fit])  # the same fit as probe()'s
    per_gain = np.stack([read(feats["test"][g]) for g in GAINS], 1)
    means, per_clip = gain_response(per_gain, GAINS)
    return {"probe_spearman": rho, "probe_r2": r2, "size_per_gain": means, "per_clip_spearman": per_clip}


def generator_link(judge: Judge, s2i: SoundToImage, image_encoder: Path, images: Path, events: pd.DataFrame,
                   noises: int = 4) -> dict:
    """Link 2: Spearman of the drawn size of G(feature of a real test frame) and of the real frame itself
    against the true size; link 3 (:func:`steer`) on the same frames."""
    frames, table = read_images(images, "eval")
    table = table.to_pandas()
    size = frame_sizes(table, events)
    keep = ~np.isnan(size)
    test = (table.split == "test").to_numpy()[keep]
    frames, size = frames[keep], size[keep]
    model, input_size = load_encoder(image_encoder)
    feats = F.normalize(swav.embed(model, frames, size=input_size).float(), dim=1)
    _, real = judge(frames_like(frames[test], s2i.G.cfg.resolution))
    z = torch.from_numpy(np.random.default_rng(0).standard_normal((noises, s2i.G.dim_z)).astype(np.float32))
    drawn = drawn_size(judge, s2i, feats[test], z)
    w = ridge_weights(feats[~test].double().numpy(), size[~test])[:-1]  # the val frames' size probe
    return {"frames": int(test.sum()), "real_spearman": float(spearmanr(real.numpy(), size[test])[0]),
            "generated_spearman": float(np.mean([spearmanr(drawn[:, k], size[test])[0] for k in range(noises)])),
            **steer(judge, s2i, feats[test], z[:2], torch.from_numpy(w / (w @ w)).float())}


def drawn_size(judge: Judge, s2i: SoundToImage, feats: torch.Tensor, z: torch.Tensor) -> np.ndarray:
    """The evaluator's drawn size of G(every feature x every noise): ``[N, K]``."""
    fake = generate.generate(s2i.G, feats.repeat_interleave(len(z), 0).numpy(), z.repeat(len(feats), 1).numpy())
    return judge(fake)[1].view(len(feats), len(z)).numpy()


def steer(judge: Judge, s2i: SoundToImage, feats: torch.Tensor, z: torch.Tensor, per_px: torch.Tensor) -> dict:
    """Link 3: each unit feature moved by ``SHIFTS`` px of the size probe (``per_px [D]``: the move that
    raises the probe by 1 px), re-normalised: the mean drawn size per shift and the per-frame-and-noise
    Spearman of drawn size against the shift (how closely G follows its feature's size)."""
    sizes = np.stack([drawn_size(judge, s2i, F.normalize(feats + s * per_px, dim=1), z) for s in SHIFTS], -1)
    means, rho = gain_response(sizes.reshape(-1, len(SHIFTS)), SHIFTS)
    return {"steer_size": means, "steer_spearman": rho}


def ideal_link(judge: Judge, s2i: SoundToImage, data: Path, p: EvaluateParams, clusters: int) -> dict:
    """Link 4: ``volume_spearman`` of the whole chain and of the ideal level-only move at each of ``SCALES``
    (module docstring); ``{}`` when the encoder's input is z-scored per clip (no level to move)."""
    if s2i.sp.norm != "none":
        return {}
    eps = s2i.sp.log_eps
    level = lambda waves: gain_augment.clip_level(s2i.spectrogram(s2i.fit(waves)), eps)  # noqa: E731
    table = features.read(data / "embeddings", "train")
    keys, waves = split_audio(data / "shards", "train")
    keep = [i for i, k in enumerate(keys) if k in table.rows]
    feats = torch.from_numpy(np.stack([np.asarray(table.features[table.rows[keys[i]]], np.float32).reshape(-1)
                                       for i in keep]))
    train_levels = level([waves[i] for i in keep])
    direction, _ = gain_augment.level_direction(train_levels, feats, clusters=clusters)
    bounds = (float(train_levels.min()), float(train_levels.max()))
    _, test_waves = split_audio(data / "shards", "test")
    z = generate.truncated_noise(p.n_noise, s2i.dim_z, p.truncation, p.seed)[:p.volume_noise]
    gains = np.array(p.gains)

    def spearman(feature_at: Callable[[float], torch.Tensor]) -> float:
        sizes = [judge(s2i.images(feature_at(g), z).flatten(0, 1))[1].view(len(test_waves), len(z)) for g in gains]
        return eval_metrics.volume_spearman(torch.stack(sizes, -1).flatten(0, 1).numpy(), gains)

    f1, lv = s2i.features(s2i.fit(test_waves)), level(test_waves)
    on = torch.ones(len(f1), dtype=torch.bool)
    ideal = []
    for scale in SCALES:
        shift = gain_augment.GainShift(direction * scale, 1.0, 0.25, 4.0, eps, levels=bounds)
        ideal.append(spearman(lambda g: shift.move(f1, shift.bounded(lv, lv + 2 * math.log(g)).float(), on)))
    return {"chain": spearman(lambda g: s2i.features(s2i.fit(test_waves, g))), "ideal": ideal}


def main() -> None:
    args = chain_args.parse(__doc__)
    events = pd.read_parquet(args.data / "events.parquet")
    pairs = pd.read_parquet(args.data / "pairs.parquet").set_index("key")
    s2i, judge = SoundToImage(args.audio_encoder, args.generator), Judge(args.evaluator)
    a = audio_link(s2i, args.data / "shards", pairs, events)
    g = generator_link(judge, s2i, args.image_encoder, args.data / "images", events)
    print("| link | figure |\n|---|---|")
    print(f"| audio feature -> size probe, test pairs (Spearman / R^2) | {a['probe_spearman']:.3f} / {a['probe_r2']:.3f} |")
    print(f"| probe size (px) at gains {', '.join(map(str, GAINS))} | {' / '.join(f'{v:.1f}' for v in a['size_per_gain'])} |")
    print(f"| per-clip Spearman of probe size against gain | {a['per_clip_spearman']:.3f} |")
    print(f"| evaluator size head on the real test frames vs true size ({g['frames']} frames) | {g['real_spearman']:.3f} |")
    print(f"| ... on G(their image features), mean over 4 noises | {g['generated_spearman']:.3f} |")
    print(f"| G's drawn size (fraction of the frame) with the feature moved {', '.join(f'{v:+g}' for v in SHIFTS)} px "
          f"along the image-feature size probe | {' / '.join(f'{v:.3f}' for v in g['steer_size'])} |")
    print(f"| per frame and noise, Spearman of that drawn size against the move | {g['steer_spearman']:.3f} |")
    params = load_all(args.params) if args.params.is_file() else {}
    ideal = ideal_link(judge, s2i, args.data, params.get("evaluate", EvaluateParams()),
                       params["audio_encoder"].gain_clusters if "audio_encoder" in params else 16)
    if ideal:
        print(f"| `volume_spearman` of the whole chain (gain on the waveform; evaluate's noise) | {ideal['chain']:.3f} |")
        print(f"| ... of the ideal sound: the gain-1 audio feature moved along the level direction only, bounded, "
              f"at {' / '.join(f'x{v:g}' for v in SCALES)} the fitted slope | {' / '.join(f'{v:.3f}' for v in ideal['ideal'])} |")


if __name__ == "__main__":
    main()
