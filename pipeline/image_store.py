"""Image corpora on disk: a uint8 ``.npy`` array [N, H, W, 3] plus a Parquet index (one row per image).

The `images` stage writes ``train.npy`` / ``train.parquet`` (the unlabeled corpus) and ``eval.npy`` /
``eval.parquet`` (labelled frames of val/test clips, for health figures). Writing streams: images go to a
raw temporary file as they come and are copied into the final ``.npy`` at the end (memory stays flat);
both files appear under their final names only when complete.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa

from pipeline import manifests


class ImageWriter:
    """Stream uint8 images [h, w, 3] into ``<stem>.npy`` and their rows into ``<stem>.parquet``."""

    def __init__(self, folder: Path, stem: str, size: int) -> None:
        self.folder, self.stem, self.size = Path(folder), stem, size
        self.folder.mkdir(parents=True, exist_ok=True)
        self._raw_path = self.folder / f".{stem}.raw-{os.getpid()}"
        self._raw = open(self._raw_path, "wb")
        self.rows: list[dict] = []

    def add(self, images: np.ndarray, rows: list[dict]) -> None:
        """Append ``images`` uint8 [n, size, size, 3] with one index row each."""
        if images.shape[1:] != (self.size, self.size, 3) or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 [n, {self.size}, {self.size}, 3], got {images.dtype} {images.shape}")
        if len(images) != len(rows):
            raise ValueError(f"{len(images)} images but {len(rows)} rows")
        self._raw.write(np.ascontiguousarray(images).tobytes())
        self.rows.extend(rows)

    def close(self, chunk: int = 4096) -> int:
        """Write the final ``.npy`` (through a temporary name) and ``.parquet``; return the image count."""
        self._raw.close()
        n = len(self.rows)
        shape = (n, self.size, self.size, 3)
        tmp = self.folder / f".{self.stem}.npy.tmp-{os.getpid()}"
        try:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            raw = np.memmap(self._raw_path, dtype=np.uint8, mode="r", shape=shape) if n else np.zeros(shape, np.uint8)
            for start in range(0, n, chunk):
                out[start:start + chunk] = raw[start:start + chunk]
            out.flush()
            del out, raw
            os.replace(tmp, self.folder / f"{self.stem}.npy")
        finally:
            tmp.unlink(missing_ok=True)
            self._raw_path.unlink(missing_ok=True)
        manifests.write(self.rows, manifests.IMAGES, self.folder / f"{self.stem}.parquet")
        return n


def read_images(folder: str | Path, stem: str) -> tuple[np.ndarray, pa.Table]:
    """(images uint8 [N, H, W, 3] memory-mapped, index table) of ``<folder>/<stem>.npy|parquet``."""
    folder = Path(folder)
    images = np.load(folder / f"{stem}.npy", mmap_mode="r")
    table = manifests.read(folder / f"{stem}.parquet", manifests.IMAGES)
    if len(images) != table.num_rows:
        raise ValueError(f"{folder}/{stem}: {len(images)} images but {table.num_rows} index rows")
    return images, table


def labels_of(table: pa.Table) -> tuple[np.ndarray, list[str]]:
    """(class index per row int64 [N], sorted class names) of a labelled index table."""
    names = table.column("label").to_pylist()
    if any(v is None for v in names):
        raise ValueError("the index has unlabelled rows")
    classes = sorted(set(names))
    lookup = {c: i for i, c in enumerate(classes)}
    return np.array([lookup[v] for v in names], np.int64), classes


def clip_groups(video_ids: list[str]) -> np.ndarray | None:
    """int [N]: the clip of each image when the rows come in contiguous runs per clip (the `images` stage
    writes them so); None when a clip's rows are scattered (grouped batches are then not possible)."""
    ids = np.asarray(video_ids, dtype=object)
    if len(ids) == 0:
        return None
    change = np.r_[True, ids[1:] != ids[:-1]]
    groups = np.cumsum(change) - 1
    return groups if len(set(ids[change])) == int(change.sum()) else None


def clip_runs(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) index arrays ``[G]`` of the contiguous runs of equal values in ``groups`` int ``[N]``
    (the clip of each image, as :func:`clip_groups` gives it)."""
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    return starts, np.r_[starts[1:], len(groups)]


def batches(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``size`` covering range(n)."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))
