"""Precomputed image features of the pairs (the ``embed`` stage's output), one split per file pair.

``DIR/{split}.npy`` holds ``float32 [N, D]`` features, row i belonging to row i of ``DIR/{split}.parquet``
(columns ``key``, ``label``). A split's two files are written under temporary names and renamed, so a
reader never sees one without the other being complete. :class:`FeatureWriter` streams rows to disk as
they come (memory holds one batch and the keys, not the features).
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import manifests
from pipeline.manifests import tmp_name

FEATURE_KEYS = pa.schema([("key", pa.string()), ("label", pa.string())])


def paths(folder: str | Path, split: str) -> tuple[Path, Path]:
    """(features .npy, keys .parquet) of ``split`` in ``folder``."""
    folder = Path(folder)
    return folder / f"{split}.npy", folder / f"{split}.parquet"


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """``np.save`` under a temporary name in the same folder, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            np.save(f, array)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class FeatureWriter:
    """Append ``[n, D]`` feature batches of one split; :meth:`finish` writes ``{split}.npy`` and ``.parquet``.

    Rows go to a raw float32 file beside the output as they arrive; ``finish`` writes the .npy header
    and copies them behind it, so the features never sit in memory together.
    """

    def __init__(self, folder: str | Path, split: str, dim: int):
        self.npy, self.table = paths(folder, split)
        self.npy.parent.mkdir(parents=True, exist_ok=True)
        self.raw = self.npy.with_name(f".{split}.f32.tmp-{os.getpid()}")
        self.dim, self.keys, self.labels = dim, [], []
        self._f = open(self.raw, "wb")

    def add(self, keys: Sequence[str], labels: Sequence[str | None], rows: np.ndarray) -> None:
        if rows.shape != (len(keys), self.dim) or len(labels) != len(keys):
            raise ValueError(f"{len(keys)} keys, {len(labels)} labels and features {rows.shape} do not fit")
        self._f.write(np.ascontiguousarray(rows, dtype="<f4").tobytes())
        self.keys += keys
        self.labels += labels

    def finish(self) -> int:
        """Write both files atomically; returns the number of rows."""
        self._f.close()
        try:
            if len(set(self.keys)) != len(self.keys):
                raise ValueError(f"{self.npy.stem!r} has duplicate keys")
            tmp = tmp_name(self.npy)
            header = {"descr": "<f4", "fortran_order": False, "shape": (len(self.keys), self.dim)}
            with open(tmp, "wb") as out, open(self.raw, "rb") as src:
                np.lib.format.write_array_header_1_0(out, header)
                shutil.copyfileobj(src, out, 1 << 24)
            os.replace(tmp, self.npy)
            rows = ({"key": k, "label": lab} for k, lab in zip(self.keys, self.labels))
            manifests.write(rows, FEATURE_KEYS, self.table)
        finally:
            self.raw.unlink(missing_ok=True)
        return len(self.keys)


def write(folder: str | Path, split: str, keys: Sequence[str], labels: Sequence[str | None],
          features: np.ndarray) -> None:
    """Write ``features: [N, D]`` (float32) with their keys and labels in one go."""
    if features.ndim != 2:
        raise ValueError(f"features must be [N, D], got {features.shape}")
    w = FeatureWriter(folder, split, features.shape[1])
    w.add(list(keys), list(labels), features)
    w.finish()


@dataclass
class FeatureTable:
    """A split's features (memory-mapped) and the row of each key.

    Attributes:
        features: ``float32 [N, D]`` (``np.memmap``: pages are read as rows are used).
        keys: the N keys in row order.
        labels: the N labels (None where the pair has none).
        rows: key -> row.
    """

    features: np.ndarray
    keys: list[str]
    labels: list[str | None]
    rows: dict[str, int]

    @property
    def dim(self) -> int:
        return int(self.features.shape[1])

    def __len__(self) -> int:
        return len(self.keys)


def read(folder: str | Path, split: str) -> FeatureTable:
    """Load ``split`` from ``folder``; raises FileNotFoundError / ValueError for missing or mismatched files."""
    npy, table = paths(folder, split)
    for p in (npy, table):
        if not p.is_file():
            raise FileNotFoundError(f"no {split} features: {p} is missing (run the embed stage)")
    features = np.load(npy, mmap_mode="r")
    t = pq.read_table(table)
    keys, labels = t.column("key").to_pylist(), t.column("label").to_pylist()
    if features.ndim != 2 or features.shape[0] != len(keys):
        raise ValueError(f"{npy} holds {features.shape}, but {table} has {len(keys)} keys")
    return FeatureTable(features, keys, labels, {k: i for i, k in enumerate(keys)})
