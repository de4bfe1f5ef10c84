"""A tiny labelled image corpus for the visual-half tests: red or blue squares on grey backgrounds."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.image_store import ImageWriter


def blobs(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, list[str]]:
    """n images: a red or a blue square on a random grey background; (uint8 [n, size, size, 3], labels)."""
    rng = np.random.default_rng(seed)
    images = np.repeat(rng.integers(60, 200, (n, 1, 1, 1)), 3, axis=3).repeat(size, 1).repeat(size, 2)
    labels = []
    for i in range(n):
        y, x = rng.integers(0, size // 2, 2)
        red = i % 2 == 0
        images[i, y:y + size // 2, x:x + size // 2] = (230, 30, 30) if red else (30, 30, 230)
        labels.append("red" if red else "blue")
    return images.astype(np.uint8), labels


def write_corpus(folder: Path, n_train: int = 40, n_eval: int = 24, size: int = 32) -> Path:
    """``train`` (unlabelled) and ``eval`` (first half val, second half test) images in ``folder``."""
    train, _ = blobs(n_train, 0, size)
    w = ImageWriter(folder, "train", size)
    w.add(train, [dict(video_id=f"t{i}", split="train", t_s=0.0, label=None) for i in range(n_train)])
    w.close()
    ev, labels = blobs(n_eval, 1, size)
    w = ImageWriter(folder, "eval", size)
    w.add(ev, [dict(video_id=f"e{i}", split="val" if i < n_eval // 2 else "test", t_s=0.0, label=lab)
               for i, lab in enumerate(labels)])
    w.close()
    return folder


def write_clip_corpus(folder: Path, clips: int = 6, frames: int = 6, size: int = 32, stripes: bool = False) -> Path:
    """``train``: ``clips`` clips of ``frames`` frames on their own grey scene, a red or blue square shown
    in frames 1-2 of each (so the clip's median scene leaves it out), with dark stripes 2 rows wide every 4
    rows when ``stripes``; ``eval`` as :func:`write_corpus`."""
    rng = np.random.default_rng(2)
    images, rows = [], []
    for c in range(clips):
        scene = np.full((size, size, 3), 40 + 150 * c // max(1, clips - 1), np.uint8)
        y, x = rng.integers(0, size // 2, 2)
        for t in range(frames):
            f = scene.copy()
            if t in (1, 2):
                f[y:y + size // 2, x:x + size // 2] = (230, 30, 30) if c % 2 == 0 else (30, 30, 230)
                if stripes:
                    f[y:y + size // 2:4, x:x + size // 2] //= 3
                    f[y + 1:y + size // 2:4, x:x + size // 2] //= 3
            images.append(f)
            rows.append(dict(video_id=f"c{c}", split="train", t_s=t / 10, label=None))
    w = ImageWriter(folder, "train", size)
    w.add(np.stack(images), rows)
    w.close()
    ev, labels = blobs(24, 1, size)
    w = ImageWriter(folder, "eval", size)
    w.add(ev, [dict(video_id=f"e{i}", split="val" if i < 12 else "test", t_s=0.0, label=lab)
               for i, lab in enumerate(labels)])
    w.close()
    return folder
