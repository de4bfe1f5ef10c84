"""A bounded cache of decoded training samples, kept across epochs and shared by a process's loader workers.

What it holds, per pair of a split: the item that the DataLoader workers would otherwise rebuild from the
shard bytes every epoch (``pipeline.align_stream``): the clip's spectrogram ``[1, F, T]`` when the workers
make spectrograms (``spectrogram.on`` resolves to the workers: CPU training), else its waveform ``[n]``
(tiled/cut to the window). Both are deterministic functions of the pair's audio: the window is the clip's
start, tiled or cut (no random offset), and each spectrogram is computed from its one clip alone. The only
random augmentation, SpecAugment masking, is drawn later on the training device (``align_train.Step``), so
every epoch is as random with the cache as without, and the batches are bit for bit the same.

Where: one float32 tensor ``[S, *item]`` in shared memory plus one state byte per slot (empty / audio /
broken audio), made by the training process before its loader workers start. Workers of every epoch
(a fresh set per epoch, forked or spawned) read and write the same memory, so what any worker decoded in
one epoch is served to all of them in the next. Slot i belongs to feature-table row i, and rows >= S are
decoded every epoch: no slot is shared, so no lock is needed (within an epoch a row is decoded by one
worker of a rank; the item is written before its state byte). Each DDP rank is a process with its own
cache (ranks may be on other machines).

The size ``S`` is what fits the budget (``audio_encoder.cache_mb``), never more than half of the free
memory and of the free shared memory (``/dev/shm``) at the start; data larger than that is partly cached
and the rest streamed as before. The memory is reserved when the cache is made (``min(data, budget)``).
"""
from __future__ import annotations

import logging
import math
import os

import torch
from torch import Tensor

log = logging.getLogger(__name__)
EMPTY, AUDIO, BROKEN = 0, 1, 2
SHM = "/dev/shm"


def free_bytes() -> int:
    """The smaller of the free physical memory and the free space of ``/dev/shm`` (bytes; large if unknown)."""
    free = []
    try:
        with open("/proc/meminfo") as f:  # MemAvailable: free plus what the page cache would give back
            free += [int(line.split()[1]) << 10 for line in f if line.startswith("MemAvailable:")]
    except OSError:
        pass
    if os.path.isdir(SHM):
        st = os.statvfs(SHM)
        free.append(st.f_bavail * st.f_frsize)
    return min(free, default=1 << 62)


def shared_zeros(shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """A zero-filled tensor in shared memory (reserved now; workers forked or spawned later see its writes)."""
    n = math.prod(shape)
    storage = torch.UntypedStorage._new_shared(max(1, n) * torch.empty(0, dtype=dtype).element_size())
    return torch.empty(0, dtype=dtype).set_(storage)[:n].zero_().view(shape)


class AudioCache:
    """Items ``Tensor[*item_shape]`` float32 of feature-table rows ``0 .. slots - 1``, across epochs and workers."""

    def __init__(self, slots: int, item_shape: tuple[int, ...]):
        self.item_shape = tuple(item_shape)
        self.data = shared_zeros((slots, *self.item_shape), torch.float32)
        self.state = shared_zeros((slots,), torch.uint8)

    @property
    def slots(self) -> int:
        return int(self.state.shape[0])

    @property
    def nbytes(self) -> int:
        return self.data.numel() * 4 + self.state.numel()

    @classmethod
    def fitting(cls, rows: int, item_shape: tuple[int, ...], budget_bytes: int) -> "AudioCache | None":
        """A cache for as many of ``rows`` items as ``budget_bytes`` (and half the free memory) hold; None
        when not one fits or the shared memory cannot be had (then everything is streamed, as without one)."""
        item = 4 * math.prod(item_shape) + 1
        room = min(budget_bytes, free_bytes() // 2)
        slots = min(rows, room // item)
        if slots < rows and room < budget_bytes:
            log.warning("audio cache: %d MiB of the %d MiB asked for are free; caching %d of %d pairs",
                        room >> 20, budget_bytes >> 20, slots, rows)
        if slots <= 0:
            return None
        try:
            return cls(slots, item_shape)
        except RuntimeError as exc:  # e.g. a small /dev/shm in a container
            log.warning("audio cache of %d MiB not made (%s); decoding every epoch", (slots * item) >> 20,
                        str(exc).splitlines()[0])
            return None

    def get(self, row: int) -> tuple[Tensor, bool] | None:
        """(the item, whether its audio decoded) of ``row``; None when not cached."""
        if row >= self.slots:
            return None
        state = int(self.state[row])
        return None if state == EMPTY else (self.data[row], state == AUDIO)

    def has_all(self, rows: list[int]) -> bool:
        """Whether every one of ``rows`` is cached."""
        idx = torch.as_tensor(rows, dtype=torch.int64)
        return bool(((idx < self.slots).all() and (self.state[idx.clamp(max=self.slots - 1)] != EMPTY).all()))

    def put(self, row: int, item: Tensor, ok: bool) -> None:
        """Keep ``item`` (``Tensor[*item_shape]``) of ``row`` when the row has a slot."""
        if row < self.slots:
            self.data[row] = item
            self.state[row] = AUDIO if ok else BROKEN
