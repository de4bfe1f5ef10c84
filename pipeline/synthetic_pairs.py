"""Synthetic pair shards for tests and benchmarks: WebDataset tars with real JPEG, FLAC and JSON members,
in the ``pairs`` stage's layout (``{split}-%06d.tar``, ``KEY.jpg`` / ``KEY.flac`` / ``KEY.json``).

Each pair of class c has a frame filled with colour c (plus noise) and a tone at pitch c (plus noise),
so an audio encoder can learn to find its frame.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import webdataset as wds

from models.checkpoint import save_checkpoint
from models.image_encoder import ImageEncoder, ImageEncoderConfig
from pipeline import shards

SR = 16_000
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 60, 220), (230, 210, 40)]


def jpeg_bytes(label: int, rng: np.random.Generator, size: int = 32) -> bytes:
    """A ``size`` x ``size`` JPEG of class ``label``'s colour with noise (the pairs stage's encoder)."""
    pixels = np.clip(np.array(COLOURS[label % 4]) + rng.normal(0, 20, (size, size, 3)), 0, 255)
    return shards.encode_jpeg(pixels.astype(np.uint8))


def tone(label: int, rng: np.random.Generator, seconds: float = 1.0, sr: int = SR) -> np.ndarray:
    """``[seconds * sr]`` float32: class ``label``'s pitch (+-3 %) with a little noise."""
    t = np.arange(int(seconds * sr)) / sr
    f0 = 220.0 * 2 ** (label * 5 / 12) * rng.uniform(0.97, 1.03)
    return (0.4 * np.sin(2 * np.pi * f0 * t) + 0.02 * rng.normal(size=t.size)).astype(np.float32)


def pair_sample(key: str, split: str, label: int, rng: np.random.Generator, *, shard: str,
                audio: bytes | None = None, with_flac: bool = True, size: int = 32,
                seconds: float = 1.0) -> dict:
    """One shard sample (``__key__``, ``jpg``, ``json`` and, unless ``with_flac`` is False, ``flac``)."""
    row = dict(key=key, video_id=key.rsplit("_", 1)[0], split=split, label=f"class{label}", t_s=1.0,
               score=0.5, selection="top1", shard=shard)
    sample = {"__key__": key, "jpg": jpeg_bytes(label, rng, size), "json": json.dumps(row).encode()}
    if with_flac:
        sample["flac"] = audio if audio is not None else shards.encode_flac(tone(label, rng, seconds))
    return sample


def write_shards(folder: Path, split: str, n: int, *, per_shard: int = 8, classes: int = 4,
                 seed: int = 0, drop_flac: Sequence[int] = (), size: int = 32, seconds: float = 1.0) -> list[str]:
    """``n`` pairs of ``split`` in ``folder/{split}-%06d.tar``; pair i is class ``i % classes``, its frame
    ``size`` pixels square, its audio ``seconds`` long.

    Pairs whose index is in ``drop_flac`` lack their ``.flac`` member. Returns the keys written.
    """
    rng = np.random.default_rng([seed, len(split)])
    folder.mkdir(parents=True, exist_ok=True)
    keys = []
    for start in range(0, n, per_shard):
        name = shards.PATTERN.format(split=split, index=start // per_shard)
        with wds.TarWriter(str(folder / name)) as sink:
            for i in range(start, min(n, start + per_shard)):
                key = f"{split}{i:04d}_0"
                sink.write(pair_sample(key, split, i % classes, rng, shard=name, with_flac=i not in drop_flac,
                                       size=size, seconds=seconds))
                keys.append(key)
    return keys


def write_image_encoder(path: Path, width: int = 4, seed: int = 0) -> ImageEncoderConfig:
    """A tiny own-format image-encoder checkpoint (feature dim ``32 * width``)."""
    torch.manual_seed(seed)
    cfg = ImageEncoderConfig(width=width, hidden_dim=16, proj_dim=8, n_prototypes=4)
    save_checkpoint(path, ImageEncoder(cfg).eval(), cfg, step=1)
    return cfg
