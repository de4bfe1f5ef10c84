"""Training batches of (audio window, image feature) pairs streamed from the shards.

Every sample of the shards is paired by key with its precomputed image feature (``FeatureTable``);
samples without a ``.flac`` member or without a feature are skipped and counted. Audio is decoded in
DataLoader workers and tiled/cut to a fixed length; with ``spec_fn`` the workers also make each clip's
spectrogram (one clip at a time, so it depends on that clip only), else spectrograms are left to the
training device. With ``cache_bytes`` these per-clip items are kept across epochs
(``pipeline.audio_cache``: shared by the workers, bounded, the rest streamed); later epochs then do not
read a shard whose pairs are all cached (its keys' order is remembered from the first read). Batches are
the same with and without the cache.

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
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from pipeline import shard_io
from pipeline.audio_cache import AudioCache
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
    """Batches ``{"wave": [L, n] f32, "feature": [L, D] f32, "valid": [L] bool, "keys", "skipped", "cached"}``
    (``"spec": [L, 1, F, T]`` in place of ``"wave"`` with ``spec_fn``; ``cached``: rows served from the cache).

    Args:
        urls: shard paths/URLs of one split.
        table: that split's image features.
        n_samples: audio samples per clip (16 kHz) after tiling/cutting.
        batch: the global batch B (divisible by ``world``).
        rank, world: this process's DDP rank and the world size.
        seed: shuffling seed; ``shuffle_buffer`` 0 keeps shard order (validation).
        drop_last: drop a final incomplete global batch (training).
        spec_fn: when given, batches hold spectrograms ``"spec"`` (computed in the worker) instead of waves.
        cache_bytes: keep up to this many bytes of decoded items across epochs (0: decode every epoch).
    """

    def __init__(self, urls: list[str], table: FeatureTable, *, n_samples: int, batch: int, rank: int = 0,
                 world: int = 1, seed: int = 0, shuffle_buffer: int = 0, split_by: str = "sample",
                 drop_last: bool = True, spec_fn: Callable[[Tensor], Tensor] | None = None, cache_bytes: int = 0):
        if batch % world:
            raise ValueError(f"batch {batch} is not divisible by the world size {world}")
        self.urls, self.table, self.n_samples = list(urls), table, n_samples
        self.batch, self.local = batch, batch // world
        self.rank, self.world, self.seed = rank, world, seed
        self.shuffle_buffer, self.split_by, self.drop_last = shuffle_buffer, split_by, drop_last
        self.spec_fn = spec_fn  # set: batches carry "spec" [L, 1, F, T], computed in the worker
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by persistent workers too
        self.item_key = "wave" if spec_fn is None else "spec"
        self.item_shape = (n_samples,) if spec_fn is None else tuple(spec_fn(torch.zeros(1, n_samples)).shape[1:])
        self._listings: dict[str, list[tuple[str, str]]] = {}  # url -> (key, skip reason), per worker
        self.cache = AudioCache.fitting(len(table.keys), self.item_shape, cache_bytes) if cache_bytes > 0 else None

    @property
    def epoch(self) -> int:
        """The epoch whose order the next iteration gives (set it before iterating the loader)."""
        return int(self._epoch)

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.fill_(value)

    @property
    def cache_nbytes(self) -> int:
        """Bytes of memory the cache reserved (0 without one)."""
        return 0 if self.cache is None else self.cache.nbytes

    def _usable(self, urls: list[str], report: bool, skipped: list[int]) -> Iterator[dict]:
        """The pairable samples of ``urls`` in order; a shard whose pairs are all cached is not read again:
        its listing (keys and skip reasons, kept from the first full read) is replayed."""
        for url in urls:
            listing = self._listings.get(url)
            if listing is not None and self.cache is not None and self.cache.has_all(
                    [self.table.rows[k] for k, reason in listing if not reason]):
                for key, reason in listing:
                    if reason:
                        skipped[0] += 1
                    else:
                        yield {"__key__": key}
                continue
            listing = []
            for s in shard_io.read_samples([url], ("flac", "json")):
                key = s["__key__"]
                reason = ("no .flac member" if shard_io.missing(s, ("flac",)) else
                          "no image feature" if key not in self.table.rows else "")
                listing.append((key, reason))
                if reason:
                    skipped[0] += 1
                    if report:
                        log.warning("pair %s skipped: %s", key, reason)
                    continue
                yield s
            self._listings[url] = listing  # only once the shard was read to its end

    def _decode(self, s: dict) -> tuple[np.ndarray, bool]:
        wave = shard_io.decode_audio_bytes(s["flac"])
        if isinstance(wave, str):
            log.warning("pair %s: %s (left out of the loss)", s["__key__"], wave)
            return np.zeros(self.n_samples, np.float32), False
        return shard_io.fit_samples(wave, self.n_samples), True

    def _load(self, s: dict) -> tuple[dict, Tensor, bool, bool]:
        """(the sample, its item, whether its audio decoded, whether the item came from the cache)."""
        row = self.table.rows[s["__key__"]]
        hit = self.cache.get(row) if self.cache is not None else None
        if hit is not None:
            return s, hit[0], hit[1], True
        wave, ok = self._decode(s)
        item = torch.from_numpy(wave)
        if self.spec_fn is not None:
            item = self.spec_fn(item[None])[0]  # this clip alone: the same whatever batch it lands in
        if self.cache is not None:
            self.cache.put(row, item, ok)
        return s, item, ok, False

    def _batch(self, items: list[tuple[dict, Tensor, bool, bool]], skipped: list[int]) -> Batch:
        rows = [self.table.rows[s["__key__"]] for s, *_ in items]
        feats = np.asarray(self.table.features[rows], dtype=np.float32)  # memmap rows, copied
        out = {self.item_key: torch.stack([x for _, x, _, _ in items]) if items else torch.zeros(0, *self.item_shape),
               "feature": torch.from_numpy(feats.reshape(len(rows), self.table.dim)),
               "valid": torch.tensor([ok for _, _, ok, _ in items], dtype=torch.bool),
               "keys": [s["__key__"] for s, *_ in items], "skipped": skipped[0],
               "cached": sum(hit for *_, hit in items)}
        skipped[0] = 0
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
                pending.append(self._load(s))
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
            pending.append(self._load(s))
            if len(pending) == self.local:
                yield self._batch(pending, skipped)
                pending = []
        if pending and not self.drop_last:
            yield self._batch(pending, skipped)
        elif skipped[0]:
            yield self._batch([], skipped)


def loader(stream: AlignStream, workers: int, pin_memory: bool = False) -> DataLoader:
    """A DataLoader over the stream's ready batches (``batch_size=None``), in worker round-robin order.

    Make it once and iterate it every epoch, setting ``stream.epoch`` before each iteration: its workers
    persist across epochs (a fresh set per epoch cost the world's short epochs ~0.5-1 s each, mostly in a
    training step ~3x slower right after the fork, copy-on-write faults by all signs). They read the epoch, like the
    cache, from shared memory, as their copies of the stream would otherwise keep the first epoch's order."""
    return DataLoader(stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
                      persistent_workers=workers > 0)
