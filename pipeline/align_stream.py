"""Training batches of (audio window, image feature) pairs streamed from the shards.

Every sample of the shards is paired by key with its precomputed image feature (``FeatureTable``);
samples without a ``.flac`` member or without a feature are skipped and counted. Audio is decoded in
DataLoader workers and tiled/cut to a fixed length; spectrograms are left to the training device.

How ranks and workers share the data (``split_by``):

* ``sample`` (default): every worker of every rank reads the same shuffled stream (same seed) and
  decodes only its own samples: global sample j is in global batch ``g = j // B``; rank r takes
  positions ``r*L .. (r+1)*L - 1`` of it (``L = B / world``) and worker ``g % K`` decodes it. So the
  global batches are the same for any world size and worker count (what a one-process run sees), and
  every rank has the same number of steps. The price: each reader reads all tar bytes (not decodes).
* ``shard``: shards are dealt to ranks, then to workers; each reads only its shards. Scales reading
  to many machines, needs ``shards >= world * workers``; batches then depend on the world size.

A sample whose audio cannot be decoded (or holds NaN/inf) keeps its slot with ``valid = False`` and
zero audio, so batch shapes and step counts stay aligned; the trainer leaves it out of the loss.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline import shard_io
from pipeline.features import FeatureTable

log = logging.getLogger(__name__)
Batch = dict[str, Any]


def shuffled(stream: Iterator[dict], size: int, rng: random.Random) -> Iterator[dict]:
    """A reproducible shuffle buffer of ``size`` samples (``size <= 1``: unchanged order)."""
    if size <= 1:
        yield from stream
        return
    buf: list[dict] = []
    for s in stream:
        if len(buf) < size:
            buf.append(s)
            continue
        i = rng.randrange(size)
        buf[i], s = s, buf[i]
        yield s
    rng.shuffle(buf)
    yield from buf


class AlignStream(IterableDataset):
    """Batches ``{"wave": [L, n] f32, "feature": [L, D] f32, "valid": [L] bool, "keys", "skipped"}``.

    Args:
        urls: shard paths/URLs of one split.
        table: that split's image features.
        n_samples: audio samples per clip (16 kHz) after tiling/cutting.
        batch: the global batch B (divisible by ``world``).
        rank, world: this process's DDP rank and the world size.
        seed: shuffling seed; ``shuffle_buffer`` 0 keeps shard order (validation).
        drop_last: drop a final incomplete global batch (training).
        spec_fn: when given, each batch also holds its spectrograms ``"spec"`` (computed in the worker).
    """

    def __init__(self, urls: list[str], table: FeatureTable, *, n_samples: int, batch: int, rank: int = 0,
                 world: int = 1, seed: int = 0, shuffle_buffer: int = 0, split_by: str = "sample",
                 drop_last: bool = True, spec_fn: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if batch % world:
            raise ValueError(f"batch {batch} is not divisible by the world size {world}")
        self.urls, self.table, self.n_samples = list(urls), table, n_samples
        self.batch, self.local = batch, batch // world
        self.rank, self.world, self.seed = rank, world, seed
        self.shuffle_buffer, self.split_by, self.drop_last = shuffle_buffer, split_by, drop_last
        self.spec_fn = spec_fn  # set: batches also carry "spec" [L, 1, F, T], computed in the worker
        self.epoch = 0

    def _usable(self, urls: list[str], report: bool, skipped: list[int]) -> Iterator[dict]:
        for s in shard_io.read_samples(urls, ("flac", "json")):
            key = s["__key__"]
            reason = ("no .flac member" if shard_io.missing(s, ("flac",)) else
                      "no image feature" if key not in self.table.rows else "")
            if reason:
                skipped[0] += 1
                if report:
                    log.warning("pair %s skipped: %s", key, reason)
                continue
            yield s

    def _decode(self, s: dict) -> tuple[np.ndarray, bool]:
        wave = shard_io.decode_audio_bytes(s["flac"])
        if isinstance(wave, str):
            log.warning("pair %s: %s (left out of the loss)", s["__key__"], wave)
            return np.zeros(self.n_samples, np.float32), False
        return shard_io.fit_samples(wave, self.n_samples), True

    def _batch(self, items: list[tuple[dict, np.ndarray, bool]], skipped: list[int]) -> Batch:
        rows = [self.table.rows[s["__key__"]] for s, _, _ in items]
        feats = np.asarray(self.table.features[rows], dtype=np.float32)  # memmap rows, copied
        out = {"wave": torch.from_numpy(np.stack([w for _, w, _ in items])) if items else
               torch.zeros(0, self.n_samples),
               "feature": torch.from_numpy(feats.reshape(len(rows), self.table.dim)),
               "valid": torch.tensor([ok for _, _, ok in items], dtype=torch.bool),
               "keys": [s["__key__"] for s, _, _ in items], "skipped": skipped[0]}
        skipped[0] = 0
        if self.spec_fn is not None and items:
            out["spec"] = self.spec_fn(out["wave"])
        return out

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        k, n_workers = (0, 1) if info is None else (info.id, info.num_workers)
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        urls = list(self.urls)
        if self.shuffle_buffer > 0:
            rng.shuffle(urls)
        if self.split_by == "shard":
            yield from self._iter_shards(urls[self.rank::self.world][k::n_workers])
        else:
            yield from self._iter_samples(urls, rng, k, n_workers)

    def _iter_samples(self, urls: list[str], rng: random.Random, k: int, n_workers: int) -> Iterator[Batch]:
        skipped = [0]
        report = self.rank == 0 and k == 0
        pending: list = []
        lo, hi = self.rank * self.local, (self.rank + 1) * self.local
        j = -1
        for j, s in enumerate(shuffled(self._usable(urls, report, skipped), self.shuffle_buffer, rng)):
            g, pos = divmod(j, self.batch)
            if g % n_workers == k and lo <= pos < hi:
                pending.append((s, *self._decode(s)))
            if pos == self.batch - 1 and pending:  # global batch g is complete
                yield self._batch(pending, skipped if report else [0])
                pending = []
        if pending and not self.drop_last:
            yield self._batch(pending, skipped if report else [0])
        elif report and skipped[0]:
            yield self._batch([], skipped)  # no rows: only the count of skipped pairs

    def _iter_shards(self, urls: list[str]) -> Iterator[Batch]:
        skipped, pending = [0], []
        for s in self._usable(urls, True, skipped):
            pending.append((s, *self._decode(s)))
            if len(pending) == self.local:
                yield self._batch(pending, skipped)
                pending = []
        if pending and not self.drop_last:
            yield self._batch(pending, skipped)
        elif skipped[0]:
            yield self._batch([], skipped)


def loader(stream: AlignStream, workers: int, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over the stream's ready batches (``batch_size=None``), in worker round-robin order."""
    return DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=False)
